//! Every metric Tern records, declared once here with its help text and unit (Prometheus
//! conventions: `tern_` prefix, base units, `_total` counters). Recording goes through the
//! `metrics` facade: with no recorder installed (`[http] enabled = false`, or the library in
//! tests) it costs nothing; with the Prometheus recorder ([`install`]) the per-message ones are
//! counted in per-thread shards (an uncontended atomic add, never a lookup or an allocation)
//! and summed into their series when Prometheus scrapes ([`sync`]). Labels are bounded: packet types, QoS levels, reason codes, limits, never a client
//! id or a topic.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

mod backlog;

pub use backlog::{render as render_backlog, Backlog, Depths};

use crate::config::ListenerKind;
use crate::protocol::Packet;

/// Every listener kind, in the order of their slots ([`listener_slot`]).
const LISTENERS: [ListenerKind; 4] = [
    ListenerKind::Tcp,
    ListenerKind::Tls,
    ListenerKind::Ws,
    ListenerKind::Wss,
];

/// The offset of `kind`'s counter within [`OPENED`] and [`CLOSED`].
fn listener_slot(kind: ListenerKind) -> usize {
    match kind {
        ListenerKind::Tcp => 0,
        ListenerKind::Tls => 1,
        ListenerKind::Ws => 2,
        ListenerKind::Wss => 3,
    }
}

/// Packet type names, by MQTT packet type number − 1.
const PACKET_TYPES: [&str; 15] = [
    "connect",
    "connack",
    "publish",
    "puback",
    "pubrec",
    "pubrel",
    "pubcomp",
    "subscribe",
    "suback",
    "unsubscribe",
    "unsuback",
    "pingreq",
    "pingresp",
    "disconnect",
    "auth",
];

/// One delivery in this many has its in-broker latency recorded: enough for a histogram, and
/// cheap at millions of deliveries a second.
const LATENCY_SAMPLE: u64 = 64;

/// Installs the Prometheus recorder (once per process; later calls return the same handle)
/// and declares every metric. Call before the broker starts, so the per-message series are
/// registered with it.
pub fn install() -> Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let latency = [
        0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
        0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
    ];
    let sizes: Vec<f64> = (0..15).map(|i| f64::from(1u32 << i)).collect();
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_operations".into()), &sizes))
        .and_then(|b| b.install_recorder())
        .map_err(|e| e.to_string())?;
    describe();
    // Registered now, so the per-message series exist (at zero) from the first scrape.
    hot();
    ENABLED.store(true, Ordering::Relaxed);
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Help text and unit of every metric.
fn describe() {
    use metrics::{describe_counter as c, describe_gauge as g, describe_histogram as h};
    c!(
        "tern_cluster_errors_total",
        Unit::Count,
        "Cluster mode: failures between this node and NATS, by kind."
    );
    c!(
        "tern_cluster_received_total",
        Unit::Count,
        "Cluster mode: messages from the cluster (core, stream) and core copies dropped as seen (duplicate)."
    );
    h!(
        "tern_cluster_stream_write_seconds",
        Unit::Seconds,
        "Cluster mode: JetStream writes (QoS 1/2 and retained messages), from sending to the acknowledgement."
    );
    g!(
        "tern_cluster_nats_rtt_seconds",
        Unit::Seconds,
        "Cluster mode: round trip to this node's NATS server, measured every 5 s."
    );
    c!(
        "tern_cluster_takeovers_total",
        Unit::Count,
        "Cluster mode: client ids taken over from another node (taken), by one (lost), or from a node that died or stopped (node_lost)."
    );
    g!(
        "tern_cluster_consumers",
        Unit::Count,
        "Cluster mode: JetStream consumers this node reads: its own on the message stream, and one per queue or shared group open here."
    );
    c!(
        "tern_cluster_consumers_recreated_total",
        Unit::Count,
        "Cluster mode: consumers opened again because their stream of messages ended (ended) or stalled with messages pending (stalled)."
    );
    c!(
        "tern_cluster_sessions_resumed_total",
        Unit::Count,
        "Cluster mode: persistent sessions the cluster kept, resumed on this node with their queues read back from the stream."
    );
    g!(
        "tern_connections",
        Unit::Count,
        "Open client connections (accepted, not yet closed), by listener kind (tcp, tls, ws, wss)."
    );
    g!(
        "tern_connections_dormant",
        Unit::Count,
        "Quiet connections parked without a task."
    );
    c!(
        "tern_connections_accepted_total",
        Unit::Count,
        "Connections accepted (before any TLS or WebSocket handshake), by listener kind."
    );
    c!(
        "tern_connections_total",
        Unit::Count,
        "Clients connected (CONNACK success), by listener kind and protocol version."
    );
    c!(
        "tern_connections_refused_total",
        Unit::Count,
        "CONNECTs refused, by CONNACK reason code."
    );
    c!(
        "tern_unexpected_acks_total",
        Unit::Count,
        "Acknowledgements from clients that no flow waited for, by packet and kind (unknown packet id, or wrong_flow: the connection is closed)."
    );
    c!(
        "tern_tls_handshake_failures_total",
        Unit::Count,
        "TLS handshakes that failed (error, e.g. plain MQTT on a TLS port) or timed out."
    );
    c!(
        "tern_proxy_header_failures_total",
        Unit::Count,
        "Connections to a proxy_protocol listener closed for their PROXY header: missing (no header), invalid, timeout, or closed before it was complete."
    );
    g!(
        "tern_bridge_connected",
        Unit::Count,
        "1 while the bridge's link to its remote broker is up, else 0."
    );
    g!(
        "tern_bridge_queued_messages",
        Unit::Count,
        "Messages waiting in the bridge's queue to go to the remote."
    );
    g!(
        "tern_bridge_queued_bytes",
        Unit::Bytes,
        "Payload bytes of the messages waiting in the bridge's queue (bounded by max_queued_bytes)."
    );
    c!(
        "tern_bridge_messages_total",
        Unit::Count,
        "Messages a bridge forwarded (out: to the remote, acknowledged where QoS > 0; in: from it)."
    );
    c!(
        "tern_bridge_dropped_total",
        Unit::Count,
        "Messages for the remote dropped because the bridge's queue was full (max_queued_messages)."
    );
    c!(
        "tern_bridge_reconnects_total",
        Unit::Count,
        "Connection attempts to the remote after the first."
    );
    c!(
        "tern_auth_failures_total",
        Unit::Count,
        "Connections refused by authentication (bad_credentials: unknown user or wrong password; not_authorized: e.g. anonymous where that is off)."
    );
    c!(
        "tern_auth_hook_requests_total",
        Unit::Count,
        "HTTP hook requests by hook (auth, acl) and result (allow, deny, ignore, refused, error, timeout)."
    );
    c!(
        "tern_auth_token_expired_total",
        Unit::Count,
        "Connections closed because their token expired (v5 DISCONNECT 0xA0)."
    );
    c!(
        "tern_acl_denied_total",
        Unit::Count,
        "Actions the ACL refused: publish, subscribe, read (a delivery not made), will, retained."
    );
    c!(
        "tern_ws_upgrade_failures_total",
        Unit::Count,
        "WebSocket upgrades refused (error: not a valid upgrade, wrong path or subprotocol) or timed out."
    );
    c!(
        "tern_keepalive_timeouts_total",
        Unit::Count,
        "Connections closed for silence beyond 1.5 x keep-alive."
    );
    c!(
        "tern_protocol_violations_total",
        Unit::Count,
        "Connections closed for a protocol violation, by reason code."
    );
    c!(
        "tern_malformed_packets_total",
        Unit::Count,
        "Packets that could not be decoded, by reason code."
    );
    c!(
        "tern_packets_received_total",
        Unit::Count,
        "MQTT packets received, by type."
    );
    c!(
        "tern_packets_sent_total",
        Unit::Count,
        "MQTT packets sent, by type."
    );
    c!(
        "tern_messages_received_total",
        Unit::Count,
        "PUBLISH packets received from clients, by QoS."
    );
    c!(
        "tern_messages_sent_total",
        Unit::Count,
        "PUBLISH packets sent to clients (first sends), by QoS."
    );
    c!(
        "tern_received_bytes_total",
        Unit::Bytes,
        "Bytes read from client sockets."
    );
    c!(
        "tern_sent_bytes_total",
        Unit::Bytes,
        "Bytes written to client sockets."
    );
    c!(
        "tern_deliveries_queued_total",
        Unit::Count,
        "Deliveries queued for subscribers."
    );
    c!(
        "tern_http_admin_unauthorized_total",
        Unit::Count,
        "Admin API requests refused for a missing or wrong bearer token."
    );
    c!("tern_publishes_dropped_total", Unit::Count, "Deliveries not made, by reason (queue_full, expired, too_large, unreadable). A message without subscribers is not a drop.");
    c!(
        "tern_limit_hits_total",
        Unit::Count,
        "Times a configured limit refused something, by limit."
    );
    c!(
        "tern_wills_published_total",
        Unit::Count,
        "Will messages published."
    );
    h!("tern_delivery_latency_seconds", Unit::Seconds, "From a PUBLISH being accepted to its delivery being written for a subscriber (one delivery in 64 sampled).");
    g!(
        "tern_sessions",
        Unit::Count,
        "Sessions, by state: online (connected) or offline (parked)."
    );
    g!(
        "tern_subscriptions",
        Unit::Count,
        "Subscriptions, shared ones included."
    );
    g!(
        "tern_queued_messages",
        Unit::Count,
        "Deliveries waiting in client queues."
    );
    g!(
        "tern_inflight_messages",
        Unit::Count,
        "Outbound QoS 1/2 deliveries sent and not yet acknowledged."
    );
    g!("tern_retained_messages", Unit::Count, "Retained messages.");
    g!(
        "tern_retained_bytes",
        Unit::Bytes,
        "Payload bytes of the retained messages."
    );
    g!(
        "tern_uptime_seconds",
        Unit::Seconds,
        "Seconds since the broker started."
    );
    c!(
        "tern_store_batches_total",
        Unit::Count,
        "Store write batches committed."
    );
    h!(
        "tern_store_batch_operations",
        Unit::Count,
        "Operations per committed store batch."
    );
    h!(
        "tern_store_commit_seconds",
        Unit::Seconds,
        "Time to write and sync one store batch."
    );
    g!(
        "tern_store_size_bytes",
        Unit::Bytes,
        "Bytes the store takes on disk (measured every 10 s of writing)."
    );
    g!(
        "tern_store_recovery_seconds",
        Unit::Seconds,
        "Time the store took to be read back at start."
    );
}

/// Slots of the per-message counters ([`Shard`]).
const PACKETS_IN: usize = 0;
const PACKETS_OUT: usize = 15;
const RECEIVED_QOS: usize = 30;
const SENT_QOS: usize = 33;
const BYTES_IN: usize = 36;
const BYTES_OUT: usize = 37;
const QUEUED: usize = 38;
const DROPPED_QUEUE_FULL: usize = 39;
/// Connections opened and closed, one slot per listener kind each.
const OPENED: usize = 40;
const CLOSED: usize = 44;
const SLOTS: usize = 48;

/// Shards of the per-message counters: each thread adds to its own, so no cache line bounces
/// between cores on every message (a shared atomic per message cost 3-10% of QoS 0 throughput).
pub(crate) const SHARDS: usize = 16;

/// One thread's share of the per-message counters, on cache lines of its own.
#[repr(align(128))]
struct Shard([AtomicU64; SLOTS]);

/// Per-message counters, summed into the Prometheus series when scraped ([`sync`]).
static SHARDED: [Shard; SHARDS] = [const { Shard([const { AtomicU64::new(0) }; SLOTS]) }; SHARDS];

/// Whether a recorder is installed: without one, the per-message counters are not kept.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// This thread's shard.
fn shard() -> &'static Shard {
    &SHARDED[shard_index()]
}

/// This thread's place among [`SHARDS`] shards, for counters other modules shard the same way.
pub(crate) fn shard_index() -> usize {
    thread_local! {
        static MINE: usize = {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS
        };
    }
    MINE.with(|i| *i)
}

/// Adds `n` to slot `slot` of this thread's shard, if metrics are on.
fn bump(slot: usize, n: u64) {
    if ENABLED.load(Ordering::Relaxed) {
        shard().0[slot].fetch_add(n, Ordering::Relaxed);
    }
}

/// The Prometheus series the sharded counters are published as, registered once.
struct Hot {
    counters: Vec<(usize, Counter)>,
    /// `tern_connections`, one series per listener kind, in [`LISTENERS`] order.
    connections: [Gauge; 4],
    latency: Histogram,
}

fn hot() -> &'static Hot {
    static HOT: OnceLock<Hot> = OnceLock::new();
    HOT.get_or_init(|| {
        let mut counters = Vec::new();
        for (i, t) in PACKET_TYPES.iter().enumerate() {
            // Only the types that can travel in that direction get a series.
            if !["connack", "suback", "unsuback", "pingresp"].contains(t) {
                counters.push((
                    PACKETS_IN + i,
                    ::metrics::counter!("tern_packets_received_total", "type" => *t),
                ));
            }
            if !["connect", "subscribe", "unsubscribe", "pingreq"].contains(t) {
                counters.push((
                    PACKETS_OUT + i,
                    ::metrics::counter!("tern_packets_sent_total", "type" => *t),
                ));
            }
        }
        for q in 0..3u8 {
            let at = usize::from(q);
            let label = q.to_string();
            counters.push((
                RECEIVED_QOS + at,
                ::metrics::counter!("tern_messages_received_total", "qos" => label.clone()),
            ));
            counters.push((
                SENT_QOS + at,
                ::metrics::counter!("tern_messages_sent_total", "qos" => label),
            ));
        }
        counters.push((BYTES_IN, ::metrics::counter!("tern_received_bytes_total")));
        counters.push((BYTES_OUT, ::metrics::counter!("tern_sent_bytes_total")));
        counters.push((QUEUED, ::metrics::counter!("tern_deliveries_queued_total")));
        counters.push((
            DROPPED_QUEUE_FULL,
            ::metrics::counter!("tern_publishes_dropped_total", "reason" => "queue_full"),
        ));
        Hot {
            counters,
            connections: LISTENERS
                .map(|kind| ::metrics::gauge!("tern_connections", "listener" => kind.as_str())),
            latency: ::metrics::histogram!("tern_delivery_latency_seconds"),
        }
    })
}

/// Keeps the per-message counters even without a Prometheus recorder (for `$SYS`).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Running totals of the per-message counters (for `$SYS`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Packets of every type received.
    pub packets_in: u64,
    /// Packets of every type sent.
    pub packets_out: u64,
    /// PUBLISH packets received.
    pub publish_in: u64,
    /// PUBLISH packets sent (first sends).
    pub publish_out: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// Deliveries refused at a full queue.
    pub dropped: u64,
}

fn total(slot: usize) -> u64 {
    SHARDED
        .iter()
        .map(|s| s.0[slot].load(Ordering::Relaxed))
        .fold(0, u64::wrapping_add)
}

fn total_of(slots: std::ops::Range<usize>) -> u64 {
    slots.map(total).fold(0, u64::wrapping_add)
}

/// The per-message counters summed over every thread.
pub fn totals() -> Totals {
    Totals {
        packets_in: total_of(PACKETS_IN..PACKETS_IN + 15),
        packets_out: total_of(PACKETS_OUT..PACKETS_OUT + 15),
        publish_in: total_of(RECEIVED_QOS..RECEIVED_QOS + 3),
        publish_out: total_of(SENT_QOS..SENT_QOS + 3),
        bytes_in: total(BYTES_IN),
        bytes_out: total(BYTES_OUT),
        dropped: total(DROPPED_QUEUE_FULL),
    }
}

/// Publishes the sharded counters' sums (called when Prometheus scrapes).
pub fn sync() {
    let hot = hot();
    for (slot, counter) in &hot.counters {
        counter.absolute(total(*slot));
    }
    for (kind, gauge) in LISTENERS.iter().zip(&hot.connections) {
        let slot = listener_slot(*kind);
        let open = total(OPENED + slot).wrapping_sub(total(CLOSED + slot));
        gauge.set(open as i64 as f64);
    }
}

/// Index of a packet's type in [`PACKET_TYPES`].
fn packet_index(p: &Packet) -> usize {
    match p {
        Packet::Connect(_) => 0,
        Packet::ConnAck(_) => 1,
        Packet::Publish(_) => 2,
        Packet::PubAck(_) => 3,
        Packet::PubRec(_) => 4,
        Packet::PubRel(_) => 5,
        Packet::PubComp(_) => 6,
        Packet::Subscribe(_) => 7,
        Packet::SubAck(_) => 8,
        Packet::Unsubscribe(_) => 9,
        Packet::UnsubAck(_) => 10,
        Packet::PingReq => 11,
        Packet::PingResp => 12,
        Packet::Disconnect(_) => 13,
        Packet::Auth(_) => 14,
    }
}

/// Packets counted locally (per read, per batch of writes) and added to the shared counters
/// once: a shared atomic per message would bounce its cache line between cores.
#[derive(Debug, Default)]
pub struct Counts {
    packets: [u32; 15],
    qos: [u32; 3],
}

impl Counts {
    /// One more packet.
    pub fn packet(&mut self, p: &Packet) {
        self.packets[packet_index(p)] += 1;
        if let Packet::Publish(publish) = p {
            self.qos[publish.qos as usize] += 1;
        }
    }

    /// PUBLISH packets counted, resends included.
    pub fn publishes(&self) -> u64 {
        u64::from(self.packets[2])
    }

    /// One more PUBLISH at `qos` (`first`: not a resend).
    pub fn publish(&mut self, qos: u8, first: bool) {
        self.packets[2] += 1;
        if first {
            self.qos[usize::from(qos.min(2))] += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.packets.iter().all(|n| *n == 0)
    }
}

/// Adds what a connection decoded to the received counters.
pub fn received(c: &Counts) {
    add(PACKETS_IN, RECEIVED_QOS, c);
}

/// Adds what a connection wrote to the sent counters.
pub fn sent(c: &Counts) {
    add(PACKETS_OUT, SENT_QOS, c);
}

fn add(packets: usize, qos: usize, c: &Counts) {
    if c.is_empty() || !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let shard = shard();
    for (i, n) in c.packets.iter().enumerate() {
        if *n > 0 {
            shard.0[packets + i].fetch_add(u64::from(*n), Ordering::Relaxed);
        }
    }
    for (i, n) in c.qos.iter().enumerate() {
        if *n > 0 {
            shard.0[qos + i].fetch_add(u64::from(*n), Ordering::Relaxed);
        }
    }
}

/// A CONNECT was read (decoded by the handshake, before any other packet).
pub fn connect_received() {
    bump(PACKETS_IN, 1);
}

/// A control packet (not a PUBLISH) was written for a client.
pub fn packet_sent(p: &Packet) {
    bump(PACKETS_OUT + packet_index(p), 1);
}

/// A delivery of a message accepted at `accepted` is being written at `now`: one in
/// 64 is recorded (counted per thread, so sampling shares nothing).
pub fn delivery_latency(accepted: Instant, now: Instant) {
    thread_local! {
        static N: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    let n = N.with(|c| {
        c.set(c.get().wrapping_add(1));
        c.get()
    });
    if n.is_multiple_of(LATENCY_SAMPLE) && ENABLED.load(Ordering::Relaxed) {
        hot()
            .latency
            .record(now.saturating_duration_since(accepted).as_secs_f64());
    }
}

/// Bytes read from a client socket.
pub fn bytes_received(n: usize) {
    bump(BYTES_IN, n as u64);
}

/// Bytes written to a client socket.
pub fn bytes_sent(n: usize) {
    bump(BYTES_OUT, n as u64);
}

/// One message routed: `delivered` deliveries queued for subscribers, `dropped_queue_full`
/// refused at a full queue.
pub fn routed(delivered: usize, dropped_queue_full: usize) {
    if delivered > 0 {
        bump(QUEUED, delivered as u64);
    }
    if dropped_queue_full > 0 {
        bump(DROPPED_QUEUE_FULL, dropped_queue_full as u64);
    }
}

/// Reasons a delivery is not made, besides a full queue (counted in the sharded slots).
const DROP_REASONS: [&str; 4] = ["expired", "too_large", "unreadable", "bridge_loop"];

/// Per reason of [`DROP_REASONS`], for the admin API's figures (the Prometheus series are
/// write-only from here).
static DROPS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// A message not sent to a client for `reason` (`expired`, `too_large`, `queue_full`,
/// `unreadable`, `bridge_loop`).
pub fn dropped(reason: &'static str) {
    if reason == "queue_full" {
        // The series is published from the sharded slot, which would overwrite a direct
        // increment at the next scrape.
        bump(DROPPED_QUEUE_FULL, 1);
        return;
    }
    if let Some(i) = DROP_REASONS.iter().position(|r| *r == reason) {
        DROPS[i].fetch_add(1, Ordering::Relaxed);
    }
    ::metrics::counter!("tern_publishes_dropped_total", "reason" => reason).increment(1);
}

/// Deliveries not made since start, by reason (every reason, zeros included).
pub fn dropped_by_reason() -> Vec<(&'static str, u64)> {
    let mut out = vec![("queue_full", total(DROPPED_QUEUE_FULL))];
    for (reason, n) in DROP_REASONS.iter().zip(&DROPS) {
        out.push((reason, n.load(Ordering::Relaxed)));
    }
    out
}

/// An admin API request refused for a missing or wrong token.
pub fn admin_unauthorized() {
    ::metrics::counter!("tern_http_admin_unauthorized_total").increment(1);
}

/// A configured limit was reached (`limit` is its config key).
pub fn limit_hit(limit: &'static str) {
    ::metrics::counter!("tern_limit_hits_total", "limit" => limit).increment(1);
}

/// Cluster mode: something went wrong between this node and NATS (`kind`: publish,
/// stream_write, consume, undecodable, barrier_timeout, ownership, mirror).
pub fn cluster_error(kind: &'static str) {
    ::metrics::counter!("tern_cluster_errors_total", "kind" => kind).increment(1);
}

/// Cluster mode: messages from other nodes (`path`: core for QoS 0, stream for QoS 1/2),
/// and copies of core messages dropped as seen (`path` = duplicate).
pub fn cluster_received(path: &'static str) {
    ::metrics::counter!("tern_cluster_received_total", "path" => path).increment(1);
}

/// Cluster mode: how long a JetStream write took, from sending to its acknowledgement.
pub fn cluster_stream_write(d: std::time::Duration) {
    ::metrics::histogram!("tern_cluster_stream_write_seconds").record(d.as_secs_f64());
}

/// Cluster mode: the round trip to this node's NATS server (PING to PONG), measured every 5 s.
pub fn cluster_nats_rtt(d: std::time::Duration) {
    ::metrics::gauge!("tern_cluster_nats_rtt_seconds").set(d.as_secs_f64());
}

/// Cluster mode: client ids this node took over from another (`taken`), lost to one
/// (`lost`), or took from a node that died or stopped (`node_lost`).
pub fn cluster_takeover(way: &'static str) {
    ::metrics::counter!("tern_cluster_takeovers_total", "way" => way).increment(1);
}

/// Cluster mode: one more (`true`) or one fewer JetStream consumer read by this node.
pub fn cluster_consumer(open: bool) {
    let g = ::metrics::gauge!("tern_cluster_consumers");
    if open {
        g.increment(1.0);
    } else {
        g.decrement(1.0);
    }
}

/// Cluster mode: a consumer opened again (`why`: ended, stalled).
pub fn cluster_consumer_recreated(why: &'static str) {
    ::metrics::counter!("tern_cluster_consumers_recreated_total", "why" => why).increment(1);
}

/// Cluster mode: a persistent session kept by the cluster was resumed here.
pub fn cluster_session_resumed() {
    ::metrics::counter!("tern_cluster_sessions_resumed_total").increment(1);
}

/// A connection ended for a protocol violation with this reason code.
pub fn protocol_violation(reason: u8) {
    ::metrics::counter!("tern_protocol_violations_total", "reason_code" => format!("0x{reason:02X}"))
        .increment(1);
}

/// An acknowledgement (`packet`: PUBACK, PUBREC, PUBREL, PUBCOMP) that no flow waited for:
/// `kind` `unknown` (no flow under its packet id) or `wrong_flow` (a flow of another QoS or
/// stage: the connection is closed for it).
pub fn unexpected_ack(packet: &'static str, kind: &'static str) {
    ::metrics::counter!("tern_unexpected_acks_total", "packet" => packet, "kind" => kind)
        .increment(1);
}

/// Bytes from a client could not be decoded as a packet (this reason code).
pub fn malformed(reason: u8) {
    ::metrics::counter!("tern_malformed_packets_total", "reason_code" => format!("0x{reason:02X}"))
        .increment(1);
}

/// A TLS handshake did not complete (`error`: refused or not TLS at all, e.g. plain MQTT on the
/// TLS port; `timeout`).
pub fn tls_handshake_failed(reason: &'static str) {
    ::metrics::counter!("tern_tls_handshake_failures_total", "reason" => reason).increment(1);
}

/// A connection to a `proxy_protocol` listener brought no usable PROXY header (`missing`,
/// `invalid`, `timeout`, `closed`).
pub fn proxy_header_failed(reason: &'static str) {
    ::metrics::counter!("tern_proxy_header_failures_total", "reason" => reason).increment(1);
}

/// A WebSocket upgrade did not complete (`error`: not a WebSocket request, wrong path or
/// subprotocol; `timeout`).
pub fn ws_upgrade_failed(reason: &'static str) {
    ::metrics::counter!("tern_ws_upgrade_failures_total", "reason" => reason).increment(1);
}

/// Whether bridge `name`'s link is up.
pub fn bridge_connected(name: &str, up: bool) {
    ::metrics::gauge!("tern_bridge_connected", "bridge" => name.to_string())
        .set(f64::from(u8::from(up)));
}

/// Bridge `name`'s queue holds `n` messages of `bytes` payload bytes.
pub fn bridge_queued(name: &str, n: usize, bytes: u64) {
    ::metrics::gauge!("tern_bridge_queued_messages", "bridge" => name.to_string()).set(n as f64);
    ::metrics::gauge!("tern_bridge_queued_bytes", "bridge" => name.to_string()).set(bytes as f64);
}

/// Bridge `name` forwarded `n` messages `direction` (`out`, `in`).
pub fn bridge_forwarded(name: &str, direction: &'static str, n: u64) {
    ::metrics::counter!("tern_bridge_messages_total", "bridge" => name.to_string(), "direction" => direction)
        .increment(n);
}

/// Bridge `name`'s queue refused `n` messages.
pub fn bridge_dropped(name: &str, n: u64) {
    ::metrics::counter!("tern_bridge_dropped_total", "bridge" => name.to_string()).increment(n);
}

/// Bridge `name` tries again.
pub fn bridge_reconnect(name: &str) {
    ::metrics::counter!("tern_bridge_reconnects_total", "bridge" => name.to_string()).increment(1);
}

/// A login was refused (`bad_credentials`, `not_authorized`).
pub fn auth_failed(reason: &'static str) {
    ::metrics::counter!("tern_auth_failures_total", "reason" => reason).increment(1);
}

/// A request to the HTTP hook (`auth` or `acl`) ended with `result`.
pub fn auth_hook_request(hook: &'static str, result: &'static str) {
    ::metrics::counter!("tern_auth_hook_requests_total", "hook" => hook, "result" => result)
        .increment(1);
}

/// A connection was closed because its token expired.
pub fn token_expired() {
    ::metrics::counter!("tern_auth_token_expired_total").increment(1);
}

/// The ACL refused an action (`publish`, `subscribe`, `read`, `will`, `retained`).
pub fn acl_denied(action: &'static str) {
    ::metrics::counter!("tern_acl_denied_total", "action" => action).increment(1);
}

/// A connection was closed for keep-alive silence.
pub fn keepalive_timeout() {
    ::metrics::counter!("tern_keepalive_timeouts_total").increment(1);
}

/// A will message was published.
pub fn will_published() {
    ::metrics::counter!("tern_wills_published_total").increment(1);
}

/// A connection was accepted on a `listener` of this kind (before its handshakes and CONNECT).
pub fn connection_accepted(listener: ListenerKind) {
    ::metrics::counter!("tern_connections_accepted_total", "listener" => listener.as_str())
        .increment(1);
    bump(OPENED + listener_slot(listener), 1);
}

/// A client connected (CONNACK success) through a `listener` of this kind, with protocol
/// `version` ("3.1", "3.1.1", "5").
pub fn connected(listener: ListenerKind, version: &'static str) {
    ::metrics::counter!("tern_connections_total", "listener" => listener.as_str(), "protocol" => version)
        .increment(1);
}

/// A connection accepted on a `listener` of this kind closed.
pub fn connection_closed(listener: ListenerKind) {
    bump(CLOSED + listener_slot(listener), 1);
}

/// A quiet connection went dormant (`true`) or woke (`false`).
pub fn connection_dormant(dormant: bool) {
    let g = ::metrics::gauge!("tern_connections_dormant");
    if dormant {
        g.increment(1.0);
    } else {
        g.decrement(1.0);
    }
}

/// A CONNECT was refused with this reason code.
pub fn connect_refused(reason: u8) {
    ::metrics::counter!("tern_connections_refused_total", "reason_code" => format!("0x{reason:02X}"))
        .increment(1);
}

/// The store committed one batch of `ops` operations in `took` (including its sync).
pub fn store_batch(ops: usize, took: Duration) {
    ::metrics::counter!("tern_store_batches_total").increment(1);
    ::metrics::histogram!("tern_store_batch_operations").record(ops as f64);
    ::metrics::histogram!("tern_store_commit_seconds").record(took.as_secs_f64());
}

/// The store takes `bytes` on disk.
pub fn store_size(bytes: u64) {
    ::metrics::gauge!("tern_store_size_bytes").set(bytes as f64);
}

/// Reading the store back at start took `took`.
pub fn store_recovered(took: Duration) {
    ::metrics::gauge!("tern_store_recovery_seconds").set(took.as_secs_f64());
}

/// What the broker holds, read when Prometheus scrapes.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// Sessions with a connection.
    pub sessions_online: usize,
    /// Parked sessions.
    pub sessions_offline: usize,
    /// Subscriptions.
    pub subscriptions: usize,
    /// Deliveries waiting in queues.
    pub queued: usize,
    /// Outbound QoS 1/2 deliveries not yet acknowledged.
    pub inflight: i64,
    /// Retained messages.
    pub retained: usize,
    /// Their payload bytes.
    pub retained_bytes: usize,
    /// Seconds since start.
    pub uptime_secs: f64,
}

/// Sets the gauges read at scrape time.
pub fn set_snapshot(s: &Snapshot) {
    ::metrics::gauge!("tern_sessions", "state" => "online").set(s.sessions_online as f64);
    ::metrics::gauge!("tern_sessions", "state" => "offline").set(s.sessions_offline as f64);
    ::metrics::gauge!("tern_subscriptions").set(s.subscriptions as f64);
    ::metrics::gauge!("tern_queued_messages").set(s.queued as f64);
    ::metrics::gauge!("tern_inflight_messages").set(s.inflight as f64);
    ::metrics::gauge!("tern_retained_messages").set(s.retained as f64);
    ::metrics::gauge!("tern_retained_bytes").set(s.retained_bytes as f64);
    ::metrics::gauge!("tern_uptime_seconds").set(s.uptime_secs);
}
