//! Logins that expire (a JWT's `exp`): one broker-wide task keeps them in time order and tells
//! each connection to close when its time comes, through its mailbox (so a dormant connection
//! wakes for it too). No per-connection timer or task, and nothing added to what an idle
//! connection keeps.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::{BrokerState, Mailbox};

/// One expiring login, soonest first.
type Due = Reverse<Expiring>;

/// A login that ends at `at` (Unix seconds): the connection of `generation` with `mailbox`.
struct Expiring {
    at: u64,
    client_id: Arc<str>,
    generation: u32,
    mailbox: Weak<Mailbox>,
}

impl PartialEq for Expiring {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Expiring {}

impl PartialOrd for Expiring {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Expiring {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

/// When each expiring login ends.
#[derive(Default)]
pub(super) struct Expiries {
    due: Mutex<BinaryHeap<Due>>,
    changed: Notify,
    running: AtomicBool,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl BrokerState {
    /// The connection of `generation` for `client_id` ends once `at` (Unix seconds) has
    /// passed (v5: DISCONNECT 0xA0 Maximum connect time). A connection that ended before is
    /// left alone, as is a later one under the same client id. Call inside the runtime.
    pub fn expire_login(
        self: &Arc<Self>,
        client_id: &Arc<str>,
        generation: u32,
        mailbox: &Arc<Mailbox>,
        at: u64,
    ) {
        let expiries = &self.expiries;
        expiries.due.lock().push(Reverse(Expiring {
            at,
            client_id: Arc::clone(client_id),
            generation,
            mailbox: Arc::downgrade(mailbox),
        }));
        expiries.changed.notify_one();
        if !expiries.running.swap(true, Ordering::AcqRel) {
            tokio::spawn(watch(Arc::clone(expiries), Arc::downgrade(self)));
        }
    }
}

/// Ends logins as they expire; returns when the broker is gone or stopping.
async fn watch(expiries: Arc<Expiries>, state: Weak<BrokerState>) {
    loop {
        let wait = {
            let Some(state) = state.upgrade() else { return };
            if state.is_shutting_down() {
                return;
            }
            let now = unix_now();
            let mut due = expiries.due.lock();
            while let Some(Reverse(e)) = due.peek() {
                // `at` is the last valid second.
                if e.at >= now {
                    break;
                }
                if let Some(Reverse(e)) = due.pop() {
                    // A mailbox gone is a connection gone.
                    if e.mailbox.strong_count() > 0 {
                        let mailbox = e.mailbox.as_ptr();
                        state
                            .registry
                            .kick_expired(&e.client_id, e.generation, mailbox);
                    }
                }
            }
            if due.capacity() > 64 && due.len() < due.capacity() / 4 {
                due.shrink_to_fit();
            }
            // Re-checked at least once a minute: the broker may have stopped meanwhile.
            // The first instant past the soonest `at` (`at` is the last valid second).
            due.peek().map_or(Duration::from_secs(60), |Reverse(e)| {
                (UNIX_EPOCH + Duration::from_secs(e.at + 1))
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
                    .min(Duration::from_secs(60))
            })
        };
        // A push meanwhile left a permit: it is not missed.
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = expiries.changed.notified() => {}
        }
    }
}
