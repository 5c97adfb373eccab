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
        if let Some(p) = publish.properties.get_mut() {
            p.topic_alias = None;
            p.subscription_identifiers.clear();
        }
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
///
/// 32 bytes: a mailbox holds one per queued message (100 subscribers far behind a fast publisher
/// hold hundreds of thousands), so what most deliveries lack is kept out of line: at most one
/// Subscription Identifier is inline, several and a queue's link are boxed.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The shared message.
    pub msg: Arc<Message>,
    /// Its key in the subscriber's stored queue; `None` when not stored.
    pub seq: Option<Seq>,
    /// Two or more Subscription Identifiers, and the queue that handed it out.
    extra: Option<Box<Extra>>,
    /// The one Subscription Identifier when there is one and `extra` holds none; 0 for none
    /// (never a valid identifier [MQTT-3.8.2.1.2]).
    sub_id: u32,
    /// min(published QoS, granted QoS).
    pub qos: QoS,
    /// The RETAIN flag to send.
    pub retain: bool,
    /// Sent before, to this subscriber or (a shared subscription's message handed on when its
    /// member left) to another: its first PUBLISH here carries DUP.
    pub dup: bool,
}

/// What few deliveries carry.
#[derive(Debug, Clone, Default)]
struct Extra {
    /// Every Subscription Identifier, once there are two or more.
    sub_ids: Vec<u32>,
    /// Set when a queue (declared, or a shared subscription's group) handed it out: the queue
    /// hears how it ends.
    link: Option<Link>,
}

impl Delivery {
    /// `msg` at `qos`: not stored, not sent before, no Subscription Identifier, no queue.
    pub fn new(msg: Arc<Message>, qos: QoS, retain: bool) -> Delivery {
        Delivery {
            msg,
            seq: None,
            extra: None,
            sub_id: 0,
            qos,
            retain,
            dup: false,
        }
    }

    /// The same, with these Subscription Identifiers added.
    pub fn with_sub_ids(mut self, ids: impl IntoIterator<Item = u32>) -> Delivery {
        for id in ids {
            self.add_sub_id(id);
        }
        self
    }

    /// The same, stored under `seq` (or not stored).
    pub fn with_seq(mut self, seq: Option<Seq>) -> Delivery {
        self.seq = seq;
        self
    }

    /// The same, handed out by a queue (or by none).
    pub fn with_link(mut self, link: Option<Link>) -> Delivery {
        self.set_link(link);
        self
    }

    /// v5 Subscription Identifiers of every matching subscription, in the order added.
    pub fn sub_ids(&self) -> &[u32] {
        match &self.extra {
            Some(e) if !e.sub_ids.is_empty() => &e.sub_ids,
            _ if self.sub_id != 0 => std::slice::from_ref(&self.sub_id),
            _ => &[],
        }
    }

    /// Adds a Subscription Identifier (one more matching subscription).
    pub fn add_sub_id(&mut self, id: u32) {
        if self.sub_id == 0 && id != 0 && self.extra.as_ref().is_none_or(|e| e.sub_ids.is_empty()) {
            self.sub_id = id;
            return;
        }
        let extra = self.extra.get_or_insert_with(Box::default);
        if extra.sub_ids.is_empty() && self.sub_id != 0 {
            extra.sub_ids.push(std::mem::take(&mut self.sub_id));
        }
        extra.sub_ids.push(id);
    }

    /// The queue that handed it out, if one did.
    pub fn link(&self) -> Option<Link> {
        self.extra.as_ref().and_then(|e| e.link)
    }

    /// Sets or clears the queue that handed it out.
    pub fn set_link(&mut self, link: Option<Link>) {
        match (&mut self.extra, link) {
            (Some(e), _) => {
                e.link = link;
                if link.is_none() && e.sub_ids.is_empty() {
                    self.extra = None;
                }
            }
            (None, None) => {}
            (None, Some(_)) => {
                self.extra = Some(Box::new(Extra {
                    sub_ids: Vec::new(),
                    link,
                }))
            }
        }
    }
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
