//! The production side: the replication connection (`conn`), the snapshot, the spool for
//! streamed transactions and the stream loop.

pub mod conn;
pub mod snapshot;
pub mod spool;
pub mod stream;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("connection to the source failed: {0}")]
    Io(String),
    #[error("the source closed the connection")]
    Closed,
    #[error("source server error {code}: {message}")]
    Server { code: String, message: String },
    #[error("replication protocol error: {0}")]
    Protocol(String),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("TLS with the source failed: {0}")]
    Tls(String),
    #[error("source configuration: {0}")]
    Config(String),
}
