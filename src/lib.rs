//! veil: a de-identified, near-real-time copy of a production PostgreSQL database for
//! developers. See ARCHITECTURE.md for the data flow, the code map and the invariants.
//!
//! The folders follow the data path and the trust boundary: `source` (production side:
//! replication, snapshot, the stream pipeline), `deid` (registry, gate, tokenization, scanner,
//! vault — everything that holds or uses the key), `kafka` (client, topics, producer), `sink`
//! (dev side, no key), `audit`, `review`, and the shared foundations `pg`, `config`, `error`,
//! `metrics`, `proto`, `civil`. `devkit` holds the demo, the bench, the data generator and the
//! test kit.

/// The demo, the bench, the data generator and the test kit: not in the production binary
/// (feature `devkit`, on by default for `cargo run -- demo` and the tests; the image builds
/// without it).
#[cfg(feature = "devkit")]
pub mod devkit;
pub mod review;
pub mod source;

// The workspace's other crates, under the names the whole code base uses. The boundary between
// them keeps an invariant: `veil-sink` depends on `veil-core` only, never on `veil-deid`.
pub use veil_core::{audit, civil, config, error, kafka, metrics, pg, proto, supervise};
pub use veil_deid as deid;
pub use veil_sink as sink;
