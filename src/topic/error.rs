//! The error type for topic names, topic filters and shared-subscription syntax.
//! Each message carries the id of the spec rule it enforces; mapping to a reason code
//! (0x8F Topic Filter invalid, 0x90 Topic Name invalid) is left to the caller, who knows which it checked.

use thiserror::Error;

/// Why a topic name, topic filter or shared subscription is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TopicError {
    /// The topic name or filter is the empty string.
    #[error("[MQTT-4.7.3-1] topic must be at least one character long")]
    Empty,
    /// The string is longer than a UTF-8 string field can carry.
    #[error("[MQTT-4.7.3-3] topic is {len} bytes, more than 65535")]
    TooLong {
        /// Length of the string in bytes.
        len: usize,
    },
    /// The string contains U+0000.
    #[error("[MQTT-4.7.3-2] topic contains the null character U+0000")]
    NullCharacter,
    /// A topic name contains `+` or `#`.
    #[error("[MQTT-3.3.2-2] topic name contains a wildcard")]
    WildcardInTopicName,
    /// `#` is not the whole last level of a filter.
    #[error(
        "[MQTT-4.7.1-1] (3.1.1: [MQTT-4.7.1-2]) '#' must be the last level and occupy it entirely"
    )]
    MultiLevelWildcardNotLast,
    /// `+` shares a level with other characters.
    #[error("[MQTT-4.7.1-2] (3.1.1: [MQTT-4.7.1-3]) '+' must occupy an entire level")]
    SingleLevelWildcardNotWholeLevel,
    /// More levels than the configured maximum (a broker limit, not a spec rule).
    #[error("topic has {levels} levels, more than the configured maximum {max}")]
    TooManyLevels {
        /// Number of levels in the topic.
        levels: usize,
        /// The configured maximum.
        max: usize,
    },
    /// `$share/` is followed by an empty ShareName.
    #[error("[MQTT-4.8.2-1] shared subscription has an empty ShareName")]
    EmptyShareName,
    /// The ShareName contains `+` or `#`.
    #[error("[MQTT-4.8.2-2] ShareName must not contain '/', '+' or '#'")]
    InvalidShareName,
    /// A topic name under `$queue/`, which names declared queues to consume from: a PUBLISH
    /// there is refused as an invalid topic name (Tern's rule, not the spec's).
    #[error("topic names under $queue/ are reserved for declared queues")]
    QueueTopic,
    /// Cluster mode: the topic, escaped for NATS, is longer than a NATS subject may be (Tern's
    /// limit, not the spec's).
    #[error("topic is too long for the cluster's NATS subjects")]
    TooLongForCluster,
    /// The ShareName is not followed by `/` and a non-empty topic filter.
    #[error("[MQTT-4.8.2-2] ShareName must be followed by '/' and a topic filter")]
    MissingShareFilter,
}

impl TopicError {
    /// The rule broken, as a fixed message (without the figures of [`TopicError::TooLong`] and
    /// [`TopicError::TooManyLevels`]), for errors that must be `'static`.
    pub fn rule(&self) -> &'static str {
        match self {
            TopicError::Empty => "[MQTT-4.7.3-1] topic must be at least one character long",
            TopicError::TooLong { .. } => "[MQTT-4.7.3-3] topic longer than 65535 bytes",
            TopicError::NullCharacter => "[MQTT-4.7.3-2] topic contains the null character U+0000",
            TopicError::WildcardInTopicName => "[MQTT-3.3.2-2] topic name contains a wildcard",
            TopicError::MultiLevelWildcardNotLast => {
                "[MQTT-4.7.1-1] (3.1.1: [MQTT-4.7.1-2]) '#' must be the last level and occupy it entirely"
            }
            TopicError::SingleLevelWildcardNotWholeLevel => {
                "[MQTT-4.7.1-2] (3.1.1: [MQTT-4.7.1-3]) '+' must occupy an entire level"
            }
            TopicError::TooManyLevels { .. } => "topic has more levels than the configured maximum",
            TopicError::EmptyShareName => "[MQTT-4.8.2-1] shared subscription has an empty ShareName",
            TopicError::InvalidShareName => "[MQTT-4.8.2-2] ShareName must not contain '/', '+' or '#'",
            TopicError::MissingShareFilter => {
                "[MQTT-4.8.2-2] ShareName must be followed by '/' and a topic filter"
            }
            TopicError::QueueTopic => "topic names under $queue/ are reserved for declared queues",
            TopicError::TooLongForCluster => "topic is too long for the cluster's NATS subjects",
        }
    }

    /// Whether the error is in the `$share/{ShareName}/` syntax (a protocol error in MQTT 5)
    /// rather than in the topic filter's own grammar (a malformed packet).
    pub fn is_share_syntax(&self) -> bool {
        matches!(
            self,
            TopicError::EmptyShareName
                | TopicError::InvalidShareName
                | TopicError::MissingShareFilter
        )
    }
}
