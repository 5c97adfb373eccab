//! This node's interest in QoS 0 messages from the others, and the SUBACK barrier.
//!
//! Every topic filter in the node's subscription index maps to NATS subjects (`a/#` to two);
//! each subject is counted, subscribed at 0→1 and unsubscribed at 1→0. A subject another one
//! covers (`a.*` under `a.>`) is not subscribed while its cover is. NATS then routes each
//! QoS 0 message only to the nodes with interest.
//!
//! Interest takes time to reach the other servers: measured on loopback, a message published
//! on another server right after SUB and flush was lost in about two thirds of trials. So a
//! SUBSCRIBE that changes the node's NATS interest is acknowledged only after every peer
//! answered a request on the barrier subject: the request travels the route the interest
//! took, after it (0 of 300 lost with the barrier).
//!
//! Copies from overlapping subscriptions (`a.*.c` and `a.b.*`) are dropped by origin and
//! sequence number ([`super::dedupe`]); the first copy wins, which keeps per-topic order.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::dedupe::Dedupe;
use super::owner::Peers;
use super::subject::{covers, Subjects, CLASS_QOS0};
use super::wire;
use crate::broker::BrokerState;
use crate::metrics;
use crate::store::Ticket;

/// How long a SUBACK waits for a peer that does not answer the barrier (one that died but
/// whose heartbeat has not aged out yet).
const BARRIER_TIMEOUT: Duration = Duration::from_millis(500);
/// Core messages waiting to be routed here; beyond it the NATS client's own buffer fills and
/// it drops (QoS 0 is at most once), rather than this node's memory growing.
const INBOUND: usize = 1 << 16;

struct Change {
    filter: String,
    present: bool,
    epoch: u64,
}

/// The broker's side: changes go to the manager task, in order.
pub(super) struct Handle {
    client: Client,
    subjects: Subjects,
    tx: mpsc::UnboundedSender<Change>,
    rx: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<Change>>>,
    /// Number of the last change sent.
    requested: AtomicU64,
    /// Number of the last change every peer knows of.
    done: watch::Sender<u64>,
}

impl Handle {
    pub(super) fn new(client: Client, subjects: Subjects) -> Handle {
        let (tx, rx) = mpsc::unbounded_channel();
        Handle {
            client,
            subjects,
            tx,
            rx: parking_lot::Mutex::new(Some(rx)),
            requested: AtomicU64::new(0),
            done: watch::Sender::new(0),
        }
    }

    /// `filter` entered or left the node's subscription index. `$SYS` stays per node.
    pub(super) fn change(&self, filter: &str, present: bool) {
        if filter.starts_with("$SYS") {
            return;
        }
        let epoch = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let _ = self.tx.send(Change {
            filter: filter.to_string(),
            present,
            epoch,
        });
    }

    /// A ticket that completes once every change so far is known to the peers.
    pub(super) fn settled(&self) -> Option<Ticket> {
        let target = self.requested.load(Ordering::Acquire);
        if *self.done.borrow() >= target {
            return None;
        }
        let (ticket, tx) = Ticket::manual();
        let mut done = self.done.subscribe();
        tokio::spawn(async move {
            let _ = done.wait_for(|d| *d >= target).await;
            let _ = tx.send(Ok(()));
        });
        Some(ticket)
    }

    /// Answers the peers' barriers, and starts the manager and the router of what arrives.
    pub(super) async fn start(
        &self,
        state: &Arc<BrokerState>,
        origin: &str,
        peers: Peers,
    ) -> Result<(), String> {
        let barrier = self.subjects.control("barrier");
        let mut requests = self
            .client
            .subscribe(barrier.clone())
            .await
            .map_err(|e| e.to_string())?;
        let client = self.client.clone();
        let me = bytes::Bytes::from(origin.to_string());
        tokio::spawn(async move {
            while let Some(m) = requests.next().await {
                if let Some(reply) = m.reply {
                    let _ = client.publish(reply, me.clone()).await;
                }
            }
        });
        let (inbound, arrived) = mpsc::channel(INBOUND);
        tokio::spawn(route(Arc::clone(state), self.subjects.clone(), arrived));
        let Some(rx) = self.rx.lock().take() else {
            return Ok(());
        };
        let manager = Manager {
            client: self.client.clone(),
            subjects: self.subjects.clone(),
            counts: HashMap::new(),
            subscribed: HashMap::new(),
            inbound,
            peers,
            barrier,
            done: self.done.clone(),
        };
        tokio::spawn(manager.run(rx));
        Ok(())
    }
}

/// Routes core messages from the cluster here, each once.
async fn route(
    state: Arc<BrokerState>,
    subjects: Subjects,
    mut arrived: mpsc::Receiver<async_nats::Message>,
) {
    let mut dedupe = Dedupe::default();
    while let Some(m) = arrived.recv().await {
        let headers = m.headers.as_ref();
        let origin = headers.and_then(|h| h.get(wire::ORIGIN));
        let seq = headers
            .and_then(|h| h.get(wire::SEQ))
            .and_then(|v| v.as_str().parse::<u64>().ok());
        if let (Some(origin), Some(seq)) = (origin, seq) {
            if !dedupe.first(origin.as_str(), seq) {
                metrics::cluster_received("duplicate");
                continue;
            }
        }
        let Some(topic) = subjects.topic_of(&m.subject) else {
            continue;
        };
        match wire::message(topic, m.payload, headers, false) {
            Ok(msg) => {
                metrics::cluster_received("core");
                state.route_remote(&msg);
            }
            Err(e) => {
                metrics::cluster_error("undecodable");
                tracing::debug!(subject = %m.subject, error = ?e, "core message dropped");
            }
        }
    }
}

/// Owns the node's NATS subscriptions.
struct Manager {
    client: Client,
    subjects: Subjects,
    /// Subjects wanted, with how many filters want each.
    counts: HashMap<String, usize>,
    /// Subjects subscribed on NATS (the wanted ones no other wanted one covers), each with the
    /// task that forwards what it receives.
    subscribed: HashMap<String, JoinHandle<()>>,
    inbound: mpsc::Sender<async_nats::Message>,
    peers: Peers,
    barrier: String,
    done: watch::Sender<u64>,
}

impl Manager {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Change>) {
        while let Some(first) = rx.recv().await {
            let mut changes = vec![first];
            while let Ok(c) = rx.try_recv() {
                changes.push(c);
            }
            let mut added = false;
            let mut epoch = 0;
            for c in changes {
                for subject in self.subjects.filter(CLASS_QOS0, &c.filter) {
                    added |= if c.present {
                        self.want(subject).await
                    } else {
                        self.unwant(subject).await
                    };
                }
                epoch = c.epoch;
            }
            if added {
                self.barrier().await;
            }
            self.done.send_replace(epoch);
        }
    }

    /// One more filter wants `subject`; true if a NATS subscription was added.
    async fn want(&mut self, subject: String) -> bool {
        let count = self.counts.entry(subject.clone()).or_insert(0);
        *count += 1;
        if *count > 1 || self.covered(&subject, None) {
            return false;
        }
        if !self.subscribe(subject.clone()).await {
            return false;
        }
        // What it covers is no longer needed on its own.
        let hidden: Vec<String> = self
            .subscribed
            .keys()
            .filter(|t| **t != subject && covers(&subject, t))
            .cloned()
            .collect();
        for t in hidden {
            if let Some(task) = self.subscribed.remove(&t) {
                task.abort();
            }
        }
        true
    }

    /// One filter less wants `subject`; true if a NATS subscription was added (what it
    /// covered, subscribed on its own again before it goes).
    async fn unwant(&mut self, subject: String) -> bool {
        let Some(count) = self.counts.get_mut(&subject) else {
            return false;
        };
        *count -= 1;
        if *count > 0 {
            return false;
        }
        self.counts.remove(&subject);
        if !self.subscribed.contains_key(&subject) {
            return false;
        }
        let mut uncovered: Vec<String> = self
            .counts
            .keys()
            .filter(|t| !self.subscribed.contains_key(*t) && covers(&subject, t))
            .cloned()
            .collect();
        // Widest first, so narrower ones find their new cover.
        uncovered.sort_by_key(|t| (!t.ends_with('>'), t.split('.').count()));
        let mut added = false;
        for t in uncovered {
            if !self.covered(&t, Some(&subject)) {
                added |= self.subscribe(t).await;
            }
        }
        if let Some(task) = self.subscribed.remove(&subject) {
            task.abort();
        }
        added
    }

    /// Whether a subscribed subject other than `except` covers `subject`.
    fn covered(&self, subject: &str, except: Option<&str>) -> bool {
        self.subscribed
            .keys()
            .any(|w| w != subject && Some(w.as_str()) != except && covers(w, subject))
    }

    async fn subscribe(&mut self, subject: String) -> bool {
        let mut sub = match self.client.subscribe(subject.clone()).await {
            Ok(s) => s,
            Err(e) => {
                metrics::cluster_error("subscribe");
                tracing::warn!(%subject, error = %e, "cannot subscribe on NATS");
                return false;
            }
        };
        let inbound = self.inbound.clone();
        let task = tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if inbound.send(m).await.is_err() {
                    break;
                }
            }
        });
        self.subscribed.insert(subject, task);
        true
    }

    /// Waits until every live peer has answered a request sent after our subscriptions.
    async fn barrier(&self) {
        if let Err(e) = self.client.flush().await {
            tracing::debug!(error = %e, "flush before the barrier");
        }
        let peers = self.peers.count();
        if peers == 0 {
            return;
        }
        let inbox = self.client.new_inbox();
        let Ok(mut replies) = self.client.subscribe(inbox.clone()).await else {
            metrics::cluster_error("barrier_timeout");
            return;
        };
        let sent = self
            .client
            .publish_with_reply(self.barrier.clone(), inbox, bytes::Bytes::new())
            .await;
        if sent.is_err() {
            metrics::cluster_error("barrier_timeout");
            return;
        }
        let deadline = tokio::time::Instant::now() + BARRIER_TIMEOUT;
        let mut seen = HashSet::new();
        while seen.len() < peers {
            match tokio::time::timeout_at(deadline, replies.next()).await {
                Ok(Some(m)) => {
                    seen.insert(m.payload);
                }
                _ => {
                    metrics::cluster_error("barrier_timeout");
                    tracing::debug!(
                        peers,
                        answered = seen.len(),
                        "barrier: not every peer answered"
                    );
                    break;
                }
            }
        }
    }
}
