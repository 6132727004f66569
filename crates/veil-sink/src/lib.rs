//! `veil sink`: the dev side. Consumes the change topic (auto-commit off, partition assigned
//! explicitly at the offset stored in dev) and applies it to the dev database:
//!
//! - schema events create or alter tables (columns, primary/unique keys, enums; foreign keys once
//!   both ends exist);
//! - every source transaction is applied atomically, in commit order, inside a dev transaction
//!   that may batch several source transactions (under a savepoint once any of its statements
//!   reaches dev; until then a discard drops its queued statements);
//! - the Kafka offset, epoch and last commit LSN are written to `veil_sink.checkpoint` inside the
//!   same dev transaction, so a crash or replay never loses or doubles a row;
//! - a transaction whose commit LSN is not above the checkpoint is a replay and is skipped; a half
//!   transaction (a Begin or StreamStart arriving before its Commit) is rolled back; a transaction
//!   whose predecessor is not the last applied one is a gap and stops the sink loudly;
//! - a newer epoch (a new snapshot) drops what the older epoch built.
//!
//! Values travel as text and are bound as text parameters cast to the column type
//! (`$1::text::<type>`), which works for every type with a text input function. The sink holds no
//! key and cannot reveal anything.
//!
//! Files: `consumer` (the loop), `fence` (the fencing table, pure), `fragments` (joining
//! envelopes sent in pieces, pure), `applier` (transactions and
//! checkpoint), `ddl`, `dml`, `store` (bookkeeping tables), `confirm` (the sink's audit chain), `error`. Nothing here depends
//! on `deid` or `source` (checked by `tests/architecture.rs`).

pub mod applier;
pub mod batch;
pub mod confirm;
pub mod consumer;
pub mod ddl;
pub mod dml;
pub mod error;
pub mod fence;
pub mod fragments;
pub mod store;

pub use applier::{Applier, Next};
pub use consumer::run;
pub use error::SinkError;

// The foundations, under the names the modules use (`crate::config::…`, `crate::audit::…`).
pub(crate) use veil_core::{audit, config, kafka, metrics, pg, proto};
