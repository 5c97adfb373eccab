//! The backlog of a declared queue as operators see it, through the real binary: the
//! `tern_queue_…` series obey `produced = consumed + dropped + messages + inflight` in every
//! scrape while traffic flows, `$SYS/broker/queues/{name}/…` carries the same figures, and with
//! persistence on a queue loses nothing acknowledged into it across `kill -9`.

use crate::child::ChildBroker;
use crate::ops::Scrape;
use crate::support::*;
use crate::wire::*;

const QUEUE: &str = "[[queues]]\nname = \"jobs\"\nfilter = \"jobs/#\"\n";

/// A queue's or a group's six figures in one scrape (`prefix`: `tern_queue` or
/// `tern_shared_group`; `label` selects it), after checking the identity.
fn identity_of(s: &Scrape, prefix: &str, label: &str) -> [f64; 5] {
    let q = [label];
    let get = |name: &str| s.get(&format!("{prefix}_{name}"), &q);
    let produced = get("produced_total");
    let consumed = get("consumed_total");
    let dropped = get("dropped_total");
    let messages = get("messages");
    let inflight = get("inflight");
    assert_eq!(
        produced,
        consumed + dropped + messages + inflight,
        "{label}: identity broken: produced {produced}, consumed {consumed}, dropped {dropped}, messages {messages}, inflight {inflight}"
    );
    [produced, consumed, dropped, messages, inflight]
}

/// The declared queue `jobs`'s figures.
fn identity(s: &Scrape) -> [f64; 5] {
    identity_of(s, "tern_queue", "queue=\"jobs\"")
}

/// Two consumers (3.1.1 and 5, the second acknowledging each job a little late) subscribed
/// to `filter` until each gets a `stop` job, and two producers of 1,000 jobs each; `/metrics`
/// is scraped over and over until all 2,000 are consumed, the identity checked in every
/// scrape. Returns the consumers (each returns how many jobs it acknowledged).
async fn traffic(
    broker: &ChildBroker,
    filter: &'static str,
    prefix: &str,
    label: &str,
) -> Vec<tokio::task::JoinHandle<usize>> {
    let mut consumers = Vec::new();
    for (i, level) in VERSIONS.into_iter().enumerate() {
        let mut c = RawClient::connected(broker.addr, level, &format!("worker{i}")).await;
        sub_all(&mut c, level, &[filter], 1).await;
        consumers.push(tokio::spawn(async move {
            let mut n = 0;
            loop {
                let r = c.recv_publish(level).await;
                if r.payload == b"stop" {
                    return n;
                }
                if i == 1 {
                    tokio::task::yield_now().await;
                }
                c.send(&puback(r.pkid)).await;
                n += 1;
            }
        }));
    }
    let producers: Vec<_> = VERSIONS
        .into_iter()
        .map(|level| {
            let addr = broker.addr;
            tokio::spawn(async move {
                let mut p = RawClient::connected(addr, level, &format!("producer{level}")).await;
                for i in 0..1000 {
                    pub_msg(&mut p, level, &format!("jobs/{level}/{i}"), 1, b"job").await;
                }
            })
        })
        .collect();
    let mut scrapes = 0;
    loop {
        let [produced, consumed, ..] = identity_of(&Scrape::take(broker).await, prefix, label);
        scrapes += 1;
        if produced == 2000.0 && consumed == 2000.0 {
            break;
        }
        assert!(scrapes < 5000, "{label} did not drain");
    }
    assert!(
        scrapes > 1,
        "scraped only once: nothing was checked during traffic"
    );
    for p in producers {
        p.await.unwrap();
    }
    consumers
}

/// A shared subscription's group: the same identity in every scrape during traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_identity_holds_in_every_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ChildBroker::start(dir.path(), false, "process");
    let label = "group=\"workers\"";
    let consumers = traffic(&broker, "$share/workers/jobs/#", "tern_shared_group", label).await;
    let s = Scrape::take(&broker).await;
    assert_eq!(
        identity_of(&s, "tern_shared_group", label),
        [2000.0, 2000.0, 0.0, 0.0, 0.0]
    );
    assert!(s.0.contains("filter=\"jobs/#\""));
    let mut p = RawClient::connected(broker.addr, V5, "stopper").await;
    for _ in 0..2 {
        pub_msg(&mut p, V5, "jobs/stop", 1, b"stop").await;
    }
    let total: usize = futures_total(consumers).await;
    assert_eq!(total, 2000);
}

async fn futures_total(consumers: Vec<tokio::task::JoinHandle<usize>>) -> usize {
    let mut total = 0;
    for c in consumers {
        total += c.await.unwrap();
    }
    total
}

/// A declared queue: 2,000 jobs from two producers to two consumers while `/metrics` is
/// scraped over and over: the identity holds in every scrape, and at the end everything
/// produced was consumed. `$SYS` shows the same figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_holds_in_every_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{QUEUE}\n[sys]\ninterval_secs = 1\n");
    let broker = ChildBroker::start_with(dir.path(), false, "process", &extra);
    let consumers = traffic(&broker, "$queue/jobs", "tern_queue", "queue=\"jobs\"").await;
    // One stop job each (round robin among two consumers with room).
    let mut p = RawClient::connected(broker.addr, V5, "stopper").await;
    for _ in 0..2 {
        pub_msg(&mut p, V5, "jobs/stop", 1, b"stop").await;
    }
    assert_eq!(futures_total(consumers).await, 2000);
    // The consumers are gone without acknowledging their stop jobs: back in the queue.
    let mut s = Scrape::take(&broker).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while identity(&s)[3] != 2.0 {
        // Bounded: a stop job stuck with a consumer that left hung this loop once.
        assert!(
            std::time::Instant::now() < deadline,
            "the stop jobs did not come back to the queue: {:?}",
            identity(&s)
        );
        s = Scrape::take(&broker).await;
    }
    assert_eq!(identity(&s), [2002.0, 2000.0, 0.0, 2.0, 0.0]);
    assert_eq!(s.get("tern_queue_bytes", &["queue=\"jobs\""]), 8.0);

    // `$SYS`: the same figures, as decimal integers, a second later at most.
    let mut sys = RawClient::connected(broker.addr, V311, "sys-reader").await;
    sub_all(&mut sys, V311, &["$SYS/broker/queues/jobs/#"], 0).await;
    let want = [
        ("messages", "2"),
        ("inflight", "0"),
        ("produced", "2002"),
        ("consumed", "2000"),
        ("dropped", "0"),
    ];
    let mut seen = std::collections::HashMap::new();
    // Published every second: wait for the round after the consumers left.
    while want
        .iter()
        .any(|(k, v)| seen.get(*k).map(String::as_str) != Some(*v))
        || !seen.contains_key("rate")
    {
        let r = sys.recv_publish(V311).await;
        let leaf = r.topic.rsplit('/').next().unwrap().to_string();
        seen.insert(leaf, String::from_utf8(r.payload).unwrap());
    }
    assert!(seen["rate"].parse::<f64>().is_ok(), "{:?}", seen["rate"]);
}

/// Receives `n` jobs, completing every flow (PUBRELs interleave with later PUBLISHes).
async fn take_jobs(c: &mut RawClient, level: u8, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    let mut open = 0;
    while got.len() < n || open > 0 {
        let (first, body) = c.recv_packet().await;
        if first == PUBREL {
            c.send(&pubcomp(parse_ack(&body).0)).await;
            open -= 1;
            continue;
        }
        let r = parse_publish(level, first, &body);
        if r.qos == 2 {
            c.send(&pubrec(r.pkid)).await;
            open += 1;
        } else if r.qos == 1 {
            c.send(&puback(r.pkid)).await;
        }
        got.push(r.topic);
    }
    got
}

/// With persistence on, jobs acknowledged into a queue survive `kill -9`: those a consumer
/// had acknowledged before the kill are not handed out again, every other one is, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ChildBroker::start_with(dir.path(), true, "fsync", QUEUE);
    for level in VERSIONS {
        let mut p = RawClient::connected(broker.addr, level, "producer").await;
        for i in 0..10 {
            let qos = if i % 2 == 0 { 1 } else { 2 };
            pub_msg(&mut p, level, &format!("jobs/{level}/{i}"), qos, b"job").await;
        }
    }
    // A persistent consumer takes four and acknowledges three.
    let (mut c, _) = connect_persistent(broker.addr, V5, "worker", false).await;
    sub_all(&mut c, V5, &["$queue/jobs"], 2).await;
    let want: Vec<String> = VERSIONS
        .into_iter()
        .flat_map(|level| (0..10).map(move |i| format!("jobs/{level}/{i}")))
        .collect();
    // Up to its window of them arrive at once; only the first three are acknowledged.
    let (mut received, mut released) = (0, 0);
    while received < 4 || released < 1 {
        let (first, body) = c.recv_packet().await;
        if first == PUBREL {
            c.send(&pubcomp(parse_ack(&body).0)).await;
            released += 1;
            continue;
        }
        let r = parse_publish(V5, first, &body);
        assert_eq!(r.topic, want[received]);
        match (received, r.qos) {
            (3.., _) => {}
            (_, 1) => c.send(&puback(r.pkid)).await,
            _ => c.send(&pubrec(r.pkid)).await,
        }
        received += 1;
    }
    // The acknowledgements are written in order before this SUBACK's subscription.
    sub_all(&mut c, V5, &["settle/nothing"], 0).await;
    broker.kill9();

    let broker = ChildBroker::start_with(dir.path(), true, "fsync", QUEUE);
    let s = Scrape::take(&broker).await;
    assert_eq!(
        identity(&s)[0],
        17.0,
        "produced after restart: what is left"
    );
    let (mut c, present) = connect_persistent(broker.addr, V5, "worker", false).await;
    assert!(present);
    let got = take_jobs(&mut c, V5, 17).await;
    assert_eq!(got, want[3..]);
    expect_nothing(&mut c).await;
    broker.kill9();
}
