//! Queues and shared subscriptions' groups across nodes. A group `$share/g/f` with members on
//! several nodes is one group: each of its QoS 1/2 messages goes to one member cluster-wide.
//! Every node where the group (or a declared queue) is open pulls from one durable JetStream
//! consumer of the message stream shared by all of them, named for the group, as fast as its
//! members there have room, and offers what it pulls to its local group, which hands it to a
//! member by the group's strategy. A message is acknowledged to JetStream once the local group
//! is done with it (a member has it, or it was dropped); one the node gives up (its last member
//! left) is handed back at once, and one held by a node that dies comes back to the others
//! after the consumer's acknowledgement wait. So the strategies apply among the members of
//! each node, and the nodes share the messages by how much their members take.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use dashmap::DashMap;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::subject::{self, Subjects};
use super::wire;
use crate::broker::BrokerState;
use crate::metrics;

/// How long JetStream waits for a pulled message's acknowledgement before it gives the message
/// to another node: how long a dead node's messages wait.
const ACK_WAIT: Duration = Duration::from_secs(6);
/// How often the messages a node holds are said to be still in progress.
const PROGRESS: Duration = Duration::from_secs(2);
/// A group's consumer with no node pulling for this long is removed (a group exists while it
/// has members); a declared queue's stays.
const GROUP_IDLE: Duration = Duration::from_secs(60);
/// A node whose members have no room still pulls (one message) this often.
const KEEP_PULLING: Duration = Duration::from_secs(10);
/// Most messages one pull asks for.
const BATCH: usize = 256;

/// One queue or group open on this node.
struct Open {
    store_id: Arc<str>,
    filter: String,
    declared: bool,
    /// Pulled messages the local queue holds, by stream sequence, to acknowledge when done.
    held: DashMap<u64, jetstream::Message>,
    /// Its last member here left: nothing more is pulled.
    closed: AtomicBool,
    /// Its task runs (pulling while open, then keeping what is held in progress).
    pulling: AtomicBool,
}

/// The queues and groups open on this node.
pub(super) struct Groups {
    js: jetstream::Context,
    stream: String,
    subjects: Subjects,
    open: Arc<DashMap<Arc<str>, Arc<Open>>>,
    state: std::sync::OnceLock<Weak<BrokerState>>,
    /// Queues opened here whose consumer does not exist yet.
    pending: Arc<tokio::sync::watch::Sender<HashSet<Arc<str>>>>,
    /// The filters of the queues and groups open anywhere in the cluster (their consumers'
    /// descriptions name them), read again every [`KNOWN`], with those opened here at once.
    known: Arc<parking_lot::RwLock<Vec<String>>>,
}

/// How often the queues open in the cluster are read again.
const KNOWN: Duration = Duration::from_secs(2);

impl Groups {
    pub(super) fn new(js: jetstream::Context, stream: String, subjects: Subjects) -> Groups {
        Groups {
            js,
            stream,
            subjects,
            open: Arc::default(),
            state: std::sync::OnceLock::new(),
            pending: Arc::new(tokio::sync::watch::Sender::new(HashSet::new())),
            known: Arc::default(),
        }
    }

    /// The broker the pulled messages go to; set before any queue opens. Starts following
    /// which queues are open in the cluster.
    pub(super) fn set_state(&self, state: &Arc<BrokerState>) {
        let _ = self.state.set(Arc::downgrade(state));
        tokio::spawn(follow(
            self.js.clone(),
            self.stream.clone(),
            Arc::clone(&self.known),
            Arc::clone(&self.open),
            Arc::downgrade(state),
        ));
    }

    /// Whether a queue or group open somewhere in the cluster takes messages on `topic`: then
    /// a QoS 0 message goes through the stream too, for them.
    pub(super) fn wanted(&self, topic: &str) -> bool {
        self.known
            .read()
            .iter()
            .any(|f| crate::topic::matches(f, topic))
    }

    /// Starts pulling for `store_id` (a no-op if already).
    pub(super) fn opened(&self, store_id: &Arc<str>, filter: &str, declared: bool) {
        let open = Arc::clone(
            self.open
                .entry(Arc::clone(store_id))
                .or_insert_with(|| {
                    Arc::new(Open {
                        store_id: Arc::clone(store_id),
                        filter: filter.to_string(),
                        declared,
                        held: DashMap::new(),
                        closed: AtomicBool::new(false),
                        pulling: AtomicBool::new(false),
                    })
                })
                .value(),
        );
        open.closed.store(false, Ordering::Release);
        {
            let mut known = self.known.write();
            if !known.iter().any(|f| f == filter) {
                known.push(filter.to_string());
            }
        }
        if open.pulling.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(state) = self.state.get().cloned() else {
            open.pulling.store(false, Ordering::Release);
            return;
        };
        self.pending.send_modify(|p| {
            p.insert(Arc::clone(store_id));
        });
        tokio::spawn(pull(
            self.js.clone(),
            self.stream.clone(),
            self.subjects.clone(),
            open,
            state,
            Arc::clone(&self.pending),
        ));
    }

    /// Resolves once the consumers of the queues opened so far exist (or after `timeout`):
    /// a SUBACK waits for it, so a message published after it reaches the group.
    pub(super) fn settled(&self, timeout: Duration) -> Option<crate::broker::Waiting<()>> {
        let waiting: HashSet<Arc<str>> = self.pending.borrow().clone();
        if waiting.is_empty() {
            return None;
        }
        let mut rx = self.pending.subscribe();
        Some(Box::pin(async move {
            let done = rx.wait_for(|p| p.is_disjoint(&waiting));
            let _ = tokio::time::timeout(timeout, done).await;
        }))
    }

    /// Stops pulling for `store_id`; `waiting` go back to the other nodes. What its members
    /// still hold is kept in progress until they are done with it.
    pub(super) fn closed(&self, store_id: &str, waiting: Vec<u64>) {
        let Some(open) = self.open.get(store_id).map(|o| Arc::clone(&o)) else {
            return;
        };
        open.closed.store(true, Ordering::Release);
        hand_back(&open, waiting);
    }

    /// The local queue is done with `seq`: acknowledged.
    pub(super) fn released(&self, store_id: &str, seq: u64) {
        let Some(open) = self.open.get(store_id).map(|o| Arc::clone(&o)) else {
            return;
        };
        if let Some((_, m)) = open.held.remove(&seq) {
            tokio::spawn(async move {
                if let Err(e) = m.ack().await {
                    metrics::cluster_error("queue_ack");
                    tracing::debug!(error = %e, "queue acknowledgement not sent");
                }
            });
        }
    }
}

/// Gives messages `seqs` the node held back to JetStream, for another node.
fn hand_back(open: &Open, seqs: Vec<u64>) {
    let back: Vec<jetstream::Message> = seqs
        .into_iter()
        .filter_map(|seq| open.held.remove(&seq).map(|(_, m)| m))
        .collect();
    if back.is_empty() {
        return;
    }
    tokio::spawn(async move {
        for m in back {
            let _ = m.ack_with(AckKind::Nak(None)).await;
        }
    });
}

/// The consumer's name for a queue: the same on every node.
fn durable_name(store_id: &str) -> String {
    let digest = Sha256::digest(store_id.as_bytes());
    let mut name = String::from("queue-");
    for b in &digest[..16] {
        name.push_str(&format!("{b:02x}"));
    }
    name
}

type Consumer = jetstream::consumer::Consumer<jetstream::consumer::pull::Config>;

async fn consumer(
    js: &jetstream::Context,
    stream: &str,
    subjects: &Subjects,
    open: &Open,
) -> Result<Consumer, String> {
    use jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
    let wanted = subjects.filter(subject::CLASS_QOS1, &open.filter);
    let filter_subjects =
        subject::disjoint(&wanted).unwrap_or_else(|| vec![subjects.all(subject::CLASS_QOS1)]);
    let name = durable_name(&open.store_id);
    let stream = js.get_stream(stream).await.map_err(|e| e.to_string())?;
    stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                // What other nodes read to know the queue's filter.
                description: Some(open.filter.clone()),
                deliver_policy: DeliverPolicy::New,
                ack_policy: AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_ack_pending: 65_536,
                filter_subjects,
                inactive_threshold: if open.declared {
                    Duration::ZERO
                } else {
                    GROUP_IDLE
                },
                ..pull::Config::default()
            },
        )
        .await
        .map_err(|e| e.to_string())
}

/// Pulls for `open` while it is open: as many messages as its local consumers have room for,
/// each offered to the local queue; keeps the ones held in progress.
async fn pull(
    js: jetstream::Context,
    stream: String,
    subjects: Subjects,
    open: Arc<Open>,
    state: Weak<BrokerState>,
    pending: Arc<tokio::sync::watch::Sender<HashSet<Arc<str>>>>,
) {
    // Made at once: the SUBACK waits for it.
    let mut current: Option<Consumer> = None;
    while current.is_none() && !open.closed.load(Ordering::Acquire) {
        match consumer(&js, &stream, &subjects, &open).await {
            Ok(c) => current = Some(c),
            Err(e) => {
                metrics::cluster_error("queue_consumer");
                tracing::warn!(queue = %open.store_id, error = %e, "opening a queue's consumer");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    pending.send_modify(|p| {
        p.remove(&open.store_id);
    });
    metrics::cluster_consumer(true);
    pull_while_open(js, stream, subjects, &open, state, current).await;
    metrics::cluster_consumer(false);
}

/// [`pull`] once its consumer exists.
async fn pull_while_open(
    js: jetstream::Context,
    stream: String,
    subjects: Subjects,
    open: &Arc<Open>,
    state: Weak<BrokerState>,
    mut current: Option<Consumer>,
) {
    let mut progress = Instant::now();
    let mut pulled = Instant::now();
    loop {
        if open.closed.load(Ordering::Acquire) {
            // Closed: what its members hold stays theirs until they are done with it.
            if open.held.is_empty() {
                open.pulling.store(false, Ordering::Release);
                if !open.closed.load(Ordering::Acquire)
                    && !open.pulling.swap(true, Ordering::AcqRel)
                {
                    continue;
                }
                return;
            }
            tokio::time::sleep(PROGRESS).await;
            still_held(open);
            continue;
        }
        let Some(state) = state.upgrade() else {
            open.pulling.store(false, Ordering::Release);
            return;
        };
        if progress.elapsed() >= PROGRESS {
            progress = Instant::now();
            still_held(open);
        }
        let mut room = state.queue_room(&open.store_id).unwrap_or(0);
        if room == 0 && !open.declared && pulled.elapsed() >= KEEP_PULLING {
            // A group's consumer without pulls for GROUP_IDLE is removed: one message now and
            // then keeps it while the group has members here (they take it when they can). A
            // declared queue's consumer stays anyway, and what no consumer here can take waits
            // in the cluster for one elsewhere.
            room = 1;
        }
        if room == 0 {
            drop(state);
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        pulled = Instant::now();
        let c = match current.take() {
            Some(c) => c,
            None => match consumer(&js, &stream, &subjects, open).await {
                Ok(c) => c,
                Err(e) => {
                    metrics::cluster_error("queue_consumer");
                    tracing::warn!(queue = %open.store_id, error = %e, "opening a queue's consumer");
                    drop(state);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let batch = c
            .batch()
            .max_messages(room.min(BATCH))
            .expires(Duration::from_millis(500))
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                metrics::cluster_error("queue_consumer");
                tracing::debug!(queue = %open.store_id, error = %e, "pulling a queue's messages");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut failed = false;
        while let Some(m) = batch.next().await {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(queue = %open.store_id, error = %e, "pulling a queue's messages");
                    failed = true;
                    break;
                }
            };
            offer(&state, &subjects, open, m);
        }
        if !failed {
            current = Some(c);
        }
    }
}

/// Offers one pulled message to the local queue; handed back if it does not take it.
fn offer(state: &BrokerState, subjects: &Subjects, open: &Open, m: jetstream::Message) {
    let Ok(info) = m.info() else {
        return;
    };
    let seq = info.stream_sequence;
    let msg = subjects
        .topic_of(&m.subject)
        .and_then(|t| wire::message(t, m.payload.clone(), m.headers.as_ref(), true).ok());
    let Some(msg) = msg else {
        // Expired on the way, or unreadable: done with.
        tokio::spawn(async move {
            let _ = m.ack().await;
        });
        return;
    };
    open.held.insert(seq, m);
    if !state.offer_stream(&open.store_id, &msg, seq) {
        hand_back(open, vec![seq]);
    }
}

/// Tells JetStream the messages held here are still being worked on, so it does not give them
/// to another node.
fn still_held(open: &Open) {
    let held: Vec<jetstream::Message> = open.held.iter().map(|e| e.value().clone()).collect();
    if held.is_empty() {
        return;
    }
    tokio::spawn(async move {
        for m in held {
            let _ = m.ack_with(AckKind::Progress).await;
        }
    });
}

/// Keeps `known` to the filters of the queues' consumers on the message stream, and of the
/// queues open here.
async fn follow(
    js: jetstream::Context,
    stream: String,
    known: Arc<parking_lot::RwLock<Vec<String>>>,
    open: Arc<DashMap<Arc<str>, Arc<Open>>>,
    state: Weak<BrokerState>,
) {
    let mut tick = tokio::time::interval(KNOWN);
    while state.strong_count() > 0 {
        tick.tick().await;
        let Ok(s) = js.get_stream(&stream).await else {
            continue;
        };
        let mut consumers = s.consumers();
        let mut filters: Vec<String> = Vec::new();
        let mut complete = true;
        while let Some(info) = consumers.next().await {
            let Ok(info) = info else {
                complete = false;
                break;
            };
            if !info.name.starts_with("queue-") {
                continue;
            }
            if let Some(f) = info.config.description {
                if !filters.contains(&f) {
                    filters.push(f);
                }
            }
        }
        if !complete {
            continue;
        }
        for o in open.iter() {
            if !o.closed.load(Ordering::Acquire) && !filters.contains(&o.filter) {
                filters.push(o.filter.clone());
            }
        }
        *known.write() = filters;
    }
}
