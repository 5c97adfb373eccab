//! The durable store, through the real binary: Tern runs as a child process with
//! `[persistence] enabled`, is killed with SIGKILL, and restarted on the same directory. Here:
//! messages and their QoS flows; `retained`, `sessions` (subscriptions, wills, expiry) and
//! `store` (damage, `tern store check`) beside.

mod retained;
mod sessions;
mod store;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::child::ChildBroker;
use crate::support::*;
use crate::wire::*;

/// Waits until what the client's earlier packets caused is in the store: acknowledgements are
/// written without waiting, but the store applies writes in order and a persistent session's
/// SUBACK waits for its subscription's write, which comes after them.
async fn settle(c: &mut RawClient, level: u8) {
    sub_all(c, level, &["settle/nothing"], 0).await;
}

/// Publishes a retained message at `qos` and waits for its PUBACK/PUBCOMP.
async fn retain(
    c: &mut RawClient,
    level: u8,
    topic: &str,
    qos: u8,
    payload: &[u8],
    props: Vec<u8>,
) {
    let mut p = Publish::new(level, topic, payload).qos(qos, 0).retain(true);
    if level == V5 {
        p = p.props(props);
    }
    send_flow(c, p).await;
}

/// Runs `tern --config <dir>/tern.toml store check`; its exit code and standard output.
fn store_check(dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .arg("--config")
        .arg(dir.join("tern.toml"))
        .args(["store", "check"])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The core promise: offline persistent subscribers (v3.1.1 clean session 0, v5 Session
/// Expiry), a publisher that saw every PUBACK/PUBCOMP, `kill -9`, restart: every message comes,
/// in order, at its QoS, once; Session Present = 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_for_offline_sessions_survive_kill_9() {
    for durability in ["fsync", "process"] {
        let dir = tempfile::tempdir().unwrap();
        let broker = ChildBroker::start(dir.path(), true, durability);
        for v in VERSIONS {
            let (mut s, _) = connect_persistent(broker.addr, v, &format!("off{v}"), false).await;
            sub_all(&mut s, v, &["q/#"], 2).await;
            s.send(&disconnect()).await;
        }
        let mut publ = RawClient::connected(broker.addr, V5, "pub").await;
        for i in 0..40u8 {
            pub_msg(
                &mut publ,
                V5,
                &format!("q/{i}"),
                1 + i % 2,
                format!("m{i}").as_bytes(),
            )
            .await;
        }
        broker.kill9();

        let broker = ChildBroker::start(dir.path(), true, durability);
        for v in VERSIONS {
            let (mut s, present) =
                connect_persistent(broker.addr, v, &format!("off{v}"), false).await;
            assert!(present, "{durability} {}: session lost", vname(v));
            let mut fence = RawClient::connected(broker.addr, V5, &format!("fence{v}")).await;
            pub_msg(&mut fence, V5, "q/fence", 0, b"fence").await;
            let got = collect_until(&mut s, v, b"fence").await;
            let expected: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
            assert_eq!(payloads(&got), expected, "{durability} {}", vname(v));
            for (i, r) in got.iter().enumerate() {
                assert_eq!(
                    usize::from(r.qos),
                    1 + i % 2,
                    "{durability} {}: QoS",
                    vname(v)
                );
            }
            // Acknowledged now: a second restart has nothing left for them.
            settle(&mut s, v).await;
            s.send(&disconnect()).await;
        }
        broker.kill9();
        let broker = ChildBroker::start(dir.path(), true, durability);
        let (mut s, present) = connect_persistent(broker.addr, V5, "off5", false).await;
        assert!(present);
        let mut fence = RawClient::connected(broker.addr, V5, "fence").await;
        pub_msg(&mut fence, V5, "q/fence", 0, b"fence").await;
        assert!(
            collect_until(&mut s, V5, b"fence").await.is_empty(),
            "{durability}: delivered twice"
        );
        broker.kill9();
    }
}

/// QoS 2 across `kill -9`, both directions. Outbound: a subscriber that got PUBREL but had
/// not sent PUBCOMP gets PUBREL again after the restart, never the PUBLISH. Inbound: a publisher
/// that got PUBREC sends the PUBLISH again (DUP) after the restart; it is acknowledged but not
/// forwarded a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_flows_are_exactly_once_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ChildBroker::start(dir.path(), true, "fsync");
    let (mut sub, _) = connect_persistent(broker.addr, V5, "rel", false).await;
    sub_all(&mut sub, V5, &["x/#"], 2).await;
    let (mut publ, _) = connect_persistent(broker.addr, V311, "p2", false).await;
    pub_msg(&mut publ, V311, "x/out", 2, b"out").await;
    let r = sub.recv_publish(V5).await;
    sub.send(&pubrec(r.pkid)).await;
    let (pkid, _) = parse_ack(&sub.recv_expect(PUBREL).await);
    assert_eq!(pkid, r.pkid);
    // Inbound: PUBLISH, PUBREC, then the crash before PUBREL.
    publ.send(&Publish::new(V311, "x/in", b"in").qos(2, 77).build())
        .await;
    let (pkid, _) = parse_ack(&publ.recv_expect(PUBREC).await);
    assert_eq!(pkid, 77);
    broker.kill9();

    let broker = ChildBroker::start(dir.path(), true, "fsync");
    let (mut sub, present) = connect_persistent(broker.addr, V5, "rel", false).await;
    assert!(present);
    // The outbound flow resumes at PUBREL; then "in", queued for this session before the
    // crash, arrives once.
    let (first, body) = sub.recv_packet().await;
    assert_eq!(
        first, PUBREL,
        "expected PUBREL first, got {first:#x} {body:02x?}"
    );
    assert_eq!(parse_ack(&body).0, r.pkid);
    sub.send(&pubcomp(r.pkid)).await;
    let (mut publ, present) = connect_persistent(broker.addr, V311, "p2", false).await;
    assert!(present);
    publ.send(
        &Publish::new(V311, "x/in", b"in")
            .qos(2, 77)
            .dup(true)
            .build(),
    )
    .await;
    let (pkid, _) = parse_ack(&publ.recv_expect(PUBREC).await);
    assert_eq!(pkid, 77);
    publ.send(&pubrel(77)).await;
    publ.recv_expect(PUBCOMP).await;
    pub_msg(&mut publ, V311, "x/fence", 0, b"fence").await;
    let got = collect_until(&mut sub, V5, b"fence").await;
    assert_eq!(
        payloads(&got),
        vec!["in".to_string()],
        "inbound QoS 2 forwarded twice or lost"
    );
    broker.kill9();
}

/// `kill -9` in the middle of a stream of pipelined QoS 1 publishes, three times over: every
/// message that got its PUBACK before a kill reaches the offline persistent subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ChildBroker::start(dir.path(), true, "fsync");
    let (mut sink, _) = connect_persistent(broker.addr, V311, "sink", false).await;
    sub_all(&mut sink, V311, &["load/#"], 1).await;
    sink.send(&disconnect()).await;
    drop(broker);

    let mut acked: Vec<String> = Vec::new();
    for round in 0..3 {
        let broker = ChildBroker::start(dir.path(), true, "fsync");
        let mut publ = RawClient::connected(broker.addr, V311, &format!("load{round}")).await;
        let mut sent: Vec<String> = Vec::new();
        for batch in 0..12 {
            for i in 0..16u16 {
                let n = sent.len();
                let payload = format!("r{round}-{n}");
                let pkid = u16::try_from(n % 60_000).unwrap() + 1;
                publ.send(
                    &Publish::new(V311, "load/x", payload.as_bytes())
                        .qos(1, pkid)
                        .build(),
                )
                .await;
                sent.push(payload);
                let _ = i;
            }
            // The last batch: half its acknowledgements read, the rest still in flight.
            let reading = if batch == 11 { 8 } else { 16 };
            for _ in 0..reading {
                let (pkid, reason) = parse_ack(&publ.recv_expect(PUBACK).await);
                assert_eq!(reason, 0);
                acked.push(sent[usize::from(pkid) - 1].clone());
            }
        }
        broker.kill9();
    }

    let broker = ChildBroker::start(dir.path(), true, "fsync");
    let (mut sink, present) = connect_persistent(broker.addr, V311, "sink", false).await;
    assert!(present);
    let mut fence = RawClient::connected(broker.addr, V311, "fence").await;
    pub_msg(&mut fence, V311, "load/fence", 0, b"fence").await;
    let got: std::collections::HashSet<String> =
        payloads(&collect_until(&mut sink, V311, b"fence").await)
            .into_iter()
            .collect();
    let missing: Vec<&String> = acked.iter().filter(|p| !got.contains(*p)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages lost: {missing:?}",
        missing.len()
    );
    assert!(acked.len() >= 3 * 184);
    broker.kill9();
}

/// A stored QoS 2 delivery sent but not acknowledged before `kill -9` is sent again after the
/// restart under the same packet id with DUP set, so the client can tell it from a new message
/// (exactly once); it is not sent a second time under another id. A QoS 1 one is sent again
/// (at least once), in its place in the order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_deliveries_keep_their_packet_ids_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ChildBroker::start(dir.path(), true, "fsync");
    let (mut sub, _) = connect_persistent(broker.addr, V5, "cont", false).await;
    sub_all(&mut sub, V5, &["c/#"], 2).await;
    let mut publ = RawClient::connected(broker.addr, V5, "cpub").await;
    pub_msg(&mut publ, V5, "c/1", 1, b"one").await;
    pub_msg(&mut publ, V5, "c/2", 2, b"two").await;
    let one = sub.recv_publish(V5).await;
    let two = sub.recv_publish(V5).await;
    assert_eq!(
        (one.payload.as_slice(), two.payload.as_slice()),
        (&b"one"[..], &b"two"[..])
    );
    // No PUBACK, no PUBREC: both are inflight when Tern dies.
    broker.kill9();

    let broker = ChildBroker::start(dir.path(), true, "fsync");
    let (mut sub, present) = connect_persistent(broker.addr, V5, "cont", false).await;
    assert!(present);
    // Both come again in their original order [MQTT-4.6.0-1]: the QoS 1 one (its packet id
    // was not stored), then the QoS 2 one under its old id.
    let again1 = sub.recv_publish(V5).await;
    let again2 = sub.recv_publish(V5).await;
    assert_eq!(
        (again2.pkid, again2.dup, again2.payload.as_slice()),
        (two.pkid, true, &b"two"[..])
    );
    assert_eq!(again1.payload.as_slice(), &b"one"[..]);
    ack_received(&mut sub, &again1).await;
    ack_received(&mut sub, &again2).await;
    let mut fence = RawClient::connected(broker.addr, V5, "cfence").await;
    pub_msg(&mut fence, V5, "c/fence", 0, b"fence").await;
    assert!(
        collect_until(&mut sub, V5, b"fence").await.is_empty(),
        "sent again under a new id"
    );
    broker.kill9();
}

/// A queue longer than what Tern keeps in memory (messages for an offline session are kept in
/// the store only, by sequence number): 900 messages queued offline, 100 more arriving while
/// the client drains them, all delivered in order, at their QoS, with the v5 Subscription
/// Identifier, exactly once; the queue survives a `kill -9` half way through draining.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_offline_queues_are_read_back_from_the_store_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ChildBroker::start(dir.path(), true, "process");
    let (mut s, _) = connect_persistent(broker.addr, V5, "long", false).await;
    let codes = sub_raw(&mut s, V5, &[("l/#", 2)], &prop_varint(SUBSCRIPTION_ID, 7)).await;
    assert_eq!(codes, vec![2]);
    s.send(&disconnect()).await;
    let mut publ = RawClient::connected(broker.addr, V5, "lpub").await;
    for i in 0..900u32 {
        let qos = 1 + (i % 2) as u8;
        pub_msg(&mut publ, V5, "l/x", qos, format!("m{i}").as_bytes()).await;
    }
    let (mut s, present) = connect_persistent(broker.addr, V5, "long", false).await;
    assert!(present);
    // Take the first 300 (acknowledged), then publish 100 more while the rest wait.
    let mut got = Vec::new();
    while got.len() < 300 {
        let (first, body) = s.recv_packet().await;
        if first == PUBREL {
            s.send(&pubcomp(parse_ack(&body).0)).await;
            continue;
        }
        let r = parse_publish(V5, first, &body);
        s.send(&if r.qos == 1 {
            puback(r.pkid)
        } else {
            pubrec(r.pkid)
        })
        .await;
        got.push(r);
    }
    for i in 900..1000u32 {
        let qos = 1 + (i % 2) as u8;
        pub_msg(&mut publ, V5, "l/x", qos, format!("m{i}").as_bytes()).await;
    }
    // Everything up to here is acknowledged on both sides; kill -9 and take the rest.
    broker.kill9();
    let broker = ChildBroker::start(dir.path(), true, "process");
    let (mut s, present) = connect_persistent(broker.addr, V5, "long", false).await;
    assert!(present);
    let mut fence = RawClient::connected(broker.addr, V5, "lfence").await;
    pub_msg(&mut fence, V5, "l/fence", 0, b"fence").await;
    let rest = collect_until(&mut s, V5, b"fence").await;
    // Deliveries sent but not acknowledged before the kill come again first, with DUP.
    let mut all: Vec<Received> = got;
    for r in rest {
        if all.iter().any(|g| g.payload == r.payload) {
            assert!(
                r.dup,
                "a message acknowledged before the kill came again: {r:?}"
            );
            continue;
        }
        all.push(r);
    }
    let expected: Vec<String> = (0..1000).map(|i| format!("m{i}")).collect();
    assert_eq!(payloads(&all), expected);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(usize::from(r.qos), 1 + i % 2, "QoS of m{i}");
        assert_eq!(
            all_props(&r.props, SUBSCRIPTION_ID),
            vec![PropValue::Varint(7)],
            "Subscription Identifier of m{i}"
        );
    }
    broker.kill9();
}

/// A message a shared-subscription member of a persistent session was sent and had not
/// acknowledged when Tern was killed reaches it after the restart: deliveries through
/// `$share/` are stored like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_deliveries_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ChildBroker::start(dir.path(), true, "fsync");
    let (mut m, _) = connect_persistent(broker.addr, V5, "member", false).await;
    sub_all(&mut m, V5, &["$share/g/s/#"], 1).await;
    let mut publ = RawClient::connected(broker.addr, V5, "spub").await;
    for i in 0..5u8 {
        pub_msg(&mut publ, V5, "s/x", 1, format!("s{i}").as_bytes()).await;
    }
    // Received, not acknowledged.
    for i in 0..5u8 {
        let r = m.recv_publish(V5).await;
        assert_eq!(r.payload, format!("s{i}").into_bytes());
    }
    broker.kill9();
    let broker = ChildBroker::start(dir.path(), true, "fsync");
    let (mut m, present) = connect_persistent(broker.addr, V5, "member", false).await;
    assert!(present);
    let mut fence = RawClient::connected(broker.addr, V5, "sfence").await;
    pub_msg(&mut fence, V5, "s/fence", 0, b"fence").await;
    let got = collect_until(&mut m, V5, b"fence").await;
    assert_eq!(payloads(&got), vec!["s0", "s1", "s2", "s3", "s4"]);
    broker.kill9();
}

/// With `queue_qos0_offline`, QoS 0 messages queued for an offline persistent session are
/// stored too, and reach it after `kill -9` (a QoS 1 publish behind them, acknowledged, shows
/// they were written: the store applies writes in order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_qos0_messages_are_stored_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[session]\nqueue_qos0_offline = true\n";
    let broker = ChildBroker::start_with(dir.path(), true, "fsync", extra);
    for v in VERSIONS {
        let (mut s, _) = connect_persistent(broker.addr, v, &format!("z{v}"), false).await;
        sub_all(&mut s, v, &["z/#"], 1).await;
    }
    // Restarted, both sessions are offline for sure (a DISCONNECT is processed some time after
    // it is sent, and QoS 0 for a connected client is not stored).
    broker.kill9();
    let broker = ChildBroker::start_with(dir.path(), true, "fsync", extra);
    let mut publ = RawClient::connected(broker.addr, V5, "zpub").await;
    for i in 0..10u8 {
        pub_msg(&mut publ, V5, "z/x", 0, format!("z{i}").as_bytes()).await;
    }
    pub_msg(&mut publ, V5, "z/x", 1, b"last").await;
    broker.kill9();
    let broker = ChildBroker::start_with(dir.path(), true, "fsync", extra);
    for v in VERSIONS {
        let (mut s, present) = connect_persistent(broker.addr, v, &format!("z{v}"), false).await;
        assert!(present);
        let mut fence = RawClient::connected(broker.addr, V5, &format!("zf{v}")).await;
        let mark = format!("fence{v}");
        pub_msg(&mut fence, V5, "z/fence", 0, mark.as_bytes()).await;
        let mut got = payloads(&collect_until(&mut s, v, mark.as_bytes()).await);
        // The other client's fence, queued for this one while it was offline.
        got.retain(|p| !p.starts_with("fence"));
        let mut expected: Vec<String> = (0..10).map(|i| format!("z{i}")).collect();
        expected.push("last".into());
        assert_eq!(got, expected, "{}", vname(v));
        settle(&mut s, v).await;
        s.send(&disconnect()).await;
    }
    // Sent once: nothing is left for a second restart.
    broker.kill9();
    let broker = ChildBroker::start_with(dir.path(), true, "fsync", extra);
    let (mut s, _) = connect_persistent(broker.addr, V5, "z5", false).await;
    let mut fence = RawClient::connected(broker.addr, V5, "zf").await;
    pub_msg(&mut fence, V5, "z/fence", 0, b"end").await;
    let again = collect_until(&mut s, V5, b"end").await;
    assert!(again.is_empty(), "sent twice: {:?}", payloads(&again));
    broker.kill9();
}

/// CONNACK with Session Present = 1 is a promise that holds across `kill -9` even for a session
/// that never subscribed to anything (no other write forces its record out): the record is
/// durable before that CONNACK is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_present_holds_across_an_immediate_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    // Batches wait 300 ms for company, so an unwaited record would still be in memory when the
    // second CONNACK goes out (this line continues the [persistence] section).
    let slow = "batch_wait_us = 300000\n";
    for round in 0..3 {
        let broker = ChildBroker::start_with(dir.path(), true, "fsync", slow);
        let id = format!("bare{round}");
        let (mut c, _) = connect_persistent(broker.addr, V5, &id, false).await;
        c.send(&disconnect()).await;
        drop(c);
        // Present = 1 whether the first connection was already parked or is taken over.
        let (_c, present) = connect_persistent(broker.addr, V5, &id, false).await;
        assert!(present);
        broker.kill9();
        let broker = ChildBroker::start_with(dir.path(), true, "fsync", slow);
        let (_c, present) = connect_persistent(broker.addr, V5, &id, false).await;
        assert!(
            present,
            "round {round}: told Session Present = 1, then lost it"
        );
        broker.kill9();
    }
}

/// SIGTERM flushes the store: an acknowledgement Tern wrote without waiting (a subscriber's
/// PUBACK) is durable once Tern has exited 0, so the message is not delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_the_store() {
    let dir = tempfile::tempdir().unwrap();
    // Slow batches: the acknowledgement is still waiting for its batch when SIGTERM comes.
    let slow = "batch_wait_us = 500000\n";
    let broker = ChildBroker::start_with(dir.path(), true, "fsync", slow);
    let (mut s, _) = connect_persistent(broker.addr, V5, "term", false).await;
    sub_all(&mut s, V5, &["t/#"], 1).await;
    let mut publ = RawClient::connected(broker.addr, V5, "tpub").await;
    pub_msg(&mut publ, V5, "t/x", 1, b"once").await;
    let r = s.recv_publish(V5).await;
    s.send(&puback(r.pkid)).await;
    // PINGRESP: the PUBACK before it was handled (its write submitted).
    s.send(&pingreq()).await;
    s.recv_expect(PINGRESP).await;
    assert_eq!(broker.terminate(), Some(0));

    let broker = ChildBroker::start_with(dir.path(), true, "fsync", slow);
    let (mut s, present) = connect_persistent(broker.addr, V5, "term", false).await;
    assert!(present);
    let mut fence = RawClient::connected(broker.addr, V5, "tfence").await;
    pub_msg(&mut fence, V5, "t/fence", 0, b"fence").await;
    let again = collect_until(&mut s, V5, b"fence").await;
    assert!(again.is_empty(), "delivered again: {:?}", payloads(&again));
    broker.kill9();
}
