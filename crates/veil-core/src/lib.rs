//! veil's foundations, shared by the production side and the dev side: one error taxonomy
//! (`error`), configuration (`config`), PostgreSQL plumbing (`pg`), Kafka plumbing (`kafka`),
//! the protobuf events (`proto`), metric names (`metrics`), calendar arithmetic (`civil`), retrying
//! a service after transient errors (`supervise`) and the audit trail (`audit`). Nothing here holds or uses a tokenization key: the sink depends on this
//! crate, and its manifest cannot reach `veil-deid`.

pub mod audit;
pub mod civil;
pub mod config;
pub mod error;
pub mod kafka;
pub mod metrics;
pub mod pg;
pub mod proto;
pub mod supervise;
