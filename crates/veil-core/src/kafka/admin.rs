//! Topics: creation (the audit topic compacted) and reading a topic's last envelope, which is how
//! a restarted stream recovers its epoch and the last published commit.

use prost::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use std::time::Duration;

use super::client::client_config;
use super::error::{BrokerError, kerr};
use crate::config::KafkaConfig;
use crate::proto::Envelope;

/// Creates `topic` with one partition if it does not exist.
pub async fn ensure_topic(
    cfg: &KafkaConfig,
    topic: &str,
    compacted: bool,
) -> Result<(), BrokerError> {
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
                return Err(BrokerError::Topic {
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
) -> Result<Option<(i64, Envelope)>, BrokerError> {
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
                    BrokerError::Decode {
                        topic: topic.to_owned(),
                        offset: m.offset(),
                        message: e.to_string(),
                    }
                })?;
                // A batch: its last envelope is the topic's last.
                let Some(env) = crate::proto::unbatch(env).pop() else {
                    return Err(BrokerError::Decode {
                        topic: topic.to_owned(),
                        offset: m.offset(),
                        message: "an empty batch".into(),
                    });
                };
                return Ok(Some((m.offset(), env)));
            }
            Some(Ok(_)) | None => {}
            Some(Err(e)) => return Err(kerr(e)),
        }
    }
    Err(BrokerError::local(format!(
        "timed out reading the last message of {topic}"
    )))
}
