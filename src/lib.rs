//! veil: a de-identified, near-real-time copy of a production PostgreSQL database for
//! developers. See ARCHITECTURE.md for the data flow, the code map and the invariants.
//!
//! The folders follow the data path and the trust boundary: `source` (production side:
//! replication, snapshot, the stream pipeline), `deid` (registry, gate, tokenization, scanner,
//! vault — everything that holds or uses the key), `kafka` (client, topics, producer), `sink`
//! (dev side, no key), `audit`, `review`, and the shared foundations `pg`, `config`, `error`,
//! `metrics`, `proto`, `civil`. `devkit` holds the demo, the bench, the data generator and the
//! test kit.

pub mod audit;
pub mod civil;
pub mod config;
pub mod deid;
pub mod devkit;
pub mod error;
pub mod kafka;
pub mod metrics;
pub mod pg;
pub mod proto;
pub mod review;
pub mod sink;
pub mod source;
