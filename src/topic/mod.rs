//! Topic names, topic filters and the subscription trie.
//! Owns the MQTT topic syntax rules (validation, `$share/` parsing) and matching of topic names
//! against stored filters; knows nothing of sessions, delivery or locking.
//! Invariant: a `$` topic is never matched by a filter whose first level is a wildcard.

mod error;
mod filter;
mod trie;
mod validate;

#[cfg(test)]
mod naive;
#[cfg(test)]
mod proptests;

pub use error::TopicError;
pub use filter::TopicFilter;
pub use trie::SubscriptionTrie;
pub use validate::{
    check_topic_levels, split_subscription, validate_topic_filter, validate_topic_name,
};

/// Whether topic name `topic` matches filter `filter` (one pair; the trie does this for many
/// filters at once). A `$` topic is not matched by a leading wildcard.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}
