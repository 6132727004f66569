//! librdkafka client settings shared by the producer, the consumers and the admin client: the
//! brokers and veil's defaults, overridden by the configured `kafka.options`.

use rdkafka::ClientConfig;

use crate::config::KafkaConfig;

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
