//! De-identification, production side only: the versioned registry of decisions (`registry`),
//! the gate that turns a source row into published values (`gate`), the tokenization rules and
//! keys (`tokenize`), surrogate lists (`surrogate`), the PHI scanner (`scanner`) and the token
//! vault (`vault`). Everything that holds or uses the master key lives here; nothing on the sink
//! side may depend on this crate: `veil-sink`'s manifest has no path to it (checked by
//! `tests/architecture.rs`).

pub mod gate;
pub mod registry;
pub mod scanner;
pub mod surrogate;
pub mod tokenize;
pub mod vault;

// The foundations, under the names the modules use (`crate::config::…`, `crate::pg::…`).
pub(crate) use veil_core::{civil, config, error, metrics, pg, proto};
