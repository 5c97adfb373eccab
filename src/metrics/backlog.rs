//! The backlog series: per declared queue and per shared-subscription group, what went in and
//! what went out, and per session how deep its queue is. Rendered straight from snapshots at
//! scrape time rather than recorded through the `metrics` facade: each queue's six figures come
//! from one snapshot taken under its lock, so `produced = consumed + dropped + messages +
//! inflight` holds in every scrape, and a group that is gone leaves no stale series behind.

use std::fmt::Write;

/// Reasons every queue and group shows a dropped series for, even at zero.
const REASONS: [&str; 3] = ["rejected", "dropped_oldest", "expired"];

/// Upper bounds of the per-session queue depth histogram's buckets (messages).
pub const DEPTH_BUCKETS: [u64; 7] = [0, 1, 10, 100, 1_000, 10_000, 100_000];

/// One queue's or group's counts at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    /// The queue's name, or the group's share name.
    pub name: String,
    /// The group's filter (empty for a queue).
    pub filter: String,
    /// Messages that reached it, refused ones included.
    pub produced: u64,
    /// Messages a consumer acknowledged (QoS 0: written to it).
    pub consumed: u64,
    /// Messages dropped, by reason.
    pub dropped: Vec<(&'static str, u64)>,
    /// Messages waiting.
    pub messages: u64,
    /// Messages handed out and not yet acknowledged.
    pub inflight: u64,
    /// Payload bytes waiting.
    pub bytes: u64,
}

impl Backlog {
    /// Dropped messages, every reason together.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|(_, n)| n).sum()
    }

    /// Adds `other`'s figures to these (for `_other`).
    fn absorb(&mut self, other: &Backlog) {
        self.produced += other.produced;
        self.consumed += other.consumed;
        self.messages += other.messages;
        self.inflight += other.inflight;
        self.bytes += other.bytes;
        for &(reason, n) in &other.dropped {
            match self.dropped.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, m)) => *m += n,
                None => self.dropped.push((reason, n)),
            }
        }
    }
}

/// Sessions' queues at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Depths {
    /// Messages queued for sessions without a connection.
    pub offline_queued: u64,
    /// Sessions whose queue depth is at most each bucket bound (0, 1, 10, ... 100,000;
    /// cumulative).
    pub buckets: [u64; DEPTH_BUCKETS.len()],
    /// Sessions.
    pub count: u64,
    /// Messages queued for all of them.
    pub sum: u64,
}

impl Depths {
    /// Counts one session with `depth` messages queued (`online`: it has a connection).
    pub fn add(&mut self, depth: u64, online: bool) {
        if !online {
            self.offline_queued += depth;
        }
        for (bound, n) in DEPTH_BUCKETS.iter().zip(&mut self.buckets) {
            if depth <= *bound {
                *n += 1;
            }
        }
        self.count += 1;
        self.sum += depth;
    }
}

/// The backlog series in Prometheus' text format: queues, then groups, at most `max_labelled`
/// of them with their own labels (queues first), the rest summed under `_other`.
pub fn render(
    queues: &[Backlog],
    groups: &[Backlog],
    max_labelled: usize,
    depths: &Depths,
) -> String {
    let mut out = String::new();
    let queue_rows = labelled(queues, max_labelled, |b| {
        format!("queue=\"{}\"", escape(&b.name))
    });
    let left = max_labelled.saturating_sub(queues.len());
    let group_rows = labelled(groups, left, |b| {
        format!(
            "group=\"{}\",filter=\"{}\"",
            escape(&b.name),
            escape(&b.filter)
        )
    });
    let other_queue = "queue=\"_other\"".to_string();
    let other_group = "group=\"_other\",filter=\"_other\"".to_string();
    for (prefix, rows, other) in [
        ("tern_queue", &queue_rows, other_queue),
        ("tern_shared_group", &group_rows, other_group),
    ] {
        let rows: Vec<(&str, &Backlog)> = rows
            .iter()
            .map(|(labels, b)| (labels.as_deref().unwrap_or(&other), b))
            .collect();
        series(&mut out, prefix, &rows);
    }
    sessions(&mut out, depths);
    out
}

/// The rows to show: the first `max` with their labels, the rest summed under `None`.
fn labelled(
    all: &[Backlog],
    max: usize,
    labels: impl Fn(&Backlog) -> String,
) -> Vec<(Option<String>, Backlog)> {
    let mut rows: Vec<(Option<String>, Backlog)> = all
        .iter()
        .take(max)
        .map(|b| (Some(labels(b)), b.clone()))
        .collect();
    if all.len() > max {
        let mut other = Backlog::default();
        for b in &all[max..] {
            other.absorb(b);
        }
        rows.push((None, other));
    }
    rows
}

/// One series: name suffix, type, help text, and its figure.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Backlog) -> u64,
);

/// The six series of one kind (`tern_queue` or `tern_shared_group`).
fn series(out: &mut String, prefix: &str, rows: &[(&str, &Backlog)]) {
    let kinds: [Series; 5] = [
        (
            "produced_total",
            "counter",
            "Messages that reached it, refused ones included.",
            |b| b.produced,
        ),
        (
            "consumed_total",
            "counter",
            "Messages a consumer acknowledged (PUBACK, PUBCOMP; QoS 0: written to it).",
            |b| b.consumed,
        ),
        ("messages", "gauge", "Messages waiting.", |b| b.messages),
        (
            "inflight",
            "gauge",
            "Messages handed to a consumer and not yet acknowledged.",
            |b| b.inflight,
        ),
        ("bytes", "gauge", "Payload bytes waiting.", |b| b.bytes),
    ];
    for (i, (suffix, kind, help, get)) in kinds.into_iter().enumerate() {
        if i == 2 {
            dropped(out, prefix, rows);
        }
        let _ = writeln!(out, "# HELP {prefix}_{suffix} {help}");
        let _ = writeln!(out, "# TYPE {prefix}_{suffix} {kind}");
        for (labels, b) in rows {
            let _ = writeln!(out, "{prefix}_{suffix}{{{labels}}} {}", get(b));
        }
    }
}

fn dropped(out: &mut String, prefix: &str, rows: &[(&str, &Backlog)]) {
    let _ = writeln!(
        out,
        "# HELP {prefix}_dropped_total Messages dropped, by reason (rejected at a bound, dropped_oldest to make room, expired, ...)."
    );
    let _ = writeln!(out, "# TYPE {prefix}_dropped_total counter");
    for (labels, b) in rows {
        let extra = b
            .dropped
            .iter()
            .map(|(r, _)| *r)
            .filter(|r| !REASONS.contains(r));
        for reason in REASONS.into_iter().chain(extra) {
            let n = b
                .dropped
                .iter()
                .find(|(r, _)| *r == reason)
                .map_or(0, |(_, n)| *n);
            let _ = writeln!(
                out,
                "{prefix}_dropped_total{{{labels},reason=\"{reason}\"}} {n}"
            );
        }
    }
}

fn sessions(out: &mut String, d: &Depths) {
    let _ = writeln!(
        out,
        "# HELP tern_session_queued_messages Messages queued for sessions without a connection."
    );
    let _ = writeln!(out, "# TYPE tern_session_queued_messages gauge");
    let _ = writeln!(out, "tern_session_queued_messages {}", d.offline_queued);
    let _ = writeln!(
        out,
        "# HELP tern_session_queue_depth Messages queued per session, connected or not."
    );
    let _ = writeln!(out, "# TYPE tern_session_queue_depth histogram");
    for (bound, n) in DEPTH_BUCKETS.iter().zip(d.buckets) {
        let _ = writeln!(out, "tern_session_queue_depth_bucket{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "tern_session_queue_depth_bucket{{le=\"+Inf\"}} {}",
        d.count
    );
    let _ = writeln!(out, "tern_session_queue_depth_sum {}", d.sum);
    let _ = writeln!(out, "tern_session_queue_depth_count {}", d.count);
}

/// A label value as Prometheus' text format wants it.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(name: &str, produced: u64) -> Backlog {
        Backlog {
            name: name.into(),
            produced,
            messages: produced,
            ..Backlog::default()
        }
    }

    /// Beyond the cap, queues and groups are summed under `_other`; every reason shows.
    #[test]
    fn caps_the_labelled_series() {
        let queues = [queue("a", 1), queue("b", 2), queue("c", 3)];
        let groups = [Backlog {
            name: "g".into(),
            filter: "t/#".into(),
            ..Backlog::default()
        }];
        let text = render(&queues, &groups, 2, &Depths::default());
        assert!(text.contains("tern_queue_produced_total{queue=\"a\"} 1"));
        assert!(text.contains("tern_queue_produced_total{queue=\"b\"} 2"));
        assert!(text.contains("tern_queue_produced_total{queue=\"_other\"} 3"));
        assert!(!text.contains("queue=\"c\""));
        assert!(
            text.contains("tern_shared_group_produced_total{group=\"_other\",filter=\"_other\"} 0")
        );
        assert!(text.contains("tern_queue_dropped_total{queue=\"a\",reason=\"dropped_oldest\"} 0"));
    }

    /// The depth histogram is cumulative, as Prometheus' are.
    #[test]
    fn depth_histogram() {
        let mut d = Depths::default();
        d.add(0, true);
        d.add(5, false);
        d.add(500, false);
        assert_eq!(d.offline_queued, 505);
        let text = render(&[], &[], 100, &d);
        assert!(text.contains("tern_session_queue_depth_bucket{le=\"0\"} 1"));
        assert!(text.contains("tern_session_queue_depth_bucket{le=\"10\"} 2"));
        assert!(text.contains("tern_session_queue_depth_bucket{le=\"1000\"} 3"));
        assert!(text.contains("tern_session_queue_depth_count 3"));
        assert!(text.contains("tern_session_queued_messages 505"));
    }
}
