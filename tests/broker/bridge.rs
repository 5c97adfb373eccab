//! Bridges between brokers on loopback: forwarding both ways with prefixes at every QoS, the
//! link's state in `$SYS`, no loops when two brokers bridge the same topics both ways, and
//! store-and-forward while the remote is away.

use rumqttc::QoS;
use tern::config::{BridgeConfig, Direction, TopicRule};

use crate::child::ChildBroker;
use crate::harness::{TestBroker, WAIT};
use crate::ops::wait_for;
use crate::rmq::V4;
use crate::wire::{
    parse_ack, parse_publish, pubrel, Publish, RawClient, CONNACK, CONNECT, PUBACK, PUBCOMP,
    PUBREC, SUBACK, SUBSCRIBE, V311, V5,
};

/// A bridge named `name` to `port` with `topics` (everything else at its default).
pub fn bridge(name: &str, port: u16, topics: Vec<TopicRule>) -> BridgeConfig {
    let toml = format!(
        "name = \"{name}\"\naddresses = [\"127.0.0.1:{port}\"]\nreconnect_min_ms = 50\nreconnect_max_ms = 500\ntopics = []\n"
    );
    let mut b: BridgeConfig = toml::from_str(&toml).unwrap();
    b.topics = topics;
    b
}

pub fn rule(pattern: &str, direction: Direction, qos: u8, local: &str, remote: &str) -> TopicRule {
    TopicRule {
        pattern: pattern.into(),
        direction,
        qos,
        local_prefix: local.into(),
        remote_prefix: remote.into(),
    }
}

/// Waits until the bridge `name` of the broker on `port` reports its link up in `$SYS`.
pub async fn wait_connected(port: u16, name: &str) {
    let mut probe = V4::connect(port, &format!("probe-{name}")).await;
    let topic = format!("$SYS/broker/connection/{name}/state");
    probe.subscribe(&topic, QoS::AtMostOnce).await;
    loop {
        let p = probe.next_publish().await;
        if p.topic == topic && &p.payload[..] == b"1" {
            return;
        }
    }
}

/// Edge and cloud: QoS 0, 1 and 2 out under a remote prefix, and commands in from under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_both_ways_with_prefixes() {
    for protocol in ["5", "3.1.1"] {
        let cloud = TestBroker::start().await;
        let mut b = bridge(
            "edge1",
            cloud.port(),
            vec![
                rule("sensors/#", Direction::Out, 2, "", "site/edge1/"),
                rule("cmd/#", Direction::In, 2, "local/", "site/edge1/"),
            ],
        );
        b.protocol = protocol.into();
        let edge = TestBroker::start_with(|c| c.bridge.push(b)).await;
        wait_connected(edge.port(), "edge1").await;
        let mut cloud_sub = V4::connect(cloud.port(), "cloud-sub").await;
        cloud_sub.subscribe("site/#", QoS::ExactlyOnce).await;
        let mut edge_sub = V4::connect(edge.port(), "edge-sub").await;
        edge_sub.subscribe("local/cmd/#", QoS::ExactlyOnce).await;
        let device = V4::connect(edge.port(), "device").await;
        for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
            .into_iter()
            .enumerate()
        {
            device
                .client
                .publish(format!("sensors/{i}"), qos, false, vec![i as u8])
                .await
                .unwrap();
            let got = cloud_sub.next_publish().await;
            assert_eq!(got.topic, format!("site/edge1/sensors/{i}"), "v{protocol}");
            assert_eq!(got.qos, qos);
        }
        let app = V4::connect(cloud.port(), "app").await;
        app.client
            .publish("site/edge1/cmd/reboot", QoS::AtLeastOnce, false, "now")
            .await
            .unwrap();
        let got = edge_sub.next_publish().await;
        assert_eq!(got.topic, "local/cmd/reboot");
        assert_eq!(&got.payload[..], b"now");
        edge.stop().await;
        cloud.stop().await;
    }
}

/// A port free right now (for brokers that must know each other's address in advance).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One bridge with `both`: a message published on either side reaches each side's subscriber
/// exactly once and never comes back (No Local at both ends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_loop_with_a_both_ways_bridge() {
    // 3.1.1 with the bridge bit (the remote gives No Local) and without (the echo filter).
    for (protocol, try_private) in [("5", true), ("3.1.1", true), ("3.1.1", false)] {
        let b = TestBroker::start().await;
        let mut cfg = bridge(
            "peer",
            b.port(),
            vec![rule("t/#", Direction::Both, 1, "", "")],
        );
        cfg.protocol = protocol.into();
        cfg.try_private = try_private;
        let a = TestBroker::start_with(|c| c.bridge.push(cfg)).await;
        wait_connected(a.port(), "peer").await;
        let (mut sa, mut sb) = (
            V4::connect(a.port(), "sa").await,
            V4::connect(b.port(), "sb").await,
        );
        sa.subscribe("t/#", QoS::AtLeastOnce).await;
        sb.subscribe("t/#", QoS::AtLeastOnce).await;
        let pa = V4::connect(a.port(), "pa").await;
        let pb = V4::connect(b.port(), "pb").await;
        pa.client
            .publish("t/1", QoS::AtLeastOnce, false, "from a")
            .await
            .unwrap();
        pb.client
            .publish("t/2", QoS::AtLeastOnce, false, "from b")
            .await
            .unwrap();
        for s in [&mut sa, &mut sb] {
            let mut got = vec![
                String::from_utf8_lossy(&s.next_publish().await.payload).to_string(),
                String::from_utf8_lossy(&s.next_publish().await.payload).to_string(),
            ];
            got.sort();
            assert_eq!(got, ["from a", "from b"], "v{protocol} {try_private}");
            let extra =
                tokio::time::timeout(std::time::Duration::from_millis(300), s.next_publish()).await;
            assert!(
                extra.is_err(),
                "v{protocol} {try_private}: nothing more: {extra:?}"
            );
        }
        a.stop().await;
        b.stop().await;
    }
}

/// Two brokers that each bridge the same topics both ways to the other: a message reaches each
/// side's subscriber (at most twice, there being two routes) and then nothing circles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_loop_when_two_brokers_bridge_each_other() {
    let (pa, pb) = (free_port(), free_port());
    let both = |port| bridge("peer", port, vec![rule("t/#", Direction::Both, 1, "", "")]);
    let a = TestBroker::start_with(|c| {
        c.listener.port = pa;
        c.bridge.push(both(pb));
    })
    .await;
    let b = TestBroker::start_with(|c| {
        c.listener.port = pb;
        c.bridge.push(both(pa));
    })
    .await;
    wait_connected(pa, "peer").await;
    wait_connected(pb, "peer").await;
    let mut sa = V4::connect(pa, "sa").await;
    let mut sb = V4::connect(pb, "sb").await;
    sa.subscribe("t/#", QoS::AtLeastOnce).await;
    sb.subscribe("t/#", QoS::AtLeastOnce).await;
    let pub_a = V4::connect(pa, "pub-a").await;
    pub_a
        .client
        .publish("t/1", QoS::AtLeastOnce, false, "from a")
        .await
        .unwrap();
    for s in [&mut sa, &mut sb] {
        let mut n = 0;
        while let Ok(p) =
            tokio::time::timeout(std::time::Duration::from_millis(500), s.next_publish()).await
        {
            assert_eq!(&p.payload[..], b"from a");
            n += 1;
            assert!(n <= 2, "a message keeps coming back");
        }
        assert!(n >= 1, "delivered");
    }
    a.stop().await;
    b.stop().await;
}

/// The `[[bridge]]` TOML of an edge forwarding `data/#` at QoS 1 to `port`.
fn edge_toml(port: u16) -> String {
    format!(
        "[[bridge]]\nname = \"cloud\"\naddresses = [\"127.0.0.1:{port}\"]\nreconnect_min_ms = 50\nreconnect_max_ms = 300\n\n[[bridge.topics]]\npattern = \"data/#\"\ndirection = \"out\"\nqos = 1\n"
    )
}

/// Payload numbers as they arrived, until `last` has; asserts every number up to `last`
/// arrived and, duplicates aside (QoS 1 allows them), in order.
async fn collect_numbers(sub: &mut V4, last: u32) -> Vec<u32> {
    let mut got = Vec::new();
    while got.last() != Some(&last) {
        let p = sub.next_publish().await;
        got.push(String::from_utf8_lossy(&p.payload).parse::<u32>().unwrap());
    }
    got
}

fn assert_all_in_order(got: &[u32], last: u32) {
    let mut firsts = Vec::new();
    for n in got {
        if !firsts.contains(n) {
            firsts.push(*n);
        }
    }
    assert_eq!(firsts, (1..=last).collect::<Vec<_>>(), "arrivals: {got:?}");
}

/// The cloud's application: a persistent session subscribed (QoS 1) to `data/#`. Coming back
/// (`subscribe` false) it does not subscribe again: its session has the subscription, and
/// what was queued for it arrives before any SUBACK would.
async fn cloud_subscriber(port: u16, subscribe: bool) -> V4 {
    let mut opts = rumqttc::MqttOptions::new("cloud-app", "127.0.0.1", port);
    opts.set_clean_session(false);
    let mut s = V4::connect_with(opts).await;
    if subscribe {
        s.subscribe("data/#", QoS::AtLeastOnce).await;
    }
    s
}

/// The cloud is killed (`kill -9`) and started again from its store while devices keep
/// publishing QoS 1 messages to the edge: after it returns, every message arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_outage_loses_nothing() {
    let (cloud_dir, edge_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let port = free_port();
    let cloud = ChildBroker::start_at(cloud_dir.path(), true, "fsync", "", port);
    let edge = ChildBroker::start_with(edge_dir.path(), true, "fsync", &edge_toml(port));
    wait_connected(edge.addr.port(), "cloud").await;
    let mut app = cloud_subscriber(port, true).await;
    let device = V4::connect(edge.addr.port(), "device").await;
    let publish = |n: u32| {
        let c = device.client.clone();
        async move {
            c.publish(
                format!("data/{}", n % 3),
                QoS::AtLeastOnce,
                false,
                n.to_string(),
            )
            .await
            .unwrap()
        }
    };
    for n in 1..=50 {
        publish(n).await;
    }
    let mut got = collect_numbers(&mut app, 50).await;
    cloud.kill9();
    drop(app);
    for n in 51..=150 {
        publish(n).await;
    }
    // The edge acknowledged all of them (its store has them) while the cloud was away.
    let cloud = ChildBroker::start_at(cloud_dir.path(), true, "fsync", "", port);
    let mut app = cloud_subscriber(port, false).await;
    got.extend(collect_numbers(&mut app, 150).await);
    assert_all_in_order(&got, 150);
    drop(cloud);
}

/// The edge is killed (`kill -9`) while its bridge queue holds messages (the cloud is down):
/// started again, it sends them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_crash_keeps_the_bridge_queue() {
    let (cloud_dir, edge_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let port = free_port();
    // The cloud first, so the app's persistent session is there to queue for it.
    let cloud = ChildBroker::start_at(cloud_dir.path(), true, "fsync", "", port);
    drop(cloud_subscriber(port, true).await);
    cloud.terminate();
    let edge = ChildBroker::start_with(edge_dir.path(), true, "fsync", &edge_toml(port));
    let mut opts = rumqttc::MqttOptions::new("device", "127.0.0.1", edge.addr.port());
    opts.set_inflight(10);
    let device = V4::connect_with(opts).await;
    let mut acks = 0;
    for n in 1..=200u32 {
        device
            .client
            .publish("data/x", QoS::AtLeastOnce, false, n.to_string())
            .await
            .unwrap();
    }
    // Wait for the edge's PUBACKs: from then on the messages are its to keep.
    let mut device = device;
    while acks < 200 {
        device
            .wait_for(|p| matches!(p, rumqttc::Packet::PubAck(_)))
            .await;
        acks += 1;
    }
    edge.kill9();
    let _cloud = ChildBroker::start_at(cloud_dir.path(), true, "fsync", "", port);
    let _edge = ChildBroker::start_with(edge_dir.path(), true, "fsync", &edge_toml(port));
    let mut app = cloud_subscriber(port, false).await;
    let got = collect_numbers(&mut app, 200).await;
    assert_all_in_order(&got, 200);
}

/// The bridge's queue bounds, in messages and in payload bytes, hold for a fresh session and
/// for one read back after `kill -9`: the bridge's own `max_queued_messages` (not the
/// broker's smaller `limits.max_queued_messages`), and `max_queued_bytes` counting what was
/// queued before the crash. What does not fit is dropped and counted; the rest arrives in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_queue_bounds_hold_across_a_crash() {
    let (cloud_dir, edge_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let port = free_port();
    let cloud = ChildBroker::start_at(cloud_dir.path(), true, "fsync", "", port);
    drop(cloud_subscriber(port, true).await);
    cloud.terminate();
    let edge_config = format!(
        "[limits]\nmax_queued_messages = 10\n\n[[bridge]]\nname = \"cloud\"\naddresses = [\"127.0.0.1:{port}\"]\nreconnect_min_ms = 50\nreconnect_max_ms = 300\nmax_queued_messages = 100\nmax_queued_bytes = 400\n\n[[bridge.topics]]\npattern = \"data/#\"\ndirection = \"out\"\nqos = 1\n"
    );
    // Ten payload bytes each: 40 fit in 400 bytes.
    async fn publish_acked(port: u16, id: &str, numbers: std::ops::RangeInclusive<u32>) {
        let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
        opts.set_inflight(10);
        let mut device = V4::connect_with(opts).await;
        let count = numbers.clone().count();
        for n in numbers {
            device
                .client
                .publish("data/x", QoS::AtLeastOnce, false, format!("{n:010}"))
                .await
                .unwrap();
        }
        for _ in 0..count {
            device
                .wait_for(|p| matches!(p, rumqttc::Packet::PubAck(_)))
                .await;
        }
    }
    let edge = ChildBroker::start_with(edge_dir.path(), true, "fsync", &edge_config);
    publish_acked(edge.addr.port(), "device-1", 1..=30).await;
    wait_for(
        &edge,
        "tern_bridge_queued_bytes",
        &["bridge=\"cloud\""],
        300.0,
    )
    .await;
    edge.kill9();
    let edge = ChildBroker::start_with(edge_dir.path(), true, "fsync", &edge_config);
    publish_acked(edge.addr.port(), "device-2", 31..=60).await;
    let labels = ["bridge=\"cloud\""];
    wait_for(&edge, "tern_bridge_queued_messages", &labels, 40.0).await;
    wait_for(&edge, "tern_bridge_queued_bytes", &labels, 400.0).await;
    wait_for(&edge, "tern_bridge_dropped_total", &labels, 20.0).await;
    let _cloud = ChildBroker::start_at(cloud_dir.path(), true, "fsync", "", port);
    let mut app = cloud_subscriber(port, false).await;
    let mut got = collect_numbers(&mut app, 40).await;
    // Room again: the next message goes through, right behind the 40th.
    publish_acked(edge.addr.port(), "device-3", 61..=61).await;
    got.extend(collect_numbers(&mut app, 61).await);
    got.retain(|n| *n != 61);
    assert_all_in_order(&got, 40);
    wait_for(&edge, "tern_bridge_queued_bytes", &labels, 0.0).await;
}

/// SIGHUP adds a bridge, changes its rules and removes it, without restarting the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_follow_reloads() {
    let cloud = TestBroker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let edge = ChildBroker::start(dir.path(), false, "fsync");
    let file = dir.path().join("tern.toml");
    let base = std::fs::read_to_string(&file).unwrap();
    let with_prefix = |prefix: &str| {
        format!(
            "{base}\n[[bridge]]\nname = \"up\"\naddresses = [\"127.0.0.1:{}\"]\n\n[[bridge.topics]]\npattern = \"x/#\"\ndirection = \"out\"\nremote_prefix = \"{prefix}\"\n",
            cloud.port()
        )
    };
    let mut sub = V4::connect(cloud.port(), "sub").await;
    sub.subscribe("#", QoS::AtLeastOnce).await;
    let device = V4::connect(edge.addr.port(), "device").await;
    for (round, prefix) in ["one/", "two/"].into_iter().enumerate() {
        std::fs::write(&file, with_prefix(prefix)).unwrap();
        edge.hup();
        edge.wait_log("configuration reloaded", round + 1);
        edge.wait_log("bridge connected", round + 1);
        device
            .client
            .publish("x/1", QoS::AtLeastOnce, false, prefix)
            .await
            .unwrap();
        let got = sub.next_publish().await;
        assert_eq!(got.topic, format!("{prefix}x/1"));
    }
    // Removed: the link goes down, the cloud sees the bridge disconnect.
    std::fs::write(&file, &base).unwrap();
    edge.hup();
    edge.wait_log("bridge stopped (removed or changed)", 2);
    edge.wait_log("bridge session parked", 2);
    edge.terminate();
    cloud.stop().await;
}

/// Accepts a bridge's connection on a raw remote and reads its CONNECT (body returned).
async fn accept_connect(remote: &tokio::net::TcpListener) -> (RawClient, Vec<u8>) {
    let (stream, _) = tokio::time::timeout(WAIT, remote.accept())
        .await
        .expect("the bridge connects")
        .unwrap();
    let mut c = RawClient::from_stream(stream);
    let connect = c.recv_expect(CONNECT).await;
    (c, connect)
}

/// Accepts a bridge's connection on a raw remote: CONNACK with `present`, SUBACK granting QoS
/// 2 for its one `in` rule.
async fn accept_bridge(remote: &tokio::net::TcpListener, present: bool) -> RawClient {
    let (mut c, _) = accept_connect(remote).await;
    c.send(&[CONNACK, 2, u8::from(present), 0]).await;
    let sub = c.recv_expect(SUBSCRIBE).await;
    c.send(&[SUBACK, 3, sub[0], sub[1], 2]).await;
    c
}

/// A QoS 2 message from the remote is published here once, even when the remote sends it again
/// after the edge was killed (`kill -9`) between acknowledging it (PUBREC) and PUBREL; and once
/// the remote has lost its session, a packet id still awaiting PUBREL here is free for a new
/// message. The remote is raw bytes on a socket, to send exactly what a remote may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_qos2_is_exactly_once_across_an_edge_crash() {
    let remote = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = remote.local_addr().unwrap().port();
    let edge_dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[[bridge]]\nname = \"cloud\"\naddresses = [\"127.0.0.1:{port}\"]\nprotocol = \"3.1.1\"\nreconnect_min_ms = 50\nreconnect_max_ms = 300\n\n[[bridge.topics]]\npattern = \"cmd/#\"\ndirection = \"in\"\nqos = 2\n"
    );
    let edge = ChildBroker::start_with(edge_dir.path(), true, "fsync", &config);
    let mut link = accept_bridge(&remote, false).await;
    link.send(&Publish::new(V311, "cmd/a", b"once").qos(2, 7).build())
        .await;
    assert_eq!(parse_ack(&link.recv_expect(PUBREC).await).0, 7);
    edge.kill9();
    drop(link);
    let edge = ChildBroker::start_with(edge_dir.path(), true, "fsync", &config);
    let mut device = V4::connect(edge.addr.port(), "device").await;
    device.subscribe("cmd/#", QoS::ExactlyOnce).await;
    let mut link = accept_bridge(&remote, true).await;
    // The remote did not get our PUBREC: it sends the message again, which is not published.
    link.send(
        &Publish::new(V311, "cmd/a", b"once")
            .qos(2, 7)
            .dup(true)
            .build(),
    )
    .await;
    assert_eq!(parse_ack(&link.recv_expect(PUBREC).await).0, 7);
    link.send(&pubrel(7)).await;
    assert_eq!(parse_ack(&link.recv_expect(PUBCOMP).await).0, 7);
    link.send(&Publish::new(V311, "cmd/b", b"fence").build())
        .await;
    let p = device.next_publish().await;
    assert_eq!(&p.payload[..], b"fence", "published twice: {p:?}");
    // Packet id 8 awaits PUBREL here when the remote comes back without its session and
    // reuses 8 for a new message: that one is published.
    link.send(&Publish::new(V311, "cmd/c", b"pending").qos(2, 8).build())
        .await;
    assert_eq!(parse_ack(&link.recv_expect(PUBREC).await).0, 8);
    assert_eq!(&device.next_publish().await.payload[..], b"pending");
    drop(link);
    let mut link = accept_bridge(&remote, false).await;
    link.send(&Publish::new(V311, "cmd/c", b"new").qos(2, 8).build())
        .await;
    assert_eq!(parse_ack(&link.recv_expect(PUBREC).await).0, 8);
    assert_eq!(&device.next_publish().await.payload[..], b"new");
    drop(edge);
}

/// The bridge tells a v5 remote its packet size limit, and keeps the remote's CONNACK limits: QoS capped at its Maximum QoS, no RETAIN when it has
/// no retained messages, and a message over its Maximum Packet Size dropped and counted rather
/// than sent (which would get the bridge disconnected, with the same message first again on
/// every reconnect). What follows still goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v5_remotes_limits_are_respected() {
    let remote = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = remote.local_addr().unwrap().port();
    let edge_dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[[bridge]]\nname = \"cloud\"\naddresses = [\"127.0.0.1:{port}\"]\nreconnect_min_ms = 50\nreconnect_max_ms = 300\n\n[[bridge.topics]]\npattern = \"data/#\"\ndirection = \"out\"\nqos = 2\n"
    );
    let edge = ChildBroker::start_with(edge_dir.path(), true, "fsync", &config);
    let (mut link, connect) = accept_connect(&remote).await;
    // Our own Maximum Packet Size (the default 1 MiB) is in the CONNECT properties, so the
    // remote discards larger messages rather than sending them [MQTT-3.1.2-25].
    assert!(
        connect.windows(5).any(|w| w == [0x27, 0, 0x10, 0, 0]),
        "no Maximum Packet Size in CONNECT: {connect:02x?}"
    );
    // Maximum QoS 1, Retain Available 0, Maximum Packet Size 200.
    link.send(&[CONNACK, 12, 0, 0, 9, 0x24, 1, 0x25, 0, 0x27, 0, 0, 0, 200])
        .await;
    let device = V4::connect(edge.addr.port(), "device").await;
    device
        .client
        .publish("data/big", QoS::AtLeastOnce, false, vec![b'x'; 500])
        .await
        .unwrap();
    device
        .client
        .publish("data/r", QoS::ExactlyOnce, true, "kept")
        .await
        .unwrap();
    let (first, body) = link.recv_packet().await;
    let p = parse_publish(V5, first, &body);
    assert_eq!(
        (p.topic.as_str(), p.qos, p.retain, &p.payload[..]),
        ("data/r", 1, false, &b"kept"[..]),
        "{p:?}"
    );
    link.send(&[PUBACK, 2, (p.pkid >> 8) as u8, p.pkid as u8])
        .await;
    wait_for(
        &edge,
        "tern_bridge_dropped_total",
        &["bridge=\"cloud\""],
        1.0,
    )
    .await;
    wait_for(
        &edge,
        "tern_bridge_messages_total",
        &["bridge=\"cloud\"", "direction=\"out\""],
        1.0,
    )
    .await;
}

/// With "3.1.1" the bridge announces itself with the protocol level's top bit, as Mosquitto's
/// `try_private` does; a remote that refuses that level (CONNACK 0x01) gets a plain CONNECT at
/// once, not after the reconnect backoff (a minute here), and the link works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_1_1_bridge_falls_back_from_the_bridge_bit_at_once() {
    let remote = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = remote.local_addr().unwrap().port();
    let edge_dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[[bridge]]\nname = \"cloud\"\naddresses = [\"127.0.0.1:{port}\"]\nprotocol = \"3.1.1\"\nreconnect_min_ms = 60000\nreconnect_max_ms = 60000\n\n[[bridge.topics]]\npattern = \"data/#\"\ndirection = \"out\"\nqos = 1\n"
    );
    let edge = ChildBroker::start_with(edge_dir.path(), false, "fsync", &config);
    // The level follows the protocol name "MQTT" (2 + 4 bytes).
    let (mut first, connect) = accept_connect(&remote).await;
    assert_eq!(connect[6], 0x84, "the first CONNECT carries the bridge bit");
    first.send(&[CONNACK, 2, 0, 1]).await;
    let (mut link, connect) = accept_connect(&remote).await;
    assert_eq!(connect[6], 0x04, "then a plain 3.1.1 CONNECT");
    link.send(&[CONNACK, 2, 0, 0]).await;
    wait_connected(edge.addr.port(), "cloud").await;
    let device = V4::connect(edge.addr.port(), "device").await;
    device
        .client
        .publish("data/x", QoS::AtLeastOnce, false, "through")
        .await
        .unwrap();
    let (first_byte, body) = link.recv_packet().await;
    let p = parse_publish(V311, first_byte, &body);
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("data/x", &b"through"[..])
    );
    drop(first);
}
