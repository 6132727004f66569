//! The audit trail: PHI-free records (run start/stop, per-window summaries, holds, decisions,
//! errors) on their own compacted Kafka topic, and the archive the regulator's questions are
//! answered from.
//!
//! - One sequencing writer per chain (`stream/<source id>` for the stream). Every record is
//!   sealed with HMAC-SHA256 over its content and the previous record's HMAC, with the audit key
//!   (its own key, never the tokenization key), appended to a local journal and fsynced
//!   **before** it is sent; the journal also keeps the chain head (`<chain>.head`), so a deleted
//!   tail in the archive is caught.
//! - Records are keyed by `<chain>/<seq>`: compaction keeps every distinct record and a retried
//!   send replaces only its twin.
//! - `veil audit archive` copies the topic into a Postgres schema (`veil_audit.records`) with a
//!   retention, and exports JSON lines for cold storage; `verify`, `query` and `prove` read it.
//!
//! Nothing here ever holds a row value: records carry table and column names, rules, counts,
//! LSNs, detector names and registry versions.

pub mod archive;
pub mod chain;
pub mod commands;
pub mod error;
pub mod prove;
pub mod writer;

pub use archive::{ArchiveReport, archive, query, verify_archive};
pub use chain::{
    AuditKey, Head, Journal, Problem, audit_key, audit_key_for, describe, read_heads, verify,
    verify_with,
};
pub use error::AuditError;
pub use prove::{prove, prove_text};
pub use writer::{AuditLog, AuditWriter, NoAudit};
