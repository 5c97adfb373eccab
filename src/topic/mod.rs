//! Topic names, topic filters and the subscription trie.
//! Owns the MQTT topic syntax rules (validation, `$share/` parsing) and matching of topic names
//! against stored filters; knows nothing of sessions, delivery or locking.
//! Invariant: a `$` topic is never matched by a filter whose first level is a wildcard.

mod error;
mod trie;
mod validate;

#[cfg(test)]
mod naive;
#[cfg(test)]
mod proptests;

pub use error::TopicError;
pub use trie::SubscriptionTrie;
pub use validate::{parse_subscription, validate_topic_filter, validate_topic_name};
