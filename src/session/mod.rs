//! What outlives a connection, and the one home of the QoS 1/2 flows: packet ids, the outbound
//! inflight window and its ordered resend, the inbound QoS 2 set, and what the store must learn
//! at each step. Pure data, no tokio and no sockets: every event ([`Session::start`],
//! [`Session::on_puback`], [`Session::on_pubrec`], [`Session::on_pubcomp`],
//! [`Session::on_publish_qos2`], [`Session::acknowledge`], [`Session::on_pubrel`],
//! [`Session::resend`]) appends [`Effect`]s to a caller-owned `Vec` that a carrier (a client's
//! connection, a bridge's link) carries out; [`Gate`] holds what must wait for the store.
//!
//! Invariants kept here: inflight ≤ window, unique packet ids, in-order DUP resend on resume,
//! inbound QoS 2 forwarded once until PUBREL, PUBREL never before the store holds the flow at
//! PUBREL, a stored QoS 2 PUBLISH never before the store knows its packet id.

mod effect;
mod flights;
mod gate;
mod inbound;
mod message;
mod outbound;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

pub use effect::{AckOutcome, Effect, Qos2In, Reply, ReplyKind, Settled, StoreOp};
pub use gate::Gate;
pub use message::{Delivery, Link, Message, Seq};

use crate::protocol::{PacketId, SubscriptionOptions};
use crate::topic::TopicFilter;
use flights::Flights;

/// Outbound QoS 1/2 flows in progress across every session (for the metrics): kept by each
/// change to a session's inflight list, and by a session's drop. Each thread counts on a
/// cache line of its own (one shared atomic cost two contended read-modify-writes per QoS 1
/// message, between the cores that send and acknowledge it); a read sums the shards.
static INFLIGHT: [InflightShard; crate::metrics::SHARDS] =
    [const { InflightShard(AtomicI64::new(0)) }; crate::metrics::SHARDS];

/// One thread's share of [`INFLIGHT`]: a flow may start on one thread and end on another, so a
/// shard may go negative; only the sum means anything.
#[repr(align(128))]
struct InflightShard(AtomicI64);

/// `n` more (or, negative, fewer) flows in progress.
fn count_inflight(n: i64) {
    INFLIGHT[crate::metrics::shard_index()]
        .0
        .fetch_add(n, Ordering::Relaxed);
}

/// Outbound QoS 1/2 deliveries sent and not yet completed, in all sessions.
pub fn inflight_total() -> i64 {
    INFLIGHT.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
}

/// Session Expiry Interval meaning "never expires".
pub const NEVER_EXPIRES: u32 = u32::MAX;

/// One subscription as the client made it; the router holds the matching index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Options from SUBSCRIBE.
    pub options: SubscriptionOptions,
    /// v5 Subscription Identifier.
    pub id: Option<u32>,
}

/// The state of one client's session.
#[derive(Debug)]
pub struct Session {
    client_id: Arc<str>,
    /// Seconds the session outlives its connection; [`NEVER_EXPIRES`] for ever.
    pub expiry_interval: u32,
    /// Ordered maps, not hash maps: they cost nothing while empty, and most sessions hold a few
    /// entries at most (memory per idle client).
    subscriptions: BTreeMap<TopicFilter, Subscription>,
    /// Outbound flows in sending order, found by packet id in O(1) (one pointer while idle).
    inflight: Flights,
    window: u16,
    next_pkid: PacketId,
    /// Inbound QoS 2 messages awaiting PUBREL, each with its serial number, and the cluster's
    /// claim ([`Session::claim`]): boxed, only while there is some.
    seldom: inbound::Seldom,
}

impl Drop for Session {
    fn drop(&mut self) {
        count_inflight(-(self.inflight.len() as i64));
    }
}

impl Session {
    /// A fresh session with an inflight window of `window` messages.
    pub fn new(client_id: Arc<str>, expiry_interval: u32, window: u16) -> Session {
        Session {
            client_id,
            expiry_interval,
            subscriptions: BTreeMap::new(),
            inflight: Flights::default(),
            window: window.max(1),
            next_pkid: PacketId::MIN,
            seldom: inbound::Seldom::default(),
        }
    }

    /// Cluster mode: the claim on the client id under which the connection now holding this
    /// session is connected (the cluster keeps its will with it); set at each CONNECT.
    pub fn claim(&self) -> Option<std::num::NonZeroU64> {
        self.seldom.claim()
    }

    /// Sets (or clears) the claim [`Session::claim`] gives.
    pub fn set_claim(&mut self, claim: Option<std::num::NonZeroU64>) {
        self.seldom.set_claim(claim);
    }

    /// The client id.
    pub fn client_id(&self) -> &Arc<str> {
        &self.client_id
    }

    /// Subscriptions, keyed by the filter as sent (with any `$share/` prefix).
    pub fn subscriptions(&self) -> &BTreeMap<TopicFilter, Subscription> {
        &self.subscriptions
    }

    /// Records a subscription; true if it replaced an existing one.
    pub fn subscribe(&mut self, filter: TopicFilter, sub: Subscription) -> bool {
        self.subscriptions.insert(filter, sub).is_some()
    }

    /// Removes the subscription to `filter` (as sent); the filter, if it existed.
    pub fn unsubscribe(&mut self, filter: &str) -> Option<TopicFilter> {
        self.subscriptions.remove_entry(filter).map(|(f, _)| f)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
