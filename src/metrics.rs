//! Every metric Tern records, declared once here with its help text and unit (Prometheus
//! conventions: `tern_` prefix, base units, `_total` counters). Recording goes through the
//! `metrics` facade: with no recorder installed (`[http] enabled = false`, or the library in
//! tests) it costs nothing; with the Prometheus recorder ([`install`]) the per-message ones are
//! handles registered once ([`hot`]), so recording is an atomic add, never a lookup or an
//! allocation. Labels are bounded: packet types, QoS levels, reason codes, limits, never a client
//! id or a topic.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::broker::RouteOutcome;
use crate::protocol::Packet;

/// The one listener kind so far (TLS and WebSocket listeners come later).
const LISTENER: &str = "tcp";

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
/// and declares every metric. Call before the broker starts, so [`hot`] registers real handles.
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
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Help text and unit of every metric.
fn describe() {
    use metrics::{describe_counter as c, describe_gauge as g, describe_histogram as h};
    g!(
        "tern_connections",
        Unit::Count,
        "Open client connections (TCP accepted, not yet closed)."
    );
    g!(
        "tern_connections_dormant",
        Unit::Count,
        "Quiet connections parked without a task."
    );
    c!(
        "tern_connections_accepted_total",
        Unit::Count,
        "TCP connections accepted."
    );
    c!(
        "tern_connections_total",
        Unit::Count,
        "Clients connected (CONNACK success), by protocol version."
    );
    c!(
        "tern_connections_refused_total",
        Unit::Count,
        "CONNECTs refused, by CONNACK reason code."
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

/// Handles of the metrics recorded per packet or per message, registered once.
pub struct Hot {
    received: [Counter; 3],
    sent: [Counter; 3],
    packets_in: [Counter; 15],
    packets_out: [Counter; 15],
    bytes_in: Counter,
    bytes_out: Counter,
    queued: Counter,
    dropped_queue_full: Counter,
    latency: Histogram,
    connections: Gauge,
}

/// The per-message handles (no-ops when no recorder was installed before first use).
pub fn hot() -> &'static Hot {
    static HOT: OnceLock<Hot> = OnceLock::new();
    HOT.get_or_init(|| {
        let qos = |name: &'static str| {
            [0, 1, 2].map(|q: u8| ::metrics::counter!(name, "qos" => q.to_string()))
        };
        // Only the types that can travel in that direction get a series.
        let types = |name: &'static str, never: [&str; 4]| {
            PACKET_TYPES.map(|t| match never.contains(&t) {
                true => Counter::noop(),
                false => ::metrics::counter!(name, "type" => t),
            })
        };
        Hot {
            received: qos("tern_messages_received_total"),
            sent: qos("tern_messages_sent_total"),
            packets_in: types(
                "tern_packets_received_total",
                ["connack", "suback", "unsuback", "pingresp"],
            ),
            packets_out: types(
                "tern_packets_sent_total",
                ["connect", "subscribe", "unsubscribe", "pingreq"],
            ),
            bytes_in: ::metrics::counter!("tern_received_bytes_total"),
            bytes_out: ::metrics::counter!("tern_sent_bytes_total"),
            queued: ::metrics::counter!("tern_deliveries_queued_total"),
            dropped_queue_full: ::metrics::counter!("tern_publishes_dropped_total", "reason" => "queue_full"),
            latency: ::metrics::histogram!("tern_delivery_latency_seconds"),
            connections: ::metrics::gauge!("tern_connections", "listener" => LISTENER),
        }
    })
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

/// A packet was decoded from a client.
pub fn packet_received(p: &Packet) {
    let hot = hot();
    hot.packets_in[packet_index(p)].increment(1);
    if let Packet::Publish(publish) = p {
        hot.received[publish.qos as usize].increment(1);
    }
}

/// A CONNECT was read (decoded by the handshake, before any [`packet_received`]).
pub fn connect_received() {
    hot().packets_in[0].increment(1);
}

/// A control packet (not a PUBLISH) was written for a client.
pub fn packet_sent(p: &Packet) {
    hot().packets_out[packet_index(p)].increment(1);
}

/// A PUBLISH was written for a subscriber at `qos` (`resend`: a DUP resend), for a message
/// accepted at `accepted`; `n` counts deliveries so far, for sampling the latency.
pub fn publish_sent(qos: u8, resend: bool, accepted: Instant, now: Instant, n: u64) {
    let hot = hot();
    hot.packets_out[2].increment(1);
    if !resend {
        hot.sent[usize::from(qos.min(2))].increment(1);
        if n % LATENCY_SAMPLE == 0 {
            hot.latency
                .record(now.saturating_duration_since(accepted).as_secs_f64());
        }
    }
}

/// Bytes read from a client socket.
pub fn bytes_received(n: usize) {
    hot().bytes_in.increment(n as u64);
}

/// Bytes written to a client socket.
pub fn bytes_sent(n: usize) {
    hot().bytes_out.increment(n as u64);
}

/// Messages queued for subscribers and deliveries refused at a full queue.
pub fn routed(outcome: &RouteOutcome) {
    let hot = hot();
    if outcome.delivered > 0 {
        hot.queued.increment(outcome.delivered as u64);
    }
    if outcome.dropped_queue_full > 0 {
        hot.dropped_queue_full
            .increment(outcome.dropped_queue_full as u64);
    }
}

/// A message not sent to a client for `reason` (`expired`, `too_large`, `queue_full`,
/// `unreadable`).
pub fn dropped(reason: &'static str) {
    ::metrics::counter!("tern_publishes_dropped_total", "reason" => reason).increment(1);
}

/// A configured limit was reached (`limit` is its config key).
pub fn limit_hit(limit: &'static str) {
    ::metrics::counter!("tern_limit_hits_total", "limit" => limit).increment(1);
}

/// A connection ended for a protocol violation with this reason code.
pub fn protocol_violation(reason: u8) {
    ::metrics::counter!("tern_protocol_violations_total", "reason_code" => format!("0x{reason:02X}"))
        .increment(1);
}

/// Bytes from a client could not be decoded as a packet (this reason code).
pub fn malformed(reason: u8) {
    ::metrics::counter!("tern_malformed_packets_total", "reason_code" => format!("0x{reason:02X}"))
        .increment(1);
}

/// A connection was closed for keep-alive silence.
pub fn keepalive_timeout() {
    ::metrics::counter!("tern_keepalive_timeouts_total").increment(1);
}

/// A will message was published.
pub fn will_published() {
    ::metrics::counter!("tern_wills_published_total").increment(1);
}

/// A connection was accepted (before CONNECT).
pub fn connection_accepted() {
    ::metrics::counter!("tern_connections_accepted_total", "listener" => LISTENER).increment(1);
    hot().connections.increment(1.0);
}

/// A client connected (CONNACK success) with protocol `version` ("3.1", "3.1.1", "5").
pub fn connected(version: &'static str) {
    ::metrics::counter!("tern_connections_total", "listener" => LISTENER, "protocol" => version)
        .increment(1);
}

/// A connection closed.
pub fn connection_closed() {
    hot().connections.decrement(1.0);
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
