//! The bounded FIFO between the router and one client: the router pushes and returns at once; the
//! client's connection task drains it when it can write. While the client is offline the mailbox is
//! its session queue. Bounded so a client that stops reading never makes memory grow: at the limit
//! QoS 0 goes first, then the newest message is refused; every drop is counted.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use crate::protocol::QoS;
use crate::session::Delivery;

/// Why a delivery was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The queue was at `max_queued_messages`.
    QueueFull,
    /// QoS 0 for an offline client, not queued by configuration.
    Offline,
}

/// The queue and who to wake, under one lock (one lock per push, and a small mailbox).
#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Delivery>,
    /// Who to wake on the next signal: the connection's task while it runs, the dormitory's
    /// waker while it is dormant (a plain slot, not a `Notify`: one consumer at a time).
    waker: Option<Waker>,
}

/// A connection is draining the mailbox.
const ONLINE: u8 = 1;
/// Another connection took the client id over; the connection draining this mailbox sees it on
/// its next wake-up.
const KICKED: u8 = 2;
/// Its session is in the store: QoS 1/2 deliveries to it are stored before the publisher is
/// acknowledged.
const STORED: u8 = 4;

/// One client's queue of pending deliveries.
#[derive(Debug)]
pub struct Mailbox {
    inner: Mutex<Inner>,
    /// Set by every push, kick and wake; cleared by the one consumer that sees it.
    signalled: AtomicBool,
    limit: u32,
    /// [`ONLINE`], [`KICKED`], [`STORED`].
    flags: AtomicU8,
    queue_qos0_offline: bool,
}

impl Mailbox {
    /// An empty mailbox holding at most `limit` deliveries.
    pub fn new(limit: usize, queue_qos0_offline: bool) -> Mailbox {
        Mailbox {
            inner: Mutex::new(Inner::default()),
            signalled: AtomicBool::new(false),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            flags: AtomicU8::new(0),
            queue_qos0_offline,
        }
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

    /// Marks the mailbox's session as stored or not.
    pub fn set_stored(&self, stored: bool) {
        if stored {
            self.flags.fetch_or(STORED, Ordering::AcqRel);
        } else {
            self.flags.fetch_and(!STORED, Ordering::AcqRel);
        }
    }

    /// Tells the connection draining this mailbox to close (takeover).
    pub fn kick(&self) {
        self.flags.fetch_or(KICKED, Ordering::AcqRel);
        self.signal();
    }

    /// Whether the connection was told to close; clears the signal.
    pub fn take_kick(&self) -> bool {
        self.flags.fetch_and(!KICKED, Ordering::AcqRel) & KICKED != 0
    }

    /// Wakes the connection without a delivery (it re-checks broker-wide state, e.g. shutdown).
    pub fn wake(&self) {
        self.signal();
    }

    /// Queues a delivery and wakes the connection.
    pub fn push(&self, delivery: Delivery) -> Result<(), DropReason> {
        if delivery.qos == QoS::AtMostOnce && !self.queue_qos0_offline && !self.is_online() {
            return Err(DropReason::Offline);
        }
        let waker = {
            let mut inner = self.inner.lock();
            let q = &mut inner.queue;
            if q.len() >= self.limit as usize {
                if delivery.qos == QoS::AtMostOnce {
                    return Err(DropReason::QueueFull);
                }
                // Make room by dropping the oldest QoS 0 message, if there is one.
                match q.iter().position(|d| d.qos == QoS::AtMostOnce) {
                    Some(i) => {
                        q.remove(i);
                    }
                    None => return Err(DropReason::QueueFull),
                }
            }
            q.push_back(delivery);
            self.signalled.store(true, Ordering::Release);
            inner.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Appends deliveries read back from the store, in order, whatever the limit (they were
    /// within it when stored).
    pub fn restore(&self, deliveries: Vec<Delivery>) {
        self.inner.lock().queue.extend(deliveries);
    }

    /// Puts deliveries back at the front, in order (messages taken back from a session).
    pub fn push_front_all(&self, deliveries: Vec<Delivery>) {
        let q = &mut self.inner.lock().queue;
        for d in deliveries.into_iter().rev() {
            q.push_front(d);
        }
    }

    /// Moves up to `max` deliveries into `out`, in order, stopping at the first QoS 1/2 delivery
    /// once `window` such deliveries were taken (so order is kept behind a full window).
    pub fn drain_into(&self, out: &mut Vec<Delivery>, max: usize, mut window: usize) {
        let q = &mut self.inner.lock().queue;
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
                out.push(d);
            }
        }
        if q.is_empty() && q.capacity() > 64 {
            // A burst's room is not kept once the client has caught up.
            *q = VecDeque::new();
        }
    }

    /// Stored sequence numbers of the queued deliveries.
    pub fn stored_seqs(&self) -> Vec<u64> {
        let inner = self.inner.lock();
        inner
            .queue
            .iter()
            .map(|d| d.seq)
            .filter(|s| *s != 0)
            .collect()
    }

    /// Takes every queued delivery (for redistribution or discard).
    pub fn take_all(&self) -> VecDeque<Delivery> {
        std::mem::take(&mut self.inner.lock().queue)
    }

    /// Number of queued deliveries.
    pub fn len(&self) -> usize {
        self.inner.lock().queue.len()
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
        if self.signalled.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.set_waker(cx.waker());
        if self.signalled.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Hands wake-ups to `waker` from now on (a connection going dormant). If a signal is
    /// already pending, `waker` is woken at once; the signal stays set for the next consumer.
    pub fn wake_through(&self, waker: &Waker) {
        self.set_waker(waker);
        if self.signalled.load(Ordering::Acquire) {
            self.signal();
        }
    }

    fn set_waker(&self, waker: &Waker) {
        let slot = &mut self.inner.lock().waker;
        match slot {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    /// Records a signal and wakes whoever waits, outside the lock.
    fn signal(&self) {
        self.signalled.store(true, Ordering::Release);
        let waker = self.inner.lock().waker.take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}
