//! The review workflow's errors, sorted by what happens next.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::deid::registry::RegistryError;
use crate::pg::catalog;

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("connecting to PostgreSQL: {0}")]
    Connect(crate::pg::tls::ConnectError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("source database ({}): {}", .0.what, .0.message)]
    Postgres(crate::pg::errors::PgError),
    #[error(transparent)]
    Catalog(#[from] catalog::CatalogError),
    #[error("{0}")]
    Invalid(String),
    #[error("registry file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl crate::error::Classify for ReviewError {
    fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            ReviewError::Connect(e) => e.class(),
            ReviewError::Config(_) | ReviewError::Registry(_) | ReviewError::Invalid(_) => {
                ErrorClass::Usage
            }
            ReviewError::Postgres(e) => e.class(),
            ReviewError::Catalog(e) => e.class(),
            ReviewError::Io { source, .. } => source.class(),
        }
    }
}
