//! Cluster mode: several Tern nodes as one broker, on NATS with JetStream. Tern builds no
//! consensus or replication of its own: NATS carries messages between nodes (core NATS for
//! QoS 0, a replicated JetStream stream for QoS 1/2), keeps the retained messages (a stream with
//! the last value per topic) and decides who owns a client id (a key-value bucket with
//! compare-and-set). The broker sees all of it through one seam, [`crate::broker::Remote`].
//!
//! Streams and buckets, for cluster `NAME` (subjects under `tern.NAME.`):
//! - `TERN_NAME_MSGS`: QoS 1/2 messages, `tern.NAME.1.<topic>`; every node reads all of it
//!   through its own durable consumer and routes what it reads to its subscribers.
//! - `TERN_NAME_RETAIN`: retained messages, `tern.NAME.r.<topic>`, one per topic; a delete is
//!   an empty message in the topic's place, so deletes and sets keep their order.
//! - KV `TERN_NAME_OWNERS`: which node holds each client id. KV `TERN_NAME_NODES`: heartbeats.
//!
//! QoS 0 messages go to `tern.NAME.0.<topic>`, and reach only the nodes that subscribed to
//! a matching subject (module `interest`).

mod consumer;
mod dedupe;
mod groups;
mod interest;
mod mirror;
mod owner;
mod records;
mod status;
pub(crate) mod subject;
mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage as JsPublish};
use async_nats::HeaderMap;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::broker::{BrokerState, Claimed, ClusterWill, Remote, Resume, Unfit, Waiting};
use crate::config::ClusterConfig;
use crate::session::{Message, Subscription};
use crate::store::{StoreError, Ticket};
pub use status::status;
use subject::{Subjects, MAX_SUBJECT_LEN};

/// The oldest NATS server cluster mode runs on. Below 2.11 the key-value compare-and-set
/// that keeps a client id on one node is not safe in a cluster: measured on 2.9.10, two nodes
/// owned the same client id 5 and 7 times in about 10,500 takeovers (nats-server#4320, fixed in
/// 2.9.21, with a further fix in 2.11.0); on 2.15.1, none in 33,000.
pub const MIN_SERVER: (u64, u64) = (2, 11);

/// How long QoS 1/2 messages stay in the stream: for nodes that were away to catch up, and
/// for persistent sessions whose clients are away (their queues are read back from it).
const MSGS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The stream's size bound (oldest dropped first).
const MSGS_MAX_BYTES: i64 = 1 << 30;
/// Messages waiting for the publisher task. Beyond it (NATS slower than the clients for long)
/// a QoS 0 message is dropped and a QoS 1/2 one is not acknowledged, both counted: memory stays
/// bounded.
const OUTGOING: usize = 1 << 16;
/// The window in which JetStream stores a QoS 2 message sent again only once.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Why a node cannot join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No NATS server answered.
    #[error("cannot connect to NATS ({urls}): {message}")]
    Connect {
        /// The URLs tried.
        urls: String,
        /// What the client said.
        message: String,
    },
    /// The server is older than [`MIN_SERVER`].
    #[error(
        "NATS server {server} is version {version}; cluster mode needs 2.11 or later: below it \
         the key-value compare-and-set that keeps each client id on one node can let two nodes \
         own the same client id (nats-server#4320, fixed in 2.9.21 and again in 2.11.0)"
    )]
    TooOld {
        /// The server's name.
        server: String,
        /// The version it reports.
        version: String,
    },
    /// Another node with this node id is running.
    #[error(
        "node_id {node} is in use: another node ({other}) with it is alive; node ids must be \
         unique in a cluster"
    )]
    NodeIdInUse {
        /// This node's id.
        node: String,
        /// The other node's run, as its heartbeat names it.
        other: String,
    },
    /// A JetStream request failed (JetStream off, no quorum, a conflicting stream).
    #[error("JetStream: cannot {what}: {message}")]
    JetStream {
        /// What was being done.
        what: String,
        /// What the server said.
        message: String,
    },
}

fn js_err(what: impl Into<String>) -> impl FnOnce(String) -> ClusterError {
    let what = what.into();
    move |message| ClusterError::JetStream { what, message }
}

/// Whether `version` ("2.15.1", "v2.11.0-beta") is at least [`MIN_SERVER`].
pub fn version_supported(version: &str) -> bool {
    let v = version.trim_start_matches('v');
    let mut parts = v.split(['.', '-']).map(|p| p.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= MIN_SERVER,
        _ => false,
    }
}

/// One message for the cluster, in the order the publisher task sends them.
struct Outgoing {
    /// A core NATS message (QoS 0).
    core: Option<(String, HeaderMap, Bytes)>,
    /// A stream write: the stream's subject, headers, payload, and Nats-Msg-Id.
    stored: Option<(String, HeaderMap, Bytes, Option<String>)>,
    /// The retained stream's write.
    retain: Option<(String, HeaderMap, Bytes)>,
    /// Told once the stream writes are acknowledged.
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
    /// Told, when the publisher reaches this item, how many retained writes it has sent.
    marker: Option<oneshot::Sender<u64>>,
}

/// A session to resume, and who waits for it.
type Resuming = (Resume, oneshot::Sender<Result<(), String>>);

/// This node's membership of the cluster: the [`Remote`] the broker calls.
pub struct Cluster {
    node: String,
    /// This run of the node (`node/random`): what other nodes' de-duplication knows it by.
    origin: String,
    subjects: Subjects,
    client: async_nats::Client,
    js: jetstream::Context,
    timeout: Duration,
    max_payload: usize,
    seq: AtomicU64,
    out: mpsc::Sender<Outgoing>,
    out_rx: parking_lot::Mutex<Option<mpsc::Receiver<Outgoing>>>,
    /// How many of this node's retained writes are acknowledged, all before them too.
    retain_done: tokio::sync::watch::Sender<u64>,
    interest: interest::Handle,
    mirror: mirror::Handle,
    owners: owner::Owners,
    groups: groups::Groups,
    names: Names,
    /// Sessions to resume, for the stream consumer (which reads their queues back between two
    /// of its own messages).
    resumes: mpsc::Sender<Resuming>,
    resumes_rx: parking_lot::Mutex<Option<mpsc::Receiver<Resuming>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// The cluster's stream and bucket names.
#[derive(Debug, Clone)]
struct Names {
    msgs: String,
    retain: String,
    owners: String,
    nodes: String,
}

impl Names {
    fn new(cluster: &str) -> Names {
        let base = format!("TERN_{cluster}");
        Names {
            msgs: format!("{base}_MSGS"),
            retain: format!("{base}_RETAIN"),
            owners: format!("{base}_OWNERS"),
            nodes: format!("{base}_NODES"),
        }
    }
}

/// Connects to NATS with the section's credentials; `no_echo`, so this node never gets its
/// own core messages back.
async fn connect(config: &ClusterConfig, node: &str) -> Result<async_nats::Client, ClusterError> {
    let urls = config.nats_urls.join(",");
    let fail = |message: String| ClusterError::Connect {
        urls: urls.clone(),
        message,
    };
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("tern {node}"))
        .no_echo()
        .max_reconnects(None)
        .subscription_capacity(1 << 16)
        .connection_timeout(Duration::from_secs(5));
    if let Some(creds) = &config.nats_creds {
        options = options
            .credentials_file(creds)
            .await
            .map_err(|e| fail(format!("{}: {e}", creds.display())))?;
    }
    if let (Some(u), Some(p)) = (&config.nats_user, &config.nats_password) {
        options = options.user_and_password(u.clone(), p.clone());
    }
    if let Some(t) = &config.nats_token {
        options = options.token(t.clone());
    }
    if let Some(ca) = &config.nats_tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&config.nats_tls_cert, &config.nats_tls_key) {
        options = options
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    let addrs: Vec<async_nats::ServerAddr> = config
        .nats_urls
        .iter()
        .map(|u| u.parse().map_err(|e| fail(format!("{u}: {e}"))))
        .collect::<Result<_, _>>()?;
    options
        .connect(addrs)
        .await
        .map_err(|e| fail(e.to_string()))
}

impl Cluster {
    /// Connects, checks the server, creates or checks the streams and buckets. Nothing is
    /// routed yet: [`Cluster::start`] plugs the node in.
    pub async fn join(config: &ClusterConfig) -> Result<Arc<Cluster>, ClusterError> {
        let node = config.node_id();
        // NATS may be starting too (a compose file, a reboot): keep trying for a while.
        let client = retry(|| connect(config, &node)).await?;
        let info = client.server_info();
        if !version_supported(&info.version) {
            return Err(ClusterError::TooOld {
                server: info.server_name,
                version: info.version,
            });
        }
        let timeout = Duration::from_secs(config.unavailable_timeout_secs.max(1));
        let js = jetstream::ContextBuilder::new()
            .timeout(timeout)
            .max_ack_inflight(8192)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let subjects = Subjects::new(&config.name);
        let names = Names::new(&config.name);
        retry(|| ensure_streams(&js, &subjects, &names, config.replicas)).await?;
        let owners =
            retry(|| owner::Owners::open(&js, &names.owners, &names.nodes, config.replicas, &node))
                .await?;
        let (out, out_rx) = mpsc::channel(OUTGOING);
        let (resumes, resumes_rx) = mpsc::channel(1024);
        let origin = format!("{node}/{:08x}", rand::random::<u32>());
        tracing::info!(
            node = %node,
            server = %info.server_name,
            version = %info.version,
            cluster = %config.name,
            replicas = config.replicas,
            "joined NATS"
        );
        let groups = groups::Groups::new(js.clone(), names.msgs.clone(), subjects.clone());
        Ok(Arc::new(Cluster {
            groups,
            interest: interest::Handle::new(client.clone(), subjects.clone()),
            mirror: mirror::Handle::new(js.clone(), names.retain.clone()),
            max_payload: info.max_payload,
            node,
            origin,
            subjects,
            client,
            js,
            timeout,
            seq: AtomicU64::new(1),
            out,
            out_rx: parking_lot::Mutex::new(Some(out_rx)),
            retain_done: tokio::sync::watch::Sender::new(0),
            owners,
            names,
            resumes,
            resumes_rx: parking_lot::Mutex::new(Some(resumes_rx)),
        }))
    }

    /// Starts routing for `state`: the publisher, this node's interest and its barrier
    /// answers, the stream consumer, the ownership watch and heartbeats; returns once the
    /// retained messages are mirrored and the interest of `state`'s subscriptions (declared
    /// queues) is known to the peers. Then the node is ready.
    pub async fn start(self: &Arc<Self>, state: &Arc<BrokerState>) -> Result<(), ClusterError> {
        if let Some(rx) = self.out_rx.lock().take() {
            tokio::spawn(publisher(Arc::clone(self), rx));
            tokio::spawn(measure_rtt(self.client.clone()));
        }
        self.groups.set_state(state);
        tokio::spawn(serve_handovers(
            self.client.clone(),
            self.subjects.control(&format!("handover.{}", self.node)),
            self.owners.records.clone(),
            Arc::downgrade(state),
        ));
        self.mirror.start(state, &self.subjects).await?;
        retry(|| self.owners.start(state, &self.origin)).await?;
        self.interest
            .start(state, &self.origin, self.owners.peers())
            .await
            .map_err(js_err("subscribe to the barrier subject"))?;
        state.set_remote(Arc::clone(self) as Arc<dyn Remote>);
        retry(|| consumer::consume(Arc::clone(self), state)).await?;
        if let Some(t) = self.interest_settled() {
            let _ = t.wait().await;
        }
        Ok(())
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }
}

/// How long a starting node keeps trying to reach NATS (it may be starting too) and JetStream
/// requests that fail (nodes starting together create the same streams at once, and a new stream
/// takes a moment to elect its leader).
const START_RETRIES: Duration = Duration::from_secs(60);

/// Runs `f` until it succeeds or [`START_RETRIES`] have passed.
async fn retry<T, Fut>(mut f: impl FnMut() -> Fut) -> Result<T, ClusterError>
where
    Fut: std::future::Future<Output = Result<T, ClusterError>>,
{
    let give_up = tokio::time::Instant::now() + START_RETRIES;
    let mut pause = Duration::from_millis(100);
    loop {
        match f().await {
            Ok(t) => return Ok(t),
            Err(e @ ClusterError::NodeIdInUse { .. }) => return Err(e),
            Err(e) if tokio::time::Instant::now() + pause < give_up => {
                tracing::warn!(error = %e, "joining the cluster; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Creates the streams, or checks that existing ones carry our subjects.
async fn ensure_streams(
    js: &jetstream::Context,
    subjects: &Subjects,
    names: &Names,
    replicas: usize,
) -> Result<(), ClusterError> {
    use jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};
    let msgs = Config {
        name: names.msgs.clone(),
        subjects: vec![subjects.all(subject::CLASS_QOS1)],
        retention: RetentionPolicy::Limits,
        max_age: MSGS_MAX_AGE,
        max_bytes: MSGS_MAX_BYTES,
        discard: DiscardPolicy::Old,
        storage: StorageType::File,
        num_replicas: replicas,
        duplicate_window: DUPLICATE_WINDOW,
        ..Config::default()
    };
    let retain = Config {
        name: names.retain.clone(),
        subjects: vec![subjects.all(subject::CLASS_RETAINED)],
        retention: RetentionPolicy::Limits,
        max_messages_per_subject: 1,
        storage: StorageType::File,
        num_replicas: replicas,
        allow_direct: true,
        ..Config::default()
    };
    for config in [msgs, retain] {
        let name = config.name.clone();
        let want = config.subjects.clone();
        // Limits that changed between versions are brought up to date.
        let info = js
            .create_or_update_stream(config)
            .await
            .map_err(|e| js_err(format!("create stream {name}"))(e.to_string()))?;
        if info.config.subjects != want {
            return Err(ClusterError::JetStream {
                what: format!("use stream {name}"),
                message: format!(
                    "it exists with subjects {:?}, not {:?}",
                    info.config.subjects, want
                ),
            });
        }
    }
    Ok(())
}

/// Sends what the broker hands over, in order: core messages as they come; stream writes
/// pipelined, each acknowledgement awaited on its own (never retried here: a retry after a
/// timeout could reorder, and the client sends the message again anyway). Retained writes are
/// numbered, and counted done in order, for [`Remote::retained_synced`].
async fn publisher(cluster: Arc<Cluster>, mut rx: mpsc::Receiver<Outgoing>) {
    let mut retained = 0u64;
    let mut previous: Option<oneshot::Receiver<()>> = None;
    while let Some(o) = rx.recv().await {
        if let Some(marker) = o.marker {
            let _ = marker.send(retained);
            continue;
        }
        if let Some((subject, headers, payload)) = o.core {
            if let Err(e) = cluster
                .client
                .publish_with_headers(subject, headers, payload)
                .await
            {
                crate::metrics::cluster_error("publish");
                tracing::debug!(error = %e, "QoS 0 message not sent to the cluster");
            }
        }
        let mut acks = Vec::with_capacity(2);
        if let Some((subject, headers, payload, id)) = o.stored {
            let mut p = JsPublish::build().payload(payload).headers(headers);
            if let Some(id) = id {
                p = p.message_id(id);
            }
            acks.push(cluster.js.send_publish(subject, p).await);
        }
        let mut chain = None;
        if let Some((subject, headers, payload)) = o.retain {
            let p = JsPublish::build().payload(payload).headers(headers);
            acks.push(cluster.js.send_publish(subject, p).await);
            retained += 1;
            let (tx, rx) = oneshot::channel();
            chain = Some((retained, previous.replace(rx), tx));
        }
        if acks.is_empty() {
            continue;
        }
        let done = o.done;
        let retain_done = cluster.retain_done.clone();
        let sent = std::time::Instant::now();
        tokio::spawn(async move {
            let mut result = Ok(());
            for ack in acks {
                let r = match ack {
                    Ok(fut) => fut.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = r {
                    crate::metrics::cluster_error("stream_write");
                    result = Err(StoreError::Cluster(e));
                }
            }
            if result.is_ok() {
                crate::metrics::cluster_stream_write(sent.elapsed());
            }
            if let Some(done) = done {
                let _ = done.send(result);
            }
            if let Some((n, before, this)) = chain {
                if let Some(before) = before {
                    let _ = before.await;
                }
                retain_done.send_if_modified(|d| {
                    let later = n > *d;
                    *d = (*d).max(n);
                    later
                });
                let _ = this.send(());
            }
        });
    }
}

/// Measures the round trip to the NATS server every 5 s, for as long as the client lives.
async fn measure_rtt(client: async_nats::Client) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let start = std::time::Instant::now();
        if client.flush().await.is_ok() {
            crate::metrics::cluster_nats_rtt(start.elapsed());
        }
    }
}

/// How long a node that takes a client over waits for the previous node's handover.
const HANDOVER_WAIT: Duration = Duration::from_secs(2);

/// Answers the handover requests of nodes that take this node's clients over: the client's
/// connection here goes first, then its session's state as this node has it (nothing if it
/// has none).
async fn serve_handovers(
    client: async_nats::Client,
    subject: String,
    records: records::Records,
    state: std::sync::Weak<BrokerState>,
) {
    use futures_util::StreamExt;
    let Ok(mut requests) = client.subscribe(subject).await else {
        crate::metrics::cluster_error("handover");
        return;
    };
    while let Some(m) = requests.next().await {
        let (Some(reply), Some(state)) = (m.reply.clone(), state.upgrade()) else {
            continue;
        };
        let Ok(id) = std::str::from_utf8(&m.payload) else {
            continue;
        };
        let client_id: Arc<str> = Arc::from(id);
        let (client, records) = (client.clone(), records.clone());
        tokio::spawn(async move {
            let handover = state
                .moved_away(
                    &client_id,
                    || true,
                    |installed| records.handover(&client_id, installed),
                )
                .await;
            let answer = handover
                .and_then(|h| serde_json::to_vec(&h).ok())
                .unwrap_or_default();
            if client.publish(reply, answer.into()).await.is_err() {
                crate::metrics::cluster_error("handover");
            }
        });
    }
}

impl Remote for Cluster {
    fn fits(&self, topic: &str, payload_len: usize) -> Result<(), Unfit> {
        // The longest of the subjects the message is written under.
        let subject = self.subjects.topic(subject::CLASS_RETAINED, topic);
        if subject.len() > MAX_SUBJECT_LEN {
            return Err(Unfit::TopicTooLong);
        }
        // Headers travel in the same NATS message; leave them room.
        if self.max_payload > 0 && payload_len + 4096 > self.max_payload {
            return Err(Unfit::PayloadTooLarge);
        }
        Ok(())
    }

    fn forward(&self, msg: &Arc<Message>, local: bool, qos2: Option<u64>) -> Option<Ticket> {
        let topic = msg.topic();
        let payload = msg.publish.payload.clone();
        let mut headers = wire::headers(msg, &self.origin);
        let retain = msg.publish.retain.then(|| {
            (
                self.subjects.topic(subject::CLASS_RETAINED, topic),
                headers.clone(),
                payload.clone(),
            )
        });
        let (core, stored) = if local {
            // Queues and groups anywhere get it through the stream, each from one node.
            let for_queues = self.groups.wanted(topic).then(|| {
                let mut h = headers.clone();
                h.insert(wire::FOR_QUEUES, "1");
                let subject = self.subjects.topic(subject::CLASS_QOS1, topic);
                (subject, h, payload.clone(), None)
            });
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            headers.insert(wire::SEQ, seq.to_string().as_str());
            let subject = self.subjects.topic(subject::CLASS_QOS0, topic);
            (Some((subject, headers, payload)), for_queues)
        } else {
            if let Some(publisher) = &msg.publisher {
                wire::set_publisher(&mut headers, publisher);
            }
            let subject = self.subjects.topic(subject::CLASS_QOS1, topic);
            // The same for a copy sent again to another node: the number comes with the
            // session, and is unique across processes.
            let id = qos2.map(|serial| {
                let by = msg.publisher.as_deref().unwrap_or("");
                format!("{}-{serial:x}", records::key(by))
            });
            (None, Some((subject, headers, payload, id)))
        };
        let (ticket, done) = if !local && stored.is_some() || retain.is_some() {
            let (ticket, tx) = Ticket::manual();
            (Some(ticket), Some(tx))
        } else {
            (None, None)
        };
        let sent = self.out.try_send(Outgoing {
            core,
            stored,
            retain,
            done,
            marker: None,
        });
        if let Err(e) = sent {
            let full = matches!(e, mpsc::error::TrySendError::Full(_));
            crate::metrics::cluster_error(if full { "backlog_full" } else { "publish" });
            if let Some(done) = e.into_inner().done {
                let why = if full {
                    "too many messages waiting for NATS"
                } else {
                    "the cluster publisher stopped"
                };
                let _ = done.send(Err(StoreError::Cluster(why.into())));
            }
        }
        ticket
    }

    fn interest(&self, filter: &str, present: bool) {
        self.interest.change(filter, present);
    }

    fn interest_settled(&self) -> Option<Ticket> {
        let interest = self.interest.settled();
        let Some(groups) = self.groups.settled(self.timeout) else {
            return interest;
        };
        // A group opened here: its consumer exists before the SUBACK too.
        let (ticket, done) = Ticket::manual();
        tokio::spawn(async move {
            groups.await;
            let r = match interest {
                Some(t) => t.wait().await,
                None => Ok(()),
            };
            let _ = done.send(r);
        });
        Some(ticket)
    }

    fn retained_synced(&self) -> Option<Waiting<()>> {
        // This node's own retained writes first (a QoS 0 one is not acknowledged to its
        // client, who may subscribe right after it), then everything the stream holds.
        let (tx, rx) = oneshot::channel();
        let marked = self.out.try_send(Outgoing {
            core: None,
            stored: None,
            retain: None,
            done: None,
            marker: Some(tx),
        });
        let mut done = self.retain_done.subscribe();
        let mirror = self.mirror.synced(self.timeout);
        let timeout = self.timeout;
        Some(Box::pin(async move {
            if marked.is_ok() {
                if let Ok(n) = rx.await {
                    let _ = tokio::time::timeout(timeout, done.wait_for(|d| *d >= n)).await;
                }
            }
            mirror.await;
        }))
    }

    fn claim(
        &self,
        client_id: &Arc<str>,
        will: Option<ClusterWill>,
        clean_start: bool,
        expiry: u32,
    ) -> Waiting<Result<Claimed, String>> {
        let peers = self.owners.peers();
        let since = std::time::Instant::now();
        let claimed = self.owners.records.claim(
            client_id,
            will,
            clean_start,
            expiry,
            move |node| peers.died(node, since),
            self.timeout,
        );
        let (client, subjects) = (self.client.clone(), self.subjects.clone());
        let (records, client_id) = (self.owners.records.clone(), Arc::clone(client_id));
        Box::pin(async move {
            let mut claimed = claimed.await?;
            if let (Some(from), Some(session)) = (&claimed.from, claimed.session.as_mut()) {
                // The session's state from the node that had it, fresher than its record: a
                // dead node does not answer, and the record holds.
                let subject = subjects.control(&format!("handover.{from}"));
                let asked = client.request(subject, Bytes::from(client_id.to_string()));
                if let Ok(Ok(reply)) = tokio::time::timeout(HANDOVER_WAIT, asked).await {
                    if let Ok(h) = serde_json::from_slice::<records::Handover>(&reply.payload) {
                        h.apply(session);
                        records.taken_over(&client_id, claimed.claim, &h);
                    }
                }
            }
            Ok(claimed)
        })
    }

    fn will_settled(&self, client_id: &Arc<str>, claim: u64) -> Waiting<()> {
        let t = self
            .owners
            .records
            .amend(client_id, claim, |r| r.will = None);
        Box::pin(async move {
            if let Some(t) = t {
                let _ = t.wait().await;
            }
        })
    }

    fn keep_subscriptions(
        &self,
        client_id: &Arc<str>,
        claim: u64,
        subscriptions: Vec<(String, Subscription)>,
    ) -> Option<Ticket> {
        let subs = subscriptions
            .iter()
            .map(|(f, s)| records::KeptSub::of(f, s))
            .collect();
        self.owners.records.amend(client_id, claim, |r| {
            if let Some(s) = r.session.as_mut() {
                s.subs = subs;
            }
        })
    }

    fn parked(&self, client_id: &Arc<str>, claim: u64, will_waits: bool) {
        let now = records::now_ms();
        let _ = self.owners.records.amend(client_id, claim, |r| {
            if let Some(s) = r.session.as_mut() {
                s.gone = Some(now);
            }
            if !will_waits {
                r.will = None;
            }
        });
    }

    fn ended(&self, client_id: &Arc<str>, claim: u64) {
        let _ = self.owners.records.end(client_id, claim);
    }

    fn released(&self, client_id: &str, seqs: &mut dyn Iterator<Item = u64>) {
        self.owners.records.released(client_id, seqs);
    }

    fn queue_opened(&self, store_id: &Arc<str>, filter: &str, declared: bool) {
        self.groups.opened(store_id, filter, declared);
    }

    fn queue_closed(&self, store_id: &str, waiting: Vec<u64>) {
        self.groups.closed(store_id, waiting);
    }

    fn queue_released(&self, store_id: &str, seq: u64) {
        self.groups.released(store_id, seq);
    }

    fn inbound_qos2(
        &self,
        client_id: &str,
        pkid: crate::protocol::PacketId,
        serial: Option<u64>,
    ) -> Option<Ticket> {
        self.owners
            .records
            .inbound_qos2(client_id, pkid.get(), serial)
    }

    fn outbound_qos2(&self, client_id: &str, op: crate::session::StoreOp) -> Option<Ticket> {
        self.owners.records.outbound_qos2(client_id, op)
    }

    fn resume(&self, resume: Resume) -> Waiting<Result<(), String>> {
        let resumes = self.resumes.clone();
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            resumes
                .send((resume, tx))
                .await
                .map_err(|_| "the stream consumer stopped".to_string())?;
            rx.await
                .map_err(|_| "the stream consumer stopped".to_string())?
        })
    }

    fn leave(&self) -> Waiting<()> {
        self.owners.leave()
    }

    fn healthy(&self) -> bool {
        self.owners.healthy()
    }
}
