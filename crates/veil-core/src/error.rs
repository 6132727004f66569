//! One error taxonomy: every error answers "what happens next".
//!
//! - **Transient**: retry. The connection was lost, the broker is down or busy, a timeout, a
//!   production restart or failover (SQLSTATE classes 08, 40, 53, 57P01–57P03, 55006). The
//!   process exits 75 (EX_TEMPFAIL) and its supervisor starts it again; it resumes from the
//!   confirmed LSN (stream) or the dev checkpoint (sink), so nothing is lost or doubled.
//! - **Definite**: stop for a person. Permission denied, a schema or value veil cannot handle, a
//!   message the broker will never take, a corrupt journal or topic. Retrying would fail the same
//!   way (and pin production WAL in a restart loop), so the process exits 1.
//! - **Usage**: the command line, the configuration or the registry files are wrong; exit 2.
//!
//! SQLSTATEs are sorted in `crate::pg::errors::sqlstate_class`, librdkafka codes in
//! `crate::kafka::error::code_class`; each error enum implements [`Classify`] from those, and
//! `main` maps the class to the exit code through [`ErrorClass::exit_code`] alone.

/// What happens next after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry (restart and resume from the last durable position).
    Transient,
    /// Stop for a person: retrying fails the same way.
    Definite,
    /// Bad command line, configuration or registry files.
    Usage,
}

impl ErrorClass {
    /// The process exit code for an error of this class (README: "Exit codes").
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorClass::Transient => 75,
            ErrorClass::Definite => 1,
            ErrorClass::Usage => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Definite => "definite",
            ErrorClass::Usage => "usage",
        }
    }
}

/// Implemented by every error enum of veil.
pub trait Classify {
    fn class(&self) -> ErrorClass;

    fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }
}

impl Classify for std::io::Error {
    /// Local I/O (spool, journal, files): a full disk or a vanished file needs a person; an
    /// interrupted or timed-out call is worth a retry.
    fn class(&self) -> ErrorClass {
        use std::io::ErrorKind as K;
        match self.kind() {
            K::Interrupted
            | K::TimedOut
            | K::WouldBlock
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::ConnectionRefused
            | K::BrokenPipe => ErrorClass::Transient,
            _ => ErrorClass::Definite,
        }
    }
}

/// A configuration that cannot be used: bad usage, exit 2. (Lives here rather than in `config` so
/// that the PostgreSQL and Kafka plumbing can report it without depending on the whole config.)
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("config: {0}")]
    Invalid(String),
}

impl Classify for ConfigError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_in_one_place() {
        assert_eq!(ErrorClass::Transient.exit_code(), 75);
        assert_eq!(ErrorClass::Definite.exit_code(), 1);
        assert_eq!(ErrorClass::Usage.exit_code(), 2);
    }
}

/// A command's failure as the CLI reports it: a value-free message and what happens next.
#[derive(Debug)]
pub struct Failure {
    pub class: ErrorClass,
    pub message: String,
}

impl Failure {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Failure {
            class,
            message: message.into(),
        }
    }
}

impl<E: Classify + std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            class: e.class(),
            message: e.to_string(),
        }
    }
}
