//! The stream's errors, each sorted by what happens next ([`Classify`]).

use super::conn::SourceError;
use super::pgoutput;
use crate::config::ConfigError;
use crate::deid::gate::GateError;
use crate::deid::registry::RegistryError;
use crate::deid::vault::VaultError;
use crate::error::{Classify, ErrorClass};
use crate::kafka::error::BrokerError;
use crate::pg::catalog::CatalogError;
use crate::pg::errors::PgError;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("connecting to PostgreSQL: {0}")]
    Connect(crate::pg::tls::ConnectError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("source database ({}): {}", .0.what, .0.message)]
    Postgres(#[from] PgError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Gate(Box<GateError>),
    #[error(transparent)]
    Publish(#[from] BrokerError),
    /// Publishing one event failed; names what the event was about (never a value).
    #[error("publishing {what} (commit LSN {lsn}): {source}")]
    PublishEvent {
        what: String,
        lsn: String,
        #[source]
        source: BrokerError,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("pgoutput: {0}")]
    Decode(#[from] pgoutput::DecodeError),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("replication slot {0} is in use by another process (is another veil stream running?)")]
    SlotBusy(String),
    #[error(
        "another veil stream holds the run lock of slot prefix {0} (only one stream runs per source and slot)"
    )]
    RunLocked(String),
    #[error(
        "the run lock's connection dropped: another veil stream may take over, so this one stops publishing"
    )]
    RunLockLost,
    #[error("spool: {0}")]
    Spool(#[from] std::io::Error),
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// Shutdown was requested while the stream was held (not a failure).
    #[error("stopped while held")]
    StoppedWhileHeld,
    /// A hold ended after it had released the replication connection: the stream reads again
    /// from its confirmed LSN on a new connection (not a failure; `stream::run` does it at once).
    #[error(
        "the hold ended after the replication connection was released; reading again from the confirmed LSN"
    )]
    ResumeAfterRelease,
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

impl From<Box<GateError>> for StreamError {
    fn from(e: Box<GateError>) -> Self {
        StreamError::Gate(e)
    }
}

impl From<GateError> for StreamError {
    fn from(e: GateError) -> Self {
        StreamError::Gate(Box::new(e))
    }
}

impl Classify for StreamError {
    /// Transient errors are worth a restart from the confirmed LSN; definite ones need a person
    /// (a grant, a registry decision, a message the broker will never take) and must not be
    /// retried in a loop that pins production WAL; usage errors need a config fix.
    fn class(&self) -> ErrorClass {
        match self {
            StreamError::Connect(e) => e.class(),
            StreamError::Source(e) => e.class(),
            StreamError::Postgres(e) => e.class(),
            StreamError::Catalog(e) => e.class(),
            StreamError::Publish(e) => e.class(),
            StreamError::PublishEvent { source, .. } => source.class(),
            StreamError::Config(_) | StreamError::Registry(_) => ErrorClass::Usage,
            StreamError::Gate(_) | StreamError::Decode(_) | StreamError::Protocol(_) => {
                ErrorClass::Definite
            }
            // A predecessor still holds the slot: it will go away (or a person stops it).
            StreamError::SlotBusy(_) => ErrorClass::Transient,
            // Another stream runs: this one retries later (it takes over when that one stops).
            StreamError::RunLocked(_) | StreamError::RunLockLost => ErrorClass::Transient,
            StreamError::Spool(e) => e.class(),
            StreamError::Vault(v) => v.class(),
            StreamError::StoppedWhileHeld | StreamError::ResumeAfterRelease => {
                ErrorClass::Transient
            }
            StreamError::Audit(a) => a.class(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::RDKafkaErrorCode;

    #[test]
    fn stream_errors_sorted_by_what_happens_next() {
        let denied = StreamError::Postgres(PgError::server(
            "copy public.t",
            "42501",
            "permission denied for table t",
        ));
        assert_eq!(denied.class(), ErrorClass::Definite);
        let failover = StreamError::Postgres(PgError::server("x", "57P01", "terminating"));
        assert_eq!(failover.class(), ErrorClass::Transient);
        let too_large = StreamError::PublishEvent {
            what: "a row change of public.t".into(),
            lsn: "0/10".into(),
            source: BrokerError::Kafka {
                code: Some(RDKafkaErrorCode::MessageSizeTooLarge),
                message: "too large".into(),
            },
        };
        assert_eq!(too_large.class(), ErrorClass::Definite);
        let down = StreamError::Publish(BrokerError::Kafka {
            code: Some(RDKafkaErrorCode::AllBrokersDown),
            message: "down".into(),
        });
        assert_eq!(down.class(), ErrorClass::Transient);
        let tail = StreamError::Publish(BrokerError::Decode {
            topic: "t".into(),
            offset: 1,
            message: "bad".into(),
        });
        assert_eq!(tail.class(), ErrorClass::Definite);
        assert_eq!(
            StreamError::Config(ConfigError::Invalid("x".into())).class(),
            ErrorClass::Usage
        );
        assert_eq!(
            StreamError::Source(SourceError::Closed).class(),
            ErrorClass::Transient
        );
        let audit_too_large =
            StreamError::Audit(crate::audit::AuditError::Kafka(BrokerError::Delivery {
                code: Some(RDKafkaErrorCode::MessageSizeTooLarge),
                message: "too large".into(),
            }));
        assert_eq!(audit_too_large.class(), ErrorClass::Definite);
    }
}
