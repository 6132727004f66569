//! Kafka publishing: an idempotent producer (acks=all) writing protobuf envelopes to one
//! partition per source database, keyed by the source id (never a column value), and an ack
//! tracker that awaits every delivery in order. Only when a Commit's delivery *and every delivery
//! before it* succeeded does its end LSN become "acknowledged"; only that LSN is ever confirmed to
//! PostgreSQL. A failed delivery is fatal: the stream stops and resumes from the last confirmed
//! LSN (the sink drops the duplicates).
//!
//! Also: topic creation (the audit topic is compacted) and reading the topic's last envelope,
//! which is how a restarted stream recovers its epoch and the last published commit.

use prost::Message;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

use crate::config::KafkaConfig;
use crate::proto::Envelope;

#[derive(Debug, thiserror::Error, Clone)]
pub enum PublishError {
    /// Broker unreachable, timeouts: retry by restarting from the confirmed LSN.
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("kafka delivery failed: {0}")]
    Delivery(String),
    #[error("topic {topic}: {message}")]
    Topic { topic: String, message: String },
    #[error("malformed envelope at offset {offset} of {topic}: {message}")]
    Decode {
        topic: String,
        offset: i64,
        message: String,
    },
}

fn kerr(e: KafkaError) -> PublishError {
    PublishError::Kafka(e.to_string())
}

/// librdkafka client settings shared by producers and consumers.
pub fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    client_config_with(cfg, &[])
}

/// Client settings with veil's `defaults` first; the configured options override them.
pub fn client_config_with(cfg: &KafkaConfig, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    for (k, v) in &cfg.options {
        c.set(k, v);
    }
    c
}

/// Creates `topic` with one partition if it does not exist.
pub async fn ensure_topic(
    cfg: &KafkaConfig,
    topic: &str,
    compacted: bool,
) -> Result<(), PublishError> {
    let admin: AdminClient<_> = client_config(cfg).create().map_err(kerr)?;
    let mut t = NewTopic::new(topic, 1, TopicReplication::Fixed(cfg.replication_factor));
    if compacted {
        t = t.set("cleanup.policy", "compact");
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let res = admin.create_topics([&t], &opts).await.map_err(kerr)?;
    for r in res {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(PublishError::Topic {
                    topic: name,
                    message: code.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Reads the last envelope of partition 0 of `topic`, if any.
///
/// A predecessor that was killed may still have produce requests in flight that the broker
/// appends a moment later, so the end of the topic is first watched until it stays put for
/// `settle`.
pub fn read_last(
    cfg: &KafkaConfig,
    topic: &str,
    settle: Duration,
) -> Result<Option<(i64, Envelope)>, PublishError> {
    let consumer: BaseConsumer = client_config(cfg)
        .set("group.id", "veil-tail-reader")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(kerr)?;
    let mut previous = None;
    let (low, high) = loop {
        let w = consumer
            .fetch_watermarks(topic, 0, Duration::from_secs(20))
            .map_err(kerr)?;
        if previous == Some(w) || settle.is_zero() {
            break w;
        }
        previous = Some(w);
        std::thread::sleep(settle);
    };
    if high <= low {
        return Ok(None);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(high - 1))
        .map_err(kerr)?;
    consumer.assign(&tpl).map_err(kerr)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) if m.offset() == high - 1 => {
                let env = Envelope::decode(m.payload().unwrap_or_default()).map_err(|e| {
                    PublishError::Decode {
                        topic: topic.to_owned(),
                        offset: m.offset(),
                        message: e.to_string(),
                    }
                })?;
                return Ok(Some((m.offset(), env)));
            }
            Some(Ok(_)) | None => {}
            Some(Err(e)) => return Err(kerr(e)),
        }
    }
    Err(PublishError::Kafka(format!(
        "timed out reading the last message of {topic}"
    )))
}

struct Pending {
    fut: DeliveryFuture,
    done_lsn: Option<u64>,
}

/// Sends envelopes and tracks their deliveries.
pub struct Publisher {
    producer: FutureProducer,
    topic: String,
    key: String,
    pending: mpsc::Sender<Pending>,
    inflight: Arc<AtomicU64>,
    acked: watch::Receiver<u64>,
    failed: watch::Receiver<Option<PublishError>>,
}

impl Publisher {
    pub fn new(cfg: &KafkaConfig, topic: &str, key: &str) -> Result<Self, PublishError> {
        let producer: FutureProducer = client_config_with(
            cfg,
            &[
                ("linger.ms", "5"),
                ("message.timeout.ms", "120000"),
                ("message.max.bytes", "16777216"),
                ("queue.buffering.max.messages", "200000"),
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
            while let Some(p) = rx.recv().await {
                let res = match p.fut.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(PublishError::Delivery(e.to_string())),
                    Err(_) => Err(PublishError::Delivery(
                        "producer dropped before delivery".into(),
                    )),
                };
                match res {
                    Ok(()) => {
                        infl.fetch_sub(1, Ordering::SeqCst);
                        if let Some(lsn) = p.done_lsn {
                            acked_tx.send_modify(|a| *a = (*a).max(lsn));
                        }
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
            pending: tx,
            inflight,
            acked,
            failed,
        })
    }

    /// Queues one envelope. `done_lsn`: the LSN that counts as acknowledged once this and every
    /// earlier delivery succeeded (a Commit's end LSN).
    pub async fn send(&self, env: &Envelope, done_lsn: Option<u64>) -> Result<(), PublishError> {
        if let Some(e) = self.failed.borrow().clone() {
            return Err(e);
        }
        let payload = env.encode_to_vec();
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
        self.inflight.fetch_add(1, Ordering::SeqCst);
        self.pending
            .send(Pending { fut, done_lsn })
            .await
            .map_err(|_| PublishError::Delivery("ack tracker stopped".into()))
    }

    /// Deliveries not yet acknowledged.
    pub fn inflight(&self) -> u64 {
        self.inflight.load(Ordering::SeqCst)
    }

    /// Highest LSN whose events (and all before) Kafka acknowledged.
    pub fn acked_lsn(&self) -> u64 {
        *self.acked.borrow()
    }

    pub fn failure(&self) -> Option<PublishError> {
        self.failed.borrow().clone()
    }

    /// Waits until everything sent so far is acknowledged (or a delivery failed).
    pub async fn drain(&self) -> Result<(), PublishError> {
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
