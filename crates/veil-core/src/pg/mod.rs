//! PostgreSQL plumbing shared by both sides: connections with TLS (`tls`), errors as text without
//! row values and their SQLSTATE classes (`errors`), the catalog (`catalog`), LSNs (`lsn`), decoded rows (`tuple`) and
//! the one quoting helper (`quote`). Nothing here knows about keys, rules or Kafka.

pub mod catalog;
pub mod errors;
pub mod lsn;
pub mod quote;
pub mod tls;
pub mod tuple;

/// How values are written as text on the connections that read rows (the replication stream,
/// the snapshot) and the one that writes them (the sink): set alike at both ends, so a value's
/// text does not depend on either server's defaults — a timestamptz is the same text in the
/// snapshot, in the stream and in dev, whatever TimeZone each has, and FULL-identity rows are
/// found in dev by text equality.
pub const VALUE_FORMAT: &[(&str, &str)] = &[
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "1"),
    ("bytea_output", "hex"),
];

/// `VALUE_FORMAT` as `SET` statements for a session.
pub fn value_format_sql() -> String {
    VALUE_FORMAT
        .iter()
        .map(|(k, v)| format!("SET {k} = {};", quote::literal(v)))
        .collect()
}
