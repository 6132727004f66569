//! The audit trail's errors, sorted by what happens next.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("connecting to PostgreSQL: {0}")]
    Connect(crate::pg::tls::ConnectError),
    #[error("audit journal {path}: {source}")]
    Journal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audit journal {path}: {problem}")]
    Corrupt { path: PathBuf, problem: String },
    #[error("audit: {0}")]
    Config(String),
    #[error("audit archive ({}): {}", .0.what, .0.message)]
    Postgres(crate::pg::errors::PgError),
    #[error("audit topic: {0}")]
    Kafka(#[from] crate::kafka::error::BrokerError),
    /// The audit topic holds something that is not an audit record.
    #[error("audit topic: {0}")]
    Topic(String),
}

impl crate::error::Classify for AuditError {
    fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            AuditError::Connect(e) => e.class(),
            AuditError::Journal { source, .. } => source.class(),
            AuditError::Corrupt { .. } => ErrorClass::Definite,
            AuditError::Config(_) => ErrorClass::Usage,
            AuditError::Postgres(e) => e.class(),
            AuditError::Kafka(e) => e.class(),
            AuditError::Topic(_) => ErrorClass::Definite,
        }
    }
}
