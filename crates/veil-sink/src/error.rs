//! The sink's errors, each sorted by what happens next.

use crate::audit::AuditError;
use crate::config::ConfigError;
use crate::kafka::error::BrokerError;
use crate::pg::errors::PgError;
use veil_core::error::{Classify, ErrorClass};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("connecting to the dev database: {0}")]
    Connect(crate::pg::tls::ConnectError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Kafka(#[from] BrokerError),
    #[error("sink audit trail: {0}")]
    Audit(#[from] AuditError),
    #[error("dev database ({}): {}", .0.what, .0.message)]
    Postgres(PgError),
    #[error("malformed event at offset {offset}: {message}")]
    Decode { offset: i64, message: String },
    #[error(
        "gap in the change stream at offset {offset}: transaction {commit_lsn} follows {expected_prev} \
         but the last applied is {applied}; refusing to continue"
    )]
    Gap {
        offset: i64,
        commit_lsn: String,
        expected_prev: String,
        applied: String,
    },
    #[error(
        "epoch {epoch} at offset {offset} starts without a snapshot (last applied epoch {applied})"
    )]
    EpochWithoutSnapshot {
        epoch: u64,
        offset: i64,
        applied: u64,
    },
    #[error("table {table}: {message}")]
    Schema { table: String, message: String },
}

impl Classify for SinkError {
    /// Connection, broker and transient server trouble is retried (the sink resumes from its
    /// checkpoint); a gap, a malformed event, a diverged dev or a schema dev cannot take needs a
    /// person; a bad config is usage.
    fn class(&self) -> ErrorClass {
        match self {
            SinkError::Connect(e) => e.class(),
            SinkError::Config(_) => ErrorClass::Usage,
            SinkError::Kafka(e) => e.class(),
            SinkError::Audit(e) => e.class(),
            SinkError::Postgres(e) => e.class(),
            SinkError::Decode { .. }
            | SinkError::Gap { .. }
            | SinkError::EpochWithoutSnapshot { .. }
            | SinkError::Schema { .. } => ErrorClass::Definite,
        }
    }
}

pub fn pg(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> SinkError {
    let what = what.into();
    move |e| SinkError::Postgres(crate::pg::errors::PgError::new(what, &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditError;

    #[test]
    fn sink_errors_sorted_by_what_happens_next() {
        // An audit-writer failure is classed by its cause, not as a broker hiccup.
        let corrupt = SinkError::Audit(AuditError::Corrupt {
            path: "j".into(),
            problem: "bad".into(),
        });
        assert_eq!(corrupt.class(), ErrorClass::Definite);
        let gap = SinkError::Gap {
            offset: 1,
            commit_lsn: "0/2".into(),
            expected_prev: "0/1".into(),
            applied: "0/0".into(),
        };
        assert_eq!(gap.class(), ErrorClass::Definite);
        let lost = SinkError::Postgres(PgError::server("commit", "08006", "connection failure"));
        assert_eq!(lost.class(), ErrorClass::Transient);
        assert_eq!(
            SinkError::Config(ConfigError::Invalid("x".into())).class(),
            ErrorClass::Usage
        );
    }
}
