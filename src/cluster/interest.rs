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
            wanted: Wanted::default(),
            tasks: HashMap::new(),
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

/// What to do on NATS, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Subscribe(String),
    Unsubscribe(String),
}

/// The subjects this node wants and those it subscribes to: each wanted subject no other
/// subscribed one covers. Pure bookkeeping: [`Manager`] carries out its steps. Every change
/// subscribes what must be before it unsubscribes anything, so no subject goes uncovered.
#[derive(Debug, Default)]
struct Wanted {
    /// Subjects wanted, with how many filters want each.
    counts: HashMap<String, usize>,
    subscribed: HashSet<String>,
}

impl Wanted {
    /// One more filter wants `subject`.
    fn want(&mut self, subject: &str) -> Vec<Step> {
        let count = self.counts.entry(subject.to_string()).or_insert(0);
        *count += 1;
        if *count > 1 || self.covered(subject, None) {
            return Vec::new();
        }
        let mut steps = vec![Step::Subscribe(subject.to_string())];
        // What it covers is no longer needed on its own.
        let hidden: Vec<String> = self
            .subscribed
            .iter()
            .filter(|t| covers(subject, t))
            .cloned()
            .collect();
        for t in hidden {
            self.subscribed.remove(&t);
            steps.push(Step::Unsubscribe(t));
        }
        self.subscribed.insert(subject.to_string());
        steps
    }

    /// One filter less wants `subject`: what it covered is subscribed on its own again
    /// (widest first, so narrower ones find their new cover) before it goes.
    fn unwant(&mut self, subject: &str) -> Vec<Step> {
        let Some(count) = self.counts.get_mut(subject) else {
            return Vec::new();
        };
        *count -= 1;
        if *count > 0 {
            return Vec::new();
        }
        self.counts.remove(subject);
        if !self.subscribed.contains(subject) {
            return Vec::new();
        }
        let mut uncovered: Vec<String> = self
            .counts
            .keys()
            .filter(|t| !self.subscribed.contains(*t) && covers(subject, t))
            .cloned()
            .collect();
        uncovered.sort_by_key(|t| (!t.ends_with('>'), t.split('.').count(), t.clone()));
        let mut steps = Vec::new();
        for t in uncovered {
            if !self.covered(&t, Some(subject)) {
                self.subscribed.insert(t.clone());
                steps.push(Step::Subscribe(t));
            }
        }
        self.subscribed.remove(subject);
        steps.push(Step::Unsubscribe(subject.to_string()));
        steps
    }

    /// A subscription could not be made: it is not counted as subscribed.
    fn failed(&mut self, subject: &str) {
        self.subscribed.remove(subject);
    }

    /// Whether a subscribed subject other than `subject` and `except` covers `subject`.
    fn covered(&self, subject: &str, except: Option<&str>) -> bool {
        self.subscribed
            .iter()
            .any(|w| w != subject && Some(w.as_str()) != except && covers(w, subject))
    }
}

/// Owns the node's NATS subscriptions.
struct Manager {
    client: Client,
    subjects: Subjects,
    wanted: Wanted,
    /// The task forwarding what each subscribed subject receives.
    tasks: HashMap<String, JoinHandle<()>>,
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
                    let steps = if c.present {
                        self.wanted.want(&subject)
                    } else {
                        self.wanted.unwant(&subject)
                    };
                    for step in steps {
                        added |= self.carry(step).await;
                    }
                }
                epoch = c.epoch;
            }
            if added {
                self.barrier().await;
            }
            self.done.send_replace(epoch);
        }
    }

    /// Carries out one step; true if it added a NATS subscription.
    async fn carry(&mut self, step: Step) -> bool {
        match step {
            Step::Unsubscribe(subject) => {
                if let Some(task) = self.tasks.remove(&subject) {
                    // Dropping the subscriber unsubscribes.
                    task.abort();
                }
                false
            }
            Step::Subscribe(subject) => {
                let mut sub = match self.client.subscribe(subject.clone()).await {
                    Ok(s) => s,
                    Err(e) => {
                        metrics::cluster_error("subscribe");
                        tracing::warn!(%subject, error = %e, "cannot subscribe on NATS");
                        self.wanted.failed(&subject);
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
                self.tasks.insert(subject, task);
                true
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::subject::nats_matches;

    fn sub(s: &str) -> Step {
        Step::Subscribe(s.into())
    }
    fn unsub(s: &str) -> Step {
        Step::Unsubscribe(s.into())
    }

    #[test]
    fn subjects_are_counted_and_covered_ones_not_subscribed() {
        let mut w = Wanted::default();
        assert_eq!(w.want("t.0.a.*"), [sub("t.0.a.*")]);
        assert_eq!(w.want("t.0.a.*"), [], "counted, not subscribed twice");
        assert_eq!(w.want("t.0.a.>"), [sub("t.0.a.>"), unsub("t.0.a.*")]);
        assert_eq!(w.want("t.0.a.b"), [], "covered");
        assert_eq!(w.unwant("t.0.a.*"), []);
        assert_eq!(w.unwant("t.0.a.*"), [], "still covered when gone");
        assert_eq!(w.unwant("t.0.a.>"), [sub("t.0.a.b"), unsub("t.0.a.>")]);
        assert_eq!(w.unwant("t.0.a.b"), [unsub("t.0.a.b")]);
        assert_eq!(w.unwant("t.0.a.b"), [], "never below zero");
        assert!(w.subscribed.is_empty() && w.counts.is_empty());
    }

    #[test]
    fn a_removed_cover_hands_over_to_the_widest_of_what_it_hid() {
        let mut w = Wanted::default();
        for s in ["t.>", "t.a.b", "t.a.>", "t.*.b", "t.x"] {
            w.want(s);
        }
        assert_eq!(w.subscribed, HashSet::from(["t.>".to_string()]));
        let steps = w.unwant("t.>");
        assert_eq!(
            steps,
            [sub("t.a.>"), sub("t.x"), sub("t.*.b"), unsub("t.>")],
            "t.a.b stays covered by t.a.>"
        );
    }

    /// Through any sequence of wants and unwants, a subject is received (some subscribed
    /// pattern matches it) exactly when some wanted pattern matches it, and no subscribed
    /// pattern is covered by another.
    #[test]
    fn what_is_subscribed_matches_what_is_wanted() {
        let patterns = [
            "t.>", "t.a.>", "t.a.*", "t.*.b", "t.a.b", "t.*", "t.x", "t.*.*", "t.a.b.>",
        ];
        let samples = [
            "t.a", "t.x", "t.a.b", "t.a.c", "t.z.b", "t.a.b.c", "t.q.r.s",
        ];
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut w = Wanted::default();
        let mut held: Vec<&str> = Vec::new();
        for _ in 0..5000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let p = patterns[(rng % patterns.len() as u64) as usize];
            if rng & 0x100 == 0 || held.is_empty() {
                w.want(p);
                held.push(p);
            } else {
                let i = (rng >> 16) as usize % held.len();
                w.unwant(held.swap_remove(i));
            }
            for s in samples {
                let wanted = held.iter().any(|p| nats_matches(p, s));
                let received = w.subscribed.iter().any(|p| nats_matches(p, s));
                assert_eq!(wanted, received, "{s} with {held:?} -> {:?}", w.subscribed);
            }
            for a in &w.subscribed {
                assert!(!w.covered(a, None), "{a} subscribed under a cover");
            }
        }
    }
}
