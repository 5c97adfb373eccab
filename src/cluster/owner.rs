//! One owner per client id, cluster-wide, and who is in the cluster.
//!
//! Ownership lives in a key-value bucket: a CONNECT reads the client id's entry and writes
//! this node's name over it with compare-and-set on the revision it read (or creates it);
//! the revision it gets is this node's claim. Every node watches the bucket; a node that sees
//! a newer claim from another node for a client it holds disconnects it (v5 DISCONNECT 0x8E)
//! and ends the session it had here. The watch resumes from the last revision it saw when
//! NATS drops it (measured necessary: without it, clients stayed connected on two nodes).
//!
//! Membership is a second bucket of heartbeats that age out: the peers a SUBACK barrier
//! waits for are the nodes whose heartbeat is recent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use dashmap::DashMap;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{js_err, ClusterError};
use crate::broker::{BrokerState, Waiting};
use crate::metrics;

/// How often a node says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a claim stays in the ownership bucket, so the bucket holds the client ids of the
/// last day, not every one ever seen. A claim that ages out costs nothing: a later CONNECT
/// elsewhere creates the key anew, with a higher revision, and the watch tells this node all
/// the same.
const CLAIMS_KEPT: Duration = Duration::from_secs(24 * 3600);

/// A node not heard of for this long is not waited for.
pub(super) const ALIVE: Duration = Duration::from_secs(7);

/// How long ago `entry` was written.
pub(super) fn age(entry: &kv::Entry) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    Duration::from_nanos(u64::try_from(now - entry.created.unix_timestamp_nanos()).unwrap_or(0))
}

/// How many client ids each node holds (a walk over the whole ownership bucket).
pub(super) async fn count_by_node(owners: &kv::Store) -> Result<super::status::Held, String> {
    let mut held = super::status::Held::new();
    let mut keys = owners.keys().await.map_err(|e| e.to_string())?;
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| e.to_string())?;
        if let Ok(Some(e)) = owners.entry(key).await {
            if let Ok(claim) = serde_json::from_slice::<Claim>(&e.value) {
                *held.entry(claim.node).or_insert(0) += 1;
            }
        }
    }
    Ok(held)
}

/// An ownership record, with the will of the connected client.
#[derive(Debug, Serialize, Deserialize)]
struct Claim {
    node: String,
    client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    will: Option<KeptWill>,
}

/// A will kept with its client's claim.
#[derive(Debug, Serialize, Deserialize)]
struct KeptWill {
    msg: super::wire::KeptMessage,
    delay: u32,
    expiry: u32,
}

/// A node whose heartbeat is older than this is dead: the survivors take over its clients'
/// claims and publish their wills.
const DEAD: Duration = Duration::from_secs(8);

/// The live peers (other nodes), by the time of their last heartbeat.
#[derive(Clone, Default)]
pub(super) struct Peers {
    me: Arc<str>,
    seen: Arc<parking_lot::Mutex<HashMap<String, Instant>>>,
}

impl Peers {
    /// How many other nodes are alive.
    pub(super) fn count(&self) -> usize {
        let now = Instant::now();
        self.seen
            .lock()
            .iter()
            .filter(|(node, at)| **node != *self.me && now.duration_since(**at) < ALIVE)
            .count()
    }

    fn heard(&self, node: &str) {
        self.seen.lock().insert(node.to_string(), Instant::now());
    }

    fn left(&self, node: &str) {
        self.seen.lock().remove(node);
    }

    /// Other nodes not heard of for [`DEAD`], with when they were last heard of.
    fn dead(&self) -> Vec<(String, Instant)> {
        let now = Instant::now();
        self.seen
            .lock()
            .iter()
            .filter(|(node, at)| **node != *self.me && now.duration_since(**at) >= DEAD)
            .map(|(node, at)| (node.clone(), *at))
            .collect()
    }
}

pub(super) struct Owners {
    node: String,
    owners: kv::Store,
    nodes: kv::Store,
    /// Client ids this node holds, with the revision of its claim.
    held: Arc<DashMap<Arc<str>, u64>>,
    peers: Peers,
    /// Whether the last heartbeat was stored.
    healthy: Arc<std::sync::atomic::AtomicBool>,
    /// Since when heartbeats have been stored without a failure.
    healthy_since: Arc<parking_lot::Mutex<Instant>>,
}

async fn bucket(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store, ClusterError> {
    let name = config.bucket.clone();
    if let Ok(store) = js.get_key_value(&name).await {
        return Ok(store);
    }
    js.create_key_value(config)
        .await
        .map_err(|e| js_err(format!("create bucket {name}"))(e.to_string()))
}

/// The bucket key for a client id: any string a client may use, in the characters keys allow.
fn key(client_id: &str) -> String {
    let digest = Sha256::digest(client_id.as_bytes());
    let mut k = String::with_capacity(2 + 64);
    k.push_str("c.");
    for b in digest {
        k.push_str(&format!("{b:02x}"));
    }
    k
}

impl Owners {
    pub(super) async fn open(
        js: &jetstream::Context,
        owners: &str,
        nodes: &str,
        replicas: usize,
        node: &str,
    ) -> Result<Owners, ClusterError> {
        let owners = bucket(
            js,
            kv::Config {
                bucket: owners.to_string(),
                history: 1,
                max_age: CLAIMS_KEPT,
                num_replicas: replicas,
                storage: jetstream::stream::StorageType::File,
                ..kv::Config::default()
            },
        )
        .await?;
        let nodes = bucket(
            js,
            kv::Config {
                bucket: nodes.to_string(),
                history: 1,
                max_age: ALIVE * 2,
                num_replicas: replicas,
                storage: jetstream::stream::StorageType::Memory,
                ..kv::Config::default()
            },
        )
        .await?;
        Ok(Owners {
            node: node.to_string(),
            owners,
            nodes,
            held: Arc::new(DashMap::new()),
            healthy: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            healthy_since: Arc::new(parking_lot::Mutex::new(Instant::now())),
            peers: Peers {
                me: Arc::from(node),
                seen: Arc::default(),
            },
        })
    }

    /// The live peers, for the SUBACK barrier.
    pub(super) fn peers(&self) -> Peers {
        self.peers.clone()
    }

    /// Starts heartbeats and both watches; returns once this node's heartbeat is stored and
    /// the current members are known. Refuses to start while another run of a node with the
    /// same id is alive: two nodes under one id would each take the other's claims for their
    /// own.
    pub(super) async fn start(
        &self,
        state: &Arc<BrokerState>,
        origin: &str,
    ) -> Result<(), ClusterError> {
        let me = self.node.clone();
        let beat = bytes::Bytes::from(origin.to_string());
        self.check_unique(&me, &beat).await?;
        self.nodes
            .put(&me, beat.clone())
            .await
            .map_err(|e| js_err("write this node's heartbeat")(e.to_string()))?;
        let mut keys = self
            .nodes
            .keys()
            .await
            .map_err(|e| js_err("read the cluster's members")(e.to_string()))?;
        while let Some(Ok(k)) = keys.next().await {
            self.peers.heard(&k);
        }
        let from = self
            .owners
            .status()
            .await
            .map_err(|e| js_err("read the ownership bucket")(e.to_string()))?
            .info
            .state
            .last_sequence
            + 1;
        let nodes = self.nodes.clone();
        let healthy = Arc::clone(&self.healthy);
        let healthy_since = Arc::clone(&self.healthy_since);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tick.tick().await;
                let stored = nodes.put(&me, beat.clone()).await;
                let was = healthy.swap(stored.is_ok(), std::sync::atomic::Ordering::Relaxed);
                match stored {
                    Err(e) => {
                        metrics::cluster_error("heartbeat");
                        tracing::warn!(error = %e, "heartbeat not stored: not ready");
                    }
                    Ok(_) if !was => {
                        *healthy_since.lock() = Instant::now();
                        tracing::info!("heartbeat stored again: ready");
                    }
                    Ok(_) => {}
                }
            }
        });
        let (nodes, peers) = (self.nodes.clone(), self.peers.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(mut w) = nodes.watch_all().await {
                    while let Some(Ok(e)) = w.next().await {
                        match e.operation {
                            kv::Operation::Put => peers.heard(&e.key),
                            _ => peers.left(&e.key),
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        tokio::spawn(watch(
            self.owners.clone(),
            from,
            self.node.clone(),
            Arc::clone(&self.held),
            Arc::downgrade(state),
        ));
        tokio::spawn(reap(
            Reaper {
                owners: self.owners.clone(),
                nodes: self.nodes.clone(),
                peers: self.peers.clone(),
                me: self.node.clone(),
                healthy: Arc::clone(&self.healthy),
                healthy_since: Arc::clone(&self.healthy_since),
            },
            Arc::clone(&self.held),
            Arc::downgrade(state),
        ));
        Ok(())
    }

    /// Forgets the will kept with `claim`, if that is still the client's claim (fenced by its
    /// revision: a newer claim, here or elsewhere, is left alone).
    pub(super) fn will_settled(&self, client_id: &Arc<str>, claim: u64) -> Waiting<()> {
        let (owners, held) = (self.owners.clone(), Arc::clone(&self.held));
        let (client_id, me) = (Arc::clone(client_id), self.node.clone());
        Box::pin(async move {
            let value = serde_json::to_vec(&Claim {
                node: me,
                client_id: client_id.to_string(),
                will: None,
            })
            .unwrap_or_default();
            if let Ok(rev) = owners.update(key(&client_id), value.into(), claim).await {
                held.alter(&client_id, |_, r| if r == claim { rev } else { r });
            }
        })
    }

    /// Fails if another run of node `me` is alive: its heartbeat is recent and changes. A
    /// recent heartbeat that stops changing is a run that died (kill -9, a restart): it is
    /// waited out, at most [`ALIVE`].
    async fn check_unique(&self, me: &str, beat: &bytes::Bytes) -> Result<(), ClusterError> {
        let read = || async {
            self.nodes
                .entry(me.to_string())
                .await
                .map_err(|e| js_err("read the cluster's members")(e.to_string()))
                .map(|e| e.filter(|e| e.operation == kv::Operation::Put))
        };
        let Some(first) = read().await? else {
            return Ok(());
        };
        if first.value == *beat {
            return Ok(());
        }
        let age = age(&first);
        if age >= ALIVE {
            return Ok(());
        }
        tokio::time::sleep(ALIVE - age).await;
        match read().await? {
            Some(e) if e.revision != first.revision => Err(ClusterError::NodeIdInUse {
                node: me.to_string(),
                other: String::from_utf8_lossy(&e.value).into_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Whether the last heartbeat was stored.
    pub(super) fn healthy(&self) -> bool {
        self.healthy.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes this node's heartbeat out, so peers stop waiting for it at once.
    pub(super) fn leave(&self) -> Waiting<()> {
        let (nodes, me) = (self.nodes.clone(), self.node.clone());
        Box::pin(async move {
            if let Err(e) = nodes.delete(&me).await {
                tracing::debug!(error = %e, "heartbeat not removed");
            }
        })
    }

    /// Claims `client_id` for this node (see the module doc).
    pub(super) fn claim(
        &self,
        client_id: &Arc<str>,
        will: Option<crate::broker::ClusterWill>,
        timeout: Duration,
    ) -> Waiting<Result<u64, String>> {
        let owners = self.owners.clone();
        let held = Arc::clone(&self.held);
        let me = self.node.clone();
        let client_id = Arc::clone(client_id);
        let value = serde_json::to_vec(&Claim {
            node: self.node.clone(),
            client_id: client_id.to_string(),
            will: will.map(|w| KeptWill {
                msg: super::wire::KeptMessage::of(&w.msg, &client_id),
                delay: w.delay,
                expiry: w.expiry,
            }),
        })
        .unwrap_or_default();
        Box::pin(async move {
            let k = key(&client_id);
            let attempt = async {
                for _ in 0..16 {
                    let current = owners.entry(k.clone()).await.map_err(|e| e.to_string())?;
                    let written = match current {
                        Some(e) if e.operation == kv::Operation::Put => {
                            let previous: Option<Claim> = serde_json::from_slice(&e.value).ok();
                            match owners.update(&k, value.clone().into(), e.revision).await {
                                Ok(rev) => {
                                    if previous.is_some_and(|p| p.node != me) {
                                        metrics::cluster_takeover("taken");
                                    }
                                    Some(rev)
                                }
                                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                                    None
                                }
                                Err(e) => return Err(e.to_string()),
                            }
                        }
                        _ => match owners.create(&k, value.clone().into()).await {
                            Ok(rev) => Some(rev),
                            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => None,
                            Err(e) => return Err(e.to_string()),
                        },
                    };
                    if let Some(rev) = written {
                        held.insert(Arc::clone(&client_id), rev);
                        return Ok(rev);
                    }
                }
                Err("the client id changed owner too often to claim it".to_string())
            };
            match tokio::time::timeout(timeout, attempt).await {
                Ok(r) => r.inspect_err(|_| metrics::cluster_error("ownership")),
                Err(_) => {
                    metrics::cluster_error("ownership");
                    Err(format!("no answer from JetStream in {timeout:?}"))
                }
            }
        })
    }
}

/// Watches for dead nodes: for each client a dead node held with a will, one survivor wins the
/// claim by compare-and-set and publishes the will when it is due (its Will Delay, or the end of
/// the session if that comes first, counted from the dead node's last heartbeat), unless the
/// client claims its id again first.
///
/// A node is only taken for dead by one that has itself stored its heartbeats for a while
/// (without a JetStream quorum no heartbeat is stored anywhere, and silence proves nothing), and
/// whose heartbeat entry in the bucket is old too when it is read again.
async fn reap(
    reaper: Reaper,
    held: Arc<DashMap<Arc<str>, u64>>,
    state: std::sync::Weak<BrokerState>,
) {
    let Reaper {
        owners,
        nodes,
        peers,
        me,
        healthy,
        healthy_since,
    } = reaper;
    let mut reaped: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if state.strong_count() == 0 {
            return;
        }
        let steady = healthy.load(std::sync::atomic::Ordering::Relaxed)
            && healthy_since.lock().elapsed() >= HEARTBEAT * 2;
        if !steady {
            continue;
        }
        for (node, last) in peers.dead() {
            if reaped.get(&node) == Some(&last) {
                continue;
            }
            match nodes.entry(node.clone()).await {
                Ok(Some(e)) if e.operation == kv::Operation::Put && age(&e) < DEAD => {
                    // Heard of again, through the bucket: alive.
                    peers.heard(&node);
                    continue;
                }
                Err(_) => continue,
                _ => {}
            }
            match reap_node(&owners, &node, last, &me, &held, &state).await {
                Ok(n) => {
                    tracing::warn!(%node, wills = n, "node silent; its clients' wills taken over");
                    reaped.insert(node, last);
                }
                Err(e) => tracing::warn!(%node, error = %e, "taking over a silent node's wills"),
            }
        }
    }
}

/// What the reaper reads and writes.
struct Reaper {
    owners: kv::Store,
    nodes: kv::Store,
    peers: Peers,
    me: String,
    healthy: Arc<std::sync::atomic::AtomicBool>,
    healthy_since: Arc<parking_lot::Mutex<Instant>>,
}

/// Takes over the wills of `dead`'s clients; how many this node won.
async fn reap_node(
    owners: &kv::Store,
    dead: &str,
    last_heard: Instant,
    me: &str,
    held: &Arc<DashMap<Arc<str>, u64>>,
    state: &std::sync::Weak<BrokerState>,
) -> Result<usize, String> {
    let mut keys = owners.keys().await.map_err(|e| e.to_string())?;
    let mut won = 0;
    while let Some(k) = keys.next().await {
        let Ok(k) = k else { continue };
        let Ok(Some(e)) = owners.entry(k.clone()).await else {
            continue;
        };
        let Ok(claim) = serde_json::from_slice::<Claim>(&e.value) else {
            continue;
        };
        let Some(will) = claim.will.filter(|_| claim.node == dead) else {
            continue;
        };
        let ours = serde_json::to_vec(&Claim {
            node: me.to_string(),
            client_id: claim.client_id.clone(),
            will: None,
        })
        .unwrap_or_default();
        // Another survivor may win this one: then it publishes the will.
        let Ok(rev) = owners.update(&k, ours.into(), e.revision).await else {
            continue;
        };
        won += 1;
        metrics::cluster_takeover("will");
        let client_id: Arc<str> = Arc::from(claim.client_id);
        held.insert(Arc::clone(&client_id), rev);
        let Ok(msg) = will.msg.message() else {
            continue;
        };
        let after = if will.expiry == 0 {
            0
        } else {
            will.delay.min(will.expiry)
        };
        let due =
            tokio::time::Instant::from_std(last_heard) + Duration::from_secs(u64::from(after));
        let (held, state) = (Arc::clone(held), state.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            // Unless the client claimed its id again meanwhile (then it is alive).
            if held.get(&client_id).map(|r| *r) != Some(rev) {
                return;
            }
            if let Some(state) = state.upgrade() {
                tracing::info!(client_id = %crate::logged::clip(&client_id), "will of a client of a dead node published");
                state.publish_orphaned_will(msg);
            }
        });
    }
    Ok(won)
}

/// Follows the ownership bucket from revision `from`: a newer claim by another node for a
/// client held here moves that client away. Resumes after the last revision seen.
async fn watch(
    owners: kv::Store,
    mut from: u64,
    me: String,
    held: Arc<DashMap<Arc<str>, u64>>,
    state: std::sync::Weak<BrokerState>,
) {
    loop {
        match owners.watch_all_from_revision(from).await {
            Ok(mut w) => {
                while let Some(entry) = w.next().await {
                    let Ok(entry) = entry else {
                        break;
                    };
                    from = entry.revision + 1;
                    if entry.operation != kv::Operation::Put {
                        continue;
                    }
                    let Ok(claim) = serde_json::from_slice::<Claim>(&entry.value) else {
                        continue;
                    };
                    if claim.node == me {
                        continue;
                    }
                    let client_id: Arc<str> = Arc::from(claim.client_id);
                    let ours_older = held
                        .remove_if(&client_id, |_, rev| *rev < entry.revision)
                        .is_some();
                    if !ours_older {
                        continue;
                    }
                    let Some(state) = state.upgrade() else {
                        return;
                    };
                    metrics::cluster_takeover("lost");
                    tracing::info!(client_id = %crate::logged::clip(&client_id), node = %claim.node, "client connected on another node: session taken over");
                    let held = Arc::clone(&held);
                    tokio::spawn(async move {
                        let id = Arc::clone(&client_id);
                        state
                            .moved_away(&client_id, move || !held.contains_key(&id))
                            .await;
                    });
                }
            }
            Err(e) => {
                metrics::cluster_error("ownership");
                tracing::warn!(error = %e, "ownership watch failed; resuming");
            }
        }
        if state.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_length_and_allowed_for_any_client_id() {
        for id in ["", "a", "a.b", "ü/ñ €", "\n\t*>", &"x".repeat(65535)] {
            let k = key(id);
            assert_eq!(k.len(), 66);
            assert!(k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-/_=.".contains(c)));
        }
        assert_ne!(key("a"), key("b"));
    }
}
