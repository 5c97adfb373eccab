//! Declared queues (`[[queues]]`), consumed through `$queue/{name}`, for MQTT 3.1.1 and 5.0
//! clients: messages wait while no consumer exists and drain in order, each reaches one
//! consumer, unacknowledged ones move on when a consumer leaves (QoS 1) or stay with it
//! (QoS 2), bounds refuse or drop the oldest, and after every step the backlog identity
//! `produced = consumed + dropped + messages + inflight` holds.

use std::time::Duration;

use tern::config::{Overflow, QueueConfig};
use tern::metrics::Backlog;

use crate::harness::{TestBroker, WAIT};
use crate::support::*;
use crate::wire::*;

/// Queue `jobs{level}` on `jobs/{level}/#`, one per version so the two runs stay apart.
fn declare(level: u8, max_messages: usize, overflow: Overflow) -> QueueConfig {
    QueueConfig {
        name: format!("jobs{level}"),
        filter: format!("jobs/{level}/#"),
        max_messages,
        max_bytes: 1 << 20,
        overflow,
        strategy: None,
    }
}

fn both(max_messages: usize, overflow: Overflow) -> Vec<QueueConfig> {
    VERSIONS
        .iter()
        .map(|&l| declare(l, max_messages, overflow))
        .collect()
}

fn queue_filter(level: u8) -> String {
    format!("$queue/jobs{level}")
}

fn job(level: u8, i: usize) -> String {
    format!("jobs/{level}/{i}")
}

/// The figures of queue `jobs{level}`, checked against the identity.
fn figures(broker: &TestBroker, level: u8) -> Backlog {
    let name = format!("jobs{level}");
    let b = broker
        .queue_figures()
        .into_iter()
        .find(|b| b.name == name)
        .expect("declared queue");
    assert_eq!(
        b.produced,
        b.consumed + b.dropped_total() + b.messages + b.inflight,
        "backlog identity broken: {b:?}"
    );
    b
}

/// Waits until `want` holds of queue `jobs{level}` (acknowledgements reach the broker a
/// moment after the client sends them), checking the identity at every look.
async fn until(broker: &TestBroker, level: u8, want: impl Fn(&Backlog) -> bool) -> Backlog {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let b = figures(broker, level);
        if want(&b) {
            return b;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "queue stuck at {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Subscribes `c` to queue `jobs{level}` at `qos`.
async fn consume(c: &mut RawClient, level: u8, qos: u8) {
    let codes = sub_raw(c, level, &[(&queue_filter(level), qos)], &[]).await;
    assert!(codes[0] < 0x80, "{}: {codes:02x?}", vname(level));
}

/// Publishes `n` QoS 1 jobs, each acknowledged as accepted (v5: 0x00, not 0x10 No matching
/// subscribers: the queue took it).
async fn produce(c: &mut RawClient, level: u8, from: usize, n: usize) {
    for i in from..from + n {
        let pkid = next_pkid();
        c.send(&publish(
            level,
            &job(level, i),
            1,
            pkid,
            i.to_string().as_bytes(),
        ))
        .await;
        let (got, reason) = parse_ack(&c.recv_expect(PUBACK).await);
        assert_eq!((got, reason), (pkid, 0), "{} job {i}", vname(level));
    }
}

/// Messages fill the queue while nobody consumes; a consumer that comes later gets them all,
/// in order, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_a_consumer_and_drains_in_order() {
    let broker = TestBroker::start_with(|c| c.queues = both(1000, Overflow::Reject)).await;
    for level in VERSIONS {
        let mut publ = RawClient::connected(broker.addr, level, "producer").await;
        produce(&mut publ, level, 0, 50).await;
        let b = figures(&broker, level);
        assert_eq!((b.produced, b.messages, b.inflight), (50, 50, 0));
        assert_eq!(
            b.bytes,
            (0..50)
                .map(|i: usize| i.to_string().len() as u64)
                .sum::<u64>()
        );
        let mut w = RawClient::connected(broker.addr, level, "worker").await;
        consume(&mut w, level, 1).await;
        for i in 0..50 {
            let r = recv_acked(&mut w, level).await;
            assert_eq!(r.topic, job(level, i), "{}", vname(level));
            assert!(!r.dup && !r.retain);
        }
        let b = until(&broker, level, |b| b.consumed == 50).await;
        assert_eq!((b.messages, b.inflight, b.bytes), (0, 0, 0));
        w.send(&disconnect()).await;
    }
    broker.stop().await;
}

/// Three consumers share 300 jobs: each job reaches exactly one, in turn (100 each within
/// ±1), and each consumer sees its jobs in publishing order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_job_reaches_one_consumer() {
    let broker = TestBroker::start_with(|c| c.queues = both(1000, Overflow::Reject)).await;
    for level in VERSIONS {
        let mut workers = Vec::new();
        for i in 0..3 {
            let mut w = RawClient::connected(broker.addr, level, &format!("w{i}")).await;
            consume(&mut w, level, 1).await;
            workers.push(w);
        }
        let mut publ = RawClient::connected(broker.addr, level, "producer").await;
        let mut bytes = Vec::new();
        for i in 0..300 {
            bytes.extend(publish(level, &job(level, i), 0, 0, b"x"));
        }
        publ.send(&bytes).await;
        let got = tokio::spawn(async move {
            let mut seen = vec![Vec::new(); 3];
            let mut total = 0;
            while total < 300 {
                for (w, seen) in workers.iter_mut().zip(&mut seen) {
                    if let Event::Packet(first, body) =
                        w.next_event(Duration::from_millis(20)).await
                    {
                        let r = parse_publish(level, first, &body);
                        seen.push(r.topic);
                        total += 1;
                    }
                }
            }
            seen
        })
        .await
        .unwrap();
        let mut all: Vec<&String> = got.iter().flatten().collect();
        assert_eq!(all.len(), 300);
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 300, "a job reached two consumers");
        for seen in &got {
            assert!(
                seen.len().abs_diff(100) <= 1,
                "{}: {:?}",
                vname(level),
                got.iter().map(Vec::len).collect::<Vec<_>>()
            );
            let order: Vec<usize> = seen
                .iter()
                .map(|t| t.rsplit('/').next().unwrap().parse().unwrap())
                .collect();
            assert!(order.windows(2).all(|w| w[0] < w[1]), "out of order");
        }
        until(&broker, level, |b| b.consumed == 300).await;
    }
    broker.stop().await;
}

/// A consumer that leaves with QoS 1 jobs unacknowledged: they go to another consumer at
/// once, DUP set, in their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_jobs_move_on_when_a_consumer_leaves() {
    let broker = TestBroker::start_with(|c| c.queues = both(1000, Overflow::Reject)).await;
    for level in VERSIONS {
        let mut a = RawClient::connected(broker.addr, level, "a").await;
        consume(&mut a, level, 1).await;
        let mut publ = RawClient::connected(broker.addr, level, "producer").await;
        produce(&mut publ, level, 0, 5).await;
        for i in 0..5 {
            let r = a.recv_publish(level).await;
            assert_eq!(r.topic, job(level, i));
        }
        let b = figures(&broker, level);
        assert_eq!((b.inflight, b.messages), (5, 0));
        let mut b_ = RawClient::connected(broker.addr, level, "b").await;
        consume(&mut b_, level, 1).await;
        a.send(&disconnect()).await;
        for i in 0..5 {
            let r = recv_acked(&mut b_, level).await;
            assert_eq!(r.topic, job(level, i), "{}", vname(level));
            assert!(r.dup, "{}: handed on without DUP", vname(level));
        }
        let b = until(&broker, level, |b| b.consumed == 5).await;
        assert_eq!(b.inflight, 0);
        b_.send(&disconnect()).await;
    }
    broker.stop().await;
}

/// A QoS 2 job a consumer has not acknowledged stays with its session when it leaves
/// [MQTT-4.8.2-4]: the other consumer gets what comes after, and the first gets it again (DUP)
/// when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_jobs_stay_with_their_consumer() {
    let broker = TestBroker::start_with(|c| c.queues = both(1000, Overflow::Reject)).await;
    for level in VERSIONS {
        let id = format!("a2-{level}");
        let (mut a, _) = connect_persistent(broker.addr, level, &id, false).await;
        consume(&mut a, level, 2).await;
        let mut publ = RawClient::connected(broker.addr, level, "producer").await;
        pub_msg(&mut publ, level, &job(level, 0), 2, b"first").await;
        let r = a.recv_publish(level).await;
        assert_eq!(r.payload, b"first");
        a.send(&disconnect()).await;
        let mut b = RawClient::connected(broker.addr, level, "b2").await;
        consume(&mut b, level, 2).await;
        pub_msg(&mut publ, level, &job(level, 1), 2, b"second").await;
        // Had the first come back to the queue, it would come before the second.
        let r = recv_acked(&mut b, level).await;
        assert_eq!(r.payload, b"second", "{}", vname(level));
        let (mut a, present) = connect_persistent(broker.addr, level, &id, false).await;
        assert!(present);
        let r = recv_acked(&mut a, level).await;
        assert_eq!((r.payload.as_slice(), r.dup), (&b"first"[..], true));
        let b_ = until(&broker, level, |b| b.consumed == 2).await;
        assert_eq!(b_.inflight, 0);
        b.send(&disconnect()).await;
        a.send(&disconnect()).await;
    }
    broker.stop().await;
}

/// A consumer that stops acknowledging gets no more than its window (v5: its Receive Maximum
/// up to `max_inflight_messages_v5`; 3.1.1: `max_inflight_messages`); the others take the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_gets_no_more_than_its_window() {
    let broker = TestBroker::start_with(|c| {
        c.queues = both(1000, Overflow::Reject);
        c.limits.max_inflight_messages = 5;
        c.limits.max_inflight_messages_v5 = 5;
    })
    .await;
    for level in VERSIONS {
        let mut stalled = RawClient::connected(broker.addr, level, "stalled").await;
        consume(&mut stalled, level, 1).await;
        let mut worker = RawClient::connected(broker.addr, level, "worker").await;
        consume(&mut worker, level, 1).await;
        let mut publ = RawClient::connected(broker.addr, level, "producer").await;
        produce(&mut publ, level, 0, 100).await;
        for _ in 0..95 {
            recv_acked(&mut worker, level).await;
        }
        let b = until(&broker, level, |b| b.consumed == 95).await;
        assert_eq!((b.inflight, b.messages), (5, 0), "{}", vname(level));
        for _ in 0..5 {
            stalled.recv_publish(level).await;
        }
        expect_nothing(&mut stalled).await;
        stalled.send(&disconnect()).await;
        // Its five come back to the worker.
        for _ in 0..5 {
            assert!(recv_acked(&mut worker, level).await.dup);
        }
        until(&broker, level, |b| b.consumed == 100).await;
        worker.send(&disconnect()).await;
    }
    broker.stop().await;
}

/// `overflow = "reject"`: past `max_messages` a v5 publisher gets PUBACK 0x97; a 3.1.1 one is
/// acknowledged as usual; either way the refused job is counted and the waiting ones kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_rejects() {
    let broker = TestBroker::start_with(|c| c.queues = both(3, Overflow::Reject)).await;
    for level in VERSIONS {
        let mut publ = RawClient::connected(broker.addr, level, "producer").await;
        let mut reasons = Vec::new();
        for i in 0..5 {
            let pkid = next_pkid();
            publ.send(&publish(
                level,
                &job(level, i),
                1,
                pkid,
                i.to_string().as_bytes(),
            ))
            .await;
            reasons.push(parse_ack(&publ.recv_expect(PUBACK).await).1);
        }
        let want: &[u8] = if level == V5 {
            &[0, 0, 0, 0x97, 0x97]
        } else {
            &[0; 5]
        };
        assert_eq!(reasons, want, "{}", vname(level));
        let b = figures(&broker, level);
        assert_eq!((b.produced, b.messages), (5, 3));
        assert_eq!(b.dropped, vec![("rejected", 2)]);
        let mut w = RawClient::connected(broker.addr, level, "worker").await;
        consume(&mut w, level, 1).await;
        for i in 0..3 {
            assert_eq!(recv_acked(&mut w, level).await.topic, job(level, i));
        }
        until(&broker, level, |b| b.consumed == 3).await;
        w.send(&disconnect()).await;
    }
    broker.stop().await;
}

/// `overflow = "drop_oldest"`: the newest jobs are kept, the oldest dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_the_oldest() {
    let broker = TestBroker::start_with(|c| c.queues = both(3, Overflow::DropOldest)).await;
    for level in VERSIONS {
        let mut publ = RawClient::connected(broker.addr, level, "producer").await;
        produce(&mut publ, level, 0, 5).await;
        let b = figures(&broker, level);
        assert_eq!(b.dropped, vec![("dropped_oldest", 2)]);
        let mut w = RawClient::connected(broker.addr, level, "worker").await;
        consume(&mut w, level, 1).await;
        for i in 2..5 {
            assert_eq!(recv_acked(&mut w, level).await.topic, job(level, i));
        }
        until(&broker, level, |b| b.consumed == 3).await;
        w.send(&disconnect()).await;
    }
    broker.stop().await;
}

/// A QoS 0 consumer takes jobs at QoS 0: delivered once, consumed when written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos0_consumer_takes_jobs_at_qos0() {
    let broker = TestBroker::start_with(|c| c.queues = both(1000, Overflow::Reject)).await;
    for level in VERSIONS {
        let mut publ = RawClient::connected(broker.addr, level, "producer").await;
        produce(&mut publ, level, 0, 3).await;
        let mut w = RawClient::connected(broker.addr, level, "worker").await;
        consume(&mut w, level, 0).await;
        for i in 0..3 {
            let r = w.recv_publish(level).await;
            assert_eq!((r.topic, r.qos), (job(level, i), 0));
        }
        let b = until(&broker, level, |b| b.consumed == 3).await;
        assert_eq!(b.inflight, 0);
        w.send(&disconnect()).await;
    }
    broker.stop().await;
}

/// What is not a queue's: an undeclared `$queue/x` is refused in SUBACK (v5 0x8F, 3.1.1
/// 0x80); a PUBLISH to a `$queue/` topic is an invalid topic name (v5 DISCONNECT 0x90, 3.1.1
/// close); a client id under `$queue/` or `$share/` is refused (it names a queue's or a
/// group's own stored session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_names_are_not_topics() {
    let broker = TestBroker::start_with(|c| c.queues = both(1000, Overflow::Reject)).await;
    for level in VERSIONS {
        let mut c = RawClient::connected(broker.addr, level, "curious").await;
        let codes = sub_raw(&mut c, level, &[("$queue/nope", 1)], &[]).await;
        let want = if level == V5 { 0x8F } else { 0x80 };
        assert_eq!(codes, [want], "{}", vname(level));
        c.send(&publish(level, &queue_filter(level), 1, 7, b"x"))
            .await;
        c.expect_disconnect_or_close(level, 0x90).await;
        let (_, ack) =
            RawClient::try_handshake(broker.addr, level, &Connect::new(level, "$queue/jobs5"))
                .await;
        let want = if level == V5 { 0x85 } else { 0x02 };
        assert_eq!(ack.reason, want, "{}", vname(level));
        let group_id = Connect::new(level, "$share/g/jobs/#");
        let (_, ack) = RawClient::try_handshake(broker.addr, level, &group_id).await;
        assert_eq!(ack.reason, want, "{}", vname(level));
    }
    broker.stop().await;
}

/// Unsubscribing stops a consumer's share: later jobs go to the others; what it holds it
/// finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_stops_new_jobs() {
    let broker = TestBroker::start_with(|c| c.queues = both(1000, Overflow::Reject)).await;
    for level in VERSIONS {
        let mut a = RawClient::connected(broker.addr, level, "a").await;
        consume(&mut a, level, 1).await;
        let mut publ = RawClient::connected(broker.addr, level, "producer").await;
        produce(&mut publ, level, 0, 1).await;
        let held = a.recv_publish(level).await;
        a.send(&unsubscribe(level, 3, &[&queue_filter(level)], &[]))
            .await;
        a.recv_expect(UNSUBACK).await;
        produce(&mut publ, level, 1, 1).await;
        assert_eq!(figures(&broker, level).messages, 1, "{}", vname(level));
        a.send(&puback(held.pkid)).await;
        let b = until(&broker, level, |b| b.consumed == 1).await;
        assert_eq!((b.messages, b.inflight), (1, 0));
        a.send(&disconnect()).await;
    }
    broker.stop().await;
}
