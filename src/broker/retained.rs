//! Retained messages: one per topic, replaced by the next retained PUBLISH, deleted by an empty
//! one, sent to new subscriptions whose filter matches. Kept in topic order, so a subscription's
//! matches are walked lazily from a cursor ([`RetainedStream`]), a bounded step at a time, and
//! never collected whole: a `#` over a million retained messages costs one cursor, not a queue.
//! Expired ones are dropped when a walk finds them. The store counts what it holds outside
//! `$SYS`, so a new topic can be refused against `limits.max_retained_messages` and
//! `max_retained_bytes` ([`Budget`]) in one step with its insertion.

use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;

use crate::protocol::QoS;
use crate::session::Message;
use crate::topic;

/// Entries one step looks at, at most: no step holds the lock long, even for a filter that
/// matches few of many retained messages (it then takes several steps).
pub const SCAN_STEP: usize = 4096;

/// The retained-message store.
#[derive(Debug, Default)]
pub struct Retained {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Ordered, so a walk resumes after the last topic it emitted and a filter's literal prefix
    /// bounds the range it scans.
    by_topic: BTreeMap<String, Entry>,
    /// Counts updates; each entry keeps the count of the update that stored it.
    stamp: u64,
    /// Messages held outside `$SYS` (what a [`Budget`] bounds).
    counted: usize,
    /// Their payload bytes.
    counted_bytes: u64,
}

/// `limits.max_retained_messages` and `max_retained_bytes`; `$SYS` topics are not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    /// Retained messages at most.
    pub messages: Option<usize>,
    /// Their payload bytes at most.
    pub bytes: Option<u64>,
}

/// Which bound of the retained budget (`limits.max_retained_messages`, `max_retained_bytes`) a
/// retained message would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// `limits.max_retained_messages`.
    Messages,
    /// `limits.max_retained_bytes`.
    Bytes,
}

impl Over {
    /// The configuration key, as `tern_limit_hits_total` names it.
    pub fn limit(self) -> &'static str {
        match self {
            Over::Messages => "max_retained_messages",
            Over::Bytes => "max_retained_bytes",
        }
    }
}

/// Whether `topic` is the broker's own (`$SYS`), which no budget counts.
fn uncounted(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}

impl Inner {
    /// What storing `bytes` under `topic` would break of `budget`, if anything: a new topic
    /// past the count, or more bytes than the budget holds (a replacement counts only what it
    /// adds, so one that does not grow always fits). Deleting always fits.
    fn over(&self, topic: &str, bytes: usize, budget: Budget) -> Option<Over> {
        if bytes == 0 || uncounted(topic) {
            return None;
        }
        let old = self
            .by_topic
            .get(topic)
            .map(|e| e.msg.publish.payload.len());
        if old.is_none() && budget.messages.is_some_and(|max| self.counted >= max) {
            return Some(Over::Messages);
        }
        let grows = bytes.saturating_sub(old.unwrap_or(0)) as u64;
        let over = budget
            .bytes
            .is_some_and(|max| grows > 0 && self.counted_bytes + grows > max);
        over.then_some(Over::Bytes)
    }

    fn insert(&mut self, topic: &str, entry: Entry) {
        let counted = !uncounted(topic);
        let bytes = entry.msg.publish.payload.len() as u64;
        if let Some(old) = self.by_topic.insert(topic.to_string(), entry) {
            if counted {
                self.counted -= 1;
                self.counted_bytes -= old.msg.publish.payload.len() as u64;
            }
        }
        if counted {
            self.counted += 1;
            self.counted_bytes += bytes;
        }
    }

    fn remove(&mut self, topic: &str) {
        if let Some(old) = self.by_topic.remove(topic) {
            if !uncounted(topic) {
                self.counted -= 1;
                self.counted_bytes -= old.msg.publish.payload.len() as u64;
            }
        }
    }
}

#[derive(Debug)]
struct Entry {
    msg: Arc<Message>,
    /// [`Inner::stamp`] when stored: a walk skips entries newer than itself.
    stamp: u64,
}

/// Where one subscription's walk over the retained messages stands; queued in the
/// subscriber's mailbox in place of the messages themselves (see `Mailbox::push_retained`).
#[derive(Debug)]
pub struct RetainedStream {
    filter: Box<str>,
    /// Length of the filter's literal part before its first wildcard (the whole filter when it
    /// has none): every matching topic starts with it.
    prefix: usize,
    /// The last topic looked at; the walk goes on after it.
    cursor: Option<String>,
    /// The store's stamp when the walk began. A message retained later was published after
    /// the subscription was in the router, so it reaches the subscriber live, behind this
    /// stream: the walk skips it (no duplicate, and per-topic order kept).
    since: u64,
    /// The QoS granted to the subscription.
    pub qos: QoS,
    /// Its v5 Subscription Identifier.
    pub sub_id: Option<u32>,
}

/// How a step of a walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Every matching message was offered.
    Done,
    /// The taker declined a message; it is offered again first on the next step.
    Stopped,
    /// [`SCAN_STEP`] entries were looked at; more may match.
    Paused,
}

impl Retained {
    /// Stores, replaces or (empty payload) deletes the retained message of `msg`'s topic
    /// [MQTT-3.3.1-5, -6, -7].
    /// Not bounded by any budget: for messages read back from the store at start, which are
    /// all kept.
    pub fn update(&self, msg: &Arc<Message>) {
        let _ = self.update_within(msg, Budget::default());
    }

    /// [`Retained::update`] within `budget`: a message that would break it is not stored, and
    /// the store is left as it was.
    pub fn update_within(&self, msg: &Arc<Message>, budget: Budget) -> Result<(), Over> {
        let mut inner = self.inner.write();
        if msg.publish.payload.is_empty() {
            inner.remove(msg.topic());
            return Ok(());
        }
        if let Some(over) = inner.over(msg.topic(), msg.publish.payload.len(), budget) {
            return Err(over);
        }
        inner.stamp += 1;
        let entry = Entry {
            msg: Arc::clone(msg),
            stamp: inner.stamp,
        };
        inner.insert(msg.topic(), entry);
        Ok(())
    }

    /// Whether a retained message of `bytes` for `topic` would fit `budget` now (a publisher
    /// that can be told is refused before its message goes anywhere; the update itself checks
    /// again).
    pub fn room(&self, topic: &str, bytes: usize, budget: Budget) -> Result<(), Over> {
        match self.inner.read().over(topic, bytes, budget) {
            Some(over) => Err(over),
            None => Ok(()),
        }
    }

    /// Number of retained messages and their payload bytes.
    pub fn stats(&self) -> (usize, usize) {
        let inner = self.inner.read();
        let bytes = inner.by_topic.values();
        (
            inner.by_topic.len(),
            bytes.map(|e| e.msg.publish.payload.len()).sum(),
        )
    }

    /// A walk over the retained messages matching `filter` (a valid filter without `$share/`),
    /// for a subscription granted `qos`; `None` when nothing retained matches now (what is
    /// retained later arrives live). Call it once the subscription is in the router.
    pub fn stream(&self, filter: &str, qos: QoS, sub_id: Option<u32>) -> Option<RetainedStream> {
        let prefix = literal_prefix(filter);
        let inner = self.inner.read();
        let any = if prefix == filter.len() {
            inner.by_topic.contains_key(filter)
        } else {
            let prefix = &filter[..prefix];
            let mut from = inner
                .by_topic
                .range::<str, _>((Bound::Included(prefix), Bound::Unbounded));
            from.next().is_some_and(|(t, _)| t.starts_with(prefix))
        };
        any.then(|| RetainedStream {
            filter: filter.into(),
            prefix,
            cursor: None,
            since: inner.stamp,
            qos,
            sub_id,
        })
    }

    /// Offers `take` the stream's next matching, unexpired messages, in topic order, that were
    /// retained before the stream began, looking at no more than [`SCAN_STEP`] entries.
    /// `take` breaks to decline one: the walk stops before it. It runs under the store's read
    /// lock, so it must be quick. Expired messages found are removed.
    pub fn step(
        &self,
        s: &mut RetainedStream,
        now: Instant,
        take: &mut dyn FnMut(&Arc<Message>) -> ControlFlow<()>,
    ) -> Step {
        let mut expired = Vec::new();
        let step = {
            let inner = self.inner.read();
            if s.prefix == s.filter.len() {
                // A plain filter names at most one retained message.
                match inner.by_topic.get(&*s.filter) {
                    Some(e) if e.msg.is_expired(now) => expired.push(s.filter.to_string()),
                    Some(e) if e.stamp <= s.since && take(&e.msg).is_break() => {
                        return Step::Stopped;
                    }
                    _ => {}
                }
                Step::Done
            } else {
                walk(&inner, s, now, take, &mut expired)
            }
        };
        if !expired.is_empty() {
            let mut inner = self.inner.write();
            for t in expired {
                if inner
                    .by_topic
                    .get(&t)
                    .is_some_and(|e| e.msg.is_expired(now))
                {
                    inner.remove(&t);
                }
            }
        }
        step
    }

    /// Up to `limit` unexpired retained messages matching `filter`, in topic order, after
    /// topic `after`; and where the next page starts, if the scan stopped before the end.
    /// Scans at most `SCAN_STEP * 16` entries under the read lock, so one page never holds
    /// publishers up long: the cursor is then the last topic looked at.
    pub fn page(
        &self,
        filter: &str,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<Arc<Message>>, Option<String>) {
        let prefix = &filter[..literal_prefix(filter)];
        let from = match after {
            Some(c) if c >= prefix => Bound::Excluded(c),
            _ => Bound::Included(prefix),
        };
        let now = Instant::now();
        let inner = self.inner.read();
        let mut out = Vec::new();
        let mut last: Option<&str> = None;
        let range = inner.by_topic.range::<str, _>((from, Bound::Unbounded));
        for (scanned, (t, e)) in range.enumerate() {
            if !t.starts_with(prefix) {
                break;
            }
            if out.len() == limit || scanned == SCAN_STEP * 16 {
                return (out, last.map(str::to_owned));
            }
            if topic::matches(filter, t) && !e.msg.is_expired(now) {
                out.push(Arc::clone(&e.msg));
            }
            last = Some(t);
        }
        (out, None)
    }

    /// Whether a retained message is held for exactly `topic`.
    pub fn contains(&self, topic: &str) -> bool {
        self.inner.read().by_topic.contains_key(topic)
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.inner.read().by_topic.len()
    }
}

/// One bounded step of a wildcard filter's walk (see [`Retained::step`]).
fn walk(
    inner: &Inner,
    s: &mut RetainedStream,
    now: Instant,
    take: &mut dyn FnMut(&Arc<Message>) -> ControlFlow<()>,
    expired: &mut Vec<String>,
) -> Step {
    let prefix = &s.filter[..s.prefix];
    let from = match &s.cursor {
        Some(c) => Bound::Excluded(c.as_str()),
        None => Bound::Included(prefix),
    };
    let mut last = None;
    let mut step = Step::Done;
    let range = inner.by_topic.range::<str, _>((from, Bound::Unbounded));
    for (scanned, (t, e)) in range.enumerate() {
        // Topics sharing the prefix are contiguous in the order: past them, nothing matches.
        if !t.starts_with(prefix) {
            break;
        }
        if scanned == SCAN_STEP {
            step = Step::Paused;
            break;
        }
        // `$` topics are not matched by a leading wildcard [MQTT-4.7.2-1].
        if topic::matches(&s.filter, t) {
            if e.msg.is_expired(now) {
                expired.push(t.clone());
            } else if e.stamp <= s.since && take(&e.msg).is_break() {
                step = Step::Stopped;
                break;
            }
        }
        last = Some(t.as_str());
    }
    if let Some(t) = last {
        let cursor = s.cursor.get_or_insert_with(String::new);
        cursor.clear();
        cursor.push_str(t);
    }
    step
}

/// Length of `filter`'s literal part before its first wildcard, as a bound on the topics it
/// matches: `a/b/+` → `a/b/`; `a/#` → `a` (`#` also matches its parent level); `#` → empty.
fn literal_prefix(filter: &str) -> usize {
    match filter.find(['+', '#']) {
        None => filter.len(),
        Some(i) if filter[i..].starts_with('#') => i.saturating_sub(1),
        Some(i) => i,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::ops::ControlFlow;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::Bytes;

    use super::{literal_prefix, Retained, RetainedStream, Step, SCAN_STEP};
    use crate::protocol::{Publish, PublishProperties, QoS};
    use crate::session::Message;

    fn retained(topic: &str, payload: &'static [u8], expiry: Option<u32>) -> Arc<Message> {
        let publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: topic.into(),
            pkid: 0,
            payload: Bytes::from_static(payload),
            properties: PublishProperties {
                message_expiry_interval: expiry,
                ..PublishProperties::default()
            }
            .into(),
        };
        Arc::new(Message::new(publish, None, Instant::now()))
    }

    fn store(topics: &[&str]) -> Retained {
        let r = Retained::default();
        for t in topics {
            r.update(&retained(t, b"x", None));
        }
        r
    }

    /// Topics one step offers, taking at most `room` of them.
    fn offer(r: &Retained, s: &mut RetainedStream, room: usize) -> (Vec<String>, Step) {
        let mut got = Vec::new();
        let step = r.step(s, Instant::now(), &mut |m| {
            if got.len() == room {
                return ControlFlow::Break(());
            }
            got.push(m.topic().to_string());
            ControlFlow::Continue(())
        });
        (got, step)
    }

    /// Every topic a walk offers, to the end.
    fn walk_all(r: &Retained, filter: &str) -> Vec<String> {
        let Some(mut s) = r.stream(filter, QoS::AtMostOnce, None) else {
            return Vec::new();
        };
        let mut all = Vec::new();
        loop {
            let (got, step) = offer(r, &mut s, usize::MAX);
            all.extend(got);
            if step == Step::Done {
                return all;
            }
        }
    }

    /// A stream is what a wide subscription costs while its retained messages go out
    /// (docs/architecture.md): it should stay this small.
    #[test]
    fn stream_stays_small() {
        assert!(std::mem::size_of::<RetainedStream>() <= 72);
    }

    #[test]
    fn prefix_is_the_literal_part_before_the_first_wildcard() {
        for (filter, prefix) in [
            ("a/b", "a/b"),
            ("a/#", "a"),
            ("#", ""),
            ("a/+/c", "a/"),
            ("+/x", ""),
            ("$SYS/#", "$SYS"),
        ] {
            assert_eq!(&filter[..literal_prefix(filter)], prefix, "{filter}");
        }
    }

    /// [MQTT-3.3.1-5..-7] Stored, replaced, deleted by an empty payload; a walk offers the
    /// matches in topic order.
    #[test]
    fn store_replace_delete_and_match_in_order() {
        let r = store(&["a/c", "a/b", "b/x"]);
        r.update(&retained("a/b", b"2", None));
        assert_eq!(walk_all(&r, "a/+"), ["a/b", "a/c"]);
        assert_eq!(walk_all(&r, "a/b"), ["a/b"]);
        assert_eq!(walk_all(&r, "#"), ["a/b", "a/c", "b/x"]);
        r.update(&retained("a/b", b"", None));
        assert_eq!(r.len(), 2);
        assert_eq!(walk_all(&r, "a/#"), ["a/c"]);
        assert!(r.stream("a/b", QoS::AtMostOnce, None).is_none(), "deleted");
        assert!(r.stream("z/#", QoS::AtMostOnce, None).is_none(), "no match");
    }

    /// A declined message is offered again first; the walk goes on after the last one taken.
    #[test]
    fn walk_resumes_after_its_cursor() {
        let topics: Vec<String> = (0..10).map(|i| format!("t/{i}")).collect();
        let r = store(&topics.iter().map(String::as_str).collect::<Vec<_>>());
        let mut s = r.stream("t/#", QoS::AtMostOnce, None).unwrap();
        let (first, step1) = offer(&r, &mut s, 3);
        assert_eq!(
            (first, step1),
            (
                vec!["t/0".into(), "t/1".into(), "t/2".into()],
                Step::Stopped
            )
        );
        // A topic deleted at the cursor, and one added ahead of it, change nothing behind.
        r.update(&retained("t/2", b"", None));
        let (second, _) = offer(&r, &mut s, 3);
        assert_eq!(second, ["t/3", "t/4", "t/5"]);
        let (rest, step) = offer(&r, &mut s, 100);
        assert_eq!(
            (rest, step),
            (
                vec!["t/6".into(), "t/7".into(), "t/8".into(), "t/9".into()],
                Step::Done
            )
        );
    }

    /// A filter's literal prefix bounds the scan: topics outside it are never looked at, so
    /// a narrow filter over a large store finishes in one step.
    #[test]
    fn prefix_bounds_the_walk() {
        let mut topics: Vec<String> = (0..2 * SCAN_STEP).map(|i| format!("a/{i}")).collect();
        topics.extend((0..2 * SCAN_STEP).map(|i| format!("c/{i}")));
        topics.extend(["b", "b/1", "b/2/x", "bb/1"].map(String::from));
        let r = store(&topics.iter().map(String::as_str).collect::<Vec<_>>());
        let mut s = r.stream("b/#", QoS::AtMostOnce, None).unwrap();
        let (got, step) = offer(&r, &mut s, usize::MAX);
        assert_eq!(
            (got, step),
            (vec!["b".into(), "b/1".into(), "b/2/x".into()], Step::Done)
        );
        let mut s = r.stream("b/+", QoS::AtMostOnce, None).unwrap();
        assert_eq!(
            offer(&r, &mut s, usize::MAX),
            (vec!["b/1".into()], Step::Done)
        );
    }

    /// A filter without a literal prefix scans everything, a bounded number of entries per
    /// step, and still finds every match.
    #[test]
    fn wide_scan_is_bounded_per_step() {
        let mut topics: Vec<String> = (0..2 * SCAN_STEP).map(|i| format!("x/{i}")).collect();
        topics.push("y/end".into());
        let r = store(&topics.iter().map(String::as_str).collect::<Vec<_>>());
        let mut s = r.stream("+/end", QoS::AtMostOnce, None).unwrap();
        let mut steps = 0;
        let mut got = Vec::new();
        loop {
            steps += 1;
            let (g, step) = offer(&r, &mut s, usize::MAX);
            got.extend(g);
            if step == Step::Done {
                break;
            }
            assert_eq!(step, Step::Paused);
        }
        assert_eq!(got, ["y/end"]);
        assert_eq!(steps, 3);
    }

    /// [MQTT-4.7.2-1] `$` topics are not matched by a leading wildcard, but are by a filter
    /// that names them.
    #[test]
    fn dollar_topics_need_a_literal_first_level() {
        let r = store(&["$SYS/a", "$x", "a", "b/c"]);
        assert_eq!(walk_all(&r, "#"), ["a", "b/c"]);
        assert_eq!(walk_all(&r, "+"), ["a"]);
        assert_eq!(walk_all(&r, "$SYS/#"), ["$SYS/a"]);
        assert_eq!(walk_all(&r, "$x"), ["$x"]);
    }

    /// Expired messages are not offered and are removed when found; plain filters too.
    #[test]
    fn expired_messages_are_skipped_and_removed() {
        let r = store(&["e/live"]);
        r.update(&retained("e/old", b"x", Some(0)));
        r.update(&retained("plain", b"x", Some(0)));
        assert_eq!(r.len(), 3);
        assert_eq!(walk_all(&r, "e/#"), ["e/live"]);
        assert_eq!(walk_all(&r, "plain"), Vec::<String>::new());
        assert_eq!(r.len(), 1);
        let later = retained("e/soon", b"x", Some(60));
        r.update(&later);
        let mut s = r.stream("e/#", QoS::AtMostOnce, None).unwrap();
        let got = r.step(
            &mut s,
            Instant::now() + Duration::from_secs(61),
            &mut |_| ControlFlow::Continue(()),
        );
        assert_eq!(got, Step::Done);
        assert_eq!(r.len(), 1, "e/soon expired during the walk");
    }

    /// What is retained after a walk began is not offered (it goes to the subscriber live);
    /// what it replaced is gone.
    #[test]
    fn walk_skips_messages_retained_after_it_began() {
        let r = store(&["n/a", "n/b"]);
        let mut s = r.stream("n/#", QoS::AtMostOnce, None).unwrap();
        r.update(&retained("n/b", b"new", None));
        r.update(&retained("n/c", b"new", None));
        assert_eq!(
            offer(&r, &mut s, usize::MAX),
            (vec!["n/a".into()], Step::Done)
        );
        let mut p = r.stream("n/a", QoS::AtMostOnce, None).unwrap();
        r.update(&retained("n/a", b"new", None));
        assert_eq!(offer(&r, &mut p, usize::MAX), (Vec::new(), Step::Done));
    }

    /// The budget counts messages and bytes outside `$SYS`, follows replacements, deletions
    /// and expiry, and refuses only what would pass it.
    #[test]
    fn budget_counts_what_is_held_outside_sys() {
        use super::{Budget, Over};
        let r = Retained::default();
        let two = Budget {
            messages: Some(2),
            bytes: Some(8),
        };
        assert!(r
            .update_within(&retained("$SYS/x", b"12345678", None), two)
            .is_ok());
        assert!(r.update_within(&retained("a", b"1234", None), two).is_ok());
        assert_eq!(
            r.update_within(&retained("b", b"12345", None), two),
            Err(Over::Bytes)
        );
        assert!(r.update_within(&retained("b", b"1234", None), two).is_ok());
        assert_eq!(
            r.update_within(&retained("c", b"1", None), two),
            Err(Over::Messages)
        );
        assert_eq!(r.room("a", 4, two), Ok(()));
        assert_eq!(r.room("a", 5, two), Err(Over::Bytes));
        // Deletion, and expiry found by a walk, give the room back.
        assert!(r.update_within(&retained("a", b"", None), two).is_ok());
        assert_eq!(r.room("c", 4, two), Ok(()));
        r.update(&retained("c", b"1234", Some(0)));
        let mut s = r.stream("#", QoS::AtMostOnce, None).unwrap();
        let later = Instant::now() + Duration::from_secs(1);
        r.step(&mut s, later, &mut |_| ControlFlow::Continue(()));
        assert_eq!(r.room("d", 4, two), Ok(()));
        assert_eq!(r.len(), 2, "b and $SYS/x");
    }
}
