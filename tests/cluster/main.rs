//! Cluster mode, end to end: three nats-server processes (JetStream, routes on loopback) and
//! three `tern` nodes as real processes, driven by independent clients on real sockets.
//! One cluster serves every scenario below, in turn (each on topics of its own), so the whole
//! file costs one cluster start.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../broker/wire/mod.rs"]
mod wire;

#[path = "../broker/child.rs"]
#[allow(dead_code)]
mod child;
mod harness;
mod partition;
mod survive;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use harness::{Nats, Node, Single};
use wire::*;

/// How long a scenario waits for what it expects before it fails.
const WAIT: Duration = Duration::from_secs(15);
/// How long "nothing more arrives" is listened for, once everything expected has arrived.
const QUIET: Duration = Duration::from_millis(500);

struct Cluster {
    nats: Nats,
    nodes: Vec<Node>,
}

impl Cluster {
    fn start() -> Cluster {
        let nats = Nats::start();
        // Each node on a server of its own: interest and messages cross routes.
        let nodes = (0..3)
            .map(|i| Node::start(&format!("n{}", i + 1), &nats.urls[i..=i]))
            .collect();
        Cluster { nats, nodes }
    }

    fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].addr()
    }
}

fn run(f: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f);
}

/// One cluster for every scenario, in turn.
#[test]
fn a_cluster_behaves_as_one_broker() {
    let cluster = Cluster::start();
    for n in &cluster.nodes {
        assert_eq!(
            http_status(n.http(), "/ready"),
            200,
            "a node that listens has joined"
        );
    }
    run(async {
        for level in [V311, V5] {
            delivery_counts_are_exact(&cluster, level).await;
            wildcard_and_dollar_rules_hold_across_nodes(&cluster, level).await;
            retained_messages_are_seen_from_every_node(&cluster, level).await;
            a_connect_on_another_node_takes_the_client_over(&cluster, level).await;
            topics_too_long_for_nats_are_refused(&cluster, level).await;
            a_qos2_message_sent_again_is_delivered_once(&cluster, level).await;
        }
        subscribe_then_publish_elsewhere_loses_nothing(&cluster).await;
        a_deleted_node_consumer_is_opened_again(&cluster).await;
    });
    // The cluster's metrics: JetStream write times, what came from other nodes.
    metrics_above_zero(
        &cluster.nodes[0],
        &[
            "tern_cluster_stream_write_seconds_count",
            "tern_cluster_received_total{path=\"core\"}",
            "tern_cluster_received_total{path=\"stream\"}",
        ],
    );
    // `tern cluster status` lists the nodes and the streams with their servers.
    let text = cluster_status(&cluster);
    for node in ["n1", "n2", "n3"] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(node) && l.contains("alive")),
            "{node} alive in:\n{text}"
        );
    }
    assert!(
        text.contains("TERN_t_MSGS") && text.contains("leader"),
        "{text}"
    );
    // A node killed with its clients connected: the survivors publish their wills, once.
    wills_of_a_dead_nodes_clients_are_published(&cluster);
    // A node killed mid-stream, three times: its persistent sessions resume on the survivors.
    for round in 1..=3 {
        sessions_resume_when_their_node_is_killed(&cluster, round);
    }
    // A persistent session taken over between live nodes: nothing acknowledged comes again.
    a_takeover_between_live_nodes_sends_nothing_twice(&cluster);
    // A QoS 2 message sent again to another node after the first died is stored once; QoS 2
    // flows to a subscriber go on where its session resumes.
    a_qos2_message_sent_again_after_its_node_died_is_stored_once(&cluster);
    qos2_flows_to_a_subscriber_go_on_after_its_node_died(&cluster);
    // A shared subscription with members on four nodes is one group.
    a_shared_group_spans_the_nodes(&cluster);
    // A declared queue holds its messages in the cluster until a consumer on any node takes them.
    a_declared_queue_spans_the_nodes(&cluster);
    // What that left: persistent sessions parked on the survivors, the group's consumer, the
    // NATS servers; resumed sessions and open consumers counted.
    let text = cluster_status(&cluster);
    assert!(
        text.lines().any(|l| l.contains("alive")
            && l.split("persistent sessions ")
                .nth(1)
                .is_some_and(|n| n.trim() != "0")),
        "persistent sessions counted in:\n{text}"
    );
    for section in [
        "queues and shared groups",
        "grp/",
        "NATS servers",
        "(connected)",
    ] {
        assert!(text.contains(section), "{section} in:\n{text}");
    }
    metrics_above_zero(
        &cluster.nodes[1],
        &[
            "tern_cluster_sessions_resumed_total",
            "tern_cluster_consumers ",
        ],
    );
    // A second node under a running node's id is refused: each would take the other's
    // ownership claims for its own.
    let log = match Node::start_with(&harness::cluster_section("n1", &cluster.nats.urls[1..2])) {
        Ok(_) => panic!("a second node n1 started"),
        Err(log) => log.join("\n"),
    };
    assert!(log.contains("node_id n1 is in use"), "{log}");
    // The NATS server leading the message stream is killed (kill -9) mid-stream.
    sessions_survive_the_kill_of_the_stream_leader(&cluster);
    for n in &cluster.nodes {
        assert_eq!(n.log_count("panicked"), 0);
    }
}

/// Asserts that each series named (a line's start in `/metrics`) is above 0 on `node`.
fn metrics_above_zero(node: &Node, names: &[&str]) {
    let metrics = http_body(node.http(), "/metrics");
    for name in names {
        let value: f64 = metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics"));
        assert!(value > 0.0, "{name} = {value}");
    }
}

/// What `tern cluster status` prints.
fn cluster_status(cluster: &Cluster) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("status.toml");
    std::fs::write(
        &config,
        harness::cluster_section("status", &cluster.nats.urls),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["--config", config.to_str().unwrap(), "cluster", "status"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The whole response to `GET path`.
fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// The status code of `GET path`.
fn http_status(addr: SocketAddr, path: &str) -> u16 {
    let text = http_get(addr, path);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The body of `GET path`.
fn http_body(addr: SocketAddr, path: &str) -> String {
    let text = http_get(addr, path);
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Receives, acknowledging every flow, until every payload in `expected` has arrived; then
/// listens for [`QUIET`] more. Returns how many times each payload arrived.
async fn collect(
    c: &mut RawClient,
    level: u8,
    expected: &HashSet<Vec<u8>>,
    what: &str,
) -> BTreeMap<Vec<u8>, (usize, Received)> {
    let mut got: BTreeMap<Vec<u8>, (usize, Received)> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let done = expected.iter().all(|p| got.contains_key(p));
        let within = if done {
            QUIET
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        match c.next_event(within).await {
            Event::Packet(first, body) if first == PUBREL => {
                let (pkid, _) = parse_ack(&body);
                c.send(&pubcomp(pkid)).await;
            }
            Event::Packet(first, body) if first & 0xF0 == PUBLISH => {
                let r = parse_publish(level, first, &body);
                match r.qos {
                    1 => c.send(&puback(r.pkid)).await,
                    2 => c.send(&pubrec(r.pkid)).await,
                    _ => {}
                }
                got.entry(r.payload.clone()).or_insert((0, r)).0 += 1;
            }
            Event::Packet(first, _) => panic!("{what}: unexpected packet {first:#04x}"),
            Event::Closed => panic!("{what}: connection closed"),
            Event::Timeout if done => return got,
            Event::Timeout => {
                let missing: Vec<String> = expected
                    .iter()
                    .filter(|p| !got.contains_key(*p))
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect();
                panic!("{what}: {} missing: {missing:?}", missing.len());
            }
        }
    }
}

/// Publishes with the whole flow completed, in order.
async fn publish_flow(
    c: &mut RawClient,
    level: u8,
    topic: &str,
    qos: u8,
    payload: &[u8],
    retain: bool,
) {
    let pkid = 1 + (rand::random::<u16>() % 60_000);
    let p = Publish::new(level, topic, payload)
        .qos(qos, pkid)
        .retain(retain);
    c.send(&p.build()).await;
    match qos {
        0 => {}
        1 => {
            let (id, reason) = parse_ack(&c.recv_expect(PUBACK).await);
            assert_eq!(id, pkid);
            assert!(reason < 0x80, "PUBACK {reason:#04x}");
        }
        _ => {
            let (id, reason) = parse_ack(&c.recv_expect(PUBREC).await);
            assert_eq!(id, pkid);
            assert!(reason < 0x80, "PUBREC {reason:#04x}");
            c.send(&pubrel(pkid)).await;
            parse_ack(&c.recv_expect(PUBCOMP).await);
        }
    }
}

/// Subscribers at QoS 0, 1 and 2 on every node; one publisher per node publishes at QoS 0, 1
/// and 2: each subscriber gets every message, at the lower of the two QoS; QoS 2 exactly once,
/// QoS 1 at least once (and, here, once), QoS 0 all of them (nothing is lost at this rate).
async fn delivery_counts_are_exact(cluster: &Cluster, level: u8) {
    const N: usize = 40;
    let run = rand_suffix();
    let filter = format!("count/{run}/#");
    let mut subs = Vec::new();
    for node in 0..3 {
        for sub_qos in 0..3u8 {
            let mut c = RawClient::connected(
                cluster.addr(node),
                level,
                &format!("cs{node}{sub_qos}-{run}"),
            )
            .await;
            c.subscribe(level, &filter, sub_qos).await;
            subs.push((node, sub_qos, c));
        }
    }
    let mut expected = HashSet::new();
    let mut publishers = Vec::new();
    for node in 0..3 {
        let c = RawClient::connected(cluster.addr(node), level, &format!("cp{node}-{run}")).await;
        publishers.push(c);
    }
    for i in 0..N {
        for (node, p) in publishers.iter_mut().enumerate() {
            for qos in 0..3u8 {
                let payload = format!("n{node}-q{qos}-{i}").into_bytes();
                publish_flow(
                    p,
                    level,
                    &format!("count/{run}/{node}/{qos}"),
                    qos,
                    &payload,
                    false,
                )
                .await;
                expected.insert(payload);
            }
        }
    }
    for (node, sub_qos, c) in &mut subs {
        let what = format!("v{level} subscriber on node {node} at QoS {sub_qos}");
        let got = collect(c, level, &expected, &what).await;
        assert_eq!(got.len(), expected.len(), "{what}: unexpected payloads");
        for (payload, (n, r)) in &got {
            let text = String::from_utf8_lossy(payload);
            let pub_qos: u8 = text.split("-q").nth(1).unwrap()[..1].parse().unwrap();
            assert_eq!(r.qos, pub_qos.min(*sub_qos), "{what}: QoS of {text}");
            assert_eq!(*n, 1, "{what}: {text} arrived {n} times");
        }
    }
}

/// MQTT matching with the `$` rule, written out plainly.
fn mqtt_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let (f, t): (Vec<&str>, Vec<&str>) = (filter.split('/').collect(), topic.split('/').collect());
    for (i, level) in f.iter().enumerate() {
        match *level {
            "#" => return true,
            "+" if i < t.len() => {}
            l if i < t.len() && l == t[i] => {}
            _ => return false,
        }
    }
    f.len() == t.len()
}

/// Filters with wildcards on one node, topics (with `$`, empty levels, dots and spaces)
/// published on another, at QoS 0 (core NATS) and QoS 1 (the stream): each filter gets exactly
/// what MQTT matching gives it.
async fn wildcard_and_dollar_rules_hold_across_nodes(cluster: &Cluster, level: u8) {
    let run = rand_suffix();
    let r = format!("w{run}");
    let filters = [
        "#".to_string(),
        "+/x".to_string(),
        format!("{r}/#"),
        format!("{r}/+"),
        format!("{r}/+/c"),
        format!("{r}//c"),
        format!("${r}/#"),
        format!("+/{r}/#"),
        format!("{r}/a.b/#"),
    ];
    let topics = [
        r.clone(),
        format!("{r}/x"),
        format!("{r}/a/c"),
        format!("{r}//c"),
        format!("{r}/a.b/c"),
        format!("{r}/sp ace"),
        format!("${r}/x"),
        format!("${r}/a/c"),
        format!("/{r}/x"),
        format!("{r}/*"),
        format!("{r}/>"),
        format!("{r}/%25"),
    ];
    let mut subs = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        let mut c = RawClient::connected(cluster.addr(1), level, &format!("wf{i}-{run}")).await;
        c.subscribe(level, f, 1).await;
        subs.push(c);
    }
    let mut p = RawClient::connected(cluster.addr(0), level, &format!("wp-{run}")).await;
    for qos in [0u8, 1] {
        for t in &topics {
            publish_flow(
                &mut p,
                level,
                t,
                qos,
                format!("{qos}|{t}").as_bytes(),
                false,
            )
            .await;
        }
    }
    for (f, c) in filters.iter().zip(subs.iter_mut()) {
        let expected: HashSet<Vec<u8>> = [0u8, 1]
            .iter()
            .flat_map(|qos| {
                topics
                    .iter()
                    .filter(|t| mqtt_matches(f, t))
                    .map(move |t| format!("{qos}|{t}").into_bytes())
            })
            .collect();
        let what = format!("v{level} filter {f}");
        let got = collect(c, level, &expected, &what).await;
        // `#` and `+/x` also see other scenarios' traffic: only this run's topics count.
        let mine: HashSet<Vec<u8>> = got
            .iter()
            .filter(|(_, (_, r))| topics.contains(&r.topic))
            .map(|(p, _)| p.clone())
            .collect();
        assert_eq!(mine, expected, "{what}");
        for (p, (n, r)) in got.iter().filter(|(_, (_, r))| topics.contains(&r.topic)) {
            assert_eq!(*n, 1, "{what}: {} twice", String::from_utf8_lossy(p));
            assert_eq!(r.payload[2..], *r.topic.as_bytes(), "{what}: topic kept");
        }
    }
}

/// A retained message set on one node is what a new subscriber on every node gets; replaced
/// on another node, the replacement; deleted on the third, nothing.
async fn retained_messages_are_seen_from_every_node(cluster: &Cluster, level: u8) {
    let run = rand_suffix();
    let topic = format!("ret/{run}/t");
    let filter = format!("ret/{run}/#");
    let check = |value: Option<&'static [u8]>, step: &'static str| {
        let filter = filter.clone();
        async move {
            for node in 0..3 {
                let id = format!("rs{node}-{}", rand_suffix());
                let mut c = RawClient::connected(cluster.addr(node), level, &id).await;
                c.subscribe(level, &filter, 1).await;
                match value {
                    Some(v) => {
                        let r = c.recv_publish(level).await;
                        assert_eq!(r.payload, v, "{step}: node {node}");
                        assert!(r.retain, "{step}: retain flag on node {node}");
                        c.send(&puback(r.pkid)).await;
                        c.expect_silence(QUIET).await;
                    }
                    None => c.expect_silence(QUIET).await,
                }
                c.send(&disconnect()).await;
            }
        }
    };
    let mut p0 = RawClient::connected(cluster.addr(0), level, &format!("rp0-{run}")).await;
    publish_flow(&mut p0, level, &topic, 1, b"first", true).await;
    check(Some(b"first"), "set").await;
    let mut p1 = RawClient::connected(cluster.addr(1), level, &format!("rp1-{run}")).await;
    publish_flow(&mut p1, level, &topic, 2, b"second", true).await;
    check(Some(b"second"), "replaced").await;
    let mut p2 = RawClient::connected(cluster.addr(2), level, &format!("rp2-{run}")).await;
    publish_flow(&mut p2, level, &topic, 1, b"", true).await;
    check(None, "deleted").await;
    // A QoS 0 retained message is not acknowledged; its publisher subscribing right after it
    // still gets it, as on a single node.
    for trial in 0..20 {
        let own = format!("ret/{run}/own{trial}");
        p2.send(&Publish::new(level, &own, b"mine").retain(true).build())
            .await;
        p2.send(&subscribe(level, 5, &[(&own, 0)], &[])).await;
        let (_, reasons) = parse_suback(level, &p2.recv_expect(SUBACK).await);
        assert!(reasons[0] < 0x80);
        let r = p2.recv_publish(level).await;
        assert_eq!(
            (r.payload.as_slice(), r.retain),
            (&b"mine"[..], true),
            "own retained, trial {trial}"
        );
    }
}

/// A client id connected on one node connects on another: the first connection is told to go
/// (v5 DISCONNECT 0x8E; 3.1.1: closed) within a second, and the second one works.
async fn a_connect_on_another_node_takes_the_client_over(cluster: &Cluster, level: u8) {
    let run = rand_suffix();
    let id = format!("tk-{run}");
    let mut first = RawClient::connected(cluster.addr(0), level, &id).await;
    first.subscribe(level, &format!("tk/{run}"), 1).await;
    let mut second = RawClient::connected(cluster.addr(2), level, &id).await;
    let started = std::time::Instant::now();
    match first.next_event(Duration::from_secs(1)).await {
        Event::Packet(DISCONNECT, body) => {
            assert_eq!(level, V5, "3.1.1 has no DISCONNECT from the server");
            assert_eq!(body.first(), Some(&0x8E), "DISCONNECT reason");
            assert_eq!(
                first.next_event(Duration::from_secs(1)).await,
                Event::Closed
            );
        }
        Event::Closed => assert_eq!(level, V311, "v5 is told why: DISCONNECT 0x8E"),
        other => panic!("first connection not taken over within a second: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    second.ping().await;
    second.subscribe(level, &format!("tk/{run}"), 1).await;
    let mut p = RawClient::connected(cluster.addr(1), level, &format!("tkp-{run}")).await;
    assert_round_trip(&mut p, &mut second, level, &format!("tk/{run}")).await;
}

/// A QoS 2 PUBLISH sent again (DUP) before PUBREL is stored once cluster-wide: the subscriber on
/// another node gets it once.
async fn a_qos2_message_sent_again_is_delivered_once(cluster: &Cluster, level: u8) {
    let run = rand_suffix();
    let topic = format!("once/{run}");
    let mut s = RawClient::connected(cluster.addr(1), level, &format!("os-{run}")).await;
    s.subscribe(level, &topic, 2).await;
    let mut p = RawClient::connected(cluster.addr(0), level, &format!("op-{run}")).await;
    let first = Publish::new(level, &topic, b"once").qos(2, 7);
    p.send(&first.build()).await;
    assert_eq!(parse_ack(&p.recv_expect(PUBREC).await).0, 7);
    p.send(&first.dup(true).build()).await;
    assert_eq!(parse_ack(&p.recv_expect(PUBREC).await).0, 7);
    p.send(&pubrel(7)).await;
    parse_ack(&p.recv_expect(PUBCOMP).await);
    publish_flow(&mut p, level, &topic, 2, b"fence", false).await;
    let expected: HashSet<Vec<u8>> = [b"once".to_vec(), b"fence".to_vec()].into();
    let got = collect(&mut s, level, &expected, "QoS 2 sent twice").await;
    assert_eq!(got[&b"once".to_vec()].0, 1, "delivered once");
}

/// A payload larger than the NATS servers accept is refused, not truncated: v5 DISCONNECT
/// 0x95 (Packet too large); 3.1.1 closed.
#[test]
fn payloads_too_large_for_nats_are_refused() {
    let (new, _) = harness::binaries();
    let server = Single::start_with(new, "max_payload: 65536\n");
    let section = harness::cluster_section("small", std::slice::from_ref(&server.url))
        .replace("replicas = 3", "replicas = 1");
    let node = Node::start_with(&section).unwrap_or_else(|log| panic!("{}", log.join("\n")));
    run(async {
        for level in [V311, V5] {
            let mut c = RawClient::connected(node.addr(), level, &format!("big{level}")).await;
            c.send(&publish(level, "big", 1, 3, &vec![b'x'; 100_000]))
                .await;
            match c.next_event(WAIT).await {
                Event::Packet(DISCONNECT, body) => {
                    assert_eq!(level, V5);
                    assert_eq!(body.first(), Some(&0x95));
                }
                Event::Closed => assert_eq!(level, V311),
                other => panic!("v{level}: {other:?}"),
            }
            // What fits still goes through.
            let mut s = RawClient::connected(node.addr(), level, &format!("fits-s{level}")).await;
            s.subscribe(level, "fits", 1).await;
            let mut p = RawClient::connected(node.addr(), level, &format!("fits-p{level}")).await;
            assert_round_trip(&mut p, &mut s, level, "fits").await;
        }
    });
}

/// A topic that does not fit a NATS subject once escaped is refused, not truncated: v5 PUBACK
/// 0x90; 3.1.1, which cannot refuse a message, closes the connection.
async fn topics_too_long_for_nats_are_refused(cluster: &Cluster, level: u8) {
    let topic = format!("long/{}", ".".repeat(1200));
    let mut c =
        RawClient::connected(cluster.addr(0), level, &format!("tl-{}", rand_suffix())).await;
    c.send(&publish(level, &topic, 1, 9, b"x")).await;
    if level == V5 {
        let (pkid, reason) = parse_ack(&c.recv_expect(PUBACK).await);
        assert_eq!((pkid, reason), (9, 0x90));
        c.ping().await;
    } else {
        assert_eq!(c.next_event(WAIT).await, Event::Closed);
    }
}

/// The race the SUBACK barrier closes: a subscriber on one node gets its SUBACK, and at once a
/// publisher on another node publishes a QoS 0 message to the new topic. Measured without a
/// barrier, two thirds of those were lost; here none of 200 may be.
async fn subscribe_then_publish_elsewhere_loses_nothing(cluster: &Cluster) {
    let run = rand_suffix();
    let mut lost = Vec::new();
    for (trial, level) in (0..200).map(|t| (t, if t % 2 == 0 { V311 } else { V5 })) {
        let (s_node, p_node) = (trial % 3, (trial + 1) % 3);
        let mut s =
            RawClient::connected(cluster.addr(s_node), level, &format!("race-s{trial}-{run}"))
                .await;
        let mut p =
            RawClient::connected(cluster.addr(p_node), level, &format!("race-p{trial}-{run}"))
                .await;
        let topic = format!("race/{run}/{trial}");
        s.subscribe(level, &topic, 0).await;
        p.send(&publish(level, &topic, 0, 0, b"first")).await;
        match s.next_event(Duration::from_secs(5)).await {
            Event::Packet(first, body) if first & 0xF0 == PUBLISH => {
                assert_eq!(parse_publish(level, first, &body).payload, b"first");
            }
            _ => lost.push(trial),
        }
        s.send(&disconnect()).await;
        p.send(&disconnect()).await;
    }
    assert!(lost.is_empty(), "first messages lost in trials {lost:?}");
}

/// A node's consumer on the message stream deleted from outside (by an operator, or lost by
/// JetStream): the node opens it again from the message after the last one it read, and
/// nothing published meanwhile is lost.
async fn a_deleted_node_consumer_is_opened_again(cluster: &Cluster) {
    let run = rand_suffix();
    let topic = format!("reopen/{run}");
    let mut s = RawClient::connected(cluster.addr(1), V5, &format!("ro-s-{run}")).await;
    s.subscribe(V5, &topic, 1).await;
    let mut p = RawClient::connected(cluster.addr(0), V5, &format!("ro-p-{run}")).await;
    publish_flow(&mut p, V5, &topic, 1, b"before", false).await;
    let nats = async_nats::connect(cluster.nats.urls[0].as_str())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(nats);
    js.delete_consumer_from_stream("node-n2", "TERN_t_MSGS")
        .await
        .unwrap();
    let mut expected: HashSet<Vec<u8>> = [b"before".to_vec()].into();
    for i in 0..50 {
        let payload = format!("after-{i}").into_bytes();
        publish_flow(&mut p, V5, &topic, 1, &payload, false).await;
        expected.insert(payload);
    }
    let got = collect(&mut s, V5, &expected, "after the consumer was deleted").await;
    assert_eq!(got.len(), expected.len());
}

/// A fourth node, with clients that have wills, is killed (kill -9): one survivor publishes each
/// will that was due (3.1.1; v5 with a Will Delay), exactly once, within 15 s; a client that
/// left with DISCONNECT before has no will published.
fn wills_of_a_dead_nodes_clients_are_published(cluster: &Cluster) {
    let n4 = Node::start("n4", &cluster.nats.urls[2..3]);
    let run_id = rand_suffix();
    let topic = |t: &str| format!("will/{run_id}/{t}");
    let (v3, v5, ok) = (topic("v3"), topic("v5"), topic("ok"));
    run(async {
        let mut s = RawClient::connected(cluster.addr(0), V5, &format!("wsub-{run_id}")).await;
        s.subscribe(V5, &topic("#"), 1).await;
        let mut held = Vec::new();
        let c = Connect::new(V311, &format!("w3-{run_id}")).will(Will::new(&v3, b"gone-v3"));
        held.push(RawClient::handshake(n4.addr(), V311, &c).await.0);
        let mut w = Will::new(&v5, b"gone-v5");
        w.props = prop_u32(WILL_DELAY, 2);
        let c = Connect::new(V5, &format!("w5-{run_id}"))
            .will(w)
            .props(prop_u32(SESSION_EXPIRY, 60));
        held.push(RawClient::handshake(n4.addr(), V5, &c).await.0);
        let c = Connect::new(V5, &format!("wok-{run_id}")).will(Will::new(&ok, b"never"));
        let (mut leaving, _) = RawClient::handshake(n4.addr(), V5, &c).await;
        leaving.send(&disconnect()).await;
        assert_eq!(leaving.next_event(WAIT).await, Event::Closed);
        let killed = std::time::Instant::now();
        n4.kill9();
        let expected: HashSet<Vec<u8>> = [b"gone-v3".to_vec(), b"gone-v5".to_vec()].into();
        let got = collect(&mut s, V5, &expected, "wills of a dead node's clients").await;
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "{:?}",
            killed.elapsed()
        );
        assert_eq!(got.len(), 2, "only the wills due: {:?}", got.keys());
        for (p, (n, _)) in &got {
            assert_eq!(*n, 1, "{} published {n} times", String::from_utf8_lossy(p));
        }
        drop(held);
    });
}

/// A NATS server older than 2.11 is refused at start, with the reason.
#[test]
fn an_old_nats_server_is_refused() {
    let (_, old) = harness::binaries();
    let server = Single::start(old);
    let section = harness::cluster_section("old", std::slice::from_ref(&server.url))
        .replace("replicas = 3", "replicas = 1");
    let log = match Node::start_with(&section) {
        Ok(_) => panic!("tern started on nats-server 2.9.10"),
        Err(log) => log,
    };
    let text = log.join("\n");
    assert!(
        text.contains("version 2.9.10") && text.contains("needs 2.11 or later"),
        "{text}"
    );
}

/// Without a JetStream quorum (two of three NATS servers killed) a node acknowledges nothing: a
/// QoS 1 PUBLISH gets DISCONNECT 0x88, a CONNECT gets CONNACK 0x88 / 0x03, `/ready` answers 503;
/// with the servers back it answers 200 again.
#[test]
fn without_a_quorum_nothing_is_acknowledged_and_ready_says_so() {
    let nats = Nats::start();
    let node = Node::start("q1", &nats.urls[0..1]);
    assert_eq!(http_status(node.http(), "/ready"), 200);
    // Without a quorum a QoS 1 message is never acknowledged: v5 PUBACK 0x83 and DISCONNECT
    // 0x88 once unavailable_timeout_secs (5) have passed; a CONNECT cannot claim its client id: CONNACK
    // 0x88 (v5) / 0x03 (3.1.1).
    run(async {
        let mut p = RawClient::connected(node.addr(), V5, "q-pub").await;
        nats.kill9(1);
        nats.kill9(2);
        p.send(&publish(V5, "q/x", 1, 4, b"unstored")).await;
        match p.next_event(Duration::from_secs(20)).await {
            Event::Packet(PUBACK, body) => assert_eq!(parse_ack(&body), (4, 0x83)),
            other => panic!("without a quorum, PUBACK 0x83 expected: {other:?}"),
        }
        match p.next_event(Duration::from_secs(5)).await {
            Event::Packet(DISCONNECT, body) => assert_eq!(body.first(), Some(&0x88)),
            other => panic!("without a quorum: {other:?}"),
        }
        for (level, code) in [(V5, 0x88), (V311, 0x03)] {
            let (_, ack) =
                RawClient::try_handshake(node.addr(), level, &Connect::new(level, "q-c")).await;
            assert_eq!(ack.reason, code, "v{level} CONNACK without a quorum");
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while http_status(node.http(), "/ready") != 503 {
        assert!(
            std::time::Instant::now() < deadline,
            "/ready still 200 without a quorum"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    nats.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while http_status(node.http(), "/ready") != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "/ready not 200 with the quorum back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A node with persistent subscribers (3.1.1 and v5, at QoS 1 and 2, one with a will) is killed
/// (kill -9) while a publisher on another node sends QoS 1 and 2 messages: each subscriber
/// connects to a survivor, gets Session Present within 10 s of the kill, and then every
/// acknowledged message (duplicates allowed: a death makes QoS 2 at least once); the will is
/// published.
fn sessions_resume_when_their_node_is_killed(cluster: &Cluster, round: usize) {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use survive::{publish_acked, Subscriber, RESUMED_WITHIN};
    let node = Node::start(&format!("k{round}"), &cluster.nats.urls);
    let run_id = rand_suffix();
    let will_topic = format!("survwill/{run_id}");
    let (doomed, survivors) = (node.addr(), [cluster.addr(1), cluster.addr(2)]);
    run(async {
        let stop = Arc::new(AtomicBool::new(false));
        let mut watcher = RawClient::connected(cluster.addr(0), V5, &format!("sw-{run_id}")).await;
        watcher.subscribe(V5, &will_topic, 1).await;
        let mut subs = Vec::new();
        for (i, level) in [V311, V5, V311, V5].into_iter().enumerate() {
            let addrs = vec![doomed, survivors[i % 2], survivors[(i + 1) % 2]];
            let will = (i == 1).then(|| Will::new(&will_topic, b"gone"));
            let filter = format!("surv/{run_id}/#");
            let id = format!("ss{i}-{run_id}");
            let qos = 1 + (i / 2) as u8;
            let s = Subscriber::start(id, level, addrs, (filter, qos), will, Arc::clone(&stop));
            subs.push(s.await);
        }
        let killed = Arc::new(parking_lot::Mutex::new(None));
        let k = Arc::clone(&killed);
        let topic = format!("surv/{run_id}/data");
        let acked = publish_acked(
            cluster.addr(0),
            &format!("sp-{run_id}"),
            &topic,
            400,
            move || {
                *k.lock() = Some(std::time::Instant::now());
                node.kill9();
            },
        )
        .await;
        let killed = killed.lock().expect("killed halfway");
        assert!(
            acked.len() >= 300,
            "round {round}: only {} acknowledged",
            acked.len()
        );
        for s in &subs {
            let missing = s.wait_for(&acked, Duration::from_secs(20)).await;
            if !missing.is_empty() {
                for n in &cluster.nodes {
                    for l in n
                        .log_lines()
                        .iter()
                        .filter(|l| l.contains(&run_id) || l.contains("WARN"))
                    {
                        eprintln!("{l}");
                    }
                }
            }
            assert!(
                missing.is_empty(),
                "round {round}: {} (v{}) misses {} of {} acknowledged messages: {:?}",
                s.id,
                s.level,
                missing.len(),
                acked.len(),
                &missing[..missing.len().min(10)]
            );
            let resumed = s.resumed.lock().clone();
            assert_eq!(resumed.len(), 1, "round {round}: {} reconnected once", s.id);
            let (at, present) = resumed[0];
            assert!(present, "round {round}: {}: Session Present", s.id);
            assert!(
                at.duration_since(killed) < RESUMED_WITHIN,
                "round {round}: {} resumed {:?} after the kill",
                s.id,
                at.duration_since(killed)
            );
        }
        let will = watcher.next_event(Duration::from_secs(15)).await;
        match will {
            Event::Packet(first, body) if first & 0xF0 == PUBLISH => {
                assert_eq!(parse_publish(V5, first, &body).payload, b"gone");
            }
            other => panic!("round {round}: will not published: {other:?}"),
        }
        stop.store(true, std::sync::atomic::Ordering::Release);
        for s in subs {
            s.finish().await;
        }
    });
}

/// The NATS server that leads the message stream is killed (kill -9) while a publisher on one
/// node sends QoS 1 and 2 messages to persistent QoS 2 subscribers on another (both nodes know
/// every NATS server): every acknowledged message reaches every subscriber.
fn sessions_survive_the_kill_of_the_stream_leader(cluster: &Cluster) {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use survive::{publish_acked, Subscriber};
    let status = cluster_status(cluster);
    let leader = status
        .lines()
        .find(|l| l.contains("TERN_t_MSGS"))
        .and_then(|l| l.split("leader ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no leader in:\n{status}"))
        .to_string();
    let index: usize = leader
        .trim_start_matches('n')
        .parse::<usize>()
        .unwrap_or_else(|_| panic!("leader {leader}"))
        - 1;
    let (j1, j2) = (
        Node::start("j1", &cluster.nats.urls),
        Node::start("j2", &cluster.nats.urls),
    );
    let run_id = rand_suffix();
    run(async {
        let stop = Arc::new(AtomicBool::new(false));
        let mut subs = Vec::new();
        for (i, level) in [V311, V5].into_iter().enumerate() {
            let id = format!("ls{i}-{run_id}");
            let filter = format!("lead/{run_id}/#");
            let addrs = vec![j2.addr(), j1.addr()];
            let s = Subscriber::start(id, level, addrs, (filter, 2), None, Arc::clone(&stop));
            subs.push(s.await);
        }
        let topic = format!("lead/{run_id}/data");
        let acked = publish_acked(j1.addr(), &format!("lp-{run_id}"), &topic, 400, || {
            cluster.nats.kill9(index)
        })
        .await;
        assert!(acked.len() >= 200, "only {} acknowledged", acked.len());
        for s in &subs {
            let missing = s.wait_for(&acked, Duration::from_secs(30)).await;
            assert!(
                missing.is_empty(),
                "{} misses {} of {} acknowledged messages after the stream leader died: {:?}",
                s.id,
                missing.len(),
                acked.len(),
                &missing[..missing.len().min(10)]
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Release);
        for s in subs {
            s.finish().await;
        }
    });
    // The server stays down: this is the file's last scenario (its catching up after a
    // restart is NATS's, and took over 60 s once under the other tests' load).
    for n in [&j1, &j2] {
        assert_eq!(n.log_count("panicked"), 0);
    }
}

/// A shared subscription's group with members on four nodes (3.1.1 and v5): each QoS 1
/// message goes to one member cluster-wide, and every member gets a share. Then one member's
/// connection is lost and one node is killed (kill -9) mid-stream: every acknowledged message
/// still reaches a member, more than once only if it was in flight to the one that went.
fn a_shared_group_spans_the_nodes(cluster: &Cluster) {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use survive::{gathered, publish_acked, Member};
    let extra = Node::start("g4", &cluster.nats.urls);
    let run_id = rand_suffix();
    let filter = format!("$share/g{run_id}/grp/{run_id}/#");
    let topic = format!("grp/{run_id}/x");
    run(async {
        let stop = Arc::new(AtomicBool::new(false));
        let addrs = [
            cluster.addr(0),
            cluster.addr(1),
            cluster.addr(2),
            extra.addr(),
        ];
        let mut members = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let level = if i % 2 == 0 { V5 } else { V311 };
            let id = format!("gm{i}-{run_id}");
            members.push(Member::start(*addr, level, &id, &filter, Arc::clone(&stop)).await);
        }
        let acked =
            publish_acked(cluster.addr(0), &format!("gp-{run_id}"), &topic, 200, || {}).await;
        let all: Vec<&Member> = members.iter().collect();
        let got = gathered(&all, &acked, WAIT).await;
        let missing = acked.iter().filter(|p| !got.contains_key(*p)).count();
        assert_eq!(
            missing,
            0,
            "{missing} of {} acknowledged messages reached no member",
            acked.len()
        );
        let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "delivered more than once: {}",
            twice.len()
        );
        let shares: Vec<usize> = members.iter().map(Member::count).collect();
        assert!(
            shares.iter().all(|n| *n > 0),
            "every member gets a share: {shares:?}"
        );
        // QoS 0 too goes to one member cluster-wide, from a node with no member of its own
        // once the group is known there (probes until one arrives).
        let mut p0 = RawClient::connected(cluster.addr(2), V5, &format!("gq0-{run_id}")).await;
        let probes = tokio::time::Instant::now() + WAIT;
        let total = |ms: &[Member]| ms.iter().map(Member::count).sum::<usize>();
        let counted = total(&members);
        while total(&members) == counted {
            assert!(
                tokio::time::Instant::now() < probes,
                "QoS 0 never reached the group"
            );
            p0.send(&publish(V5, &format!("grp/{run_id}/probe"), 0, 0, b"probe"))
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let zero: Vec<Vec<u8>> = (0..100).map(|i| format!("q0-{i}").into_bytes()).collect();
        for z in &zero {
            p0.send(&publish(V5, &topic, 0, 0, z)).await;
        }
        let got = gathered(&all, &zero, WAIT).await;
        let missing = zero.iter().filter(|p| !got.contains_key(*p)).count();
        let twice = zero
            .iter()
            .filter(|p| got.get(*p).is_some_and(|n| *n > 1))
            .count();
        assert_eq!(
            (missing, twice),
            (0, 0),
            "QoS 0 to the group: missing, duplicated"
        );
        let takers = members
            .iter()
            .filter(|m| m.got.lock().keys().any(|p| p.starts_with(b"q0-")))
            .count();
        assert!(takers >= 2, "QoS 0 shares reached {takers} member(s)");
        // A member's connection is lost and a node dies, mid-stream.
        let before: Vec<usize> = members.iter().map(Member::count).collect();
        members[1].drop_connection();
        let acked = publish_acked(
            cluster.addr(0),
            &format!("gp2-{run_id}"),
            &topic,
            300,
            move || {
                extra.kill9();
            },
        )
        .await;
        // What the member on the dead node had (and acknowledged) before it died counts.
        let all: Vec<&Member> = members.iter().collect();
        let got = gathered(&all, &acked, Duration::from_secs(30)).await;
        let missing: Vec<_> = acked.iter().filter(|p| !got.contains_key(*p)).collect();
        assert!(
            missing.is_empty(),
            "{} of {} acknowledged messages lost with a member and a node: {:?}",
            missing.len(),
            acked.len(),
            missing
                .iter()
                .take(5)
                .map(|p| String::from_utf8_lossy(p))
                .collect::<Vec<_>>()
        );
        eprintln!(
            "group shares before: {before:?}; after: {:?}",
            members.iter().map(Member::count).collect::<Vec<_>>()
        );
        stop.store(true, std::sync::atomic::Ordering::Release);
        for m in members {
            m.finish().await;
        }
    });
}

/// Polls `GET /ready` of `node` until it answers `status` (at most `within`).
async fn wait_ready(node: &Node, status: u16, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while http_status(node.http(), "/ready") != status {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/ready not {status} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One NATS server is cut off from the other two (its routes dropped): on the node that uses
/// only it, a QoS 1 message is refused (v5 PUBACK 0x83, DISCONNECT 0x88), a CONNECT is refused
/// (0x88 / 0x03) and `/ready` says 503, while QoS 0 still flows between its connected clients;
/// the majority side carries on, and a client id taken over there while its old connection sat
/// on the minority side has one owner once the partition heals: the old connection is told
/// to go (0x8E). Every message acknowledged meanwhile reaches a minority-side subscriber after
/// (the majority took its silent node's clients over: it connects again, and resumes).
#[test]
fn a_minority_partition_refuses_and_heals_with_one_owner() {
    let (new, _) = harness::binaries();
    let nats = partition::Splittable::start(new);
    let u = &nats.urls;
    let p1 = Node::start("p1", &[u[0].clone(), u[1].clone()]);
    let p2 = Node::start("p2", &[u[1].clone(), u[0].clone()]);
    let p3 = Node::start("p3", &u[2..3]);
    let run_id = rand_suffix();
    let topic = |t: &str| format!("part/{run_id}/{t}");
    run(async {
        // Before the partition: on the minority-side node, a client that will be taken over
        // elsewhere, and a persistent subscriber.
        let persistent = |id: &str| {
            Connect::new(V5, id)
                .clean(false)
                .props(prop_u32(SESSION_EXPIRY, 300))
        };
        let owned = format!("po-{run_id}");
        let (mut old, _) = RawClient::handshake(p3.addr(), V5, &persistent(&owned)).await;
        let (mut sub, _) =
            RawClient::handshake(p3.addr(), V5, &persistent(&format!("ps-{run_id}"))).await;
        sub.subscribe(V5, &topic("#"), 1).await;
        let mut q1 = RawClient::connected(p3.addr(), V5, &format!("pq-{run_id}")).await;
        nats.isolate(2, true);
        wait_ready(&p3, 503, Duration::from_secs(30)).await;
        // Minority: QoS 1 refused, CONNECT refused (no client id can be owned without the
        // quorum), QoS 0 between connected clients.
        q1.send(&publish(V5, &topic("minority"), 1, 9, b"refused"))
            .await;
        match q1.next_event(Duration::from_secs(20)).await {
            Event::Packet(PUBACK, body) => assert_eq!(parse_ack(&body), (9, 0x83)),
            other => panic!("minority QoS 1: PUBACK 0x83 expected, got {other:?}"),
        }
        q1.expect_disconnect(0x88).await;
        for (level, code) in [(V5, 0x88), (V311, 0x03)] {
            let c = Connect::new(level, &format!("pc{level}-{run_id}")).clean(false);
            let (_, ack) = RawClient::try_handshake(p3.addr(), level, &c).await;
            assert_eq!(ack.reason, code, "v{level} CONNACK on the minority side");
        }
        old.send(&publish(V5, &topic("zero"), 0, 0, b"within"))
            .await;
        let r = sub.recv_publish(V5).await;
        assert_eq!(r.payload, b"within", "QoS 0 within the minority side");
        // Majority: the client id is taken over, and QoS 1 messages are acknowledged.
        let (mut new_owner, _) = RawClient::handshake(p1.addr(), V5, &persistent(&owned)).await;
        let acked =
            survive::publish_acked(p1.addr(), &format!("pp-{run_id}"), &topic("q"), 20, || {})
                .await;
        assert_eq!(acked.len(), 20, "the majority side acknowledges");
        // Healed: the old connection is told to go, the subscriber gets what was acknowledged.
        nats.isolate(2, false);
        wait_ready(&p3, 200, Duration::from_secs(60)).await;
        match old.next_event(Duration::from_secs(30)).await {
            Event::Packet(DISCONNECT, body) => assert_eq!(body.first(), Some(&0x8E)),
            other => panic!("the minority-side connection of a client owned elsewhere: {other:?}"),
        }
        new_owner.send(&pingreq()).await;
        match new_owner.next_event(Duration::from_secs(30)).await {
            Event::Packet(PINGRESP, _) => {}
            other => panic!(
                "the majority-side owner after the heal: {other:?}\np1:\n{}\np2:\n{}\np3:\n{}",
                p1.log_lines().join("\n"),
                p2.log_lines().join("\n"),
                p3.log_lines().join("\n")
            ),
        }
        let mut got = std::collections::HashSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while acked.iter().any(|p| !got.contains(p)) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match sub.next_event(left).await {
                Event::Packet(first, body) if first & 0xF0 == PUBLISH => {
                    let p = parse_publish(V5, first, &body);
                    if p.qos == 1 {
                        sub.send(&puback(p.pkid)).await;
                    }
                    got.insert(p.payload);
                }
                Event::Packet(DISCONNECT, _) | Event::Closed => {
                    // The majority took the silent node's clients over meanwhile: the client
                    // connects again and resumes its session.
                    let c = persistent(&format!("ps-{run_id}"));
                    sub = loop {
                        let (client, ack) = RawClient::try_handshake(p3.addr(), V5, &c).await;
                        if ack.reason == 0 {
                            assert!(ack.session_present, "the session survived the partition");
                            break client;
                        }
                        assert!(tokio::time::Instant::now() < deadline, "not let in again");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    };
                }
                Event::Packet(..) => {}
                other => panic!(
                    "{} of {} acknowledged messages missing after the heal: {other:?}",
                    acked.iter().filter(|p| !got.contains(*p)).count(),
                    acked.len()
                ),
            }
        }
    });
    for n in [&p1, &p3] {
        assert_eq!(n.log_count("panicked"), 0);
    }
}

/// Two nodes declare the same queue: what is published on the first while no consumer exists
/// anywhere waits in the cluster; a consumer on the second takes all of it, each once, and
/// what comes after.
fn a_declared_queue_spans_the_nodes(cluster: &Cluster) {
    let run_id = rand_suffix();
    let section = |id: &str| {
        format!(
            "{}\n[[queues]]\nname = \"jobs\"\nfilter = \"jobs/{run_id}/#\"\n",
            harness::cluster_section(id, &cluster.nats.urls)
        )
    };
    let start = |id: &str| {
        Node::start_with(&section(id))
            .unwrap_or_else(|log| panic!("node {id} did not start:\n{}", log.join("\n")))
    };
    let (q1, q2) = (start("q1"), start("q2"));
    let topic = format!("jobs/{run_id}/x");
    run(async {
        let before =
            survive::publish_acked(q1.addr(), &format!("jp-{run_id}"), &topic, 50, || {}).await;
        let mut worker = RawClient::connected(q2.addr(), V5, &format!("jw-{run_id}")).await;
        worker.subscribe(V5, "$queue/jobs", 1).await;
        let after =
            survive::publish_acked(q1.addr(), &format!("jp2-{run_id}"), &topic, 50, || {}).await;
        let expected: HashSet<Vec<u8>> = before.into_iter().chain(after).collect();
        let got = collect(&mut worker, V5, &expected, "a declared queue across nodes").await;
        assert_eq!(got.len(), expected.len(), "only the queue's messages");
        assert!(got.values().all(|(n, _)| *n == 1), "each once");
    });
    for n in [&q1, &q2] {
        assert_eq!(n.log_count("panicked"), 0);
    }
}

/// A persistent v5 publisher sends a QoS 2 message to a node that dies (kill -9) after it
/// stored the message, and sends it again (DUP, same packet id, as a client does that did not
/// get the PUBREC) to another node, where it resumes its session: the subscriber gets it once,
/// and the PUBREL there completes the flow (PUBCOMP 0x00: the id was known).
fn a_qos2_message_sent_again_after_its_node_died_is_stored_once(cluster: &Cluster) {
    let node = Node::start("x1", &cluster.nats.urls);
    let run_id = rand_suffix();
    let topic = format!("q2x/{run_id}");
    run(async {
        let mut s = RawClient::connected(cluster.addr(1), V5, &format!("q2s-{run_id}")).await;
        s.subscribe(V5, &topic, 2).await;
        let c = Connect::new(V5, &format!("q2p-{run_id}")).props(prop_u32(SESSION_EXPIRY, 300));
        let (mut p, _) = RawClient::handshake(node.addr(), V5, &c).await;
        let first = Publish::new(V5, &topic, b"across").qos(2, 7);
        p.send(&first.build()).await;
        assert_eq!(parse_ack(&p.recv_expect(PUBREC).await), (7, 0));
        node.kill9();
        let (mut p, ack) = RawClient::handshake(cluster.addr(0), V5, &c.clean(false)).await;
        assert!(ack.session_present, "the publisher's session resumed");
        p.send(&first.dup(true).build()).await;
        assert_eq!(parse_ack(&p.recv_expect(PUBREC).await), (7, 0));
        p.send(&pubrel(7)).await;
        assert_eq!(
            parse_ack(&p.recv_expect(PUBCOMP).await),
            (7, 0),
            "PUBREL of a known id"
        );
        publish_flow(&mut p, V5, &topic, 2, b"fence", false).await;
        let expected: HashSet<Vec<u8>> = [b"across".to_vec(), b"fence".to_vec()].into();
        let got = collect(&mut s, V5, &expected, "QoS 2 sent again to another node").await;
        assert_eq!(got[&b"across".to_vec()].0, 1, "stored once");
    });
}

/// A persistent v5 subscriber at QoS 2 on a node that dies (kill -9) had completed two QoS 2
/// flows, left one at PUBREL (PUBCOMP not sent) and one unanswered (PUBREC not sent). Where it
/// resumes, it gets PUBREL for the first, the second again under the same packet id with DUP,
/// and none of the others again: each message once.
fn qos2_flows_to_a_subscriber_go_on_after_its_node_died(cluster: &Cluster) {
    let node = Node::start("x2", &cluster.nats.urls);
    let run_id = rand_suffix();
    let topic = format!("q2o/{run_id}");
    run(async {
        let c = Connect::new(V5, &format!("q2o-{run_id}")).props(prop_u32(SESSION_EXPIRY, 300));
        let (mut s, _) = RawClient::handshake(node.addr(), V5, &c).await;
        s.subscribe(V5, &topic, 2).await;
        let mut p = RawClient::connected(cluster.addr(0), V5, &format!("q2op-{run_id}")).await;
        for b in ["b0", "b1", "b2", "b3"] {
            publish_flow(&mut p, V5, &topic, 2, b.as_bytes(), false).await;
        }
        let mut pkid_of: BTreeMap<Vec<u8>, u16> = BTreeMap::new();
        let (mut at_pubrel, mut unanswered) = (None, None);
        while at_pubrel.is_none() || unanswered.is_none() {
            match s.next_event(WAIT).await {
                Event::Packet(first, body) if first & 0xF0 == PUBLISH => {
                    let r = parse_publish(V5, first, &body);
                    pkid_of.insert(r.payload.clone(), r.pkid);
                    if r.payload == b"b3" {
                        unanswered = Some(r.pkid);
                    } else {
                        s.send(&pubrec(r.pkid)).await;
                    }
                }
                Event::Packet(PUBREL, body) => {
                    let id = parse_ack(&body).0;
                    if pkid_of.get(&b"b2"[..]) == Some(&id) {
                        at_pubrel = Some(id);
                    } else {
                        s.send(&pubcomp(id)).await;
                    }
                }
                other => panic!("QoS 2 flows before the kill: {other:?}"),
            }
        }
        node.kill9();
        let (mut s, ack) = RawClient::handshake(cluster.addr(1), V5, &c.clean(false)).await;
        assert!(ack.session_present, "the subscriber's session resumed");
        publish_flow(&mut p, V5, &topic, 2, b"b4", false).await;
        let (mut released, mut again, mut fence) = (false, false, false);
        while !(released && again && fence) {
            match s.next_event(WAIT).await {
                Event::Packet(PUBREL, body) => {
                    let id = parse_ack(&body).0;
                    released |= Some(id) == at_pubrel;
                    s.send(&pubcomp(id)).await;
                }
                Event::Packet(first, body) if first & 0xF0 == PUBLISH => {
                    let r = parse_publish(V5, first, &body);
                    match &r.payload[..] {
                        b"b3" => {
                            assert!(!again, "b3 twice after the resume");
                            assert_eq!((Some(r.pkid), r.dup), (unanswered, true), "b3 again");
                            again = true;
                        }
                        b"b4" => fence = true,
                        other => panic!("{} sent again", String::from_utf8_lossy(other)),
                    }
                    s.send(&pubrec(r.pkid)).await;
                }
                other => panic!("QoS 2 flows after the resume: {other:?}"),
            }
        }
    });
}

/// A persistent v5 subscriber acknowledges 50 QoS 1 messages on one node and at once connects
/// on another (a takeover between live nodes, well within the second between two writes of
/// its floor): the new node gets the session's exact state from the old one, so nothing the
/// subscriber acknowledged comes again; what is published next does.
fn a_takeover_between_live_nodes_sends_nothing_twice(cluster: &Cluster) {
    let run_id = rand_suffix();
    let topic = format!("hand/{run_id}");
    run(async {
        let c = Connect::new(V5, &format!("ho-{run_id}")).props(prop_u32(SESSION_EXPIRY, 300));
        let (mut first, _) = RawClient::handshake(cluster.addr(0), V5, &c).await;
        first.subscribe(V5, &topic, 1).await;
        let mut p = RawClient::connected(cluster.addr(2), V5, &format!("hop-{run_id}")).await;
        let sent: HashSet<Vec<u8>> = (0..50).map(|i| format!("h{i}").into_bytes()).collect();
        for i in 0..50 {
            publish_flow(&mut p, V5, &topic, 1, format!("h{i}").as_bytes(), false).await;
        }
        let got = collect(&mut first, V5, &sent, "before the takeover").await;
        assert_eq!(got.len(), 50);
        let (mut second, ack) = RawClient::handshake(cluster.addr(1), V5, &c.clean(false)).await;
        assert!(ack.session_present);
        publish_flow(&mut p, V5, &topic, 1, b"after", false).await;
        let expected: HashSet<Vec<u8>> = [b"after".to_vec()].into();
        let got = collect(&mut second, V5, &expected, "after the takeover").await;
        let again: Vec<String> = got
            .keys()
            .filter(|k| k.as_slice() != b"after")
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        assert!(
            again.is_empty(),
            "acknowledged before the takeover, sent again: {again:?}"
        );
    });
}
