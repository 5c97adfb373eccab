//! Dormant connections (`limits.dormant_after_ms`): a quiet client gives up its task and waits in
//! the broker's shared epoll set. Nothing about it may change for the client: every test lets
//! its clients go dormant (waiting on the broker's count, not on a clock) and then checks that
//! what comes next behaves exactly as for an awake client, for v3.1.1 and v5.

use std::time::{Duration, Instant};

use crate::harness::TestBroker;
use crate::support::*;
use crate::wire::*;

/// Dormant after 50 ms of quiet, so tests reach dormancy quickly.
async fn broker() -> TestBroker {
    TestBroker::start_with(|c| c.limits.dormant_after_ms = 50).await
}

/// A dormant subscriber is woken by a delivery; a dormant publisher by its own PUBLISH (and
/// gets its PUBACK); both go dormant again afterwards and still answer PINGREQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dormant_clients_wake_for_deliveries_and_their_own_packets() {
    let b = broker().await;
    for v in VERSIONS {
        let topic = format!("dorm/{v}");
        let mut sub = RawClient::connected(b.addr, v, &format!("sub{v}")).await;
        sub_all(&mut sub, v, &[&topic], 1).await;
        let mut publ = RawClient::connected(b.addr, v, &format!("pub{v}")).await;
        b.wait_dormant(2).await;

        pub_msg(&mut publ, v, &topic, 1, b"wake").await;
        let r = recv_acked(&mut sub, v).await;
        assert_eq!(r.payload, b"wake", "{}", vname(v));
        assert_eq!(r.qos, 1);

        b.wait_dormant(2).await;
        sub.ping().await;
        publ.ping().await;
        b.wait_dormant(2).await;
        drop((sub, publ));
        b.wait_dormant(0).await;
    }
    b.stop().await;
}

/// Inflight state sleeps with the connection: an unacknowledged QoS 1 delivery is acknowledged
/// after dormancy, and an inbound QoS 2 message is released after dormancy and forwarded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_flows_span_dormancy() {
    let b = broker().await;
    for v in VERSIONS {
        let topic = format!("flow/{v}");
        let mut sub = RawClient::connected(b.addr, v, &format!("fsub{v}")).await;
        sub_all(&mut sub, v, &[&topic], 2).await;
        let mut publ = RawClient::connected(b.addr, v, &format!("fpub{v}")).await;

        // Publisher: PUBLISH QoS 2, PUBREC, then dormancy before PUBREL.
        let pkid = next_pkid();
        publ.send(&Publish::new(v, &topic, b"two").qos(2, pkid).build())
            .await;
        let (got, _) = parse_ack(&publ.recv_expect(PUBREC).await);
        assert_eq!(got, pkid);
        // Subscriber: receives it (QoS 2), does not answer yet.
        let r = sub.recv_publish(v).await;
        assert_eq!(r.payload, b"two");
        b.wait_dormant(2).await;

        // A duplicate of the released-but-not-yet-completed message is not forwarded again.
        publ.send(
            &Publish::new(v, &topic, b"two")
                .qos(2, pkid)
                .dup(true)
                .build(),
        )
        .await;
        let (got, _) = parse_ack(&publ.recv_expect(PUBREC).await);
        assert_eq!(got, pkid);
        publ.send(&pubrel(pkid)).await;
        let (got, reason) = parse_ack(&publ.recv_expect(PUBCOMP).await);
        assert_eq!((got, reason), (pkid, 0));

        b.wait_dormant(2).await;
        // The subscriber completes its side after dormancy; the broker still knows the flow.
        ack_received(&mut sub, &r).await;
        pub_msg(&mut publ, v, &topic, 0, b"fence").await;
        let rest = collect_until(&mut sub, v, b"fence").await;
        assert!(rest.is_empty(), "{}: forwarded twice: {rest:?}", vname(v));
    }
    b.stop().await;
}

/// A v5 client's inbound topic aliases survive dormancy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_aliases_survive_dormancy() {
    let b = broker().await;
    let mut sub = RawClient::connected(b.addr, V5, "asub").await;
    sub_all(&mut sub, V5, &["alias/t"], 0).await;
    let mut publ = RawClient::connected(b.addr, V5, "apub").await;
    let set = Publish::new(V5, "alias/t", b"first").props(prop_u16(0x23, 1));
    publ.send(&set.build()).await;
    assert_eq!(sub.recv_publish(V5).await.payload, b"first");
    b.wait_dormant(2).await;
    let reuse = Publish::new(V5, "", b"second").props(prop_u16(0x23, 1));
    publ.send(&reuse.build()).await;
    let r = sub.recv_publish(V5).await;
    assert_eq!(
        (r.topic.as_str(), r.payload.as_slice()),
        ("alias/t", &b"second"[..])
    );
    b.stop().await;
}

/// Keep-alive is enforced while dormant: a silent client with keep-alive 1 s is closed after
/// 1.5 s (v5: DISCONNECT 0x8D), not before and not much later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_expires_while_dormant() {
    let b = broker().await;
    for v in VERSIONS {
        let start = Instant::now();
        let (mut c, _) =
            RawClient::handshake(b.addr, v, &Connect::new(v, &format!("ka{v}")).keepalive(1)).await;
        b.wait_dormant(1).await;
        c.expect_disconnect_or_close(v, 0x8D).await;
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1400) && took < Duration::from_secs(4),
            "{}: closed after {took:?}",
            vname(v)
        );
        b.wait_dormant(0).await;
    }
    b.stop().await;
}

/// A dormant client whose network connection drops has its will published, and one that
/// disconnects normally does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_of_a_dormant_client() {
    let b = broker().await;
    for v in VERSIONS {
        let topic = format!("dwill/{v}");
        let mut w = RawClient::connected(b.addr, v, &format!("dw{v}")).await;
        sub_all(&mut w, v, &[&topic], 1).await;
        let c = Connect::new(v, &format!("dying{v}")).will(Will::new(&topic, b"gone"));
        let (dying, _) = RawClient::handshake(b.addr, v, &c).await;
        let c = Connect::new(v, &format!("polite{v}")).will(Will::new(&topic, b"polite"));
        let (mut polite, _) = RawClient::handshake(b.addr, v, &c).await;
        b.wait_dormant(3).await;

        polite.send(&disconnect()).await;
        drop(polite);
        drop(dying);
        let r = recv_acked(&mut w, v).await;
        assert_eq!(r.payload, b"gone", "{}", vname(v));
        expect_nothing(&mut w).await;
        drop(w);
        b.wait_dormant(0).await;
    }
    b.stop().await;
}

/// Takeover of a dormant connection: the old one is woken and closed (v5: 0x8E), the new one
/// resumes the persistent session with its subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_of_a_dormant_connection() {
    let b = broker().await;
    for v in VERSIONS {
        let id = format!("dup{v}");
        let topic = format!("take/{v}");
        let (mut first, _) = connect_persistent(b.addr, v, &id, false).await;
        sub_all(&mut first, v, &[&topic], 1).await;
        b.wait_dormant(1).await;
        let (mut second, present) = connect_persistent(b.addr, v, &id, false).await;
        assert!(present, "{}", vname(v));
        first.expect_disconnect_or_close(v, 0x8E).await;
        let mut publ = RawClient::connected(b.addr, v, &format!("tp{v}")).await;
        pub_msg(&mut publ, v, &topic, 1, b"after").await;
        assert_eq!(recv_acked(&mut second, v).await.payload, b"after");
        second.send(&disconnect()).await;
    }
    b.stop().await;
}

/// Shutdown reaches dormant clients: v5 gets DISCONNECT 0x8B, v3.1.1 a close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_wakes_dormant_clients() {
    let b = broker().await;
    let mut v5 = RawClient::connected(b.addr, V5, "s5").await;
    let mut v3 = RawClient::connected(b.addr, V311, "s3").await;
    b.wait_dormant(2).await;
    tokio::time::timeout(crate::harness::WAIT, b.stop())
        .await
        .expect("stop() finished");
    v5.expect_disconnect(0x8B).await;
    v3.expect_disconnect_or_close(V311, 0).await;
}

/// Half a packet is not lost to dormancy: a connection holding a partial packet stays awake,
/// and the packet completes when the rest arrives. A 3.1 (MQIsdp) client keeps being decoded
/// as 3.1 after it wakes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_packets_and_protocol_level_survive() {
    let b = broker().await;
    let mut sub = RawClient::connected(b.addr, V31, "old").await;
    sub.subscribe(V31, "half/#", 0).await;
    let mut publ = RawClient::connected(b.addr, V311, "halfpub").await;
    b.wait_dormant(2).await;
    let bytes = publish(V311, "half/x", 0, 0, b"split in two");
    publ.send(&bytes[..5]).await;
    // Awake again for the first half, and staying awake while the packet is incomplete.
    b.wait_dormant(1).await;
    sub.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(
        b.dormant(),
        1,
        "a connection with half a packet went dormant"
    );
    publ.send(&bytes[5..]).await;
    let r = sub.recv_publish(V31).await;
    assert_eq!(r.payload, b"split in two");
    b.wait_dormant(2).await;
    b.stop().await;
}

/// `dormant_after_ms = 0` keeps every connection awake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dormancy_can_be_turned_off() {
    let b = TestBroker::start_with(|c| c.limits.dormant_after_ms = 0).await;
    let mut c = RawClient::connected(b.addr, V5, "awake").await;
    c.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(b.dormant(), 0);
    c.ping().await;
    b.stop().await;
}
