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

use super::BrokerState;

/// One expiring login: (Unix seconds, client id, connection generation), soonest first.
type Due = Reverse<(u64, Arc<str>, u64)>;

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
    pub fn expire_login(self: &Arc<Self>, client_id: &Arc<str>, generation: u64, at: u64) {
        let expiries = &self.expiries;
        expiries
            .due
            .lock()
            .push(Reverse((at, Arc::clone(client_id), generation)));
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
            while let Some(Reverse((at, _, _))) = due.peek() {
                // `at` is the last valid second.
                if *at >= now {
                    break;
                }
                if let Some(Reverse((_, client_id, generation))) = due.pop() {
                    state.registry.kick_expired(&client_id, generation);
                }
            }
            if due.capacity() > 64 && due.len() < due.capacity() / 4 {
                due.shrink_to_fit();
            }
            // Re-checked at least once a minute: the broker may have stopped meanwhile.
            due.peek()
                .map_or(Duration::from_secs(60), |Reverse((at, _, _))| {
                    Duration::from_secs((at + 1).saturating_sub(now)).min(Duration::from_secs(60))
                })
        };
        // A push meanwhile left a permit: it is not missed.
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = expiries.changed.notified() => {}
        }
    }
}
