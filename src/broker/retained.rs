//! Retained messages: one per topic, replaced by the next retained PUBLISH, deleted by an empty
//! one, sent to new subscriptions whose filter matches. Expired ones are dropped when found.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;

use crate::session::Message;
use crate::topic::SubscriptionTrie;

/// The retained-message store.
#[derive(Debug, Default)]
pub struct Retained {
    by_topic: RwLock<HashMap<String, Arc<Message>>>,
}

impl Retained {
    /// Stores, replaces or (empty payload) deletes the retained message of `msg`'s topic
    /// [MQTT-3.3.1-5, -6, -7].
    pub fn update(&self, msg: &Arc<Message>) {
        let mut map = self.by_topic.write();
        if msg.publish.payload.is_empty() {
            map.remove(msg.topic());
        } else {
            map.insert(msg.topic().to_string(), Arc::clone(msg));
        }
    }

    /// Number of retained messages and their payload bytes.
    pub fn stats(&self) -> (usize, usize) {
        let map = self.by_topic.read();
        (
            map.len(),
            map.values().map(|m| m.publish.payload.len()).sum(),
        )
    }

    /// Retained messages whose topic matches `filter`, unexpired, in topic order.
    pub fn matching(&self, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        if !filter.contains(['+', '#']) {
            // A plain topic filter names at most one retained message.
            let found = self.by_topic.read().get(filter).map(Arc::clone);
            return match found {
                Some(m) if m.is_expired(now) => {
                    let mut map = self.by_topic.write();
                    if map.get(filter).is_some_and(|m| m.is_expired(now)) {
                        map.remove(filter);
                    }
                    Vec::new()
                }
                Some(m) => vec![m],
                None => Vec::new(),
            };
        }
        let mut one = SubscriptionTrie::new();
        one.get_or_insert_with(filter, || ());
        let mut expired = Vec::new();
        let mut found: Vec<Arc<Message>> = Vec::new();
        {
            let map = self.by_topic.read();
            for (topic, msg) in map.iter() {
                let mut hit = false;
                one.for_each_match(topic, |_| hit = true);
                if !hit {
                    continue;
                }
                if msg.is_expired(now) {
                    expired.push(topic.clone());
                } else {
                    found.push(Arc::clone(msg));
                }
            }
        }
        if !expired.is_empty() {
            let mut map = self.by_topic.write();
            for t in expired {
                if map.get(&t).is_some_and(|m| m.is_expired(now)) {
                    map.remove(&t);
                }
            }
        }
        found.sort_by(|a, b| a.topic().cmp(b.topic()));
        found
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.by_topic.read().len()
    }
}
