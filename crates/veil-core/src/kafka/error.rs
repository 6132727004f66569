//! Broker errors and what happens next: librdkafka's error codes are sorted into transient
//! (retry: the broker is down, unreachable or busy) and definite (stop for a person: a message the
//! broker will never take, authorization, a malformed topic) in one place, [`code_class`].

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::error::{Classify, ErrorClass};

#[derive(Debug, thiserror::Error, Clone)]
pub enum BrokerError {
    /// Broker unreachable, timeouts: retry by restarting from the confirmed LSN.
    #[error("kafka: {message}")]
    Kafka {
        code: Option<RDKafkaErrorCode>,
        message: String,
    },
    #[error("kafka delivery failed: {message}")]
    Delivery {
        code: Option<RDKafkaErrorCode>,
        message: String,
    },
    #[error("topic {topic}: {message}")]
    Topic { topic: String, message: String },
    #[error("malformed envelope at offset {offset} of {topic}: {message}")]
    Decode {
        topic: String,
        offset: i64,
        message: String,
    },
}

impl BrokerError {
    /// A client error (no broker code).
    pub fn local(message: impl Into<String>) -> Self {
        BrokerError::Kafka {
            code: None,
            message: message.into(),
        }
    }
}

/// An rdkafka error with its code kept for classification.
pub fn kerr(e: KafkaError) -> BrokerError {
    BrokerError::Kafka {
        code: e.rdkafka_error_code(),
        message: e.to_string(),
    }
}

/// The delivery failure of one message.
pub fn delivery(e: KafkaError) -> BrokerError {
    BrokerError::Delivery {
        code: e.rdkafka_error_code(),
        message: e.to_string(),
    }
}

/// What happens next after a librdkafka error code: the one place they are sorted.
pub fn code_class(code: RDKafkaErrorCode) -> ErrorClass {
    use RDKafkaErrorCode as C;
    match code {
        // Messages and requests the broker will never take, whatever the retry.
        C::MessageSizeTooLarge
        | C::InvalidMessageSize
        | C::InvalidMessage
        | C::InvalidRecord
        | C::InvalidRequiredAcks
        | C::InvalidTopic
        | C::InvalidPartitions
        | C::InvalidReplicationFactor
        | C::InvalidConfig
        | C::UnsupportedVersion
        | C::UnsupportedForMessageFormat
        | C::UnsupportedCompressionType
        | C::PolicyViolation
        | C::Fatal
        | C::InvalidArgument
        | C::Conflict
        | C::UnsupportedFeature => ErrorClass::Definite,
        // Who may do what: a person must grant it.
        C::TopicAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication
        | C::DelegationTokenAuthorizationFailed => ErrorClass::Definite,
        // Everything else (transport failures, all brokers down, timeouts, leader changes,
        // throttling, a full queue, unknown topic while it is being created): retry.
        _ => ErrorClass::Transient,
    }
}

impl Classify for BrokerError {
    fn class(&self) -> ErrorClass {
        match self {
            BrokerError::Kafka { code, .. } | BrokerError::Delivery { code, .. } => {
                code.map(code_class).unwrap_or(ErrorClass::Transient)
            }
            BrokerError::Topic { .. } => ErrorClass::Definite,
            // The topic's tail is not ours or is corrupt: restarting reads the same bytes.
            BrokerError::Decode { .. } => ErrorClass::Definite,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_sorted_by_what_happens_next() {
        assert_eq!(
            code_class(RDKafkaErrorCode::MessageSizeTooLarge),
            ErrorClass::Definite
        );
        assert_eq!(
            code_class(RDKafkaErrorCode::TopicAuthorizationFailed),
            ErrorClass::Definite
        );
        assert_eq!(
            code_class(RDKafkaErrorCode::AllBrokersDown),
            ErrorClass::Transient
        );
        assert_eq!(
            code_class(RDKafkaErrorCode::BrokerTransportFailure),
            ErrorClass::Transient
        );
        assert_eq!(
            code_class(RDKafkaErrorCode::MessageTimedOut),
            ErrorClass::Transient
        );
        assert_eq!(
            code_class(RDKafkaErrorCode::RequestTimedOut),
            ErrorClass::Transient
        );
        let decode = BrokerError::Decode {
            topic: "t".into(),
            offset: 3,
            message: "x".into(),
        };
        assert_eq!(decode.class(), ErrorClass::Definite);
        assert_eq!(BrokerError::local("x").class(), ErrorClass::Transient);
    }
}
