//! The production side: the replication connection (`conn`), the pure pgoutput decoder
//! (`pgoutput`), the snapshot, the spool for streamed transactions, the stream pipeline and its
//! replication loop, and `veil setup`.

pub mod conn;
pub mod pgoutput;
pub mod setup;
pub mod snapshot;
pub mod spool;
pub mod stream;
