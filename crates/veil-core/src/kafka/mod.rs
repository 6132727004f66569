//! Kafka: client settings (`client`), topic admin and tail reading (`admin`), the ordered
//! idempotent producer with its ack tracker (`producer`), and broker errors sorted by what
//! happens next (`error`). Shared by both sides; knows nothing of keys or rules.

pub mod admin;
pub mod client;
pub mod error;
pub mod producer;
