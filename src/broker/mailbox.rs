//! The bounded FIFO between the router and one client: the router pushes and returns at once; the
//! client's connection task drains it when it can write. While the client is offline the mailbox is
//! its session queue. Bounded so a client that stops reading never makes memory grow: at the limit
//! QoS 0 goes first, then the newest message is refused; every drop is counted.
//!
//! Memory stays bounded by more than the count: a stored delivery to a client that is offline,
//! or far behind, is queued as its sequence number only ([`Mailbox::push_stored`]); its
//! message stays in the store and is read back when the connection drains it. So a million
//! messages queued for offline sessions cost 16 bytes each here, not a million messages.
//!
//! A bridge's mailbox may also be bounded in payload bytes ([`Mailbox::set_bounds`]): each
//! entry keeps its payload size, so the total stays exact as entries come and go.
//!
//! The retained messages a subscription brings are queued as one marker, a
//! [`RetainedStream`] ([`Mailbox::push_retained`]), at the place of its SUBACK: what was queued
//! before goes first, what is pushed after waits behind it, and draining walks the retained
//! store lazily in its place, paced by the client's window and socket ([`Source`]). However
//! many retained messages match, they cost one entry here and never count against the limit.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use super::bell::{Bell, Waiter};
use super::retained::RetainedStream;
use crate::protocol::QoS;
use crate::session::{Delivery, Seq};

/// Why a delivery was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The queue was at `max_queued_messages` (or a bridge's `max_queued_bytes`).
    QueueFull,
    /// QoS 0 for an offline client, not queued by configuration.
    Offline,
}

/// A queued delivery as taken out of a mailbox.
#[derive(Debug)]
pub enum Queued {
    /// With its message.
    Ready(Delivery),
    /// Only its sequence number: the message, and this client's options for it, are in the
    /// store. With its payload size.
    Stored(u64, u32),
    /// The retained messages of a subscription not sent yet (never stored).
    Retained(Box<RetainedStream>),
}

impl Queued {
    /// Its sequence number in the store; `None` when not stored.
    pub fn seq(&self) -> Option<Seq> {
        match self {
            Queued::Ready(d) => d.seq,
            Queued::Stored(seq, _) => Seq::new(*seq),
            Queued::Retained(_) => None,
        }
    }
}

/// What draining needs from the broker: stored messages read back and retained streams
/// stepped (the mailbox holds only their keys and cursors).
pub trait Source {
    /// Stored message `seq` as a delivery to this mailbox's client; `None` (expired,
    /// unreadable) skips it.
    fn load(&mut self, seq: u64) -> Option<Delivery>;

    /// Appends to `out` the stream's next retained messages as deliveries: at most `room`,
    /// stopping before a QoS 1/2 one once `window` of them were added (the cursor stays before
    /// it, so order is kept), within a bounded amount of work.
    fn stream_retained(
        &mut self,
        stream: &mut RetainedStream,
        out: &mut Vec<Delivery>,
        room: usize,
        window: usize,
    ) -> Streamed;
}

/// How a step of a retained stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streamed {
    /// Every retained message was sent: the marker goes, draining continues behind it.
    Done,
    /// Held by a full window: acknowledgements resume it.
    Blocked,
    /// More to send; the drainer is signalled to come back.
    More,
}

/// The payload size a delivery counts for against a byte bound.
pub fn payload_bytes(d: &Delivery) -> u32 {
    u32::try_from(d.msg.publish.payload.len()).unwrap_or(u32::MAX)
}

/// An entry behind the in-memory queue, 16 bytes: most are sequence numbers.
#[derive(Debug)]
enum Spilled {
    /// Sequence number and payload size.
    Seq(u64, u32),
    /// A delivery that arrived with its message while the spill was not empty (order is kept).
    Held(Box<Delivery>),
    /// A subscription's retained messages, walked in this place as the mailbox drains.
    Retained(Box<RetainedStream>),
}

impl Spilled {
    fn into_queued(self) -> Queued {
        match self {
            Spilled::Seq(seq, bytes) => Queued::Stored(seq, bytes),
            Spilled::Held(d) => Queued::Ready(*d),
            Spilled::Retained(s) => Queued::Retained(s),
        }
    }

    fn from_queued(q: Queued) -> Spilled {
        match q {
            Queued::Ready(d) => Spilled::Held(Box::new(d)),
            Queued::Stored(seq, bytes) => Spilled::Seq(seq, bytes),
            Queued::Retained(s) => Spilled::Retained(s),
        }
    }

    /// Payload bytes it counts for against a byte bound (a marker counts none).
    fn bytes(&self) -> u32 {
        match self {
            Spilled::Seq(_, bytes) => *bytes,
            Spilled::Held(d) => payload_bytes(d),
            Spilled::Retained(_) => 0,
        }
    }
}

/// Beyond this many queued deliveries, stored ones are queued by sequence number only, even
/// for a connected client.
pub const SPILL_AT: usize = 256;

/// The queue and who to wake, under one lock (one lock per push, and a small mailbox).
#[derive(Debug, Default)]
struct Inner {
    /// What is queued: boxed from the first push until the client goes dormant with nothing
    /// queued, so an idle client's mailbox holds one pointer, and no room kept from a burst
    /// it once had (memory per idle client, docs/architecture.md).
    held: Option<Box<Held>>,
    /// Who to wake on the next signal: the connection's task while it runs, its bed in the
    /// dormitory while it is dormant (a plain slot, not a `Notify`: one consumer at a time).
    waker: Waiter,
    /// A bridge's byte bound and drop count; `None` for clients (one pointer in every mailbox).
    budget: Option<Box<Budget>>,
}

/// What a bridge's queue counts beyond its length.
#[derive(Debug)]
struct Budget {
    /// Payload bytes queued at most; `u64::MAX` for no bound.
    max_bytes: u64,
    /// Payload bytes queued now.
    bytes: u64,
    /// Deliveries refused at a bound since [`Mailbox::take_dropped`].
    dropped: u32,
}

#[derive(Debug, Default)]
struct Held {
    queue: VecDeque<Delivery>,
    /// Everything queued after `queue`, once a delivery was queued by sequence number; gone
    /// again once drained. Boxed: one pointer rather than a whole `VecDeque`.
    #[allow(clippy::box_collection)]
    spill: Option<Box<VecDeque<Spilled>>>,
}

/// What an empty mailbox holds.
static NOTHING_HELD: Held = Held {
    queue: VecDeque::new(),
    spill: None,
};

impl Inner {
    fn held(&self) -> &Held {
        self.held.as_deref().unwrap_or(&NOTHING_HELD)
    }

    fn held_mut(&mut self) -> &mut Held {
        self.held.get_or_insert_with(Box::default)
    }

    /// The spill, started if there is none.
    fn spill_mut(&mut self) -> &mut VecDeque<Spilled> {
        self.held_mut().spill.get_or_insert_with(Box::default)
    }

    fn len(&self) -> usize {
        let held = self.held();
        held.queue.len() + held.spill.as_ref().map_or(0, |s| s.len())
    }

    /// Whether one more delivery of `bytes` payload bytes would pass a bound.
    fn full(&self, limit: u32, bytes: u32) -> bool {
        self.len() >= limit as usize
            || self
                .budget
                .as_ref()
                .is_some_and(|b| b.bytes.saturating_add(u64::from(bytes)) > b.max_bytes)
    }

    /// Drops the oldest QoS 0 message held in memory; false if there is none. A queue's
    /// message is never dropped here: its queue counts it until the session settles it.
    fn drop_oldest_qos0(&mut self) -> bool {
        let Some(held) = self.held.as_deref_mut() else {
            return false;
        };
        let dropped = match held.queue.iter().position(droppable) {
            Some(i) => held.queue.remove(i).map(|d| payload_bytes(&d)),
            None => held.spill.as_mut().and_then(|spill| {
                let oldest = spill
                    .iter()
                    .position(|s| matches!(s, Spilled::Held(d) if droppable(d)))?;
                spill.remove(oldest).map(|s| s.bytes())
            }),
        };
        match dropped {
            Some(bytes) => {
                self.count_out(u64::from(bytes));
                true
            }
            None => false,
        }
    }

    fn count_in(&mut self, bytes: u32) {
        if let Some(b) = &mut self.budget {
            b.bytes = b.bytes.saturating_add(u64::from(bytes));
        }
    }

    fn count_out(&mut self, bytes: u64) {
        if let Some(b) = &mut self.budget {
            b.bytes = b.bytes.saturating_sub(bytes);
        }
    }

    fn count_dropped(&mut self) {
        if let Some(b) = &mut self.budget {
            b.dropped = b.dropped.saturating_add(1);
        }
    }

    /// Payload bytes of everything queued, counted afresh.
    fn total_bytes(&self) -> u64 {
        let held = self.held();
        let queued = held.queue.iter().map(|d| u64::from(payload_bytes(d)));
        let spilled = held
            .spill
            .iter()
            .flat_map(|s| s.iter())
            .map(|s| u64::from(s.bytes()));
        queued.chain(spilled).sum()
    }
}

/// Whether a full mailbox may drop `d` to make room: QoS 0, not a queue's.
fn droppable(d: &Delivery) -> bool {
    d.qos == QoS::AtMostOnce && d.link().is_none()
}

/// A connection is draining the mailbox.
const ONLINE: u8 = 1;
/// Another connection took the client id over; the connection draining this mailbox sees it on
/// its next wake-up.
const KICKED: u8 = 2;
/// Its session is in the store: QoS 1/2 deliveries to it are stored before the publisher is
/// acknowledged.
const STORED: u8 = 4;
/// Deliveries were refused at the limit since the queue last drained (logged once per episode).
const OVERFLOWED: u8 = 8;
/// QoS 0 deliveries are queued while the client is offline (`session.queue_qos0_offline`).
const QOS0_OFFLINE: u8 = 16;
/// With [`KICKED`]: an operator, not another connection, told the connection to close
/// (admin API; v5 DISCONNECT 0x98 Administrative action).
const BY_ADMIN: u8 = 32;
/// With [`BY_ADMIN`]: its session ends with the connection.
const DISCARD: u8 = 64;
/// With [`KICKED`]: the token the client logged in with expired.
const EXPIRED: u8 = 128;

/// Why a connection was told to close through its mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// Another connection took its client id over.
    TakenOver,
    /// An operator disconnected it (admin API); `discard`: its session ends too.
    Admin {
        /// The session ends with the connection.
        discard: bool,
    },
    /// The token it logged in with expired.
    Expired,
}

/// One client's queue of pending deliveries.
#[derive(Debug)]
pub struct Mailbox {
    inner: Mutex<Inner>,
    /// Set by every push, kick and wake; cleared by the one consumer that sees it.
    signalled: AtomicBool,
    /// At most this many deliveries queued (a bridge's may change on reload).
    limit: AtomicU32,
    /// [`ONLINE`], [`KICKED`], [`STORED`].
    flags: AtomicU8,
    /// False once a look for a QoS 0 message to drop found none, until one is queued again:
    /// a full queue of QoS 1/2 refuses each further push in O(1), not a walk over the whole
    /// queue. Changed only under `inner`'s lock (an atomic for the room it takes: none, it
    /// fits the struct's padding).
    may_hold_qos0: AtomicBool,
}

impl Mailbox {
    /// An empty mailbox holding at most `limit` deliveries.
    pub fn new(limit: usize, queue_qos0_offline: bool) -> Mailbox {
        Mailbox {
            inner: Mutex::new(Inner::default()),
            signalled: AtomicBool::new(false),
            limit: AtomicU32::new(u32::try_from(limit).unwrap_or(u32::MAX)),
            flags: AtomicU8::new(if queue_qos0_offline { QOS0_OFFLINE } else { 0 }),
            may_hold_qos0: AtomicBool::new(false),
        }
    }

    /// Bounds a bridge's queue: at most `limit` deliveries and, if given, `max_bytes` payload
    /// bytes, from the next push on (what is queued already stays). Its drops are counted
    /// from now on ([`Mailbox::take_dropped`]).
    pub fn set_bounds(&self, limit: usize, max_bytes: Option<u64>) {
        self.limit
            .store(u32::try_from(limit).unwrap_or(u32::MAX), Ordering::Relaxed);
        let mut inner = self.inner.lock();
        let bytes = inner.total_bytes();
        let dropped = inner.budget.as_ref().map_or(0, |b| b.dropped);
        inner.budget = Some(Box::new(Budget {
            max_bytes: max_bytes.unwrap_or(u64::MAX),
            bytes,
            dropped,
        }));
    }

    /// Payload bytes queued, for a mailbox with bounds ([`Mailbox::set_bounds`]); 0 otherwise.
    pub fn queued_bytes(&self) -> u64 {
        self.inner.lock().budget.as_ref().map_or(0, |b| b.bytes)
    }

    /// Deliveries queued and their payload bytes, counted afresh (a walk over the queue under
    /// its lock: for the admin API, not for a hot path).
    pub fn depth(&self) -> (usize, u64) {
        let inner = self.inner.lock();
        (inner.len(), inner.total_bytes())
    }

    fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    fn queue_qos0_offline(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & QOS0_OFFLINE != 0
    }

    /// Whether a connection is draining this mailbox.
    pub fn is_online(&self) -> bool {
        self.flags.load(Ordering::Acquire) & ONLINE != 0
    }

    /// Marks the client connected or not.
    pub fn set_online(&self, online: bool) {
        if online {
            self.flags.fetch_or(ONLINE, Ordering::AcqRel);
        } else {
            self.flags.fetch_and(!ONLINE, Ordering::AcqRel);
        }
        if online {
            self.signal();
        }
    }

    /// Whether deliveries to this mailbox go to the store.
    pub fn is_stored(&self) -> bool {
        self.flags.load(Ordering::Acquire) & STORED != 0
    }

    /// Whether a delivery at `qos` to this mailbox is stored before the publisher is
    /// acknowledged: QoS 1/2 to a stored session, and QoS 0 too while it is offline if QoS 0
    /// is queued for offline clients.
    pub fn stores(&self, qos: QoS) -> bool {
        self.is_stored()
            && (qos != QoS::AtMostOnce || self.queue_qos0_offline() && !self.is_online())
    }

    /// Marks the mailbox's session as stored or not.
    pub fn set_stored(&self, stored: bool) {
        if stored {
            self.flags.fetch_or(STORED, Ordering::AcqRel);
        } else {
            self.flags.fetch_and(!STORED, Ordering::AcqRel);
        }
    }

    /// A delivery was refused at the limit: true if it is the first since the queue last
    /// emptied (worth one log line, not one per message).
    pub fn note_overflow(&self) -> bool {
        self.flags.fetch_or(OVERFLOWED, Ordering::AcqRel) & OVERFLOWED == 0
    }

    /// Tells the connection draining this mailbox to close (takeover).
    pub fn kick(&self) {
        self.flags.fetch_or(KICKED, Ordering::AcqRel);
        self.signal();
    }

    /// Tells the connection to close on an operator's word (admin API), ending its session
    /// too with `discard`.
    pub fn kick_by_admin(&self, discard: bool) {
        let flags = KICKED | BY_ADMIN | if discard { DISCARD } else { 0 };
        self.flags.fetch_or(flags, Ordering::AcqRel);
        self.signal();
    }

    /// Tells the connection to close: its login's token expired.
    pub fn kick_expired(&self) {
        self.flags.fetch_or(KICKED | EXPIRED, Ordering::AcqRel);
        self.signal();
    }

    /// Whether the connection was told to close; clears the signal.
    pub fn take_kick(&self) -> bool {
        self.take_kick_reason().is_some()
    }

    /// Why the connection was told to close, if it was; clears the signal.
    pub fn take_kick_reason(&self) -> Option<Kick> {
        let was = self
            .flags
            .fetch_and(!(KICKED | BY_ADMIN | DISCARD | EXPIRED), Ordering::AcqRel);
        if was & KICKED == 0 {
            return None;
        }
        if was & EXPIRED != 0 && was & BY_ADMIN == 0 {
            return Some(Kick::Expired);
        }
        Some(match (was & BY_ADMIN != 0, was & DISCARD != 0) {
            (false, _) => Kick::TakenOver,
            (true, discard) => Kick::Admin { discard },
        })
    }

    /// Wakes the connection without a delivery (it re-checks broker-wide state, e.g. shutdown).
    pub fn wake(&self) {
        self.signal();
    }

    /// Deliveries refused at a bound since the last call, for a mailbox with bounds
    /// ([`Mailbox::set_bounds`]); 0 otherwise.
    pub fn take_dropped(&self) -> u32 {
        let mut inner = self.inner.lock();
        inner
            .budget
            .as_mut()
            .map_or(0, |b| std::mem::take(&mut b.dropped))
    }

    /// Queues a delivery and wakes the connection.
    pub fn push(&self, delivery: Delivery) -> Result<(), DropReason> {
        if delivery.qos == QoS::AtMostOnce && !self.queue_qos0_offline() && !self.is_online() {
            return Err(DropReason::Offline);
        }
        let bytes = payload_bytes(&delivery);
        let limit = self.limit();
        let waker = {
            let mut inner = self.inner.lock();
            // A queue's delivery is for a connected member only. Asked under the lock that
            // `take_all` takes: a member whose connection ends is marked offline before its
            // mailbox is emptied back into its queues, so a delivery the queue picked it for
            // just before either lands before the emptying (and goes back with the rest) or
            // is refused here (and the queue hands it to another member). Without this it
            // could land after, in the mailbox of a session that has ended, and stay there.
            if delivery.link().is_some() && !self.is_online() {
                return Err(DropReason::Offline);
            }
            if inner.full(limit, bytes)
                && (delivery.qos == QoS::AtMostOnce || !self.make_room(&mut inner, limit, bytes))
            {
                inner.count_dropped();
                return Err(DropReason::QueueFull);
            }
            inner.count_in(bytes);
            if droppable(&delivery) {
                self.may_hold_qos0.store(true, Ordering::Relaxed);
            }
            let held = inner.held_mut();
            match &mut held.spill {
                Some(spill) => spill.push_back(Spilled::Held(Box::new(delivery))),
                None => held.queue.push_back(delivery),
            }
            self.signalled.store(true, Ordering::Release);
            std::mem::take(&mut inner.waker)
        };
        waker.wake();
        Ok(())
    }

    /// Makes room in `inner` for `bytes` more by dropping the oldest QoS 0 messages held in
    /// memory; false if that is not enough (whatever was dropped stays dropped: QoS 0 goes
    /// first). Once a look found none, none is looked for until one is queued again.
    fn make_room(&self, inner: &mut Inner, limit: u32, bytes: u32) -> bool {
        while inner.full(limit, bytes) {
            if !self.may_hold_qos0.load(Ordering::Relaxed) {
                return false;
            }
            if !inner.drop_oldest_qos0() {
                self.may_hold_qos0.store(false, Ordering::Relaxed);
                return false;
            }
        }
        true
    }

    /// Whether a stored delivery to this mailbox should be queued by sequence number only
    /// ([`Mailbox::push_stored`]): its client is offline or far behind.
    pub fn keeps_stored_only(&self) -> bool {
        if !self.is_online() {
            return true;
        }
        let inner = self.inner.lock();
        let held = inner.held();
        held.spill.is_some() || held.queue.len() >= SPILL_AT
    }

    /// Queues stored message `seq`, of `bytes` payload bytes, by its sequence number (it must
    /// be readable from the store, or about to be, by the time the connection drains it) and
    /// wakes the connection.
    pub fn push_stored(&self, seq: u64, bytes: u32) -> Result<(), DropReason> {
        let limit = self.limit();
        let waker = {
            let mut inner = self.inner.lock();
            if !self.make_room(&mut inner, limit, bytes) {
                inner.count_dropped();
                return Err(DropReason::QueueFull);
            }
            inner.count_in(bytes);
            inner.spill_mut().push_back(Spilled::Seq(seq, bytes));
            self.signalled.store(true, Ordering::Release);
            std::mem::take(&mut inner.waker)
        };
        waker.wake();
        Ok(())
    }

    /// Appends stored messages read back at start (sequence number and payload size), in
    /// order, whatever the limit (they were within it when stored).
    pub fn restore(&self, seqs: Vec<(u64, u32)>) {
        if seqs.is_empty() {
            return;
        }
        let mut inner = self.inner.lock();
        for (_, bytes) in &seqs {
            inner.count_in(*bytes);
        }
        inner.spill_mut().extend(
            seqs.into_iter()
                .map(|(seq, bytes)| Spilled::Seq(seq, bytes)),
        );
    }

    /// Queues a subscription's retained messages as one marker, at this place in the order:
    /// everything queued before goes first, everything pushed after waits until the stream is
    /// done. Never refused (it is not a message: the limit bounds what is held, not what a
    /// subscription matches); it counts as one entry.
    pub fn push_retained(&self, stream: RetainedStream) {
        let waker = {
            let mut inner = self.inner.lock();
            inner
                .spill_mut()
                .push_back(Spilled::Retained(Box::new(stream)));
            self.signalled.store(true, Ordering::Release);
            std::mem::take(&mut inner.waker)
        };
        waker.wake();
    }

    /// Puts deliveries back at the front, in order (messages taken back from a session).
    pub fn push_front_all(&self, queued: Vec<Queued>) {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        if queued
            .iter()
            .any(|q| matches!(q, Queued::Ready(d) if droppable(d)))
        {
            self.may_hold_qos0.store(true, Ordering::Relaxed);
        }
        for q in &queued {
            inner.count_in(match q {
                Queued::Ready(d) => payload_bytes(d),
                Queued::Stored(_, bytes) => *bytes,
                Queued::Retained(_) => 0,
            });
        }
        if queued.is_empty() {
            return;
        }
        let held = inner.held_mut();
        if queued.iter().all(|q| matches!(q, Queued::Ready(_))) {
            for q in queued.into_iter().rev() {
                if let Queued::Ready(d) = q {
                    held.queue.push_front(d);
                }
            }
            return;
        }
        // Some are in the store only, or are retained streams: everything queued goes behind
        // them, in the spill.
        let mut spill: VecDeque<Spilled> = queued.into_iter().map(Spilled::from_queued).collect();
        spill.extend(held.queue.drain(..).map(|d| Spilled::Held(Box::new(d))));
        if let Some(old) = held.spill.take() {
            spill.extend(*old);
        }
        held.spill = Some(Box::new(spill));
    }

    /// Moves up to `max` deliveries into `out`, in order, stopping at the first QoS 1/2 delivery
    /// once `window` such deliveries were taken (so order is kept behind a full window).
    /// Deliveries queued by sequence number are read back through `source` (`None`: expired,
    /// unreadable, skipped); a retained stream is stepped through it in its place, outside the
    /// lock, and removed once done. If it took `max` and more is queued, or a stream has more
    /// to send than one step gave, the mailbox stays signalled so the drainer comes back even
    /// if nothing it took could be written.
    pub fn drain_into(
        &self,
        out: &mut Vec<Delivery>,
        max: usize,
        mut window: usize,
        source: &mut dyn Source,
    ) {
        let mut inner = self.inner.lock();
        let Some(held) = inner.held.as_deref_mut() else {
            if self.flags.load(Ordering::Relaxed) & OVERFLOWED != 0 {
                self.flags.fetch_and(!OVERFLOWED, Ordering::AcqRel);
            }
            return;
        };
        let q = &mut held.queue;
        let mut freed = 0u64;
        while out.len() < max {
            match q.front() {
                None => break,
                Some(d) if d.qos != QoS::AtMostOnce => {
                    if window == 0 {
                        break;
                    }
                    window -= 1;
                }
                Some(_) => {}
            }
            if let Some(d) = q.pop_front() {
                freed += u64::from(payload_bytes(&d));
                out.push(d);
            }
        }
        if q.is_empty() && q.capacity() > 64 {
            // A burst's room is not kept once the client has caught up.
            *q = VecDeque::new();
        }
        let queue_left = !q.is_empty();
        inner.count_out(freed);
        if queue_left {
            self.come_back(out.len() >= max);
            return;
        }
        loop {
            let Some(spill) = inner
                .held
                .as_deref_mut()
                .and_then(|h| h.spill.as_deref_mut())
            else {
                if self.flags.load(Ordering::Relaxed) & OVERFLOWED != 0 {
                    self.flags.fetch_and(!OVERFLOWED, Ordering::AcqRel);
                }
                return;
            };
            let mut freed = 0u64;
            let mut stream = None;
            while out.len() < max {
                let qos = match spill.front() {
                    None => break,
                    Some(Spilled::Retained(_)) => {
                        if let Some(Spilled::Retained(s)) = spill.pop_front() {
                            stream = Some(s);
                        }
                        break;
                    }
                    // Stored deliveries are QoS 1/2 unless QoS 0 ones are stored too.
                    Some(Spilled::Seq(..)) => QoS::AtLeastOnce,
                    Some(Spilled::Held(d)) => d.qos,
                };
                if qos != QoS::AtMostOnce && window == 0 {
                    break;
                }
                let Some(next) = spill.pop_front() else { break };
                freed += u64::from(next.bytes());
                let delivery = match next {
                    Spilled::Seq(seq, _) => source.load(seq),
                    Spilled::Held(d) => Some(*d),
                    Spilled::Retained(_) => None,
                };
                if let Some(d) = delivery {
                    if d.qos != QoS::AtMostOnce {
                        window = window.saturating_sub(1);
                    }
                    out.push(d);
                }
            }
            let done = spill.is_empty() && stream.is_none();
            inner.count_out(freed);
            let Some(mut stream) = stream else {
                if done {
                    inner.held_mut().spill = None;
                    self.flags.fetch_and(!OVERFLOWED, Ordering::AcqRel);
                } else {
                    self.come_back(out.len() >= max);
                }
                return;
            };
            // Stepped without the lock, so the router is never held up by the walk; what it
            // pushes meanwhile goes behind (the spill stays, if empty, until the stream is
            // put back or done; only this drainer takes from it).
            drop(inner);
            let before = out.len();
            let streamed = source.stream_retained(&mut stream, out, max - before, window);
            let sent_qos12 = out[before..]
                .iter()
                .filter(|d| d.qos != QoS::AtMostOnce)
                .count();
            window = window.saturating_sub(sent_qos12);
            inner = self.inner.lock();
            match streamed {
                Streamed::Done => {}
                Streamed::Blocked | Streamed::More => {
                    inner.spill_mut().push_front(Spilled::Retained(stream));
                    self.come_back(streamed == Streamed::More);
                    return;
                }
            }
        }
    }

    /// Keeps the mailbox signalled when the drainer stopped for its own bounds (`again`), not
    /// for lack of window: it then comes back without waiting for a push.
    fn come_back(&self, again: bool) {
        if again {
            self.signalled.store(true, Ordering::Release);
        }
    }

    /// Stored sequence numbers of the queued deliveries.
    pub fn stored_seqs(&self) -> Vec<u64> {
        let inner = self.inner.lock();
        let held = inner.held();
        let spilled = held.spill.iter().flat_map(|s| s.iter()).map(|s| match s {
            Spilled::Seq(seq, _) => Seq::new(*seq),
            Spilled::Held(d) => d.seq,
            Spilled::Retained(_) => None,
        });
        held.queue
            .iter()
            .map(|d| d.seq)
            .chain(spilled)
            .flatten()
            .map(Seq::get)
            .collect()
    }

    /// Takes every queued delivery and retained stream, in order (for redistribution or
    /// discard).
    pub fn take_all(&self) -> Vec<Queued> {
        let Held { queue, spill } = {
            let mut inner = self.inner.lock();
            if let Some(b) = &mut inner.budget {
                b.bytes = 0;
            }
            inner.held.take().map(|h| *h).unwrap_or_default()
        };
        let mut all: Vec<Queued> = queue.into_iter().map(Queued::Ready).collect();
        all.extend(spill.into_iter().flat_map(|s| *s).map(Spilled::into_queued));
        all
    }

    /// Whether it holds a queue's room, even an empty one.
    #[cfg(test)]
    pub(super) fn holds_room(&self) -> bool {
        self.inner.lock().held.is_some()
    }

    /// Number of queued deliveries.
    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Completes when something was pushed since the last wait (a stored permit makes a push
    /// between drain and wait impossible to miss).
    pub async fn notified(&self) {
        std::future::poll_fn(|cx| self.poll_notified(cx)).await;
    }

    fn poll_notified(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Counts against the task's tokio budget like any tokio resource: a drainer that keeps
        // itself signalled (a long retained stream whose messages all fail to go out) still
        // yields to the other tasks on its thread.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        if self.signalled.swap(false, Ordering::AcqRel) {
            coop.made_progress();
            return Poll::Ready(());
        }
        self.set_waker(cx.waker());
        if self.signalled.swap(false, Ordering::AcqRel) {
            coop.made_progress();
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Rings bed `token` through `bell` on wake-ups from now on (a connection going dormant);
    /// false if the bell cannot carry it (the connection then stays awake). If a signal is
    /// already pending, the bed is rung at once; the signal stays set for the next consumer.
    pub fn wake_through(&self, bell: &Bell, token: usize) -> bool {
        let Some(word) = bell.word(token) else {
            return false;
        };
        {
            let mut inner = self.inner.lock();
            inner.waker = Waiter::Bed(Some(word));
            // A dormant client keeps no room for what it might be sent.
            match inner.held.as_deref_mut() {
                Some(h) if h.queue.is_empty() && h.spill.is_none() => inner.held = None,
                Some(h) => h.queue.shrink_to_fit(),
                None => {}
            }
        }
        if self.signalled.load(Ordering::Acquire) {
            self.signal();
        }
        true
    }

    fn set_waker(&self, waker: &Waker) {
        let slot = &mut self.inner.lock().waker;
        if !slot.wakes(waker) {
            *slot = Waiter::Task(waker.clone());
        }
    }

    /// Records a signal and wakes whoever waits, outside the lock.
    fn signal(&self) {
        self.signalled.store(true, Ordering::Release);
        let waker = std::mem::take(&mut self.inner.lock().waker);
        waker.wake();
    }
}
