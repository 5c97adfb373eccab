//! Configured limits: connections, packet size, topic levels, subscriptions, queues, Receive
//! Maximum, and isolation from a slow subscriber.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{TestBroker, WAIT};
use crate::probe::rumqttc_round_trip;
use crate::wire::*;

/// Asserts the connection is refused: closed, after at most a CONNACK with a failure code.
async fn expect_refused(c: &mut RawClient, level: u8) {
    let got = c.expect_closed().await;
    assert!(got.len() <= 1, "{got:02x?}");
    if let Some((first, body)) = got.first() {
        assert_eq!(*first, CONNACK, "{got:02x?}");
        let ack = parse_connack(level, body);
        if level == V5 {
            assert!(ack.reason >= 0x80, "{ack:?}");
        } else {
            assert!(ack.reason != 0, "{ack:?}");
        }
    }
}

/// `max_connections` = 2: a third connection (v3 or v5) is refused or closed; once one of the two
/// leaves, a new one is accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_the_extra_connection() {
    let broker = TestBroker::start_with(|c| c.limits.max_connections = 2).await;
    let mut a = RawClient::connected(broker.addr, V311, "a").await;
    let mut b = RawClient::connected(broker.addr, V5, "b").await;
    for level in [V311, V5] {
        let mut extra = RawClient::connect(broker.addr).await;
        let _ = extra.try_send(&connect(level, "extra")).await;
        expect_refused(&mut extra, level).await;
    }
    a.ping().await;
    b.ping().await;

    a.send(&disconnect()).await;
    a.expect_closed().await;
    // The broker frees the slot once it has processed the close; retry within WAIT.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut c = RawClient::connect(broker.addr).await;
        let _ = c.try_send(&connect(V311, "after")).await;
        match c.next_event(WAIT).await {
            Event::Packet(CONNACK, body) if body == [0, 0] => {
                c.ping().await;
                break;
            }
            other => assert!(Instant::now() < deadline, "slot never freed: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.ping().await;
    broker.stop().await;
}

/// [MQTT-3.2.2-15] (5.0) `max_packet_size` = 1024 is advertised as Maximum Packet Size; a PUBLISH
/// under it is delivered, a bigger one gets DISCONNECT 0x95 (Packet too large) and close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_publish_over_max_packet_size_gets_0x95() {
    let broker = TestBroker::start_with(|c| c.limits.max_packet_size = 1024).await;
    let mut sub = RawClient::connected(broker.addr, V5, "sub").await;
    sub.subscribe(V5, "big/#", 0).await;
    let (mut publ, ack) = RawClient::handshake(broker.addr, V5, &Connect::new(V5, "pub")).await;
    assert_eq!(
        ack.prop(MAXIMUM_PACKET_SIZE).map(PropValue::int),
        Some(1024)
    );

    let fits = publish(V5, "big/ok", 0, 0, &[b'o'; 900]);
    assert!(fits.len() <= 1024);
    publ.send(&fits).await;
    assert_eq!(sub.recv_publish(V5).await.payload.len(), 900);

    let too_big = publish(V5, "big/no", 0, 0, &[b'n'; 2000]);
    let _ = publ.try_send(&too_big).await;
    publ.expect_disconnect(0x95).await;

    sub.ping().await;
    rumqttc_round_trip(broker.addr, V5).await;
    broker.stop().await;
}

/// The packet size limit is checked from the fixed header: a client that sends only the header of
/// a 200 MB PUBLISH is disconnected (v5: 0x95) without the broker waiting for the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_packet_is_refused_from_its_fixed_header() {
    let broker = TestBroker::start_with(|c| c.limits.max_packet_size = 1024).await;
    for level in [V311, V5] {
        let mut c = RawClient::connected(broker.addr, level, &format!("huge{level}")).await;
        let mut header = vec![PUBLISH];
        header.extend(varint(200_000_000));
        c.send(&header).await;
        c.expect_disconnect_or_close(level, 0x95).await;
    }
    assert_broker_serves(broker.addr, V311).await;
    broker.stop().await;
}

/// `max_topic_levels` = 4: a 5-level filter is refused in the SUBACK (or the client is
/// disconnected), a PUBLISH to a 5-level topic is not delivered, and 4 levels work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_topic_levels_is_enforced() {
    let broker = TestBroker::start_with(|c| c.limits.max_topic_levels = 4).await;
    for level in [V311, V5] {
        let mut c = RawClient::connected(broker.addr, level, &format!("deep{level}")).await;
        c.send(&subscribe(level, 5, &[("a/b/c/d/e", 0)], &[])).await;
        match c.next_event(WAIT).await {
            Event::Packet(SUBACK, body) => {
                let (pkid, reasons) = parse_suback(level, &body);
                assert_eq!(pkid, 5);
                assert_eq!(reasons.len(), 1);
                assert!(reasons[0] >= 0x80, "5-level filter granted: {reasons:02x?}");
            }
            Event::Packet(DISCONNECT, _) | Event::Closed => {}
            other => panic!("level {level}: unexpected {other:?}"),
        }

        let mut sub = RawClient::connected(broker.addr, level, &format!("all{level}")).await;
        sub.subscribe(level, "#", 0).await;
        let mut publ = RawClient::connected(broker.addr, level, &format!("dp{level}")).await;
        publ.send(&publish(level, "a/b/c/d/e", 1, 3, b"deep")).await;
        match publ.next_event(WAIT).await {
            // v3 has no negative PUBACK; v5 may refuse with a reason >= 0x80.
            Event::Packet(PUBACK, _) | Event::Packet(DISCONNECT, _) | Event::Closed => {}
            other => panic!("level {level}: unexpected {other:?}"),
        }
        let mut publ = RawClient::connected(broker.addr, level, &format!("sp{level}")).await;
        publ.send(&publish(level, "a/b/c/d", 0, 0, b"ok")).await;
        let got = sub.recv_publish(level).await;
        assert_eq!(got.topic, "a/b/c/d", "the 5-level message was delivered");
        sub.send(&disconnect()).await;
    }
    broker.stop().await;
}

/// [MQTT-3.9.3-2] `max_subscriptions_per_client` = 2: the third filter is refused in the SUBACK
/// (v5: 0x97 Quota exceeded, v3: 0x80); re-subscribing to a held filter still succeeds, and after
/// an UNSUBSCRIBE a new filter is granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_subscriptions_per_client_is_enforced() {
    let broker = TestBroker::start_with(|c| c.limits.max_subscriptions_per_client = 2).await;
    for level in [V311, V5] {
        let refused = if level == V5 { 0x97 } else { 0x80 };
        let mut c = RawClient::connected(broker.addr, level, &format!("subs{level}")).await;
        c.send(&subscribe(
            level,
            1,
            &[("q/1", 1), ("q/2", 1), ("q/3", 1)],
            &[],
        ))
        .await;
        let (pkid, reasons) = parse_suback(level, &c.recv_expect(SUBACK).await);
        assert_eq!(pkid, 1);
        assert_eq!(reasons, vec![1, 1, refused], "level {level}");

        c.send(&subscribe(level, 2, &[("q/1", 0)], &[])).await;
        let (_, reasons) = parse_suback(level, &c.recv_expect(SUBACK).await);
        assert_eq!(reasons, vec![0], "level {level}: replacing a subscription");

        c.send(&unsubscribe(level, 3, &["q/2"], &[])).await;
        c.recv_expect(UNSUBACK).await;
        c.send(&subscribe(level, 4, &[("q/4", 1)], &[])).await;
        let (_, reasons) = parse_suback(level, &c.recv_expect(SUBACK).await);
        assert_eq!(reasons, vec![1], "level {level}: after unsubscribe");
    }
    broker.stop().await;
}

/// `max_queued_messages` = 5 (with a window of 1 for both versions): 20 QoS 1 messages published to an
/// offline persistent session; on reconnect at most 5 (+1 inflight) arrive, at least one does, and
/// the broker stays healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_queue_is_bounded() {
    let broker = TestBroker::start_with(|c| {
        c.limits.max_queued_messages = 5;
        c.limits.max_inflight_messages = 1;
        c.limits.max_inflight_messages_v5 = 1;
    })
    .await;
    for level in [V311, V5] {
        let id = format!("offline{level}");
        let topic = format!("queue/{level}");
        let mut conn = Connect::new(level, &id).clean(false);
        if level == V5 {
            conn = conn.props(prop_u32(SESSION_EXPIRY, 300));
        }
        let (mut sub, _) = RawClient::handshake(broker.addr, level, &conn).await;
        sub.subscribe(level, &topic, 1).await;
        sub.send(&disconnect()).await;
        sub.expect_closed().await;

        let mut publ = RawClient::connected(broker.addr, level, &format!("qp{level}")).await;
        for i in 1..=20u16 {
            publ.send(&publish(level, &topic, 1, i, format!("m{i}").as_bytes()))
                .await;
            assert_eq!(parse_ack(&publ.recv_expect(PUBACK).await).0, i);
        }

        let (mut sub, ack) = RawClient::handshake(broker.addr, level, &conn).await;
        assert!(ack.session_present);
        let mut got = Vec::new();
        loop {
            match sub.next_event(Duration::from_millis(700)).await {
                Event::Packet(f, b) if f & 0xF0 == PUBLISH => {
                    let p = parse_publish(level, f, &b);
                    sub.send(&puback(p.pkid)).await;
                    got.push(String::from_utf8_lossy(&p.payload).into_owned());
                }
                Event::Timeout => break,
                other => panic!("level {level}: unexpected {other:?}"),
            }
            assert!(
                got.len() <= 20,
                "level {level}: more messages than published"
            );
        }
        assert!(
            !got.is_empty(),
            "level {level}: the offline session lost everything"
        );
        assert!(got.len() <= 6, "level {level}: queue not bounded: {got:?}");
        sub.ping().await;
        assert_broker_serves(broker.addr, level).await;
    }
    broker.stop().await;
}

/// [MQTT-3.3.4-7] (5.0) `receive_maximum` = 2 is advertised in the CONNACK; a client leaving a
/// third QoS 2 PUBLISH unreleased exceeds it and gets DISCONNECT 0x93 (Receive Maximum exceeded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_exceeding_receive_maximum_gets_0x93() {
    let broker = TestBroker::start_with(|c| c.limits.receive_maximum = 2).await;
    let (mut c, ack) = RawClient::handshake(broker.addr, V5, &Connect::new(V5, "greedy")).await;
    assert_eq!(ack.prop(RECEIVE_MAXIMUM).map(PropValue::int), Some(2));
    for pkid in [1u16, 2] {
        c.send(&publish(V5, "rm/t", 2, pkid, b"x")).await;
        // 0x10 (no matching subscribers) is a success code too [MQTT-3.5.2.1].
        let (id, reason) = parse_ack(&c.recv_expect(PUBREC).await);
        assert!(
            id == pkid && (reason == 0 || reason == 0x10),
            "{id} {reason:#x}"
        );
    }
    c.send(&publish(V5, "rm/t", 2, 3, b"x")).await;
    c.expect_disconnect(0x93).await;
    rumqttc_round_trip(broker.addr, V5).await;
    broker.stop().await;
}

/// [MQTT-3.3.4-7] (5.0) Completing a QoS 2 exchange frees its Receive Maximum slot: with
/// `receive_maximum` = 2, PUBREL of the first message lets a third one through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_released_qos2_frees_a_receive_maximum_slot() {
    let broker = TestBroker::start_with(|c| c.limits.receive_maximum = 2).await;
    let mut c = RawClient::connected(broker.addr, V5, "polite").await;
    for pkid in [1u16, 2] {
        c.send(&publish(V5, "rm/t", 2, pkid, b"x")).await;
        assert_eq!(parse_ack(&c.recv_expect(PUBREC).await).0, pkid);
    }
    c.send(&pubrel(1)).await;
    assert_eq!(parse_ack(&c.recv_expect(PUBCOMP).await).0, 1);
    c.send(&publish(V5, "rm/t", 2, 3, b"x")).await;
    let (id, reason) = parse_ack(&c.recv_expect(PUBREC).await);
    assert!(id == 3 && reason < 0x80, "{id} {reason:#x}");
    c.ping().await;
    broker.stop().await;
}

/// A subscriber that never reads its socket while a publisher floods QoS 0 does not stall others:
/// a third client's QoS 1 round trips each complete within 2 s during the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_does_not_stall_other_clients() {
    use rumqttc::{AsyncClient, Event as REvent, MqttOptions, Packet, QoS};

    let broker = TestBroker::start_with(|c| c.limits.max_queued_messages = 100).await;
    let addr = broker.addr;
    let mut slow = RawClient::connected(addr, V311, "slow").await;
    slow.subscribe(V311, "flood/#", 0).await;
    // From here on `slow` never reads.

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let flood = tokio::spawn({
        let (stop, sent) = (stop.clone(), sent.clone());
        async move {
            let mut p = RawClient::connected(addr, V311, "flooder").await;
            let msg = publish(V311, "flood/x", 0, 0, &vec![b'f'; 64 * 1024]);
            while !stop.load(Ordering::Relaxed) && sent.load(Ordering::Relaxed) < 2000 {
                if p.try_send(&msg).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    // Let the flood fill the slow subscriber's socket buffers (≥ 12 MB) or run for 3 s.
    let start = Instant::now();
    while sent.load(Ordering::Relaxed) < 200 && start.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let opts = MqttOptions::new("bystander", "127.0.0.1", broker.port());
    let (client, mut el) = AsyncClient::new(opts, 10);
    client.subscribe("probe/t", QoS::AtLeastOnce).await.unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let REvent::Incoming(Packet::SubAck(_)) = el.poll().await.expect("bystander") {
                break;
            }
        }
    })
    .await
    .expect("SUBACK during the flood");
    for i in 0..10u8 {
        let t = Instant::now();
        client
            .publish("probe/t", QoS::AtLeastOnce, false, vec![i])
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                if let REvent::Incoming(Packet::Publish(p)) = el.poll().await.expect("bystander") {
                    if p.payload.as_ref() == [i] {
                        break;
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("round trip {i} stalled by the slow subscriber"));
        assert!(t.elapsed() < Duration::from_secs(2));
    }
    stop.store(true, Ordering::Relaxed);
    // The flooder may be blocked in a write (backpressure is allowed); just end it.
    flood.abort();
    drop(slow);
    tokio::time::timeout(WAIT, broker.stop())
        .await
        .expect("stop() finished");
}
