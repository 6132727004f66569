//! The production side: the replication connection (`conn`), the pure pgoutput decoder
//! (`pgoutput`), epochs and fencing (`epoch`), the snapshot, the spool for streamed
//! transactions, the pipeline every row goes through (`pipeline`, with `hold` and `window`), the
//! confirmed-LSN rule (`progress`), the event-sink boundary (`events`), the replication loop
//! (`stream`), the online backfill (`backfill`, its state in `watermark`) and `veil setup`.

pub mod backfill;
pub mod conn;
pub mod epoch;
pub mod error;
pub mod events;
pub mod hold;
pub mod pgoutput;
pub mod pipeline;
pub mod progress;
pub mod scan_hold;
pub mod setup;
pub mod snapshot;
pub mod spool;
pub mod stream;
pub mod watermark;
pub mod window;
