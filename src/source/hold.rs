//! What a held stream needs from the replication connection: a way to say "still alive"
//! without confirming anything past the hold point. A hold never climbs back up the data path;
//! the pipeline owns a [`KeepAlive`] and calls it while it waits for a registry decision.

use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::conn::ReplicationConn;
use super::error::StreamError;
use super::pgoutput;
use crate::pg::lsn::PG_EPOCH_OFFSET_US;

/// How often a held stream looks for a registry decision (and keeps the connection alive).
pub const HOLD_POLL: Duration = Duration::from_secs(1);

// Why a long hold releases the connection: a walsender that has WAL to send and a client that
// does not read blocks in its socket write. When `max_slot_wal_keep_size` is reached, PostgreSQL
// 15's checkpointer invalidates the slot by signalling that walsender and *waiting* for it to
// let go — seen stuck there for many minutes, no checkpoint meanwhile. An inactive slot is
// invalidated without waiting on anyone.

/// Keeps the source from dropping a stream that is waiting (held), and lets a long hold let go
/// of the source altogether.
///
/// Contract: `keep_alive(acked)` may report as flushed at most `acked` — the LSN the event sink
/// acknowledged with everything before it — so the slot keeps every WAL record after the hold
/// point. `release()` closes the replication connection (the slot stays, inactive, and keeps the
/// same WAL); after it `keep_alive` does nothing, `released()` is true, and the stream must read
/// again from its confirmed LSN on a new connection before it publishes anything more.
pub trait KeepAlive: Send + Sync {
    fn keep_alive(&mut self, acked: u64) -> BoxFuture<'_, Result<(), StreamError>>;
    fn release(&mut self) -> BoxFuture<'_, ()>;
    fn released(&self) -> bool;
}

/// Before `START_REPLICATION` (the snapshot) there is nothing to keep alive or release.
pub struct NoKeepAlive;

impl KeepAlive for NoKeepAlive {
    fn keep_alive(&mut self, _acked: u64) -> BoxFuture<'_, Result<(), StreamError>> {
        Box::pin(async { Ok(()) })
    }
    fn release(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn released(&self) -> bool {
        false
    }
}

/// The replication connection, shared with the replication loop (which only reads from it
/// while nothing is held).
pub struct ReplKeepAlive {
    pub conn: Arc<tokio::sync::Mutex<ReplicationConn>>,
    /// The WAL position received so far (reported as written, never as flushed).
    pub received: Arc<AtomicU64>,
    pub released: bool,
}

impl KeepAlive for ReplKeepAlive {
    fn keep_alive(&mut self, acked: u64) -> BoxFuture<'_, Result<(), StreamError>> {
        Box::pin(async move {
            if self.released {
                return Ok(());
            }
            let write = self.received.load(Ordering::Relaxed).max(acked);
            self.conn
                .lock()
                .await
                .send_copy(&status_update(write, acked))
                .await?;
            Ok(())
        })
    }

    fn release(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if !self.released {
                self.released = true;
                self.conn.lock().await.close().await;
            }
        })
    }

    fn released(&self) -> bool {
        self.released
    }
}

/// A standby status update: `write` received, `flushed` (= applied) confirmed — only what the
/// event sink acknowledged.
pub fn status_update(write: u64, flushed: u64) -> Vec<u8> {
    pgoutput::encode_status_update(
        write,
        flushed,
        flushed,
        now_us() - PG_EPOCH_OFFSET_US,
        false,
    )
}

pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
