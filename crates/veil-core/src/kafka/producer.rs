//! Kafka publishing: an idempotent producer (acks=all) writing protobuf envelopes to one
//! partition per source database, keyed by the source id (never a column value), and an ack
//! tracker that awaits every delivery in order. Only when a Commit's delivery *and every delivery
//! before it* succeeded does its end LSN become "acknowledged"; only that LSN is ever confirmed to
//! PostgreSQL. A failed delivery is fatal: the stream stops and resumes from the last confirmed
//! LSN (the sink drops the duplicates).

use prost::Message;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

use super::client::client_config_with;
use super::error::{BrokerError, delivery, kerr};
use crate::config::KafkaConfig;
use crate::proto::Envelope;

/// The ordered acknowledgement rule, pure: deliveries are reported in the order they were sent;
/// a `done_lsn` is acknowledged when its delivery and every earlier one succeeded; the first
/// failure is sticky and nothing after it is ever acknowledged.
#[derive(Debug, Default)]
pub struct AckTracker {
    acked: u64,
    failed: Option<BrokerError>,
}

impl AckTracker {
    /// The next delivery in send order. Returns the acknowledged LSN, or the (sticky) failure.
    pub fn delivered(
        &mut self,
        result: Result<(), BrokerError>,
        done_lsn: Option<u64>,
    ) -> Result<u64, BrokerError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match result {
            Ok(()) => {
                if let Some(lsn) = done_lsn {
                    self.acked = self.acked.max(lsn);
                }
                Ok(self.acked)
            }
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }
}

struct Pending {
    fut: DeliveryFuture,
    done_lsn: Option<u64>,
    /// Envelopes the message carries.
    events: u64,
}

/// Envelopes sent but not yet handed to the producer: encoded, waiting to share one message.
#[derive(Default)]
struct Batch {
    /// The encoded envelopes, in order.
    items: Vec<Vec<u8>>,
    /// Their encoded size inside an `EventBatch` (each with its field key and length).
    bytes: usize,
    /// The last `done_lsn` among them.
    done_lsn: Option<u64>,
    /// The outer envelope's header (run, epoch, source), from the first item.
    header: Option<Envelope>,
}

/// Room a batch keeps for the outer envelope's header, its `batch` field key and length.
const BATCH_HEADER: usize = 256;

/// Encoded size of one envelope inside an `EventBatch`: field key, length, bytes.
fn framed_len(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// One Kafka message holding the batch's envelopes (or the lone envelope itself).
fn batch_payload(batch: Batch) -> Vec<u8> {
    let mut items = batch.items;
    if items.len() == 1 {
        return items.pop().unwrap_or_default();
    }
    encode_batch(&batch.header.unwrap_or_default(), &items)
}

/// An envelope whose event is an `EventBatch` of the already encoded envelopes `items`
/// (`header` carries the run, epoch and source; its event is left out).
pub fn encode_batch(header: &Envelope, items: &[Vec<u8>]) -> Vec<u8> {
    use prost::encoding::{WireType, encode_key, encode_varint};
    let bytes: usize = items.iter().map(|i| framed_len(i.len())).sum();
    let mut out = Vec::with_capacity(bytes + BATCH_HEADER);
    let header = Envelope {
        event: None,
        ..header.clone()
    };
    header.encode(&mut out).unwrap_or_default();
    // Field 21 of Envelope (`batch`), an EventBatch whose field 1 repeats the envelopes.
    encode_key(21, WireType::LengthDelimited, &mut out);
    encode_varint(bytes as u64, &mut out);
    for item in items {
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(item.len() as u64, &mut out);
        out.extend_from_slice(item);
    }
    out
}

/// Sends envelopes and tracks their deliveries.
pub struct Publisher {
    producer: FutureProducer,
    topic: String,
    key: String,
    /// Larger envelopes are cut into fragments (`KafkaConfig::max_message_bytes`).
    max_bytes: usize,
    pending: mpsc::Sender<Pending>,
    inflight: Arc<AtomicU64>,
    acked: watch::Receiver<u64>,
    failed: watch::Receiver<Option<BrokerError>>,
    /// Envelopes waiting to go out together (`flush`).
    batch: std::sync::Mutex<Batch>,
}

impl Publisher {
    pub fn new(cfg: &KafkaConfig, topic: &str, key: &str) -> Result<Self, BrokerError> {
        let max_bytes = cfg
            .max_message_bytes()
            .map_err(|e| BrokerError::local(e.to_string()))?;
        let producer: FutureProducer = client_config_with(
            cfg,
            &[
                ("linger.ms", "5"),
                // Batches of envelopes of one table compress well (names, tokens, LSNs).
                ("compression.type", "lz4"),
                ("message.timeout.ms", "120000"),
                ("message.max.bytes", "16777216"),
                ("queue.buffering.max.messages", "200000"),
                // Bounds what waits in the producer (librdkafka's default is 1 GiB): a large
                // transaction published faster than the broker takes it waits in `send`.
                ("queue.buffering.max.kbytes", "65536"),
            ],
        )
        // Never overridable: ordering and no duplicates from retries. One request in flight per
        // connection keeps the order even on brokers whose idempotence support is partial.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "1")
        .create()
        .map_err(kerr)?;
        let (tx, mut rx) = mpsc::channel::<Pending>(100_000);
        let (acked_tx, acked) = watch::channel(0u64);
        let (failed_tx, failed) = watch::channel(None);
        let inflight = Arc::new(AtomicU64::new(0));
        let infl = inflight.clone();
        tokio::spawn(async move {
            let mut tracker = AckTracker::default();
            while let Some(p) = rx.recv().await {
                let res = match p.fut.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(delivery(e)),
                    Err(_) => Err(BrokerError::Delivery {
                        code: None,
                        message: "producer dropped before delivery".into(),
                    }),
                };
                match tracker.delivered(res, p.done_lsn) {
                    Ok(lsn) => {
                        // Only a delivered event leaves the in-flight count: after a failure it
                        // never reaches zero, so the idle keepalive advance cannot confirm WAL
                        // past events that were never delivered.
                        infl.fetch_sub(p.events, Ordering::SeqCst);
                        acked_tx.send_modify(|a| *a = lsn);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "kafka delivery failed; no further LSN will be confirmed");
                        let _ = failed_tx.send(Some(e));
                        return;
                    }
                }
            }
        });
        Ok(Publisher {
            producer,
            topic: topic.to_owned(),
            key: key.to_owned(),
            max_bytes,
            pending: tx,
            inflight,
            acked,
            failed,
            batch: std::sync::Mutex::new(Batch::default()),
        })
    }

    /// Queues one envelope. `done_lsn`: the LSN that counts as acknowledged once this and every
    /// earlier delivery succeeded (a Commit's end LSN). Envelopes wait in a batch that goes out
    /// as one message when the next would not fit under the message limit, or at `flush`. An
    /// envelope that does not fit in a batch on its own goes alone, as fragments, in order;
    /// only the last carries `done_lsn`.
    pub async fn send(&self, env: &Envelope, done_lsn: Option<u64>) -> Result<(), BrokerError> {
        if let Some(e) = self.failed.borrow().clone() {
            return Err(e);
        }
        let payload = env.encode_to_vec();
        let room = self.max_bytes.saturating_sub(BATCH_HEADER);
        if framed_len(payload.len()) > room {
            self.flush().await?;
            self.inflight.fetch_add(1, Ordering::SeqCst);
            if payload.len() <= self.max_bytes {
                return self.send_payload(payload, done_lsn, 1).await;
            }
            let pieces = fragments(env, &payload, self.max_bytes);
            metrics::counter!(crate::metrics::FRAGMENTED_EVENTS).increment(1);
            let last = pieces.len() - 1;
            for (i, p) in pieces.into_iter().enumerate() {
                let (lsn, events) = if i == last { (done_lsn, 1) } else { (None, 0) };
                self.send_payload(p, lsn, events).await?;
            }
            return Ok(());
        }
        let full = {
            let b = self.batch.lock().unwrap_or_else(|p| p.into_inner());
            b.bytes + framed_len(payload.len()) > room
        };
        if full {
            self.flush().await?;
        }
        self.inflight.fetch_add(1, Ordering::SeqCst);
        let mut b = self.batch.lock().unwrap_or_else(|p| p.into_inner());
        if b.header.is_none() {
            b.header = Some(Envelope {
                run_id: env.run_id,
                epoch: env.epoch,
                source_id: env.source_id.clone(),
                phase: env.phase,
                ..Default::default()
            });
        }
        b.bytes += framed_len(payload.len());
        b.items.push(payload);
        if done_lsn.is_some() {
            b.done_lsn = done_lsn;
        }
        Ok(())
    }

    /// Hands the batched envelopes to the producer as one message.
    pub async fn flush(&self) -> Result<(), BrokerError> {
        let batch = {
            let mut b = self.batch.lock().unwrap_or_else(|p| p.into_inner());
            if b.items.is_empty() {
                return Ok(());
            }
            std::mem::take(&mut *b)
        };
        let (done_lsn, events) = (batch.done_lsn, batch.items.len() as u64);
        if events > 1 {
            metrics::counter!(crate::metrics::BATCHED_EVENTS).increment(events);
        }
        self.send_payload(batch_payload(batch), done_lsn, events)
            .await
    }

    /// Sends one message; `events`: the envelopes it completes (counted in flight already).
    async fn send_payload(
        &self,
        payload: Vec<u8>,
        done_lsn: Option<u64>,
        events: u64,
    ) -> Result<(), BrokerError> {
        let fut = loop {
            let rec = FutureRecord::to(&self.topic)
                .key(&self.key)
                .payload(&payload);
            match self.producer.send_result(rec) {
                Ok(f) => break f,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(kerr(e)),
            }
        };
        self.pending
            .send(Pending {
                fut,
                done_lsn,
                events,
            })
            .await
            .map_err(|_| BrokerError::local("ack tracker stopped"))
    }

    /// Deliveries not yet acknowledged.
    pub fn inflight(&self) -> u64 {
        self.inflight.load(Ordering::SeqCst)
    }

    /// Highest LSN whose events (and all before) Kafka acknowledged.
    pub fn acked_lsn(&self) -> u64 {
        *self.acked.borrow()
    }

    pub fn failure(&self) -> Option<BrokerError> {
        self.failed.borrow().clone()
    }

    /// Waits until everything sent so far is acknowledged (or a delivery failed).
    pub async fn drain(&self) -> Result<(), BrokerError> {
        self.flush().await?;
        loop {
            if let Some(e) = self.failure() {
                return Err(e);
            }
            if self.inflight() == 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// An encoded envelope cut into fragment envelopes of at most `max_bytes` each, carrying the
/// envelope's run and event number.
pub fn fragments(env: &Envelope, payload: &[u8], max_bytes: usize) -> Vec<Vec<u8>> {
    use crate::proto::{Fragment, envelope::Event};
    let piece = max_bytes
        .saturating_sub(crate::config::MESSAGE_OVERHEAD)
        .max(1);
    let count = payload.len().div_ceil(piece) as u32;
    payload
        .chunks(piece)
        .enumerate()
        .map(|(i, data)| {
            Envelope {
                run_id: env.run_id,
                seq: env.seq,
                epoch: env.epoch,
                phase: env.phase,
                event: Some(Event::Fragment(Fragment {
                    index: i as u32,
                    count,
                    data: data.to_vec(),
                })),
                ..Default::default()
            }
            .encode_to_vec()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_stay_within_the_limit_and_join_back() {
        use crate::proto::envelope::Event;
        let env = Envelope {
            run_id: 7,
            seq: 9,
            source_id: "s".repeat(200),
            event: Some(Event::Row(crate::proto::RowChange {
                table: "public.t".into(),
                new_values: vec![crate::proto::Value {
                    kind: Some(crate::proto::value::Kind::Text("x".repeat(50_000))),
                }],
                ..Default::default()
            })),
            ..Default::default()
        };
        let payload = env.encode_to_vec();
        let pieces = fragments(&env, &payload, 4096);
        assert!(pieces.len() > 10);
        let mut joined = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            assert!(p.len() <= 4096, "piece {i} is {} bytes", p.len());
            let f = Envelope::decode(p.as_slice()).unwrap();
            assert_eq!((f.run_id, f.seq), (7, 9));
            let Some(Event::Fragment(f)) = f.event else {
                panic!("not a fragment")
            };
            assert_eq!((f.index as usize, f.count as usize), (i, pieces.len()));
            joined.extend_from_slice(&f.data);
        }
        assert_eq!(Envelope::decode(joined.as_slice()).unwrap(), env);
    }

    #[test]
    fn a_batch_is_one_envelope_whose_inner_envelopes_decode_in_order() {
        use crate::proto::envelope::Event;
        let envs: Vec<Envelope> = (1..=5u64)
            .map(|seq| Envelope {
                run_id: 3,
                seq,
                epoch: 2,
                source_id: "src".into(),
                event: Some(Event::Heartbeat(Default::default())),
                ..Default::default()
            })
            .collect();
        let mut batch = Batch {
            header: Some(Envelope {
                run_id: 3,
                epoch: 2,
                source_id: "src".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        for e in &envs {
            let p = e.encode_to_vec();
            batch.bytes += framed_len(p.len());
            batch.items.push(p);
        }
        let bytes = batch.bytes;
        let payload = batch_payload(batch);
        assert!(payload.len() <= bytes + BATCH_HEADER);
        let outer = Envelope::decode(payload.as_slice()).unwrap();
        assert_eq!((outer.run_id, outer.epoch, outer.seq), (3, 2, 0));
        assert_eq!(crate::proto::unbatch(outer), envs);
        // One envelope goes as itself.
        let one = Batch {
            items: vec![envs[0].encode_to_vec()],
            ..Default::default()
        };
        assert_eq!(
            Envelope::decode(batch_payload(one).as_slice()).unwrap(),
            envs[0]
        );
    }

    #[test]
    fn ack_tracker_acknowledges_only_the_delivered_prefix() {
        let mut t = AckTracker::default();
        assert_eq!(t.delivered(Ok(()), None).unwrap(), 0);
        assert_eq!(t.delivered(Ok(()), Some(100)).unwrap(), 100);
        assert_eq!(t.delivered(Ok(()), None).unwrap(), 100);
        assert_eq!(t.delivered(Ok(()), Some(200)).unwrap(), 200);
        // A failure is sticky: a later success (even with a higher LSN) acknowledges nothing.
        assert!(t.delivered(Err(BrokerError::local("down")), None).is_err());
        assert!(t.delivered(Ok(()), Some(300)).is_err());
        assert_eq!(t.acked(), 200);
    }
}
