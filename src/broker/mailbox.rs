//! The bounded FIFO between the router and one client: the router pushes and returns at once; the
//! client's connection task drains it when it can write. While the client is offline the mailbox is
//! its session queue. Bounded so a client that stops reading never makes memory grow: at the limit
//! QoS 0 goes first, then the newest message is refused; every drop is counted.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

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

/// One client's queue of pending deliveries.
#[derive(Debug)]
pub struct Mailbox {
    queue: Mutex<VecDeque<Delivery>>,
    notify: Notify,
    limit: usize,
    online: AtomicBool,
    /// Set when another connection takes this client id over; the connection draining this
    /// mailbox sees it on its next wake-up.
    kicked: AtomicBool,
    queue_qos0_offline: bool,
}

impl Mailbox {
    /// An empty mailbox holding at most `limit` deliveries.
    pub fn new(limit: usize, queue_qos0_offline: bool) -> Mailbox {
        Mailbox {
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            limit,
            online: AtomicBool::new(false),
            kicked: AtomicBool::new(false),
            queue_qos0_offline,
        }
    }

    /// Whether a connection is draining this mailbox.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// Marks the client connected or not.
    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Release);
        if online {
            self.notify.notify_one();
        }
    }

    /// Tells the connection draining this mailbox to close (takeover).
    pub fn kick(&self) {
        self.kicked.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Whether the connection was told to close; clears the signal.
    pub fn take_kick(&self) -> bool {
        self.kicked.swap(false, Ordering::AcqRel)
    }

    /// Wakes the connection without a delivery (it re-checks broker-wide state, e.g. shutdown).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Queues a delivery and wakes the connection.
    pub fn push(&self, delivery: Delivery) -> Result<(), DropReason> {
        if delivery.qos == QoS::AtMostOnce && !self.queue_qos0_offline && !self.is_online() {
            return Err(DropReason::Offline);
        }
        {
            let mut q = self.queue.lock();
            if q.len() >= self.limit {
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
        }
        self.notify.notify_one();
        Ok(())
    }

    /// Puts deliveries back at the front, in order (messages taken back from a session).
    pub fn push_front_all(&self, deliveries: Vec<Delivery>) {
        let mut q = self.queue.lock();
        for d in deliveries.into_iter().rev() {
            q.push_front(d);
        }
    }

    /// Moves up to `max` deliveries into `out`, in order, stopping at the first QoS 1/2 delivery
    /// once `window` such deliveries were taken (so order is kept behind a full window).
    pub fn drain_into(&self, out: &mut Vec<Delivery>, max: usize, mut window: usize) {
        let mut q = self.queue.lock();
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

    /// Takes every queued delivery (for redistribution or discard).
    pub fn take_all(&self) -> VecDeque<Delivery> {
        std::mem::take(&mut *self.queue.lock())
    }

    /// Number of queued deliveries.
    pub fn len(&self) -> usize {
        self.queue.lock().len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Completes when something was pushed since the last wait (a stored permit makes a push
    /// between drain and wait impossible to miss).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}
