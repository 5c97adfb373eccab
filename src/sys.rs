//! `$SYS` topics, as Mosquitto publishes them: every `[sys] interval_secs` seconds (Mosquitto's
//! `sys_interval`), retained, QoS 0, under the names Mosquitto users read with
//! `mosquitto_sub -t '$SYS/#' -v` where they mean the same. Clients can read them but never
//! publish under `$SYS` (the connection refuses it). Not stored: they describe this process.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use crate::broker::BrokerState;
use crate::metrics::{self, Totals};
use crate::protocol::{Publish, QoS};
use crate::session::Message;

/// Moving averages of a rate, per minute, over 1, 5 and 15 minutes (Mosquitto's `load/…`).
#[derive(Debug, Default, Clone, Copy)]
struct Load([f64; 3]);

impl Load {
    const WINDOWS: [f64; 3] = [60.0, 300.0, 900.0];

    /// Folds in `delta` events over `secs` seconds.
    fn update(&mut self, delta: u64, secs: f64) {
        let per_minute = delta as f64 * 60.0 / secs;
        for (avg, window) in self.0.iter_mut().zip(Self::WINDOWS) {
            let keep = (-secs / window).exp();
            *avg = *avg * keep + per_minute * (1.0 - keep);
        }
    }
}

/// What the publisher remembers between rounds.
#[derive(Default)]
struct Rates {
    last: Totals,
    received: Load,
    sent: Load,
    publish_received: Load,
    publish_sent: Load,
    bytes_received: Load,
    bytes_sent: Load,
    /// Each queue's waiting messages at the rounds of the last minute or so, oldest first.
    queues: HashMap<String, VecDeque<(Instant, u64)>>,
}

/// The span a queue's `rate` is measured over.
const RATE_SPAN: Duration = Duration::from_secs(60);

/// Growth of a queue's waiting messages, per second, from the oldest sample within the last
/// minute (or the oldest there is) to `now`: negative while it drains.
fn queue_rate(history: &mut VecDeque<(Instant, u64)>, now: Instant, messages: u64) -> f64 {
    history.push_back((now, messages));
    // Keep one sample at least a minute old, so the span covers the whole minute.
    while history.len() > 2 && now.duration_since(history[1].0) >= RATE_SPAN {
        history.pop_front();
    }
    let (then, before) = history[0];
    let secs = now.duration_since(then).as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    (messages as f64 - before as f64) / secs
}

/// How often a disabled publisher looks whether a reload turned it on.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Publishes the `$SYS` topics now and every `[sys] interval_secs` (read each round, so a
/// reload changes it) until `shutdown` flips.
pub async fn run(state: Arc<BrokerState>, mut shutdown: watch::Receiver<bool>) {
    let mut rates = Rates::default();
    let mut previous = Instant::now();
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        let interval = state.config().sys.interval_secs;
        if interval == 0 {
            wait = IDLE_CHECK;
            continue;
        }
        wait = Duration::from_secs(interval);
        let now = Instant::now();
        let secs = now.duration_since(previous).as_secs_f64().max(0.001);
        previous = now;
        for (topic, value) in round(&state, &mut rates, secs, now) {
            publish(&state, &topic, value, now);
        }
    }
}

/// One round of topics and values.
fn round(state: &BrokerState, rates: &mut Rates, secs: f64, now: Instant) -> Vec<(String, String)> {
    let s = state.snapshot();
    let t = metrics::totals();
    let d = |now: u64, then: u64| now.saturating_sub(then);
    let last = rates.last;
    rates
        .received
        .update(d(t.packets_in, last.packets_in), secs);
    rates.sent.update(d(t.packets_out, last.packets_out), secs);
    rates
        .publish_received
        .update(d(t.publish_in, last.publish_in), secs);
    rates
        .publish_sent
        .update(d(t.publish_out, last.publish_out), secs);
    rates
        .bytes_received
        .update(d(t.bytes_in, last.bytes_in), secs);
    rates
        .bytes_sent
        .update(d(t.bytes_out, last.bytes_out), secs);
    rates.last = t;

    let mut out = vec![
        (
            "version".into(),
            format!("tern version {}", env!("CARGO_PKG_VERSION")),
        ),
        ("uptime".into(), format!("{} seconds", s.uptime_secs as u64)),
        ("clients/connected".into(), s.sessions_online.to_string()),
        ("clients/active".into(), s.sessions_online.to_string()),
        (
            "clients/disconnected".into(),
            s.sessions_offline.to_string(),
        ),
        ("clients/inactive".into(), s.sessions_offline.to_string()),
        (
            "clients/total".into(),
            (s.sessions_online + s.sessions_offline).to_string(),
        ),
        ("messages/received".into(), t.packets_in.to_string()),
        ("messages/sent".into(), t.packets_out.to_string()),
        ("publish/messages/received".into(), t.publish_in.to_string()),
        ("publish/messages/sent".into(), t.publish_out.to_string()),
        ("publish/messages/dropped".into(), t.dropped.to_string()),
        ("bytes/received".into(), t.bytes_in.to_string()),
        ("bytes/sent".into(), t.bytes_out.to_string()),
        ("messages/stored".into(), s.queued.to_string()),
        ("store/messages/count".into(), s.queued.to_string()),
        ("retained messages/count".into(), s.retained.to_string()),
        ("subscriptions/count".into(), s.subscriptions.to_string()),
        ("messages/inflight".into(), s.inflight.to_string()),
    ];
    let loads = [
        ("messages/received", rates.received),
        ("messages/sent", rates.sent),
        ("publish/received", rates.publish_received),
        ("publish/sent", rates.publish_sent),
        ("bytes/received", rates.bytes_received),
        ("bytes/sent", rates.bytes_sent),
    ];
    for (name, load) in loads {
        for (window, value) in ["1min", "5min", "15min"].iter().zip(load.0) {
            out.push((format!("load/{name}/{window}"), format!("{value:.2}")));
        }
    }
    for q in state.queue_figures() {
        let history = rates.queues.entry(q.name.clone()).or_default();
        let rate = queue_rate(history, now, q.messages);
        let at = |leaf: &str| format!("queues/{}/{leaf}", q.name);
        out.push((at("messages"), q.messages.to_string()));
        out.push((at("inflight"), q.inflight.to_string()));
        out.push((at("produced"), q.produced.to_string()));
        out.push((at("consumed"), q.consumed.to_string()));
        out.push((at("dropped"), q.dropped_total().to_string()));
        out.push((at("rate"), format!("{rate:.2}")));
    }
    out
}

fn publish(state: &BrokerState, topic: &str, value: String, now: Instant) {
    let publish = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: true,
        topic: format!("$SYS/broker/{topic}"),
        pkid: 0,
        payload: Bytes::from(value),
        properties: Default::default(),
    };
    state.publish_volatile(Arc::new(Message::new(publish, None, now)));
}

#[cfg(test)]
mod tests {
    use super::{queue_rate, Load, RATE_SPAN};
    use std::collections::VecDeque;
    use std::time::{Duration, Instant};

    /// A queue's rate is its growth per second over the last minute: negative while draining.
    #[test]
    fn queue_rate_spans_a_minute() {
        let mut h = VecDeque::new();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(queue_rate(&mut h, at(0), 0), 0.0);
        assert_eq!(queue_rate(&mut h, at(10), 100), 10.0);
        for s in (20..=120).step_by(10) {
            queue_rate(&mut h, at(s), 100 + (s - 10) * 5);
        }
        // Grew 5 a second over the last minute.
        let r = queue_rate(&mut h, at(130), 700);
        assert!((r - 5.0).abs() < 0.5, "{r}");
        assert!(h
            .front()
            .is_some_and(|(t, _)| at(130).duration_since(*t) >= RATE_SPAN));
        let r = queue_rate(&mut h, at(140), 0);
        assert!(r < 0.0, "{r}");
    }

    /// A steady rate converges to itself in every window; the 1-minute one first.
    #[test]
    fn load_averages_converge() {
        let mut l = Load::default();
        for _ in 0..6 {
            l.update(100, 10.0); // 600 per minute
        }
        assert!(l.0[0] > l.0[1] && l.0[1] > l.0[2]);
        for _ in 0..600 {
            l.update(100, 10.0);
        }
        for v in l.0 {
            assert!((v - 600.0).abs() < 1.0, "{v}");
        }
    }
}
