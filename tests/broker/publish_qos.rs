//! QoS 0/1/2 delivery: acknowledgement flows in both directions, QoS downgrade, exactly-once for
//! inbound QoS 2, per-publisher ordering, the outbound inflight window and resend on resume.
//! Connection set-up, keep-alive and malformed packets are covered elsewhere (connect.rs etc.).

use std::time::Duration;

use crate::harness::{TestBroker, WAIT};
use crate::rmq;
use crate::support::*;
use crate::wire::*;

/// [MQTT-4.3.1-1] [MQTT-4.3.2-1] [MQTT-4.3.3-1] QoS 0, 1 and 2 PUBLISHes complete their flows
/// with the broker as receiver (PUBACK; PUBREC/PUBREL/PUBCOMP) and as sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_0_1_2_flows_complete_in_both_directions() {
    let b = TestBroker::start().await;
    for v in VERSIONS {
        let topic = format!("flows/{v}");
        let mut sub = RawClient::connected(b.addr, v, &format!("sub{v}")).await;
        sub_all(&mut sub, v, &[&topic], 2).await;
        let mut publ = RawClient::connected(b.addr, v, &format!("pub{v}")).await;
        for qos in 0..=2u8 {
            let payload = format!("qos{qos}");
            pub_msg(&mut publ, v, &topic, qos, payload.as_bytes()).await;
            let r = sub.recv_publish(v).await;
            assert_eq!(r.topic, topic, "{}", vname(v));
            assert_eq!(r.payload, payload.as_bytes(), "{}", vname(v));
            assert_eq!(r.qos, qos, "{}: delivered QoS", vname(v));
            if qos > 0 {
                assert_ne!(r.pkid, 0, "{}: QoS > 0 needs a packet id", vname(v));
            }
            // Asserts the PUBREL carries the PUBREC's packet id.
            ack_received(&mut sub, &r).await;
        }
        expect_nothing(&mut sub).await;
        publ.ping().await;
    }
    b.stop().await;
}

/// [MQTT-4.3.1-1] [MQTT-4.3.2-1] [MQTT-4.3.3-1] The same flows driven by rumqttc (MQTT 3.1.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_round_trips_every_qos() {
    use rumqttc::QoS;
    let b = TestBroker::start().await;
    let mut sub = rmq::V4::connect(b.port(), "rsub4").await;
    sub.subscribe("rq/t", QoS::ExactlyOnce).await;
    let publ = rmq::V4::connect(b.port(), "rpub4").await;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let payload = format!("{qos:?}");
        publ.client
            .publish("rq/t", qos, false, payload.clone())
            .await
            .unwrap();
        let p = sub.next_publish().await;
        assert_eq!(&p.topic, "rq/t");
        assert_eq!(&p.payload[..], payload.as_bytes());
        assert_eq!(p.qos, qos);
        assert!(!p.retain);
    }
    b.stop().await;
}

/// [MQTT-4.3.1-1] [MQTT-4.3.2-1] [MQTT-4.3.3-1] The same flows driven by rumqttc (MQTT 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_round_trips_every_qos() {
    use rmq::Q5;
    let b = TestBroker::start().await;
    let mut sub = rmq::V5::connect(b.port(), "rsub5").await;
    sub.subscribe("rq/t", Q5::ExactlyOnce).await;
    let publ = rmq::V5::connect(b.port(), "rpub5").await;
    for qos in [Q5::AtMostOnce, Q5::AtLeastOnce, Q5::ExactlyOnce] {
        let payload = format!("{qos:?}");
        publ.client
            .publish("rq/t", qos, false, payload.clone())
            .await
            .unwrap();
        let p = sub.next_publish().await;
        assert_eq!(&p.topic[..], b"rq/t");
        assert_eq!(&p.payload[..], payload.as_bytes());
        assert_eq!(p.qos, qos);
        assert!(!p.retain);
    }
    b.stop().await;
}

/// [MQTT-3.8.4-6] (v3.1.1) / [MQTT-3.8.4-8] (v5) The delivered QoS is the minimum of the published
/// QoS and the QoS granted to the subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_qos_is_min_of_published_and_granted() {
    let b = TestBroker::start().await;
    for v in VERSIONS {
        let topic = format!("min/{v}");
        let mut subs = Vec::new();
        for sq in 0..=2u8 {
            let mut s = RawClient::connected(b.addr, v, &format!("s{v}-{sq}")).await;
            let granted = sub_raw(&mut s, v, &[(&topic, sq)], &[]).await;
            assert_eq!(granted, vec![sq], "{}: granted QoS", vname(v));
            subs.push(s);
        }
        let mut publ = RawClient::connected(b.addr, v, &format!("p{v}")).await;
        for pq in 0..=2u8 {
            pub_msg(&mut publ, v, &topic, pq, &[pq]).await;
        }
        for (sq, s) in subs.iter_mut().enumerate() {
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(recv_acked(s, v).await);
            }
            got.sort_by_key(|r| r.payload[0]);
            for (pq, r) in got.iter().enumerate() {
                assert_eq!(r.payload, vec![pq as u8]);
                assert_eq!(
                    r.qos,
                    (pq as u8).min(sq as u8),
                    "{}: published at {pq}, subscribed at {sq}",
                    vname(v)
                );
            }
        }
    }
    b.stop().await;
}

/// [MQTT-4.3.3-2] (v3.1.1) / [MQTT-4.3.3-9] (v5) A QoS 2 PUBLISH repeated with the same packet id
/// (DUP=1) before PUBREL is acknowledged again but forwarded once; after PUBREL/PUBCOMP the same
/// packet id starts a new message [MQTT-4.3.3-11].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_duplicate_publish_is_forwarded_once() {
    let b = TestBroker::start().await;
    for v in VERSIONS {
        let topic = format!("dup/{v}");
        let mut sub = RawClient::connected(b.addr, v, &format!("sub{v}")).await;
        sub_all(&mut sub, v, &[&topic], 2).await;
        let mut publ = RawClient::connected(b.addr, v, &format!("pub{v}")).await;

        publ.send(&Publish::new(v, &topic, b"once").qos(2, 7).build())
            .await;
        assert_eq!(parse_ack(&publ.recv_expect(PUBREC).await).0, 7);
        publ.send(&Publish::new(v, &topic, b"once").qos(2, 7).dup(true).build())
            .await;
        assert_eq!(parse_ack(&publ.recv_expect(PUBREC).await).0, 7);
        publ.send(&pubrel(7)).await;
        assert_eq!(parse_ack(&publ.recv_expect(PUBCOMP).await).0, 7);

        pub_msg(&mut publ, v, &topic, 1, b"fence").await;
        let got = collect_until(&mut sub, v, b"fence").await;
        assert_eq!(payloads(&got), ["once"], "{}", vname(v));

        // The same packet id after PUBCOMP is a new message.
        send_flow(&mut publ, Publish::new(v, &topic, b"again").qos(2, 7)).await;
        let r = recv_acked(&mut sub, v).await;
        assert_eq!(r.payload, b"again", "{}", vname(v));
        expect_nothing(&mut sub).await;
    }
    b.stop().await;
}

/// Publishes 500 QoS 1 messages with rumqttc `publ` and checks `sub` sees them in order.
macro_rules! assert_500_in_order {
    ($publ:expr, $sub:expr, $qos:expr) => {{
        for i in 0..500u32 {
            $publ
                .client
                .publish("order/t", $qos, false, i.to_be_bytes().to_vec())
                .await
                .unwrap();
        }
        for i in 0..500u32 {
            let p = $sub.next_publish().await;
            assert_eq!(&p.payload[..], &i.to_be_bytes(), "message {i} out of order");
        }
    }};
}

/// [MQTT-4.6.0-6] Messages from one publisher on one topic reach a subscriber in publish order
/// (500 QoS 1 messages, MQTT 3.1.1 via rumqttc).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_order_kept_for_500_qos1_messages_v311() {
    let b = TestBroker::start().await;
    let mut sub = rmq::V4::connect(b.port(), "osub").await;
    sub.subscribe("order/t", rumqttc::QoS::AtLeastOnce).await;
    let publ = rmq::V4::connect(b.port(), "opub").await;
    assert_500_in_order!(publ, sub, rumqttc::QoS::AtLeastOnce);
    b.stop().await;
}

/// [MQTT-4.6.0-6] Same for MQTT 5 via rumqttc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_order_kept_for_500_qos1_messages_v5() {
    let b = TestBroker::start().await;
    let mut sub = rmq::V5::connect(b.port(), "osub").await;
    sub.subscribe("order/t", rmq::Q5::AtLeastOnce).await;
    let publ = rmq::V5::connect(b.port(), "opub").await;
    assert_500_in_order!(publ, sub, rmq::Q5::AtLeastOnce);
    b.stop().await;
}

/// Publishes `n` QoS 1 messages with payloads `0..n` (one byte each) on `topic`.
async fn publish_numbered(publ: &mut RawClient, v: u8, topic: &str, n: u8) {
    for i in 0..n {
        pub_msg(publ, v, topic, 1, &[i]).await;
    }
}

/// `limits.max_inflight_messages` (3.1.1) and `limits.max_inflight_messages_v5` (v5, a client
/// that states no Receive Maximum) cap unacknowledged QoS 1 PUBLISHes to a client (v5: the
/// server's side of [MQTT-3.3.4-9]); each PUBACK releases exactly the next queued message, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_inflight_window_is_bounded() {
    let b = TestBroker::start_with(|c| {
        c.limits.max_inflight_messages = 5;
        c.limits.max_inflight_messages_v5 = 5;
    })
    .await;
    for v in VERSIONS {
        let topic = format!("win/{v}");
        let mut sub = RawClient::connected(b.addr, v, &format!("sub{v}")).await;
        sub_all(&mut sub, v, &[&topic], 1).await;
        let mut publ = RawClient::connected(b.addr, v, &format!("pub{v}")).await;
        publish_numbered(&mut publ, v, &topic, 10).await;

        let mut window = Vec::new();
        for i in 0..5u8 {
            let r = sub.recv_publish(v).await;
            assert_eq!(r.payload, [i], "{}: order", vname(v));
            window.push(r);
        }
        expect_nothing(&mut sub).await;
        sub.send(&puback(window[0].pkid)).await;
        let r = sub.recv_publish(v).await;
        assert_eq!(r.payload, [5], "{}: PUBACK releases the next", vname(v));
        window.push(r);
        expect_nothing(&mut sub).await;
        for r in &window[1..] {
            sub.send(&puback(r.pkid)).await;
        }
        for i in 6..10u8 {
            let r = recv_acked(&mut sub, v).await;
            assert_eq!(r.payload, [i], "{}: order", vname(v));
        }
        expect_nothing(&mut sub).await;
    }
    b.stop().await;
}

/// [MQTT-3.3.4-9] The server sends no more unacknowledged QoS 1 PUBLISHes than the client's
/// Receive Maximum (2 here, below the configured window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_receive_maximum_caps_outbound_inflight() {
    let b = TestBroker::start().await;
    let connect = Connect::new(V5, "rm-sub").props(prop_u16(RECEIVE_MAXIMUM, 2));
    let (mut sub, _) = RawClient::handshake(b.addr, V5, &connect).await;
    sub_all(&mut sub, V5, &["rm/t"], 1).await;
    let mut publ = RawClient::connected(b.addr, V5, "rm-pub").await;
    publish_numbered(&mut publ, V5, "rm/t", 6).await;

    let first = sub.recv_publish(V5).await;
    let second = sub.recv_publish(V5).await;
    assert_eq!((first.payload[0], second.payload[0]), (0, 1));
    expect_nothing(&mut sub).await;
    sub.send(&puback(first.pkid)).await;
    let third = sub.recv_publish(V5).await;
    assert_eq!(third.payload, [2]);
    expect_nothing(&mut sub).await;
    sub.send(&puback(second.pkid)).await;
    sub.send(&puback(third.pkid)).await;
    for i in 3..6u8 {
        assert_eq!(recv_acked(&mut sub, V5).await.payload, [i]);
    }
    b.stop().await;
}

/// Each version gets its own window: a 3.1.1 client `max_inflight_messages` (1 here), a v5
/// client its Receive Maximum (none sent: 65,535) up to `max_inflight_messages_v5` (3 here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_version_gets_its_own_window() {
    let b = TestBroker::start_with(|c| {
        c.limits.max_inflight_messages = 1;
        c.limits.max_inflight_messages_v5 = 3;
    })
    .await;
    for (v, window) in [(V311, 1u8), (V5, 3)] {
        let topic = format!("own/{v}");
        let mut sub = RawClient::connected(b.addr, v, &format!("own-sub{v}")).await;
        sub_all(&mut sub, v, &[&topic], 1).await;
        let mut publ = RawClient::connected(b.addr, v, &format!("own-pub{v}")).await;
        publish_numbered(&mut publ, v, &topic, 6).await;
        let mut held = Vec::new();
        for i in 0..window {
            let r = sub.recv_publish(v).await;
            assert_eq!(r.payload, [i], "{}: order", vname(v));
            held.push(r);
        }
        expect_nothing(&mut sub).await;
        for r in &held {
            sub.send(&puback(r.pkid)).await;
        }
        for i in window..6 {
            assert_eq!(recv_acked(&mut sub, v).await.payload, [i], "{}", vname(v));
        }
    }
    b.stop().await;
}

/// [MQTT-4.4.0-1] [MQTT-3.3.1-1] [MQTT-4.6.0-1] When a persistent session resumes, unacknowledged
/// PUBLISHes are resent in their original order with DUP=1 and their original packet ids, and a
/// QoS 2 message whose PUBREC was received is continued with PUBREL, not re-published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_outbound_resent_with_dup_on_resume() {
    let b = TestBroker::start().await;
    for v in VERSIONS {
        let id = format!("resume{v}");
        let topic = format!("rs/{v}");
        let (mut sub, present) = connect_persistent(b.addr, v, &id, false).await;
        assert!(!present);
        sub_all(&mut sub, v, &[&topic], 2).await;
        let mut publ = RawClient::connected(b.addr, v, &format!("pub{v}")).await;
        pub_msg(&mut publ, v, &topic, 1, b"A").await;
        pub_msg(&mut publ, v, &topic, 2, b"B").await;
        pub_msg(&mut publ, v, &topic, 1, b"C").await;

        let a = sub.recv_publish(v).await;
        let bb = sub.recv_publish(v).await;
        let c = sub.recv_publish(v).await;
        assert_eq!(
            payloads(&[a.clone(), bb.clone(), c.clone()]),
            ["A", "B", "C"]
        );
        assert!(!a.dup && !bb.dup && !c.dup, "{}: first sends", vname(v));
        sub.send(&pubrec(bb.pkid)).await;
        assert_eq!(parse_ack(&sub.recv_expect(PUBREL).await).0, bb.pkid);
        drop(sub); // no DISCONNECT, nothing acknowledged further

        let (mut sub, present) = connect_persistent(b.addr, v, &id, false).await;
        assert!(present, "{}: session present on resume", vname(v));
        let mut resent_publishes = Vec::new();
        let mut pubrels = Vec::new();
        for _ in 0..3 {
            let (first, body) = sub.recv_packet().await;
            if first == PUBREL {
                pubrels.push(parse_ack(&body).0);
            } else {
                resent_publishes.push(parse_publish(v, first, &body));
            }
        }
        assert_eq!(pubrels, [bb.pkid], "{}: PUBREL resent for B", vname(v));
        assert_eq!(payloads(&resent_publishes), ["A", "C"], "{}", vname(v));
        for (r, orig) in resent_publishes.iter().zip([&a, &c]) {
            assert!(r.dup, "{}: resent PUBLISH must have DUP=1", vname(v));
            assert_eq!(r.pkid, orig.pkid, "{}: original packet id", vname(v));
            assert_eq!(r.qos, 1);
        }
        sub.send(&puback(a.pkid)).await;
        sub.send(&pubcomp(bb.pkid)).await;
        sub.send(&puback(c.pkid)).await;
        expect_nothing(&mut sub).await;
        // The session is still served normally afterwards.
        pub_msg(&mut publ, v, &topic, 1, b"D").await;
        let d = tokio::time::timeout(WAIT + Duration::from_secs(1), recv_acked(&mut sub, v))
            .await
            .expect("D delivered");
        assert_eq!(d.payload, b"D");
        assert!(!d.dup);
    }
    b.stop().await;
}

/// [MQTT-3.3.4-9] (v5 4.9) A QoS 2 message counts against the client's Receive Maximum until its
/// PUBCOMP: a successful PUBREC does not release the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_receive_maximum_counts_qos2_until_pubcomp() {
    let b = TestBroker::start().await;
    let connect = Connect::new(V5, "rm2-sub").props(prop_u16(RECEIVE_MAXIMUM, 1));
    let (mut sub, _) = RawClient::handshake(b.addr, V5, &connect).await;
    sub_all(&mut sub, V5, &["rm2/t"], 2).await;
    let mut publ = RawClient::connected(b.addr, V5, "rm2-pub").await;
    for i in 0..3u8 {
        pub_msg(&mut publ, V5, "rm2/t", 2, &[i]).await;
    }
    let first = sub.recv_publish(V5).await;
    assert_eq!((first.payload[0], first.qos), (0, 2));
    sub.send(&pubrec(first.pkid)).await;
    assert_eq!(parse_ack(&sub.recv_expect(PUBREL).await).0, first.pkid);
    expect_nothing(&mut sub).await;
    sub.send(&pubcomp(first.pkid)).await;
    let second = recv_acked(&mut sub, V5).await;
    assert_eq!(second.payload, [1]);
    let third = recv_acked(&mut sub, V5).await;
    assert_eq!(third.payload, [2]);
    b.stop().await;
}

/// A message crosses protocol versions: a v5 PUBLISH with properties reaches a v3.1.1 subscriber
/// as a valid v3.1.1 PUBLISH (no property block), and a v3.1.1 PUBLISH reaches a v5 subscriber
/// with a property block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_protocol_versions() {
    let b = TestBroker::start().await;
    let mut s3 = RawClient::connected(b.addr, V311, "s3").await;
    sub_all(&mut s3, V311, &["x/#"], 1).await;
    let mut s5 = RawClient::connected(b.addr, V5, "s5").await;
    sub_all(&mut s5, V5, &["x/#"], 1).await;
    let mut p5 = RawClient::connected(b.addr, V5, "p5").await;
    send_flow(
        &mut p5,
        Publish::new(V5, "x/from5", b"five")
            .qos(1, 0)
            .props([prop_user("k", "v"), prop_str(CONTENT_TYPE, "t")].concat()),
    )
    .await;
    let mut p3 = RawClient::connected(b.addr, V311, "p3").await;
    pub_msg(&mut p3, V311, "x/from3", 1, b"three").await;

    let a = recv_acked(&mut s3, V311).await;
    let c = recv_acked(&mut s3, V311).await;
    assert_eq!(
        (a.topic.as_str(), &a.payload[..]),
        ("x/from5", &b"five"[..])
    );
    assert_eq!(
        (c.topic.as_str(), &c.payload[..]),
        ("x/from3", &b"three"[..])
    );
    let a = recv_acked(&mut s5, V5).await;
    let c = recv_acked(&mut s5, V5).await;
    assert_eq!(a.payload, b"five");
    assert_eq!(a.prop(CONTENT_TYPE), Some(&PropValue::Str("t".into())));
    assert_eq!(c.payload, b"three");
    assert_eq!(c.topic, "x/from3");
    b.stop().await;
}

/// Payloads needing a multi-byte Remaining Length (here 300 kB) pass through intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payload_delivered_intact() {
    let b = TestBroker::start().await;
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    for v in VERSIONS {
        let mut s = RawClient::connected(b.addr, v, &format!("big{v}")).await;
        sub_all(&mut s, v, &["big/t"], 1).await;
        let mut publ = RawClient::connected(b.addr, v, &format!("bigp{v}")).await;
        pub_msg(&mut publ, v, "big/t", 1, &payload).await;
        let r = recv_acked(&mut s, v).await;
        assert_eq!(r.payload.len(), payload.len(), "{}", vname(v));
        assert!(r.payload == payload, "{}: payload corrupted", vname(v));
    }
    b.stop().await;
}
