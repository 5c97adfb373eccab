//! A queue: a declared point-to-point one (`[[queues]]`, consumed through `$queue/{name}`),
//! or a shared subscription's group (`$share/{name}/{filter}`), which is one too. It holds every
//! message that matches its filter, in order, until one consumer takes it. Messages wait here,
//! not in consumers' sessions: a consumer is handed one only while it has room (fewer of the
//! queue's QoS 1/2 messages outstanding than its inflight window; QoS 0 is not flow
//! controlled), picked by the queue's [`Strategy`]; so a slow or stalled consumer gets less, and
//! a message never waits behind one while another is free.
//!
//! A handed-out delivery carries a [`Link`] back here; the consumer's session reports how it
//! ends ([`Settled`]): acknowledged, dropped, or (its consumer left) handed back to the head
//! of the queue for another. With persistence on, the queue is a stored pseudo-session
//! (`$queue/{name}`, or `$share/{name}/{filter}` for a group with a persistent member): a QoS
//! 1/2 message it accepts is stored with the publisher's batch, before the publisher is
//! acknowledged, and released once a consumer has it (PUBACK, PUBREC, QoS 0 written), so a
//! restart or `kill -9` hands out again whatever was not consumed.
//!
//! Every count (produced, consumed, dropped, waiting, in flight, bytes) changes under the
//! queue's one lock, with the move it counts, so `produced = consumed + dropped + messages +
//! inflight` holds in every snapshot ([`Queue::figures`]).

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::mailbox::payload_bytes;
use super::router::{Recorder, Subscriber};
use super::shared::{Fit, Group, Key};
use crate::config::{Overflow, QueueConfig, Strategy};
use crate::metrics::Backlog;
use crate::protocol::QoS;
use crate::session::{Delivery, Link, Message, Seq, Settled};

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
    /// The queue is gone (a group whose last member left meanwhile): not counted.
    Closed,
}

/// What a queue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Declared in `[[queues]]`: exists from start, always stored with persistence on.
    Declared,
    /// A shared subscription's group: exists while it has members; stores a message only
    /// while a member's session is stored (no one else could get it after a restart).
    Group,
}

/// Messages no connected member may read that one dispatch looks past, at most (each costs
/// an ACL check per member every time the queue dispatches).
const MAX_UNREADABLE_SKIPPED: usize = 64;

/// The next [`Link::id`]: unique across queues, so a link to a group that is gone never
/// settles a delivery of the queue that took its slot.
static NEXT_LINK: AtomicU64 = AtomicU64::new(1);

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
    /// A group closed when its last member left.
    closed: bool,
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

/// One queue.
#[derive(Debug)]
pub(super) struct Queue {
    /// Its place among the broker's queues ([`Link::queue`]).
    slot: u32,
    kind: Kind,
    /// The queue's name, or the group's share name.
    name: Arc<str>,
    /// Its topic filter (without `$share/{name}/`).
    filter: Arc<str>,
    /// Its client id in the store: `$queue/{name}`, `$share/{name}/{filter}`.
    store_id: Arc<str>,
    max_messages: usize,
    max_bytes: u64,
    overflow: Overflow,
    inner: Mutex<Inner>,
}

/// The store's client id of queue `name`.
pub(super) fn store_id(name: &str) -> String {
    format!("$queue/{name}")
}

/// Whether `client_id` is a queue's or a group's (no client may use such an id).
pub fn is_queue_session(client_id: &str) -> bool {
    client_id.starts_with("$queue/") || client_id.starts_with("$share/")
}

impl Queue {
    /// Declared queue `config` in `slot` (its filter checked by the config); `strategy` when
    /// it names none.
    pub(super) fn declared(slot: u32, config: &QueueConfig, strategy: Strategy) -> Queue {
        Queue::new(
            slot,
            Kind::Declared,
            &config.name,
            &config.filter,
            store_id(&config.name),
            config.strategy.unwrap_or(strategy),
            (config.max_messages, config.max_bytes, config.overflow),
        )
    }

    /// The group of share `name` on `filter`, in `slot`, holding at most `max_messages` per
    /// member waiting (then the newest is refused, counted).
    pub(super) fn group(
        slot: u32,
        name: &str,
        filter: &str,
        strategy: Strategy,
        max_messages: usize,
    ) -> Queue {
        let bounds = (max_messages, u64::MAX, Overflow::Reject);
        let store_id = format!("$share/{name}/{filter}");
        Queue::new(slot, Kind::Group, name, filter, store_id, strategy, bounds)
    }

    fn new(
        slot: u32,
        kind: Kind,
        name: &str,
        filter: &str,
        store_id: String,
        strategy: Strategy,
        (max_messages, max_bytes, overflow): (usize, u64, Overflow),
    ) -> Queue {
        Queue {
            slot,
            kind,
            name: name.into(),
            filter: filter.into(),
            store_id: store_id.into(),
            max_messages,
            max_bytes,
            overflow,
            inner: Mutex::new(Inner {
                waiting: VecDeque::new(),
                bytes: 0,
                group: Group::new(strategy),
                consumers: HashMap::new(),
                handed: HashMap::new(),
                closed: false,
                produced: 0,
                consumed: 0,
                dropped: Vec::new(),
            }),
        }
    }

    /// Its slot.
    pub(super) fn slot(&self) -> u32 {
        self.slot
    }

    /// Whether it is a shared subscription's group.
    pub(super) fn is_group(&self) -> bool {
        self.kind == Kind::Group
    }

    /// Its name.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Its client id in the store.
    pub(super) fn store_id(&self) -> &Arc<str> {
        &self.store_id
    }

    /// Its topic filter.
    pub(super) fn filter(&self) -> &str {
        &self.filter
    }

    /// Whether it has no member (a group with none is closed).
    pub(super) fn is_empty(&self) -> bool {
        self.inner.lock().group.is_empty()
    }

    /// Closes a group whose last member left: what waits is dropped, and the stored messages
    /// it still held (waiting or handed out) are returned, for the store to release.
    pub(super) fn close(&self) -> Vec<Seq> {
        let mut inner = self.inner.lock();
        inner.closed = true;
        let waiting = std::mem::take(&mut inner.waiting);
        inner.bytes = 0;
        let handed = std::mem::take(&mut inner.handed);
        waiting
            .into_iter()
            .filter_map(|w| match w {
                Waiting::Ready(d) => d.seq,
                Waiting::Stored(seq, _) => Some(seq),
            })
            .chain(handed.into_values().filter_map(|h| h.delivery.seq))
            .collect()
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
        self.offer_as(msg, recorder, None, io)
    }

    /// Offers a message read from the cluster's stream at sequence `seq` (cluster mode): the
    /// queue releases `seq` once done with it, as it would a stored message.
    pub(super) fn offer_stream(&self, msg: &Arc<Message>, seq: u64, io: &dyn QueueIo) -> Offered {
        self.offer_as(msg, None, Seq::new(seq), io)
    }

    /// How many more messages its consumers could take now: their free places, less what
    /// waits.
    pub(super) fn room(&self) -> usize {
        let inner = self.inner.lock();
        if inner.closed {
            return 0;
        }
        let free: usize = inner
            .consumers
            .values()
            .filter(|c| c.member && c.ready)
            .map(|c| c.window.saturating_sub(c.outstanding) as usize)
            .sum();
        free.saturating_sub(inner.waiting.len())
    }

    fn offer_as(
        &self,
        msg: &Arc<Message>,
        recorder: Option<&mut dyn Recorder>,
        seq: Option<Seq>,
        io: &dyn QueueIo,
    ) -> Offered {
        let mut inner = self.inner.lock();
        if inner.closed {
            return Offered::Closed;
        }
        inner.produced += 1;
        let bytes = u64::from(u32::try_from(msg.publish.payload.len()).unwrap_or(u32::MAX));
        // A group holds what its members' own queues would: `max_messages` per member.
        let max_messages = match self.kind {
            Kind::Declared => self.max_messages,
            Kind::Group => self.max_messages.saturating_mul(inner.group.len().max(1)),
        };
        let full = |i: &Inner| i.waiting.len() >= max_messages || i.bytes + bytes > self.max_bytes;
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
        let mut d = Delivery::new(Arc::clone(msg), msg.qos(), false).with_seq(seq);
        // A group's message is kept only for members whose sessions outlive a restart.
        let stored = match self.kind {
            Kind::Declared => true,
            Kind::Group => inner.group.any(|s| s.mailbox.is_stored()),
        };
        if let Some(r) = recorder.filter(|_| stored && d.qos != QoS::AtMostOnce) {
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
    /// [`Queue::ready`]. True if it is a new member.
    pub(super) fn join(&self, sub: Subscriber, weight: u32, window: u16) -> bool {
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
        !inner.group.upsert(sub, weight)
    }

    /// Its members' subscriptions, for listing.
    pub(super) fn members(&self) -> Vec<Subscriber> {
        self.inner.lock().group.subscribers().cloned().collect()
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

    /// `client_id` is connected again with room for `window` messages at once. Its session
    /// holds the subscription: it is ready, whether or not its earlier connection got the
    /// SUBACK out.
    pub(super) fn online(&self, client_id: &str, window: u16, io: &dyn QueueIo) {
        let mut inner = self.inner.lock();
        let Some(c) = inner.consumers.get_mut(client_id) else {
            return;
        };
        c.window = u32::from(window.max(1));
        c.ready = true;
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
    /// `hash_topic` and `sticky`, for its own consumer): order is kept. A message no connected
    /// consumer may read (ACL) is looked past, and waits in its place for one that may.
    fn dispatch(&self, inner: &mut Inner, io: &dyn QueueIo, exclude: Option<&str>) {
        if inner.group.is_empty() {
            return;
        }
        let now = Instant::now();
        // A consumer whose mailbox refused a message is passed over for the rest of this round.
        let mut refused: Vec<Arc<str>> = Vec::new();
        // Where the next candidate is: past the messages no connected member may read (ACL),
        // which stay in their place for a member that may, without holding up the rest.
        let (mut at, mut unreadable) = (0, 0);
        while let Some(head) = inner.waiting.remove(at) {
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
            };
            let key = Key {
                publisher: d.msg.publisher.as_deref(),
                topic,
            };
            let check = io
                .checks_reads()
                .then_some(&may_read as super::router::ReadCheck<'_>);
            let Some(sub) = group.pick(key, exclude, check, &fit).cloned() else {
                let readable = check.is_none()
                    || group.any(|s| {
                        s.mailbox.is_online()
                            && consumers.get(&s.client_id).is_some_and(|c| c.ready)
                            && may_read(&s.client_id)
                    });
                inner.waiting.insert(at, Waiting::Ready(d));
                if readable || unreadable == MAX_UNREADABLE_SKIPPED {
                    return;
                }
                at += 1;
                unreadable += 1;
                continue;
            };
            let id = NonZeroU64::new(NEXT_LINK.fetch_add(1, Ordering::Relaxed))
                .unwrap_or(NonZeroU64::MIN);
            let mut out = Delivery::new(
                Arc::clone(&d.msg),
                d.qos.min(sub.options.qos),
                sub.options.retain_as_published && d.msg.publish.retain,
            )
            .with_sub_ids(sub.id)
            .with_link(Some(Link {
                queue: self.slot,
                id,
            }));
            out.dup = d.dup;
            if sub.mailbox.push(out).is_err() {
                refused.push(sub.client_id);
                inner.waiting.insert(at, Waiting::Ready(d));
                continue;
            }
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
            filter: match self.kind {
                Kind::Declared => String::new(),
                Kind::Group => self.filter.to_string(),
            },
            produced: inner.produced,
            consumed: inner.consumed,
            dropped: inner.dropped.clone(),
            messages: inner.waiting.len() as u64,
            inflight: inner.handed.len() as u64,
            bytes: inner.bytes,
        }
    }
}
