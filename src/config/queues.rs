//! `[[queues]]`: declared point-to-point queues, each holding the messages that match its
//! filter until one consumer (a subscriber to `$queue/{name}`) takes each; and `[metrics]`,
//! which bounds how many of them (and of the shared groups) get their own series.

use serde::Deserialize;

use super::Strategy;
use crate::topic::TopicFilter;

/// What a full queue does with one more message.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Refuse the new message: v5 publishers get PUBACK/PUBREC 0x97 (Quota exceeded); 3.1.1
    /// ones are acknowledged as usual (their protocol has no refusal), and it is counted.
    #[default]
    Reject,
    /// Make room by dropping the oldest waiting messages.
    DropOldest,
}

/// One `[[queues]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// `[A-Za-z0-9_-]+`, unique: consumers subscribe to `$queue/{name}`.
    pub name: String,
    /// Every PUBLISH matching it is enqueued, besides its ordinary delivery.
    pub filter: String,
    /// Messages waiting (not counting those in flight to a consumer) at most.
    #[serde(default = "default_max_messages")]
    pub max_messages: usize,
    /// Payload bytes waiting at most.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// What happens at a bound.
    #[serde(default)]
    pub overflow: Overflow,
    /// How the next consumer is picked; default: `[shared] strategy`.
    #[serde(default)]
    pub strategy: Option<Strategy>,
}

fn default_max_messages() -> usize {
    100_000
}

fn default_max_bytes() -> u64 {
    100 * 1024 * 1024
}

/// Whether `name` may name a queue: ASCII letters, digits, `_` and `-`, at least one.
pub fn valid_queue_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl QueueConfig {
    /// The first key with a value it does not allow, and what is allowed.
    pub(super) fn problem(&self) -> Option<(&'static str, &'static str)> {
        if !valid_queue_name(&self.name) {
            return Some(("name", "letters, digits, '_' and '-' (at least one)"));
        }
        match TopicFilter::parse(&self.filter) {
            Err(_) => return Some(("filter", "a valid MQTT topic filter")),
            Ok(f) if f.share().is_some() || self.filter.starts_with("$queue/") => {
                return Some((
                    "filter",
                    "an ordinary topic filter, not $share/… or $queue/…",
                ))
            }
            Ok(_) => {}
        }
        if self.max_messages == 0 {
            return Some(("max_messages", "an integer ≥ 1"));
        }
        if self.max_bytes == 0 {
            return Some(("max_bytes", "an integer ≥ 1 (bytes)"));
        }
        None
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Queues and shared groups with series of their own, together; the rest are summed under
    /// `queue="_other"` / `group="_other"`.
    pub max_labelled_queues: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            max_labelled_queues: 100,
        }
    }
}
