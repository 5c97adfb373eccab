//! A declared point-to-point queue (`[[queues]]`): it holds every message that matches its
//! filter, in order, until one consumer (a subscriber to `$queue/{name}`) takes it. Messages
//! wait here, not in consumers' sessions: a consumer is handed one only while it has room
//! (fewer of the queue's messages outstanding than its inflight window), picked by the
//! queue's [`Strategy`]; so a slow or stalled consumer gets less, and a message never waits
//! behind one while another is free.
//!
//! A handed-out delivery carries a [`Link`] back here; the consumer's session reports how it
//! ends ([`Settled`]): acknowledged, dropped, or (its consumer left) handed back to the head
//! of the queue for another. With persistence on, the queue is a stored pseudo-session
//! (`$queue/{name}`): a message it accepts is stored with the publisher's batch, before the
//! publisher is acknowledged, and released once a consumer has it (PUBACK, PUBREC, QoS 0
//! written), so a restart or `kill -9` hands out again whatever was not consumed.
//!
//! Every count (produced, consumed, dropped, waiting, in flight, bytes) changes under the
//! queue's one lock, with the move it counts, so `produced = consumed + dropped + messages +
//! inflight` holds in every snapshot ([`Queue::figures`]).

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::mailbox::payload_bytes;
use super::router::{Recorder, Subscriber};
use super::shared::{Fit, Group, Key};
use crate::config::{Overflow, QueueConfig, Strategy};
use crate::metrics::Backlog;
use crate::protocol::QoS;
use crate::session::{Delivery, Link, Message, Seq, Settled, SharedTag};
use crate::topic::TopicFilter;

/// What a queue needs from the broker: its stored messages, and the ACL.
pub(super) trait QueueIo {
    /// Stored message `seq` of the queue stored as `store_id`; `None` if it expired or cannot
    /// be read (then it is released).
    fn load(&self, store_id: &str, seq: Seq) -> Option<Delivery>;
    /// The queue is done with stored message `seq`.
    fn release(&self, store_id: &str, seq: Seq);
    /// Whether `client_id` may read `topic`.
    fn may_read(&self, client_id: &Arc<str>, topic: &str) -> bool;
    /// Whether reads are checked at all (an ACL is configured).
    fn checks_reads(&self) -> bool;
}

/// Whether a queue took a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Queued (possibly after dropping the oldest).
    Accepted,
    /// Refused at a bound (`overflow = "reject"`), or larger than the queue's byte bound.
    Rejected,
}

/// A waiting message.
#[derive(Debug)]
enum Waiting {
    /// In memory: the message at the QoS it was published with, its sequence number in the
    /// store (if stored) and whether it was sent before.
    Ready(Delivery),
    /// Read back from the store at start, not yet loaded: sequence number and payload size.
    Stored(Seq, u32),
}

impl Waiting {
    fn bytes(&self) -> u64 {
        u64::from(match self {
            Waiting::Ready(d) => payload_bytes(d),
            Waiting::Stored(_, bytes) => *bytes,
        })
    }
}

/// A message handed to a consumer and not yet consumed.
#[derive(Debug)]
struct Handed {
    consumer: Arc<str>,
    /// It takes one of the consumer's places (QoS 1/2 to it; QoS 0 is not flow controlled).
    counted: bool,
    /// As it waited here (with its stored sequence number until the consumer has it).
    delivery: Delivery,
}

/// What the queue knows of one consumer.
#[derive(Debug, Clone, Copy)]
struct Consumer {
    /// The queue's messages it holds and has not acknowledged.
    outstanding: u32,
    /// How many it may hold (its session's inflight window).
    window: u32,
    /// Still subscribed (an entry stays while messages are outstanding).
    member: bool,
    /// Its SUBACK is out: it may be handed messages.
    ready: bool,
}

#[derive(Debug)]
struct Inner {
    waiting: VecDeque<Waiting>,
    bytes: u64,
    group: Group,
    consumers: HashMap<Arc<str>, Consumer>,
    handed: HashMap<NonZeroU64, Handed>,
    next_id: u64,
    produced: u64,
    consumed: u64,
    dropped: Vec<(&'static str, u64)>,
}

impl Inner {
    fn count_dropped(&mut self, reason: &'static str) {
        match self.dropped.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.dropped.push((reason, 1)),
        }
    }

    /// `h` is no longer `client_id`'s: frees its place if it took one.
    fn settle_consumer(&mut self, h: &Handed) {
        if let Some(c) = self.consumers.get_mut(&h.consumer) {
            if h.counted {
                c.outstanding = c.outstanding.saturating_sub(1);
            }
            if !c.member && c.outstanding == 0 {
                self.consumers.remove(&h.consumer);
            }
        }
    }
}

/// One declared queue.
#[derive(Debug)]
pub(super) struct Queue {
    index: u32,
    name: Arc<str>,
    /// Its client id in the store: `$queue/{name}`.
    store_id: Arc<str>,
    filter: TopicFilter,
    max_messages: usize,
    max_bytes: u64,
    overflow: Overflow,
    inner: Mutex<Inner>,
}

/// The store's client id of queue `name`.
pub(super) fn store_id(name: &str) -> String {
    format!("$queue/{name}")
}

/// Whether `client_id` is a queue's (no client may use such an id).
pub fn is_queue_session(client_id: &str) -> bool {
    client_id.starts_with("$queue/")
}

impl Queue {
    /// Queue number `index` as `config` declares it (its filter checked by the config);
    /// `strategy` when it names none.
    pub(super) fn new(index: u32, config: &QueueConfig, strategy: Strategy) -> Option<Queue> {
        let filter = TopicFilter::parse(&config.filter).ok()?;
        let name: Arc<str> = config.name.as_str().into();
        let tag = SharedTag {
            group: Arc::clone(&name),
            filter: filter.filter().into(),
        };
        Some(Queue {
            index,
            store_id: store_id(&name).into(),
            name,
            filter,
            max_messages: config.max_messages,
            max_bytes: config.max_bytes,
            overflow: config.overflow,
            inner: Mutex::new(Inner {
                waiting: VecDeque::new(),
                bytes: 0,
                group: Group::new(tag, config.strategy.unwrap_or(strategy)),
                consumers: HashMap::new(),
                handed: HashMap::new(),
                next_id: 1,
                produced: 0,
                consumed: 0,
                dropped: Vec::new(),
            }),
        })
    }

    /// Its name.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Its client id in the store.
    pub(super) fn store_id(&self) -> &Arc<str> {
        &self.store_id
    }

    /// Its filter.
    pub(super) fn filter(&self) -> &TopicFilter {
        &self.filter
    }

    /// Puts back what the store held at start (sequence numbers and payload sizes, in order):
    /// they count as produced, and are read back as they are handed out.
    pub(super) fn restore(&self, queue: Vec<(u64, u32)>) {
        let mut inner = self.inner.lock();
        for (seq, bytes) in queue {
            let Some(seq) = Seq::new(seq) else { continue };
            inner.bytes += u64::from(bytes);
            inner.produced += 1;
            inner.waiting.push_back(Waiting::Stored(seq, bytes));
        }
    }

    /// Offers a message that matches the filter. With a `recorder` (persistence on), a QoS
    /// 1/2 message it takes is stored in the publisher's batch.
    pub(super) fn offer(
        &self,
        msg: &Arc<Message>,
        recorder: Option<&mut dyn Recorder>,
        io: &dyn QueueIo,
    ) -> Offered {
        let mut inner = self.inner.lock();
        inner.produced += 1;
        let bytes = u64::from(u32::try_from(msg.publish.payload.len()).unwrap_or(u32::MAX));
        let full =
            |i: &Inner| i.waiting.len() >= self.max_messages || i.bytes + bytes > self.max_bytes;
        if bytes > self.max_bytes || (full(&inner) && self.overflow == Overflow::Reject) {
            inner.count_dropped("rejected");
            return Offered::Rejected;
        }
        while full(&inner) {
            let Some(oldest) = inner.waiting.pop_front() else {
                break;
            };
            inner.bytes -= oldest.bytes();
            inner.count_dropped("dropped_oldest");
            let seq = match oldest {
                Waiting::Ready(d) => d.seq,
                Waiting::Stored(seq, _) => Some(seq),
            };
            if let Some(seq) = seq {
                io.release(&self.store_id, seq);
            }
        }
        let mut d = Delivery {
            msg: Arc::clone(msg),
            qos: msg.qos(),
            retain: false,
            sub_ids: Vec::new(),
            shared: None,
            seq: None,
            dup: false,
            link: None,
        };
        if let Some(r) = recorder.filter(|_| d.qos != QoS::AtMostOnce) {
            d.seq = Seq::new(r.next_seq());
            r.record(&self.store_id, &d);
        }
        inner.bytes += bytes;
        inner.waiting.push_back(Waiting::Ready(d));
        self.dispatch(&mut inner, io, None);
        Offered::Accepted
    }

    /// `sub` consumes from now on (or again, with new options), with room for `window`
    /// messages at once and `weight` under `weighted`; it is handed nothing before
    /// [`Queue::ready`].
    pub(super) fn join(&self, sub: Subscriber, weight: u32, window: u16) {
        let mut inner = self.inner.lock();
        let entry = inner
            .consumers
            .entry(Arc::clone(&sub.client_id))
            .or_insert(Consumer {
                outstanding: 0,
                window: 1,
                member: true,
                ready: false,
            });
        entry.window = u32::from(window.max(1));
        entry.member = true;
        entry.ready = false;
        inner.group.upsert(sub, weight);
    }

    /// `client_id` may be handed messages (its SUBACK is out, or it was read back from the
    /// store).
    pub(super) fn ready(&self, client_id: &str, io: &dyn QueueIo) {
        let mut inner = self.inner.lock();
        if let Some(c) = inner.consumers.get_mut(client_id) {
            c.ready = true;
            self.dispatch(&mut inner, io, None);
        }
    }

    /// `client_id` consumes no more; what it holds stays with it until it settles.
    pub(super) fn leave(&self, client_id: &str) -> bool {
        let mut inner = self.inner.lock();
        let was = inner.group.remove(client_id);
        let done = match inner.consumers.get_mut(client_id) {
            Some(c) => {
                c.member = false;
                c.outstanding == 0
            }
            None => false,
        };
        if done {
            inner.consumers.remove(client_id);
        }
        was
    }

    /// `client_id` is connected again with room for `window` messages at once.
    pub(super) fn online(&self, client_id: &str, window: u16, io: &dyn QueueIo) {
        let mut inner = self.inner.lock();
        let Some(c) = inner.consumers.get_mut(client_id) else {
            return;
        };
        c.window = u32::from(window.max(1));
        self.dispatch(&mut inner, io, None);
    }

    /// A consumer's session reports how delivery `id` went.
    pub(super) fn settle(&self, id: NonZeroU64, how: Settled, io: &dyn QueueIo) {
        let mut inner = self.inner.lock();
        match how {
            Settled::Received => {
                // The consumer has it: it is never handed out again, even after a restart.
                if let Some(seq) = inner
                    .handed
                    .get_mut(&id)
                    .and_then(|h| h.delivery.seq.take())
                {
                    io.release(&self.store_id, seq);
                }
                return;
            }
            Settled::Consumed | Settled::Dropped(_) => {}
        }
        let Some(h) = inner.handed.remove(&id) else {
            return;
        };
        match how {
            Settled::Dropped(reason) => inner.count_dropped(reason),
            _ => inner.consumed += 1,
        }
        if let Some(seq) = h.delivery.seq {
            io.release(&self.store_id, seq);
        }
        inner.settle_consumer(&h);
        self.dispatch(&mut inner, io, None);
    }

    /// Deliveries `ids` come back from `from`, whose consumer left before it had them: to the
    /// head of the queue, in their order, DUP set on those `sent` before, and on to another
    /// consumer at once.
    pub(super) fn give_back(&self, from: &str, ids: &[(NonZeroU64, bool)], io: &dyn QueueIo) {
        let mut inner = self.inner.lock();
        for &(id, sent) in ids.iter().rev() {
            let Some(h) = inner.handed.remove(&id) else {
                continue;
            };
            inner.settle_consumer(&h);
            let mut d = h.delivery;
            d.dup |= sent;
            inner.bytes += u64::from(payload_bytes(&d));
            inner.waiting.push_front(Waiting::Ready(d));
        }
        self.dispatch(&mut inner, io, Some(from));
    }

    /// Hands waiting messages, in order, to consumers with room, until none has room or
    /// nothing waits. The head waits for a consumer with room (and, under `hash_client`,
    /// `hash_topic` and `sticky`, for its own consumer): order is kept.
    fn dispatch(&self, inner: &mut Inner, io: &dyn QueueIo, exclude: Option<&str>) {
        if inner.group.is_empty() {
            return;
        }
        let now = Instant::now();
        // A consumer whose mailbox refused a message is passed over for the rest of this round.
        let mut refused: Vec<Arc<str>> = Vec::new();
        while let Some(head) = inner.waiting.pop_front() {
            let bytes = head.bytes();
            let d = match head {
                Waiting::Ready(d) => Some(d),
                // Released by the store if it cannot be read back.
                Waiting::Stored(seq, _) => io.load(&self.store_id, seq).map(|mut d| {
                    d.seq = Some(seq);
                    d
                }),
            };
            let d = match d {
                Some(d) if d.msg.is_expired(now) => {
                    if let Some(seq) = d.seq {
                        io.release(&self.store_id, seq);
                    }
                    None
                }
                other => other,
            };
            let Some(d) = d else {
                inner.bytes -= bytes;
                inner.count_dropped("expired");
                continue;
            };
            let Inner {
                group, consumers, ..
            } = &mut *inner;
            let topic = d.msg.topic();
            let may_read = |id: &Arc<str>| io.may_read(id, topic);
            // QoS 0 is not flow controlled: any connected consumer has room for it (its
            // mailbox still bounds it).
            let room = |s: &Subscriber| {
                !refused.contains(&s.client_id)
                    && consumers.get(&s.client_id).is_some_and(|c| {
                        c.ready
                            && (d.qos.min(s.options.qos) == QoS::AtMostOnce
                                || c.outstanding < c.window)
                    })
            };
            let load = |s: &Subscriber| {
                consumers
                    .get(&s.client_id)
                    .map_or(0, |c| c.outstanding as usize)
            };
            let fit = Fit {
                room: &room,
                load: &load,
                strict: true,
            };
            let key = Key {
                publisher: d.msg.publisher.as_deref(),
                topic,
            };
            let check = io
                .checks_reads()
                .then_some(&may_read as super::router::ReadCheck<'_>);
            let Some(sub) = group.pick_by(key, exclude, check, &fit).cloned() else {
                inner.waiting.push_front(Waiting::Ready(d));
                return;
            };
            let id = NonZeroU64::new(inner.next_id).unwrap_or(NonZeroU64::MIN);
            let out = Delivery {
                msg: Arc::clone(&d.msg),
                qos: d.qos.min(sub.options.qos),
                retain: sub.options.retain_as_published && d.msg.publish.retain,
                sub_ids: sub.id.into_iter().collect(),
                shared: None,
                seq: None,
                dup: d.dup,
                link: Some(Link {
                    queue: self.index,
                    id,
                }),
            };
            if sub.mailbox.push(out).is_err() {
                refused.push(sub.client_id);
                inner.waiting.push_front(Waiting::Ready(d));
                continue;
            }
            inner.next_id += 1;
            inner.bytes -= bytes;
            let counted = d.qos.min(sub.options.qos) != QoS::AtMostOnce;
            if let Some(c) = inner.consumers.get_mut(&sub.client_id).filter(|_| counted) {
                c.outstanding += 1;
            }
            inner.handed.insert(
                id,
                Handed {
                    consumer: sub.client_id,
                    counted,
                    delivery: d,
                },
            );
        }
    }

    /// Its counts, all at one instant.
    pub(super) fn figures(&self) -> Backlog {
        let inner = self.inner.lock();
        Backlog {
            name: self.name.to_string(),
            filter: String::new(),
            produced: inner.produced,
            consumed: inner.consumed,
            dropped: inner.dropped.clone(),
            messages: inner.waiting.len() as u64,
            inflight: inner.handed.len() as u64,
            bytes: inner.bytes,
        }
    }
}
