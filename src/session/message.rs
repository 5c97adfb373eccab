//! The immutable application message shared by every subscriber, and the per-subscriber delivery
//! that points at it: fan-out copies an `Arc`, never a payload.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::{Publish, QoS};

/// An accepted PUBLISH, as routed. `publish` keeps the topic, payload and the properties that are
/// forwarded unchanged; what differs per subscriber lives in [`Delivery`].
#[derive(Debug)]
pub struct Message {
    /// The PUBLISH as received, with packet id 0, DUP clear and no Topic Alias or Subscription
    /// Identifier.
    pub publish: Publish,
    /// When the Message Expiry Interval runs out.
    pub expires_at: Option<Instant>,
    /// The client that published it (for No Local), `None` for wills and broker messages.
    pub publisher: Option<Arc<str>>,
    /// When Tern accepted it (or read it back from the store): the start of the in-broker
    /// delivery latency.
    pub accepted: Instant,
}

impl Message {
    /// Builds the routed form of a received PUBLISH.
    pub fn new(mut publish: Publish, publisher: Option<Arc<str>>, now: Instant) -> Message {
        publish.pkid = 0;
        publish.dup = false;
        publish.properties.topic_alias = None;
        publish.properties.subscription_identifiers.clear();
        let expires_at = publish
            .properties
            .message_expiry_interval
            .map(|s| now + Duration::from_secs(u64::from(s)));
        Message {
            publish,
            expires_at,
            publisher,
            accepted: now,
        }
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        &self.publish.topic
    }

    /// The QoS it was published with.
    pub fn qos(&self) -> QoS {
        self.publish.qos
    }

    /// True once the Message Expiry Interval has passed.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }

    /// The Message Expiry Interval to forward: what remains, rounded up, so it never exceeds the
    /// received value [MQTT-3.3.2-6].
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|t| {
            let left = t.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        })
    }
}

/// The key of a stored message: the store's sequence number, never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seq(std::num::NonZeroU64);

impl Seq {
    /// Sequence number `n`; `None` for 0.
    pub const fn new(n: u64) -> Option<Seq> {
        match std::num::NonZeroU64::new(n) {
            Some(n) => Some(Seq(n)),
            None => None,
        }
    }

    /// Its value in the store's keys.
    pub const fn get(self) -> u64 {
        self.0.get()
    }
}

/// One message on its way to one subscriber.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The shared message.
    pub msg: Arc<Message>,
    /// min(published QoS, granted QoS).
    pub qos: QoS,
    /// The RETAIN flag to send.
    pub retain: bool,
    /// v5 Subscription Identifiers of every matching subscription.
    pub sub_ids: Vec<u32>,
    /// Its key in the subscriber's stored queue; `None` when not stored.
    pub seq: Option<Seq>,
    /// Sent before, to this subscriber or (a shared subscription's message handed on when its
    /// member left) to another: its first PUBLISH here carries DUP.
    pub dup: bool,
    /// Set when a queue (declared, or a shared subscription's group) handed it out: the
    /// queue hears how it ends.
    pub link: Option<Link>,
}

/// A delivery a queue (declared, or a shared subscription's group) handed to a session, as
/// the queue knows it: which queue, and the delivery's number (unique across queues). The session reports how the delivery ends
/// ([`super::Effect::Settle`]) so the queue can count it, release its stored copy, or take it
/// back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Link {
    /// The queue's slot among the broker's queues (a group's may be reused once it is gone:
    /// then `id`, unique across queues, is not found there).
    pub queue: u32,
    /// The delivery's number.
    pub id: std::num::NonZeroU64,
}
