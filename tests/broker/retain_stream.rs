//! A wide subscription over many retained messages: every one is delivered (not cut at
//! `max_queued_messages`), each once, in topic order, paced by the subscriber, while other
//! clients are served as usual; what is published meanwhile comes after the retained copy of
//! its topic; a persistent session that drops mid-stream gets the rest on return.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::TestBroker;
use crate::support::*;
use crate::wire::*;

/// Retained messages for the wide tests: fifty times the default queue limit (1,000).
const WIDE: usize = 50_000;
/// A connect, subscribe and QoS 1 round trip by another client stays under this while a
/// stream runs.
const PROBE_LIMIT: Duration = Duration::from_secs(1);
/// At most this many probes per stream.
const PROBES: usize = 100;

fn topic(i: usize) -> String {
    format!("w/{i:05}")
}

/// Index of a topic made by [`topic`].
fn index(t: &str) -> usize {
    t.strip_prefix("w/")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a retained test topic: {t}"))
}

/// Retains `n` messages ([`topic`], payload the index) at `qos`, pipelined from one client;
/// returns once the broker has handled them all (its PINGRESP follows every PUBACK).
async fn retain_many(addr: SocketAddr, v: u8, n: usize, qos: u8) {
    let mut p = RawClient::connected(addr, v, &format!("filler-{}", rand_suffix())).await;
    let mut bytes = Vec::with_capacity(n * 24);
    for i in 0..n {
        let pkid = if qos > 0 {
            u16::try_from(i % 65_535 + 1).unwrap()
        } else {
            0
        };
        let publish = Publish::new(v, &topic(i), i.to_string().as_bytes())
            .qos(qos, pkid)
            .retain(true);
        bytes.extend(publish.build());
    }
    bytes.extend(pingreq());
    p.send(&bytes).await;
    loop {
        match p.recv_packet().await {
            (PINGRESP, _) => break,
            (PUBACK, _) => {}
            (f, b) => panic!("filler got {f:#04x} {b:02x?}"),
        }
    }
    p.send(&disconnect()).await;
}

/// Reads a `#` subscriber's retained messages until `n` arrived, acknowledging each at once;
/// asserts each is a retained copy, in topic order, at `qos`, and that every topic came
/// exactly once. Returns the client and when the last one arrived.
async fn read_stream(mut s: RawClient, v: u8, n: usize, qos: u8) -> (RawClient, Instant) {
    let mut copies = vec![0u32; n];
    let mut last = None;
    for _ in 0..n {
        let r = s.recv_publish(v).await;
        assert!(r.retain, "RETAIN set on a retained copy: {r:?}");
        assert_eq!(r.qos, qos, "min(stored, granted): {r:?}");
        if r.qos == 1 {
            s.send(&puback(r.pkid)).await;
        }
        let i = index(&r.topic);
        assert_eq!(r.payload, i.to_string().as_bytes());
        assert!(last < Some(i), "topic order: {} after {last:?}", r.topic);
        last = Some(i);
        copies[i] += 1;
    }
    let missing = copies.iter().filter(|c| **c == 0).count();
    assert_eq!(missing, 0, "{missing} retained messages never arrived");
    (s, Instant::now())
}

/// A client that was not there before connects, subscribes and round-trips a QoS 1 message
/// (on a `$` topic, which the `#` subscriber does not match); returns how long it took.
async fn probe(addr: SocketAddr, v: u8) -> Duration {
    let t0 = Instant::now();
    let id = format!("probe-{}", rand_suffix());
    let mut c = RawClient::connected(addr, v, &id).await;
    let t = format!("$probe/{id}");
    c.subscribe(v, &t, 1).await;
    c.send(&publish(v, &t, 1, 9, b"ping")).await;
    let (mut acked, mut echoed) = (false, false);
    while !(acked && echoed) {
        match c.recv_packet().await {
            (PUBACK, body) => {
                assert_eq!(parse_ack(&body).0, 9);
                acked = true;
            }
            (f, body) => {
                let r = parse_publish(v, f, &body);
                assert_eq!(
                    (r.topic.as_str(), &r.payload[..]),
                    (t.as_str(), &b"ping"[..])
                );
                c.send(&puback(r.pkid)).await;
                echoed = true;
            }
        }
    }
    let took = t0.elapsed();
    c.send(&disconnect()).await;
    took
}

/// [MQTT-3.3.1-6] (v3.1.1) / [MQTT-3.3.1-9] (v5) A `#` subscriber gets every one of 50,000
/// retained messages with the default queue limit of 1,000, at QoS `qos`; meanwhile new
/// clients, one after another, connect and round-trip a message in under a second each.
async fn wide_subscription_gets_every_retained_message(v: u8, qos: u8) {
    let b = TestBroker::start().await;
    retain_many(b.addr, v, WIDE, qos).await;
    let mut s = RawClient::connected(b.addr, v, &format!("wide-{}", rand_suffix())).await;
    // Probes run back to back from before the SUBSCRIBE until the stream has ended (or
    // enough were made: they are load too).
    let stop = Arc::new(AtomicBool::new(false));
    let probes = tokio::spawn({
        let (addr, stop) = (b.addr, Arc::clone(&stop));
        async move {
            let mut spans = Vec::new();
            while !stop.load(Ordering::Acquire) && spans.len() < PROBES {
                let t0 = Instant::now();
                spans.push((t0, probe(addr, v).await));
            }
            spans
        }
    });
    let subscribed = Instant::now();
    s.send(&subscribe(v, 1, &[("#", qos)], &[])).await;
    let (_, reasons) = parse_suback(v, &s.recv_expect(SUBACK).await);
    assert_eq!(reasons, [qos]);
    let (mut s, ended) = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::spawn(read_stream(s, v, WIDE, qos)),
    )
    .await
    .expect("stream finished in time")
    .expect("reader passed its checks");
    stop.store(true, Ordering::Release);
    let spans = probes.await.expect("probes passed their checks");
    let during = spans
        .iter()
        .filter(|(t0, took)| *t0 < ended && *t0 + *took > subscribed)
        .count();
    assert!(during > 0, "{}: no probe while streaming", vname(v));
    for (t0, took) in &spans {
        assert!(
            *took < PROBE_LIMIT,
            "{}: a new client took {took:?}, {:?} into a stream of {:?}",
            vname(v),
            t0.saturating_duration_since(subscribed),
            ended - subscribed
        );
    }
    // The stream is over: the connection serves as usual, nothing more was queued.
    s.ping().await;
    assert_broker_serves(b.addr, v).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_subscription_gets_every_retained_message_v311_qos0() {
    wide_subscription_gets_every_retained_message(V311, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_subscription_gets_every_retained_message_v5_qos0() {
    wide_subscription_gets_every_retained_message(V5, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_subscription_gets_every_retained_message_v311_qos1() {
    wide_subscription_gets_every_retained_message(V311, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_subscription_gets_every_retained_message_v5_qos1() {
    wide_subscription_gets_every_retained_message(V5, 1).await;
}

/// Retained messages for the order and resume tests: more than the queue limit.
const SOME: usize = 3_000;

/// Reads PUBLISHes until `n` arrived without acknowledging them (the window holds the
/// stream).
async fn read_unacked(s: &mut RawClient, v: u8, n: usize) -> Vec<Received> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        got.push(s.recv_publish(v).await);
    }
    got
}

/// [MQTT-3.3.1-6] / [MQTT-3.3.1-9] with [MQTT-4.6.0-6]: what is published while a
/// subscription's retained messages are still being sent arrives after them, so never before
/// the retained copy of its topic; a message retained meanwhile comes once, live (RETAIN 0),
/// in place of a copy not yet sent. While the stream waits for acknowledgements the
/// connection does not go dormant, and acknowledgements resume it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_during_the_stream_follow_the_retained_copies() {
    let b = TestBroker::start_with(|c| {
        c.limits.dormant_after_ms = 100;
        c.limits.max_inflight_messages = 20;
        c.limits.max_inflight_messages_v5 = 20;
    })
    .await;
    for v in VERSIONS {
        retain_many(b.addr, v, SOME, 1).await;
        let mut s = RawClient::connected(b.addr, v, &format!("order-{}", rand_suffix())).await;
        s.send(&subscribe(v, 1, &[("w/#", 1)], &[])).await;
        s.recv_expect(SUBACK).await;
        // The window (20, both versions) fills; the rest of the stream waits.
        let mut got = read_unacked(&mut s, v, 20).await;
        s.expect_silence(SILENCE).await;
        assert_eq!(b.dormant(), 0, "{}: a queued stream is not idle", vname(v));

        let mut p = RawClient::connected(b.addr, v, &format!("live-{}", rand_suffix())).await;
        // Already sent, not yet sent, last; then retained anew: sent already, and not yet.
        for (i, retain) in [
            (5, false),
            (1500, false),
            (SOME - 1, false),
            (10, true),
            (1600, true),
        ] {
            let live = Publish::new(v, &topic(i), b"live").qos(1, 0).retain(retain);
            send_flow(&mut p, live).await;
        }
        pub_msg(&mut p, v, "w/zz-fence", 1, b"fence").await;
        for r in &got {
            ack_received(&mut s, r).await;
        }
        got.extend(collect_until(&mut s, v, b"fence").await);

        let first_live = got.iter().position(|r| !r.retain).expect("live messages");
        assert!(
            got[first_live..].iter().all(|r| !r.retain),
            "{}: every retained copy before anything published later",
            vname(v)
        );
        let live: Vec<usize> = got[first_live..].iter().map(|r| index(&r.topic)).collect();
        assert_eq!(live, [5, 1500, SOME - 1, 10, 1600], "{}", vname(v));
        assert!(got[first_live..].iter().all(|r| r.payload == b"live"));
        let mut copies = vec![0; SOME];
        for r in &got[..first_live] {
            assert_eq!(r.payload, index(&r.topic).to_string().as_bytes());
            copies[index(&r.topic)] += 1;
        }
        let once = |i: usize| copies[i] == 1;
        assert!(once(10), "{}: sent before it was replaced", vname(v));
        assert_eq!(copies[1600], 0, "{}: replaced before it was sent", vname(v));
        assert!(
            (0..SOME).filter(|i| *i != 1600).all(once),
            "{}: every other copy once",
            vname(v)
        );
        // The topics retained anew are left as they were, not for the next test's walk.
        for i in [10, 1600] {
            send_flow(
                &mut p,
                Publish::new(v, &topic(i), b"").qos(1, 0).retain(true),
            )
            .await;
        }
    }
    b.stop().await;
}

/// A persistent session that loses its connection mid-stream keeps the stream queued: on
/// return it gets the unacknowledged messages again (DUP) and then the rest, each topic once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_resumes_the_stream_after_reconnecting() {
    let b = TestBroker::start().await;
    for v in VERSIONS {
        retain_many(b.addr, v, SOME, 1).await;
        let id = format!("resume-{}", rand_suffix());
        let (mut s, _) = connect_persistent(b.addr, v, &id, false).await;
        s.send(&subscribe(v, 1, &[("w/#", 1)], &[])).await;
        s.recv_expect(SUBACK).await;
        let first = read_unacked(&mut s, v, 20).await;
        drop(s);

        let (mut s, present) = connect_persistent(b.addr, v, &id, false).await;
        assert!(present, "{}: session kept", vname(v));
        let mut p = RawClient::connected(b.addr, v, &format!("fence-{}", rand_suffix())).await;
        pub_msg(&mut p, v, "w/zz-fence", 1, b"fence").await;
        let got = collect_until(&mut s, v, b"fence").await;
        let resent: Vec<&str> = got[..20].iter().map(|r| r.topic.as_str()).collect();
        let sent: Vec<&str> = first.iter().map(|r| r.topic.as_str()).collect();
        assert_eq!(resent, sent, "{}: in-flight ones again, in order", vname(v));
        assert!(got[..20].iter().all(|r| r.dup), "{}: with DUP", vname(v));
        let rest: Vec<usize> = got[20..].iter().map(|r| index(&r.topic)).collect();
        assert_eq!(
            rest,
            (20..SOME).collect::<Vec<_>>(),
            "{}: then the rest, in order, once",
            vname(v)
        );
        s.send(&disconnect()).await;
    }
    b.stop().await;
}

/// v5 [MQTT-3.1.2-25]: retained messages over the client's Maximum Packet Size are not sent;
/// a stream of nothing but such messages still runs to its end (the connection comes back
/// for more although it wrote nothing), and what was published after it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_of_messages_too_large_for_the_client_still_ends() {
    // Never dormant: no timer turns the connection's loop, only its mailbox.
    let b = TestBroker::start_with(|c| c.limits.dormant_after_ms = 0).await;
    let mut p = RawClient::connected(b.addr, V5, "big-filler").await;
    let mut bytes = Vec::new();
    for i in 0..2_000 {
        let big = Publish::new(V5, &format!("big/{i:04}"), &[b'x'; 300]).retain(true);
        bytes.extend(big.build());
    }
    p.send(&bytes).await;
    p.ping().await;
    let small = Connect::new(V5, "small").props(prop_u32(MAXIMUM_PACKET_SIZE, 128));
    let (mut s, _) = RawClient::handshake(b.addr, V5, &small).await;
    s.subscribe(V5, "big/#", 0).await;
    pub_msg(&mut p, V5, "big/live", 1, b"fits").await;
    let r = s.recv_publish(V5).await;
    assert_eq!((r.topic.as_str(), r.retain), ("big/live", false));
    b.stop().await;
}
