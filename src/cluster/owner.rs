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
use futures_util::StreamExt;

use super::records::{now_ms, Held, Record, Records};
use super::{js_err, ClusterError};
use crate::broker::{BrokerState, Waiting};
use crate::metrics;
use crate::session::NEVER_EXPIRES;

/// How often a node says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long the marker of a purged record stays (so a watch that was away sees the purge).
const PURGED_KEPT: Duration = Duration::from_secs(24 * 3600);

/// A node not heard of for this long is not waited for.
pub(super) const ALIVE: Duration = Duration::from_secs(7);

/// How long ago `entry` was written.
pub(super) fn age(entry: &kv::Entry) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    Duration::from_nanos(u64::try_from(now - entry.created.unix_timestamp_nanos()).unwrap_or(0))
}

/// How many client ids, and persistent sessions, each node holds (a walk over the whole
/// ownership bucket).
pub(super) async fn count_by_node(owners: &kv::Store) -> Result<super::status::Held, String> {
    let mut held = super::status::Held::new();
    let mut keys = owners.keys().await.map_err(|e| e.to_string())?;
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| e.to_string())?;
        if let Ok(Some(e)) = owners.entry(key).await {
            if let Ok(record) = serde_json::from_slice::<Record>(&e.value) {
                let h = held.entry(record.node).or_insert((0, 0));
                h.0 += 1;
                h.1 += usize::from(record.session.is_some());
            }
        }
    }
    Ok(held)
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

    /// `node` took its heartbeat out (it stopped): the survivors take over its clients at
    /// once, as for a node that died.
    fn left(&self, node: &str) {
        if let Some(long_ago) = Instant::now().checked_sub(DEAD) {
            self.seen.lock().insert(node.to_string(), long_ago);
        }
    }

    /// Resolves `true` once `node` has been silent for [`DEAD`], `false` if it is heard of
    /// after `since` (or after a while, undecided): whether a connection it held ended with it.
    pub(super) fn died(&self, node: &str, since: Instant) -> Waiting<bool> {
        let (seen, node) = (Arc::clone(&self.seen), node.to_string());
        Box::pin(async move {
            let give_up = Instant::now() + DEAD + HEARTBEAT * 2;
            loop {
                let last = seen.lock().get(&node).copied();
                match last {
                    Some(at) if at > since => return false,
                    Some(at) if at.elapsed() < DEAD => {}
                    _ => return true,
                }
                if Instant::now() >= give_up {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
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
    nodes: kv::Store,
    /// The clients this node holds, and their records.
    pub(super) records: Records,
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

impl Owners {
    pub(super) async fn open(
        js: &jetstream::Context,
        owners: &str,
        nodes: &str,
        replicas: usize,
        node: &str,
    ) -> Result<Owners, ClusterError> {
        // Records stay until their client and session are done (no age limit: a session may
        // never expire); a purged one leaves a marker for a day.
        let config = kv::Config {
            bucket: owners.to_string(),
            history: 1,
            num_replicas: replicas,
            storage: jetstream::stream::StorageType::File,
            limit_markers: Some(PURGED_KEPT),
            ..kv::Config::default()
        };
        let owners = js
            .create_or_update_key_value(config)
            .await
            .map_err(|e| js_err(format!("create bucket {owners}"))(e.to_string()))?;
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
            records: Records::new(owners, node.to_string()),
            nodes,
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
            .records
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
        self.records.set_state(state);
        tokio::spawn(watch(self.records.clone(), from, Arc::downgrade(state)));
        tokio::spawn(self.records.clone().keep_floors());
        // What a previous run of this node held is taken over as a dead node's would be.
        let (records, weak) = (self.records.clone(), Arc::downgrade(state));
        tokio::spawn(async move {
            match reap_node(&records, &records.me.clone(), now_ms(), &weak).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    clients = n,
                    "clients of this node's previous run taken over"
                ),
                Err(e) => tracing::warn!(error = %e, "taking over this node's previous clients"),
            }
        });
        tokio::spawn(reap(
            Reaper {
                records: self.records.clone(),
                nodes: self.nodes.clone(),
                peers: self.peers.clone(),
                healthy: Arc::clone(&self.healthy),
                healthy_since: Arc::clone(&self.healthy_since),
            },
            Arc::downgrade(state),
        ));
        Ok(())
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
}

/// Watches for dead nodes: one survivor wins each client a dead node held, by
/// compare-and-set on its record, and does what the dead node would have done: publishes the
/// client's will when it is due (its Will Delay, or the end of the session if that comes first,
/// counted from when the connection ended or the node was last heard of), ends the session when
/// its expiry runs out, and frees the record of a client that left nothing behind. A client that
/// connects again anywhere first (a newer claim) keeps its will and its session.
///
/// A node is only taken for dead by one that has itself stored its heartbeats for a while
/// (without a JetStream quorum no heartbeat is stored anywhere, and silence proves nothing), and
/// whose heartbeat entry in the bucket is old too when it is read again.
async fn reap(reaper: Reaper, state: std::sync::Weak<BrokerState>) {
    let Reaper {
        records,
        nodes,
        peers,
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
        let since = *healthy_since.lock();
        let steady =
            healthy.load(std::sync::atomic::Ordering::Relaxed) && since.elapsed() >= HEARTBEAT * 2;
        if !steady {
            continue;
        }
        for (node, last) in peers.dead() {
            // Silence counts only while this node could hear: back from a partition, its view
            // of the others' heartbeats (and its replica of the bucket) needs time to catch up.
            if last.max(since).elapsed() < DEAD || reaped.get(&node) == Some(&last) {
                continue;
            }
            match heartbeat_age(&nodes, &node).await {
                Ok(Some(age)) if age < DEAD => {
                    // Heard of again, through the bucket: alive.
                    peers.heard(&node);
                    continue;
                }
                Err(_) => continue,
                _ => {}
            }
            let last_ms = now_ms().saturating_sub(last.elapsed().as_millis() as u64);
            match reap_node(&records, &node, last_ms, &state).await {
                Ok(n) => {
                    tracing::warn!(%node, clients = n, "node silent; its clients taken over");
                    reaped.insert(node, last);
                }
                Err(e) => tracing::warn!(%node, error = %e, "taking over a silent node's clients"),
            }
        }
    }
}

/// How long ago `node`'s last heartbeat was written, as the bucket's stream leader has it;
/// `None` when it has none (never written, or taken out when it stopped). Not a replica's copy
/// (what a key-value read may return): back from a partition, or behind under load, a replica
/// can show a live node's heartbeat as old, and a node judged dead on it would have its
/// clients taken over while it serves them.
async fn heartbeat_age(nodes: &kv::Store, node: &str) -> Result<Option<Duration>, String> {
    let subject = format!("{}{}", nodes.prefix, node);
    match nodes.stream.get_last_raw_message_by_subject(&subject).await {
        Ok(m) => {
            if m.headers.get("KV-Operation").is_some() {
                // DEL or PURGE: the node took its heartbeat out.
                return Ok(None);
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i128);
            let nanos = u64::try_from(now - m.time.unix_timestamp_nanos()).unwrap_or(0);
            Ok(Some(Duration::from_nanos(nanos)))
        }
        Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
            Ok(None)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// What the reaper reads and writes.
struct Reaper {
    records: Records,
    nodes: kv::Store,
    peers: Peers,
    healthy: Arc<std::sync::atomic::AtomicBool>,
    healthy_since: Arc<parking_lot::Mutex<Instant>>,
}

/// Takes over the clients `dead` held, last heard of at `last_ms` (Unix ms); how many this
/// node won.
async fn reap_node(
    records: &Records,
    dead: &str,
    last_ms: u64,
    state: &std::sync::Weak<BrokerState>,
) -> Result<usize, String> {
    let owners = &records.owners;
    let mut keys = owners.keys().await.map_err(|e| e.to_string())?;
    let mut won = 0;
    while let Some(k) = keys.next().await {
        let Ok(k) = k else { continue };
        let Ok(Some(e)) = owners.entry(k.clone()).await else {
            continue;
        };
        if e.operation != kv::Operation::Put {
            continue;
        }
        let Ok(mut record) = serde_json::from_slice::<Record>(&e.value) else {
            continue;
        };
        if record.node != dead {
            continue;
        }
        let client_id: Arc<str> = Arc::from(record.client_id.as_str());
        if records.held.contains_key(&client_id) {
            // Connected here since (this node's previous run is being taken over).
            continue;
        }
        if record.will.is_none() && record.session.is_none() {
            // Nothing of it is left to do: the key is freed.
            let _ = owners.purge_expect_revision(&k, Some(e.revision)).await;
            continue;
        }
        let gone = record
            .session
            .as_mut()
            .map_or(last_ms, |s| *s.gone.get_or_insert(last_ms));
        record.node.clone_from(&records.me);
        let value = serde_json::to_vec(&record).unwrap_or_default();
        // Another survivor may win this one: then it does the rest.
        let rev = match owners.update(&k, value.clone().into(), e.revision).await {
            Ok(rev) => rev,
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                // Refused, maybe by a server behind while the leader wrote it (see
                // `Records::write`): won if what is there now is this very record.
                match super::records::written_anyway(owners, &k, e.revision, &value).await {
                    Some(rev) => rev,
                    None => continue,
                }
            }
            Err(_) => continue,
        };
        // A client connected here meanwhile holds a newer claim: it stays (and has no will or
        // expiry of the dead node's to carry out).
        match records.held.entry(Arc::clone(&client_id)) {
            dashmap::mapref::entry::Entry::Occupied(_) => continue,
            dashmap::mapref::entry::Entry::Vacant(v) => {
                v.insert(Held::new(rev, record.clone()));
            }
        }
        won += 1;
        metrics::cluster_takeover("node_lost");
        tokio::spawn(carry_out(
            records.clone(),
            client_id,
            rev,
            record,
            gone,
            state.clone(),
        ));
    }
    Ok(won)
}

/// Publishes the will of a client taken over from a dead node when it is due, then ends its
/// session when it expires, for as long as this node holds the client under `epoch`.
async fn carry_out(
    records: Records,
    client_id: Arc<str>,
    epoch: u64,
    record: Record,
    gone_ms: u64,
    state: std::sync::Weak<BrokerState>,
) {
    let now = now_ms();
    let at = |secs: u32| {
        let due = gone_ms.saturating_add(u64::from(secs) * 1000);
        tokio::time::Instant::now() + Duration::from_millis(due.saturating_sub(now))
    };
    let held = |records: &Records| records.held.get(&client_id).map(|h| h.epoch) == Some(epoch);
    if let Some(will) = &record.will {
        let after = if will.expiry == 0 {
            0
        } else {
            will.delay.min(will.expiry)
        };
        tokio::time::sleep_until(at(after)).await;
        if !held(&records) {
            return;
        }
        if let (Ok(msg), Some(state)) = (will.msg.message(), state.upgrade()) {
            tracing::info!(client_id = %crate::logged::clip(&client_id), "will of a client of a dead node published");
            state.publish_orphaned_will(msg);
        }
        if let Some(t) = records.amend(&client_id, epoch, |r| r.will = None) {
            let _ = t.wait().await;
        }
    }
    let expires = match &record.session {
        Some(s) if s.expiry == NEVER_EXPIRES => return,
        Some(s) => at(s.expiry),
        None => tokio::time::Instant::now(),
    };
    tokio::time::sleep_until(expires).await;
    if held(&records) {
        tracing::debug!(client_id = %crate::logged::clip(&client_id), "session of a client of a dead node expired");
        let _ = records.end(&client_id, epoch);
    }
}

/// Follows the ownership bucket from revision `from`: a newer claim by another node for a
/// client held here moves that client away. Resumes after the last revision seen.
async fn watch(records: Records, mut from: u64, state: std::sync::Weak<BrokerState>) {
    loop {
        match records.owners.watch_all_from_revision(from).await {
            Ok(mut w) => {
                while let Some(entry) = w.next().await {
                    let Ok(entry) = entry else {
                        break;
                    };
                    from = entry.revision + 1;
                    if entry.operation != kv::Operation::Put {
                        continue;
                    }
                    let Ok(record) = serde_json::from_slice::<Record>(&entry.value) else {
                        continue;
                    };
                    if record.node == records.me {
                        continue;
                    }
                    let client_id: Arc<str> = Arc::from(record.client_id);
                    if state.strong_count() == 0 {
                        return;
                    }
                    // Marked lost, and moved away from here ([`Records::lose`]).
                    if !records.lose(&client_id, |h| h.rev < entry.revision) {
                        continue;
                    }
                    metrics::cluster_takeover("lost");
                    tracing::info!(client_id = %crate::logged::clip(&client_id), node = %record.node, "client connected on another node: session taken over");
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
