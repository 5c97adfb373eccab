//! Bridges to remote brokers (`[[bridge]]`): each is an MQTT client inside Tern. Its `out`
//! side is an ordinary local session, `$bridge/NAME`, subscribed to the `out` rules: what it
//! is owed waits in its mailbox, in the store with persistence on, exactly like a persistent
//! client's queue, and goes to the remote in order with the session's QoS 1/2 flows. Its `in`
//! side subscribes on the remote and publishes what arrives into the local router. Both ends
//! use `protocol` and `session`: there is no second codec.
//!
//! Loops: the local subscription has No Local (what the bridge brought in never goes back
//! out), and with MQTT 5 so has the remote one (what it sent never comes back). Between
//! brokers that each bridge to the other, a message carries the ids of the Tern brokers it
//! crossed a bridge at, coming in or going out (user property [`PATH_PROPERTY`], on MQTT 5
//! links); a broker drops one that has been through it already, so nothing circles. Mutual
//! bridges of the same topics still give two routes between the brokers: bridge a topic from
//! one side (one bridge with `both`) to get each message once.

mod echo;
mod link;
mod local;
mod outgoing;
mod rules;
mod tls;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::broker::BrokerState;
use crate::config::BridgeConfig;

use crate::broker::bridged::add_to_path;
pub use crate::broker::bridged::{LOCAL_ID_PREFIX, PATH_PROPERTY};

/// A running bridge task and how to stop it.
struct Running {
    config: BridgeConfig,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The broker's bridges: started with it, changed by a reload, stopped with it.
pub struct Bridges {
    state: Arc<BrokerState>,
    running: Mutex<HashMap<String, Running>>,
}

/// How long stopping bridges may take at shutdown (each sends DISCONNECT and parks its session).
const STOP_WAIT: Duration = Duration::from_secs(3);

impl Bridges {
    /// Starts the configured bridges.
    pub fn start(state: &Arc<BrokerState>) -> Bridges {
        let bridges = Bridges {
            state: Arc::clone(state),
            running: Mutex::new(HashMap::new()),
        };
        bridges.reload(&state.config().bridge);
        bridges
    }

    /// Puts `configs` in force: bridges removed or changed are stopped (their sessions keep
    /// what is queued), new and changed ones started; unchanged ones carry on untouched.
    pub fn reload(&self, configs: &[BridgeConfig]) {
        let mut running = self.running.lock();
        let stale: Vec<String> = running
            .iter()
            .filter(|(name, r)| !configs.iter().any(|c| &c.name == *name && *c == r.config))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(r) = running.remove(&name) {
                info!(bridge = %name, "bridge stopped (removed or changed)");
                let _ = r.stop.send(true);
            }
        }
        for c in configs {
            if running.contains_key(&c.name) {
                continue;
            }
            let (stop, stop_rx) = watch::channel(false);
            let task = tokio::spawn(link::run(c.clone(), Arc::clone(&self.state), stop_rx));
            info!(bridge = %c.name, addresses = ?c.addresses, "bridge started");
            running.insert(
                c.name.clone(),
                Running {
                    config: c.clone(),
                    stop,
                    task,
                },
            );
        }
    }

    /// Stops every bridge (DISCONNECT to the remote, local sessions parked) within a few
    /// seconds.
    pub async fn shutdown(&self) {
        let all: Vec<Running> = self.running.lock().drain().map(|(_, r)| r).collect();
        for r in &all {
            let _ = r.stop.send(true);
        }
        for r in all {
            if tokio::time::timeout(STOP_WAIT, r.task).await.is_err() {
                warn!(bridge = %r.config.name, "bridge did not stop in time");
            }
        }
    }
}
