//! The stage boundary between the stream and the destination of its events.
//!
//! Durability contract (supabase/etl's `Destination` is the model): [`EventSink::send`] only
//! queues an event; an LSN passed as `done_lsn` becomes *acknowledged* — returned by
//! [`EventSink::acked_lsn`] — only once that event **and every event sent before it** are durable
//! at the destination. The stream confirms to PostgreSQL nothing but an acknowledged LSN (see
//! `progress`), so a crash at any point re-sends from the last confirmed LSN and loses nothing;
//! the sink drops what it already has. A failed delivery is sticky: `failure` reports it and no
//! later LSN is ever acknowledged.

use futures_util::future::BoxFuture;

use crate::kafka::error::BrokerError;
use crate::kafka::producer::Publisher;
use crate::proto::Envelope;

pub trait EventSink: Send + Sync {
    /// Queues one event. `done_lsn`: the LSN that counts as acknowledged once this and every
    /// earlier event are durable (a Commit's end LSN). Events may wait to share a message
    /// until [`EventSink::flush`] (they count as in flight meanwhile).
    fn send<'a>(
        &'a self,
        env: &'a Envelope,
        done_lsn: Option<u64>,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Highest LSN whose events, and all events before them, are durable.
    fn acked_lsn(&self) -> u64;
    /// Events sent and not yet durable.
    fn inflight(&self) -> u64;
    /// The first delivery failure, if any (sticky).
    fn failure(&self) -> Option<BrokerError>;
    /// Hands every queued event to the destination (does not wait for durability).
    fn flush(&self) -> BoxFuture<'_, Result<(), BrokerError>>;
    /// Flushes, then waits until everything sent so far is durable (or a delivery failed).
    fn drain(&self) -> BoxFuture<'_, Result<(), BrokerError>>;
}

impl EventSink for Publisher {
    fn send<'a>(
        &'a self,
        env: &'a Envelope,
        done_lsn: Option<u64>,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(Publisher::send(self, env, done_lsn))
    }
    fn acked_lsn(&self) -> u64 {
        Publisher::acked_lsn(self)
    }
    fn inflight(&self) -> u64 {
        Publisher::inflight(self)
    }
    fn failure(&self) -> Option<BrokerError> {
        Publisher::failure(self)
    }
    fn flush(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(Publisher::flush(self))
    }
    fn drain(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(Publisher::drain(self))
    }
}
