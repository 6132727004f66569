//! veil: a de-identified, near-real-time copy of a production PostgreSQL database for
//! developers. See ARCHITECTURE.md for the data flow and the invariants.

pub mod catalog;
pub mod config;
pub mod datagen;
pub mod demo;
pub mod gate;
pub mod metrics;
pub mod pgoutput;
pub mod publish;
pub mod registry;
pub mod setup;
pub mod sink;
pub mod source;
pub mod testkit;
pub mod tokenize;

/// Protobuf change events (generated from `proto/veil/v1/change.proto`).
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/veil.v1.rs"));
}
