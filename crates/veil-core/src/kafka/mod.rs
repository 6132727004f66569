//! Kafka: client settings (`client`), topic admin and tail reading (`admin`), the ordered
//! idempotent producer with its ack tracker (`producer`), and broker errors sorted by what
//! happens next (`error`). Shared by both sides; knows nothing of keys or rules.

pub mod admin;
pub mod client;
pub mod error;
pub mod producer;

/// The largest message veil sends: `message.max.bytes` from `[kafka] options` when set, else
/// 1,000,000 bytes (Apache Kafka's default broker limit is 1,048,588; librdkafka's own is
/// larger). One rule for every producer: an event larger than this is cut into fragments
/// (`producer`), and batches (when events are batched) stay within it.
pub fn max_message_bytes(
    cfg: &crate::config::KafkaConfig,
) -> Result<usize, crate::config::ConfigError> {
    match cfg.options.get("message.max.bytes") {
        None => Ok(1_000_000),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n >= MIN_MESSAGE_BYTES => Ok(n),
            _ => Err(crate::config::ConfigError::Invalid(format!(
                "[kafka] options: message.max.bytes = {v:?} must be a number of bytes of at least {MIN_MESSAGE_BYTES}"
            ))),
        },
    }
}

/// The smallest `message.max.bytes` veil accepts (room for an envelope's fields and a piece).
pub const MIN_MESSAGE_BYTES: usize = 4096;

/// What a message holds besides a fragment's data: the envelope's fields, the record's key and
/// framing.
pub const MESSAGE_OVERHEAD: usize = 1024;
