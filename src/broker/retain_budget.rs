//! The retained-message budget (`limits.max_retained_messages`, `max_retained_bytes`) as the
//! broker applies it to every retained message that enters: from clients, wills, bridges and
//! other cluster nodes. Messages read back from the store at start are not bounded (none is
//! dropped; only new ones are refused). A refusal is counted (`tern_limit_hits_total`) and
//! logged at most once a minute.

use std::sync::Arc;

use super::retained::{Budget, Over};
use super::BrokerState;
use crate::logged::{clip, Throttle};
use crate::metrics;
use crate::session::Message;

impl BrokerState {
    /// The budget in force (a reload changes it for what comes next).
    fn retained_budget(&self) -> Budget {
        let limits = &self.config().limits;
        Budget {
            messages: limits.max_retained_messages,
            bytes: limits.max_retained_bytes,
        }
    }

    /// Whether a retained message of `bytes` for `topic` fits the budget now: a v5 publisher
    /// of QoS 1/2 is refused (0x97) before its message goes anywhere. Counted and logged when
    /// it does not fit.
    pub fn retained_room(&self, topic: &str, bytes: usize) -> Result<(), Over> {
        self.retained
            .room(topic, bytes, self.retained_budget())
            .inspect_err(|over| refused(topic, *over))
    }

    /// Stores (or deletes) `msg`'s retained copy within the budget; false (counted and
    /// logged) when it does not fit: the message is still routed, just not retained.
    pub(super) fn retain_within_budget(&self, msg: &Arc<Message>) -> bool {
        match self.retained.update_within(msg, self.retained_budget()) {
            Ok(()) => true,
            Err(over) => {
                refused(msg.topic(), over);
                false
            }
        }
    }

    /// Cluster mode: `msg` as it goes to the cluster, its RETAIN flag cleared if its retained
    /// copy does not fit this node's budget (so the cluster does not keep what this node
    /// refuses); it is still delivered.
    pub(super) fn within_budget_for_cluster(&self, msg: Arc<Message>) -> Arc<Message> {
        let p = &msg.publish;
        if !p.retain
            || p.payload.is_empty()
            || self.retained_room(&p.topic, p.payload.len()).is_ok()
        {
            return msg;
        }
        let mut publish = msg.publish.clone();
        publish.retain = false;
        let mut copy = Message::new(publish, msg.publisher.clone(), msg.accepted);
        copy.expires_at = msg.expires_at;
        Arc::new(copy)
    }
}

/// Counts a retained message refused by the budget, and logs it at most once a minute.
fn refused(topic: &str, over: Over) {
    metrics::limit_hit(over.limit());
    static LOG: Throttle = Throttle::per(60);
    if LOG.allow() {
        tracing::warn!(
            topic = %clip(topic),
            limit = over.limit(),
            "retained message not kept: the retained budget is full (logged at most once a minute; \
             counted in tern_limit_hits_total)"
        );
    }
}
