//! Every metric Tern records, named once here (Prometheus conventions, `tern_` prefix, base
//! units). Recording goes through the `metrics` facade, so it costs an atomic add and needs no
//! exporter; the Prometheus endpoint is attached by the operations layer.

use crate::broker::RouteOutcome;

/// Messages queued for subscribers and deliveries refused at a full queue.
pub fn routed(outcome: &RouteOutcome) {
    if outcome.delivered > 0 {
        ::metrics::counter!("tern_deliveries_queued_total").increment(outcome.delivered as u64);
    }
    if outcome.dropped_queue_full > 0 {
        ::metrics::counter!("tern_publishes_dropped_total", "reason" => "queue_full")
            .increment(outcome.dropped_queue_full as u64);
    }
}

/// A message not sent to a client for `reason` (`expired`, `too_large`, `queue_full`).
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

/// A connection was accepted (before CONNECT).
pub fn connection_accepted() {
    ::metrics::counter!("tern_connections_accepted_total").increment(1);
    ::metrics::gauge!("tern_connections").increment(1.0);
}

/// A connection closed.
pub fn connection_closed() {
    ::metrics::gauge!("tern_connections").decrement(1.0);
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

/// A PUBLISH arrived from a client.
pub fn publish_received(qos: u8, bytes: usize) {
    ::metrics::counter!("tern_messages_received_total", "qos" => qos.to_string()).increment(1);
    ::metrics::counter!("tern_received_bytes_total").increment(bytes as u64);
}

/// The store committed one batch of `ops` operations in `took` (including its sync).
pub fn store_batch(ops: usize, took: std::time::Duration) {
    ::metrics::counter!("tern_store_batches_total").increment(1);
    ::metrics::histogram!("tern_store_batch_operations").record(ops as f64);
    ::metrics::histogram!("tern_store_commit_seconds").record(took.as_secs_f64());
}

/// The store takes `bytes` on disk.
pub fn store_size(bytes: u64) {
    ::metrics::gauge!("tern_store_size_bytes").set(bytes as f64);
}

/// Reading the store back at start took `took`.
pub fn store_recovered(took: std::time::Duration) {
    ::metrics::gauge!("tern_store_recovery_seconds").set(took.as_secs_f64());
}
