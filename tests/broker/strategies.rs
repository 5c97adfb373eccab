//! Shared-subscription strategies (`[shared] strategy`): how a `$share/{group}/{filter}` group
//! spreads messages over its members, for MQTT 3.1.1 and 5.0 members. Each member also
//! subscribes to a fence topic of its own, published after the messages: a member has had
//! all its share once it sees the fence (one publisher, one FIFO queue per member).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tern::config::Strategy;

use crate::harness::TestBroker;
use crate::support::{ack_props, pub_msg};
use crate::wire::*;

const LEVELS: [u8; 2] = [V311, V5];

/// The group of `level`'s members (one per version, so members of the other version, still
/// leaving, take nothing from it).
fn shared(level: u8) -> String {
    format!("$share/g{level}/jobs/#")
}

/// `n` members of group `g` on `jobs/#` at `qos`, each also on the fence topic; member `i`
/// sends the SUBSCRIBE User Properties `props(i)` (v5).
async fn members(
    broker: &TestBroker,
    level: u8,
    n: usize,
    qos: u8,
    props: impl Fn(usize) -> Vec<u8>,
) -> Vec<RawClient> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut c = RawClient::connected(broker.addr, level, &format!("member-{level}-{i}")).await;
        let props = if level == V5 { props(i) } else { Vec::new() };
        let group = shared(level);
        c.send(&subscribe(
            level,
            1,
            &[(&group, qos), ("fence/all", 0)],
            &props,
        ))
        .await;
        let (_, codes) = parse_suback(level, &c.recv_expect(SUBACK).await);
        assert!(codes.iter().all(|c| *c < 0x80), "{codes:02x?}");
        out.push(c);
    }
    out
}

/// Reads a member's messages until the fence, acknowledging QoS 1 ones: its topics in order.
async fn until_fence(mut c: RawClient, level: u8) -> (RawClient, Vec<String>) {
    let mut got = Vec::new();
    loop {
        let r = c.recv_publish(level).await;
        if r.qos == 1 {
            c.send(&puback(r.pkid)).await;
        }
        if r.topic == "fence/all" {
            return (c, got);
        }
        got.push(r.topic);
    }
}

/// Publishes `topics` at QoS 0 in one write, then the fence.
async fn publish_all(publisher: &mut RawClient, level: u8, topics: &[String]) {
    let mut bytes = Vec::new();
    for t in topics {
        bytes.extend(publish(level, t, 0, 0, b"job"));
    }
    bytes.extend(publish(level, "fence/all", 0, 0, b"fence"));
    publisher.send(&bytes).await;
}

/// Every member's topics, in member order, once each has seen the fence.
async fn collect(ms: Vec<RawClient>, level: u8) -> (Vec<RawClient>, Vec<Vec<String>>) {
    let tasks: Vec<_> = ms
        .into_iter()
        .map(|c| tokio::spawn(until_fence(c, level)))
        .collect();
    let mut clients = Vec::new();
    let mut got = Vec::new();
    for t in tasks {
        let (c, g) = t.await.unwrap();
        clients.push(c);
        got.push(g);
    }
    (clients, got)
}

fn jobs(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("jobs/{i}")).collect()
}

/// `round_robin` (the default): 300 messages over 3 members, 100 each within ±1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_is_even() {
    let broker = TestBroker::start().await;
    for level in LEVELS {
        let ms = members(&broker, level, 3, 0, |_| Vec::new()).await;
        let mut publ = RawClient::connected(broker.addr, level, "rr-pub").await;
        publish_all(&mut publ, level, &jobs(300)).await;
        let (_, got) = collect(ms, level).await;
        let counts: Vec<usize> = got.iter().map(Vec::len).collect();
        assert_eq!(counts.iter().sum::<usize>(), 300, "v{level}");
        assert!(
            counts.iter().all(|c| c.abs_diff(100) <= 1),
            "v{level}: {counts:?}"
        );
    }
    broker.stop().await;
}

/// `weighted`: weights 3 and 1 (v5: SUBSCRIBE User Property `weight`; 3.1.1: `[shared.weights]`)
/// split 4,000 messages 3:1 (2.7 to 3.3), interleaved rather than in bursts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_splits_by_weight() {
    let broker = TestBroker::start_with(|c| {
        c.shared.strategy = Strategy::Weighted;
        c.shared.weights.insert(format!("member-{V311}-0"), 3);
        // The burst is QoS 0: a member's queue must hold its share while its reader is slow
        // (on a loaded machine), or the overflow is dropped as QoS 0 at a full queue is.
        c.limits.max_queued_messages = 10_000;
    })
    .await;
    for level in LEVELS {
        let props = |i: usize| {
            if i == 0 {
                prop_user("weight", "3")
            } else {
                Vec::new()
            }
        };
        let ms = members(&broker, level, 2, 0, props).await;
        let mut publ = RawClient::connected(broker.addr, level, "w-pub").await;
        publish_all(&mut publ, level, &jobs(4_000)).await;
        let (_, got) = collect(ms, level).await;
        let (heavy, light) = (got[0].len() as f64, got[1].len() as f64);
        assert_eq!(heavy + light, 4_000.0);
        let ratio = heavy / light;
        assert!(
            (2.7..=3.3).contains(&ratio),
            "v{level}: {heavy} / {light} = {ratio}"
        );
        // Smooth: the light member never waits more than 3 messages for its turn.
        let light_at: HashSet<&String> = got[1].iter().collect();
        let mut run = 0;
        for t in jobs(4_000) {
            run = if light_at.contains(&t) { 0 } else { run + 1 };
            assert!(run <= 3, "v{level}: {run} in a row to the heavy member");
        }
    }
    broker.stop().await;
}

/// `least_inflight`: a member that stops acknowledging gets nothing once its window is full;
/// the member that acknowledges gets the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_inflight_passes_over_a_stalled_member() {
    let broker = TestBroker::start_with(|c| {
        c.shared.strategy = Strategy::LeastInflight;
        c.limits.max_inflight_messages = 5;
        c.limits.max_inflight_messages_v5 = 5;
    })
    .await;
    for level in LEVELS {
        let mut ms = members(&broker, level, 2, 1, |_| Vec::new()).await;
        let mut worker = ms.pop().unwrap();
        let mut stalled = ms.pop().unwrap();
        let mut publ = RawClient::connected(broker.addr, level, "li-pub").await;
        let worker_task = tokio::spawn(async move {
            let mut n = 0;
            while n < 90 {
                let r = worker.recv_publish(level).await;
                worker.send(&puback(r.pkid)).await;
                n += 1;
            }
            n
        });
        for i in 0..100u16 {
            publ.send(&publish(level, &format!("jobs/{i}"), 1, i + 1, b"job"))
                .await;
            parse_ack(&publ.recv_expect(PUBACK).await);
        }
        assert_eq!(worker_task.await.unwrap(), 90);
        // The stalled member holds its full window, unacknowledged, and is sent nothing more.
        for _ in 0..5 {
            let r = stalled.recv_publish(level).await;
            assert_eq!(r.qos, 1);
        }
        stalled.expect_silence(Duration::from_millis(300)).await;
    }
    broker.stop().await;
}

/// `hash_client`: each publisher's messages all go to one member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_client_keeps_a_publisher_on_one_member() {
    let broker = TestBroker::start_with(|c| c.shared.strategy = Strategy::HashClient).await;
    for level in LEVELS {
        let ms = members(&broker, level, 3, 0, |_| Vec::new()).await;
        let mut bytes = Vec::new();
        let mut publishers = Vec::new();
        for p in 0..6 {
            let mut publ = RawClient::connected(broker.addr, level, &format!("hc-{p}")).await;
            let topics: Vec<String> = (0..20).map(|i| format!("jobs/p{p}/{i}")).collect();
            for t in &topics {
                bytes.clear();
                bytes.extend(publish(level, t, 0, 0, b"job"));
                publ.send(&bytes).await;
            }
            publ.ping().await;
            publishers.push(publ);
        }
        let mut fence = RawClient::connected(broker.addr, level, "hc-fence").await;
        publish_all(&mut fence, level, &[]).await;
        let (_, got) = collect(ms, level).await;
        let mut owner: HashMap<String, usize> = HashMap::new();
        for (m, topics) in got.iter().enumerate() {
            for t in topics {
                let p = t.split('/').nth(1).unwrap().to_string();
                let first = *owner.entry(p.clone()).or_insert(m);
                assert_eq!(first, m, "v{level}: publisher {p} split between members");
            }
        }
        assert_eq!(owner.len(), 6, "v{level}");
        assert_eq!(got.iter().map(Vec::len).sum::<usize>(), 120);
    }
    broker.stop().await;
}

/// `hash_topic`: each topic's messages all go to one member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_topic_keeps_a_topic_on_one_member() {
    let broker = TestBroker::start_with(|c| c.shared.strategy = Strategy::HashTopic).await;
    for level in LEVELS {
        let ms = members(&broker, level, 3, 0, |_| Vec::new()).await;
        let topics: Vec<String> = (0..200).map(|i| format!("jobs/t{}", i % 8)).collect();
        let mut publ = RawClient::connected(broker.addr, level, "ht-pub").await;
        publish_all(&mut publ, level, &topics).await;
        let (_, got) = collect(ms, level).await;
        let mut owner: HashMap<&String, usize> = HashMap::new();
        for (m, ts) in got.iter().enumerate() {
            for t in ts {
                assert_eq!(*owner.entry(t).or_insert(m), m, "v{level}: {t} split");
            }
        }
        assert_eq!(owner.len(), 8);
        assert!(
            got.iter().filter(|g| !g.is_empty()).count() > 1,
            "v{level}: all on one member"
        );
    }
    broker.stop().await;
}

/// `sticky`: every message to one member while it stays; when it leaves, to one other member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_moves_only_when_the_member_leaves() {
    let broker = TestBroker::start_with(|c| c.shared.strategy = Strategy::Sticky).await;
    for level in LEVELS {
        let ms = members(&broker, level, 3, 0, |_| Vec::new()).await;
        let mut publ = RawClient::connected(broker.addr, level, "st-pub").await;
        publish_all(&mut publ, level, &jobs(30)).await;
        let (mut ms, got) = collect(ms, level).await;
        let holders: Vec<usize> = (0..3).filter(|&m| !got[m].is_empty()).collect();
        assert_eq!(holders.len(), 1, "v{level}: {got:?}");
        let first = holders[0];
        assert_eq!(got[first].len(), 30);
        // The sticky member leaves; the rest go to one other member, and stay there.
        let mut gone = ms.remove(first);
        gone.send(&disconnect()).await;
        gone.expect_closed().await;
        for _ in 0..2 {
            publish_all(&mut publ, level, &jobs(30)).await;
            let (back, got) = collect(ms, level).await;
            ms = back;
            let holders: Vec<usize> = (0..2).filter(|&m| !got[m].is_empty()).collect();
            assert_eq!(holders.len(), 1, "v{level}: {got:?}");
            assert_eq!(got[holders[0]].len(), 30);
        }
    }
    broker.stop().await;
}

/// `random`: 600 messages over 3 members, none left out (each far above 100).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_spreads_over_every_member() {
    let broker = TestBroker::start_with(|c| c.shared.strategy = Strategy::Random).await;
    for level in LEVELS {
        let ms = members(&broker, level, 3, 0, |_| Vec::new()).await;
        let mut publ = RawClient::connected(broker.addr, level, "rnd-pub").await;
        publish_all(&mut publ, level, &jobs(600)).await;
        let (_, got) = collect(ms, level).await;
        let counts: Vec<usize> = got.iter().map(Vec::len).collect();
        assert_eq!(counts.iter().sum::<usize>(), 600);
        assert!(counts.iter().all(|c| *c > 100), "v{level}: {counts:?}");
    }
    broker.stop().await;
}

/// A `weight` User Property that is not an integer from 1 to 1000 gets SUBACK 0x83 with a
/// Reason String naming the weight, for the shared filters of that SUBSCRIBE only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_weight_is_refused() {
    let broker = TestBroker::start().await;
    for bad in ["0", "1001", "three", ""] {
        let mut c = RawClient::connected(broker.addr, V5, "bad-weight").await;
        c.send(&subscribe(
            V5,
            4,
            &[(&shared(V5), 1), ("plain/t", 1)],
            &prop_user("weight", bad),
        ))
        .await;
        let body = c.recv_expect(SUBACK).await;
        let (pkid, codes) = parse_suback(V5, &body);
        assert_eq!((pkid, codes), (4, vec![0x83, 0x01]), "weight {bad:?}");
        let props = ack_props(&body, 2);
        let reason = prop(&props, REASON_STRING)
            .map(PropValue::str)
            .unwrap_or("");
        assert!(reason.contains("weight"), "{reason:?}");
        c.ping().await;
    }
    broker.stop().await;
}

/// When no member has room (both stopped acknowledging, windows full), messages wait in the
/// group, counted there, and go to whichever member frees room first; the group's figures obey
/// the backlog identity at every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_wait_in_the_group_without_room() {
    let broker = TestBroker::start_with(|c| {
        c.limits.max_inflight_messages = 5;
        c.limits.max_inflight_messages_v5 = 5;
    })
    .await;
    for level in LEVELS {
        let group = |b: &TestBroker| {
            let g = b
                .group_figures()
                .into_iter()
                .find(|g| g.name == format!("g{level}"))
                .expect("the group");
            assert_eq!(
                g.produced,
                g.consumed + g.dropped_total() + g.messages + g.inflight,
                "{g:?}"
            );
            g
        };
        let mut ms = members(&broker, level, 2, 1, |_| Vec::new()).await;
        let mut publ = RawClient::connected(broker.addr, level, "wait-pub").await;
        for i in 0..20 {
            pub_msg(&mut publ, level, &format!("jobs/{i}"), 1, b"job").await;
        }
        let mut held = Vec::new();
        for m in ms.iter_mut() {
            for _ in 0..5 {
                held.push(m.recv_publish(level).await);
            }
        }
        let g = group(&broker);
        assert_eq!(
            (g.produced, g.inflight, g.messages),
            (20, 10, 10),
            "v{level}"
        );
        // The second member acknowledges all it holds: the ten waiting ones are its, in
        // order, five at a time.
        let mut got = Vec::new();
        for r in &held[5..] {
            ms[1].send(&puback(r.pkid)).await;
        }
        while got.len() < 10 {
            let r = ms[1].recv_publish(level).await;
            ms[1].send(&puback(r.pkid)).await;
            got.push(r.topic);
        }
        let want: Vec<String> = (10..20).map(|i| format!("jobs/{i}")).collect();
        assert_eq!(got, want, "v{level}");
        ms[0].expect_silence(Duration::from_millis(300)).await;
        for c in ms.iter_mut() {
            c.send(&disconnect()).await;
        }
    }
    broker.stop().await;
}
