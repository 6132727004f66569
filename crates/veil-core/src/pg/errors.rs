//! PostgreSQL errors turned into text that never carries a row value, and sorted by what happens
//! next: [`sqlstate_class`] is the one place SQLSTATE codes are mapped to an [`ErrorClass`].

use crate::error::{Classify, ErrorClass};

/// A server error without row values: the DETAIL field (which quotes keys) is never used, and
/// for data exceptions (class 22) and integrity violations (class 23), whose messages can quote
/// the offending value, only the code and the names of the table, column, constraint and type
/// are kept.
fn safe_db_message(d: &tokio_postgres::error::DbError) -> String {
    let code = d.code().code();
    if code.starts_with("22") || code.starts_with("23") {
        let mut parts = vec![format!("SQLSTATE {code}")];
        for (k, v) in [
            ("table", d.table()),
            ("column", d.column()),
            ("constraint", d.constraint()),
            ("type", d.datatype()),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k} {v}"));
            }
        }
        parts.join(", ")
    } else {
        format!("SQLSTATE {code}: {}", d.message())
    }
}

/// Text for any tokio-postgres error, without row values (never the DETAIL field).
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => safe_db_message(d),
        None => e.to_string(),
    }
}

/// What happens next after a server error with this SQLSTATE.
///
/// Transient: what a production restart, failover or overload produces — connection exceptions
/// (08), transaction rollbacks such as serialization failures and deadlocks (40), insufficient
/// resources (53), admin/crash/cannot-connect-now shutdowns (57P01–57P03), a replication slot
/// or object in use (55006), query cancelled (57014, e.g. a statement timeout). Everything else
/// — permission denied (42501), undefined objects, data exceptions, integrity violations, a
/// misconfigured server (55000) — fails the same way on every retry: definite.
pub fn sqlstate_class(code: &str) -> ErrorClass {
    let transient = code.starts_with("08")
        || code.starts_with("40")
        || code.starts_with("53")
        || matches!(code, "57P01" | "57P02" | "57P03" | "55006" | "57014");
    if transient {
        ErrorClass::Transient
    } else {
        ErrorClass::Definite
    }
}

/// A PostgreSQL error: what veil was doing, the SQLSTATE (none for I/O and protocol errors) and a
/// value-free message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}: {message}")]
pub struct PgError {
    pub what: String,
    pub code: Option<String>,
    pub message: String,
}

impl PgError {
    pub fn new(what: impl Into<String>, e: &tokio_postgres::Error) -> Self {
        PgError {
            what: what.into(),
            code: e.code().map(|c| c.code().to_owned()),
            message: describe(e),
        }
    }

    /// A server error reported outside tokio-postgres (the replication protocol).
    pub fn server(what: impl Into<String>, code: &str, message: impl Into<String>) -> Self {
        PgError {
            what: what.into(),
            code: Some(code.to_owned()),
            message: message.into(),
        }
    }

    /// `map_err` helper: `.map_err(PgError::with("look up slots"))`.
    pub fn with(what: &'static str) -> impl Fn(tokio_postgres::Error) -> PgError {
        move |e| PgError::new(what, &e)
    }
}

impl Classify for PgError {
    /// A server error by its SQLSTATE; no SQLSTATE means the connection or its I/O failed:
    /// transient.
    fn class(&self) -> ErrorClass {
        match &self.code {
            Some(c) => sqlstate_class(c),
            None => ErrorClass::Transient,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_sorted_by_what_happens_next() {
        for c in [
            "08006", "08001", "40001", "40P01", "53100", "53300", "57P01", "57P02", "57P03",
            "55006",
        ] {
            assert_eq!(sqlstate_class(c), ErrorClass::Transient, "{c}");
        }
        for c in [
            "42501", "42P01", "22P02", "23505", "55000", "XX000", "0A000", "28P01",
        ] {
            assert_eq!(sqlstate_class(c), ErrorClass::Definite, "{c}");
        }
        let io = PgError {
            what: "connect".into(),
            code: None,
            message: "refused".into(),
        };
        assert_eq!(io.class(), ErrorClass::Transient);
    }
}
