//! A row as PostgreSQL sends it in logical replication (and as the snapshot's COPY parser
//! produces it): raw column values whose `Debug` never prints them. Shared by the decoder (the
//! production side reads it) and the gate (which turns it into published values).

use std::fmt;

/// A column value inside tuple data.
#[derive(Clone, PartialEq, Eq)]
pub enum TupleValue {
    Null,
    /// TOASTed value not changed by this UPDATE: not sent, the receiver keeps what it has.
    Unchanged,
    Text(Vec<u8>),
    Binary(Vec<u8>),
}

impl fmt::Debug for TupleValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TupleValue::Null => f.write_str("Null"),
            TupleValue::Unchanged => f.write_str("Unchanged"),
            TupleValue::Text(v) => write!(f, "Text(<redacted {} bytes>)", v.len()),
            TupleValue::Binary(v) => write!(f, "Binary(<redacted {} bytes>)", v.len()),
        }
    }
}

/// A row as sent by pgoutput. `Debug` shows only the shape, never the values.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TupleData(pub Vec<TupleValue>);
