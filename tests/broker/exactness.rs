//! Exactness where other suites (Mosquitto's broker tests, Paho's interoperability tests,
//! raw-socket probes) look: reason codes of violations, malformed filters, unexpected
//! acknowledgements, protocol names, MQTT 3.1, the client's Maximum Packet Size, wildcards in
//! topic names, and a first byte that is not CONNECT. Raw bytes on a real socket, each case for
//! every protocol version it applies to.

use std::time::Duration;

use crate::harness::{TestBroker, WAIT};
use crate::wire::*;

/// v3.1.1 and v5.
const LEVELS: [u8; 2] = [V311, V5];

/// A v5 packet of type `first` whose body is `head`, then `props` as its property block.
fn with_props(first: u8, head: &[u8], props: &[u8]) -> Vec<u8> {
    let mut b = head.to_vec();
    b.extend(props_block(props));
    packet(first, &b)
}

/// A publisher/subscriber pair on `topic` with the subscriber's window holding one QoS `qos`
/// message it has not acknowledged: returns (subscriber, its packet id).
async fn one_inflight(broker: &TestBroker, level: u8, topic: &str, qos: u8) -> (RawClient, u16) {
    let mut sub = RawClient::connected(broker.addr, level, &format!("sub-{}", rand_suffix())).await;
    sub.subscribe(level, topic, qos).await;
    let mut publ =
        RawClient::connected(broker.addr, level, &format!("pub-{}", rand_suffix())).await;
    publ.send(&publish(level, topic, 0, 0, b"m")).await;
    publ.ping().await;
    // A QoS 0 message would not be inflight: publish at the QoS asked for.
    let mut p = Publish::new(level, topic, b"flow");
    if qos > 0 {
        p = p.qos(qos, 9);
    }
    let got = sub.recv_publish(level).await;
    assert_eq!(got.payload, b"m");
    publ.send(&p.build()).await;
    let got = sub.recv_publish(level).await;
    assert_eq!((got.qos, got.payload.as_slice()), (qos, &b"flow"[..]));
    (sub, got.pkid)
}

/// Item 1: MQTT 5 §2.2.2.2. A property the packet type does not allow makes the packet
/// malformed (0x81); Maximum QoS 3 in a subscription's options is a Protocol Error (0x82,
/// §3.8.3.1). Other clients carry on.
#[tokio::test]
async fn property_not_allowed_is_malformed_and_qos_3_a_protocol_error() {
    let broker = TestBroker::start().await;
    let cases: Vec<(&str, Vec<u8>, u8)> = vec![
        (
            "Session Expiry Interval in SUBSCRIBE",
            subscribe(V5, 1, &[("a", 0)], &prop_u32(SESSION_EXPIRY, 5)),
            0x81,
        ),
        (
            "Payload Format Indicator in PUBACK",
            with_props(PUBACK, &[0, 7, 0x00], &prop_u8(PAYLOAD_FORMAT, 1)),
            0x81,
        ),
        (
            "Payload Format Indicator in DISCONNECT",
            with_props(DISCONNECT, &[0x00], &prop_u8(PAYLOAD_FORMAT, 1)),
            0x81,
        ),
        (
            "Topic Alias in UNSUBSCRIBE",
            {
                let mut b = vec![0, 1];
                b.extend(props_block(&prop_u16(TOPIC_ALIAS, 1)));
                b.extend(string("a"));
                packet(UNSUBSCRIBE, &b)
            },
            0x81,
        ),
        (
            "Maximum QoS 3 in SUBSCRIBE options",
            subscribe(V5, 1, &[("a", 0x03)], &[]),
            0x82,
        ),
    ];
    for (name, bytes, reason) in cases {
        let mut c = RawClient::connected(broker.addr, V5, "victim").await;
        c.send(&bytes).await;
        let got = c.expect_disconnect_in(&[reason]).await;
        assert_eq!(got, reason, "{name}");
    }
    // 3.1.1 has no reason codes: QoS 3 closes.
    let mut c = RawClient::connected(broker.addr, V311, "victim3").await;
    c.send(&subscribe(V311, 1, &[("a", 0x03)], &[])).await;
    c.expect_disconnect_or_close(V311, 0).await;
    assert_broker_serves(broker.addr, V5).await;
    broker.stop().await;
}

/// Item 2: a SUBSCRIBE or UNSUBSCRIBE filter that breaks the filter rules is a malformed packet
/// [MQTT-4.7.1-1] [MQTT-4.7.3-1] [MQTT-4.8.2-1] [MQTT-4.8.2-2] (3.1.1 [MQTT-4.8.0-1]): the
/// connection closes (v5 after DISCONNECT 0x81 or 0x82), no SUBACK. A well-formed filter the
/// broker declines (too many levels) gets SUBACK 0x8F (v5) / 0x80 (3.1.1) and the connection
/// stays.
#[tokio::test]
async fn malformed_topic_filters_close_the_connection() {
    let broker = TestBroker::start_with(|c| c.limits.max_topic_levels = 3).await;
    let bad = [
        "",
        "#/a",
        "a/#/b",
        "a/b#",
        "a+/b",
        "$share/p",
        "$share/p/",
        "$share//a",
    ];
    for level in LEVELS {
        for filter in bad {
            let mut c = RawClient::connected(broker.addr, level, "filters").await;
            c.send(&subscribe(level, 3, &[("ok", 1), (filter, 1)], &[]))
                .await;
            c.expect_disconnect_or_close_in(level, &[0x81, 0x82])
                .await
                .unwrap_or_else(|e| panic!("SUBSCRIBE {filter:?} v{level}: {e}"));
            let mut c = RawClient::connected(broker.addr, level, "filters").await;
            c.send(&unsubscribe(level, 4, &[filter], &[])).await;
            c.expect_disconnect_or_close_in(level, &[0x81, 0x82])
                .await
                .unwrap_or_else(|e| panic!("UNSUBSCRIBE {filter:?} v{level}: {e}"));
        }
        let mut c = RawClient::connected(broker.addr, level, "declined").await;
        c.send(&subscribe(level, 5, &[("a/b/c/d", 1), ("a/b", 1)], &[]))
            .await;
        let (_, reasons) = parse_suback(level, &c.recv_expect(SUBACK).await);
        let declined = if level == V5 { 0x8F } else { 0x80 };
        assert_eq!(reasons, vec![declined, 1], "v{level}");
        c.ping().await;
    }
    broker.stop().await;
}

/// Item 3: unexpected acknowledgements. PUBREC for an unknown packet id is answered with
/// PUBREL (v5: 0x92 Packet Identifier not found [MQTT-4.3.3-4]); PUBACK for a QoS 2 message,
/// PUBREC for a QoS 1 one and PUBCOMP before PUBREL break the flow: v5 DISCONNECT 0x82, 3.1.1
/// close. An unknown PUBACK or PUBCOMP is ignored.
#[tokio::test]
async fn unexpected_acknowledgements_are_handled() {
    let broker = TestBroker::start().await;
    for level in LEVELS {
        let mut c = RawClient::connected(broker.addr, level, "acks").await;
        c.send(&pubrec(321)).await;
        let (pkid, reason) = parse_ack(&c.recv_expect(PUBREL).await);
        assert_eq!(pkid, 321);
        assert_eq!(reason, if level == V5 { 0x92 } else { 0 }, "v{level}");
        // Unknown PUBACK and PUBCOMP: nothing to do, the connection carries on.
        c.send(&puback(322)).await;
        c.send(&pubcomp(323)).await;
        c.ping().await;

        let topic = format!("flow/{level}");
        let (mut sub, pkid) = one_inflight(&broker, level, &topic, 2).await;
        sub.send(&puback(pkid)).await;
        sub.expect_disconnect_or_close(level, 0x82).await;

        let (mut sub, pkid) = one_inflight(&broker, level, &topic, 2).await;
        sub.send(&pubcomp(pkid)).await;
        sub.expect_disconnect_or_close(level, 0x82).await;

        let (mut sub, pkid) = one_inflight(&broker, level, &topic, 1).await;
        sub.send(&pubrec(pkid)).await;
        sub.expect_disconnect_or_close(level, 0x82).await;

        // The right flow still works: PUBREC, PUBREL, PUBCOMP.
        let (mut sub, pkid) = one_inflight(&broker, level, &topic, 2).await;
        sub.send(&pubrec(pkid)).await;
        let (rel, reason) = parse_ack(&sub.recv_expect(PUBREL).await);
        assert_eq!((rel, reason), (pkid, 0));
        sub.send(&pubcomp(pkid)).await;
        sub.ping().await;
    }
    broker.stop().await;
}

/// Item 4: a CONNECT whose protocol name is not MQTT is not MQTT: the connection closes
/// without a CONNACK [MQTT-3.1.2-1] [MQTT-3.1.4-1]. A valid name with an unsupported level
/// gets CONNACK 0x01.
#[tokio::test]
async fn wrong_protocol_name_closes_without_connack() {
    let broker = TestBroker::start().await;
    for (name, level) in [
        ("MQTX", V311),
        ("mqtt", V311),
        ("MQTT ", V5),
        ("MQIsdp ", V31),
    ] {
        let mut c = RawClient::connect(broker.addr).await;
        c.send(&Connect::new(level, "named").protocol_name(name).build())
            .await;
        let got = c.expect_closed().await;
        assert!(got.is_empty(), "{name:?}/{level}: {got:02x?}");
    }
    let (_, ack) = RawClient::try_handshake(
        broker.addr,
        V311,
        &Connect::new(7, "level7").protocol_name("MQTT"),
    )
    .await;
    assert_eq!(ack.reason, 0x01);
    assert_broker_serves(broker.addr, V311).await;
    broker.stop().await;
}

/// Item 5: MQTT 3.1 is its own protocol. Its CONNACK has no Session Present flag (byte 1 is 0
/// even when a session resumes); the 3.1.1 rules on the reserved CONNECT flag and on
/// fixed-header flags do not apply; a client id over 23 characters gets return code 2.
#[tokio::test]
async fn mqtt_3_1_is_its_own_protocol() {
    let broker = TestBroker::start().await;
    let connect = Connect::new(V31, "old-client").clean(false);
    let (mut c, _) = RawClient::handshake(broker.addr, V31, &connect).await;
    c.subscribe(V31, "old/t", 1).await;
    c.send(&disconnect()).await;
    c.expect_closed().await;
    let mut c = RawClient::connect(broker.addr).await;
    c.send(&connect.build()).await;
    let body = c.recv_expect(CONNACK).await;
    assert_eq!(body, vec![0, 0], "3.1 CONNACK on resume");
    // The same resume in 3.1.1 says Session Present.
    let connect4 = Connect::new(V311, "new-client").clean(false);
    let (mut c4, _) = RawClient::handshake(broker.addr, V311, &connect4).await;
    c4.send(&disconnect()).await;
    c4.expect_closed().await;
    let (_, ack) = RawClient::handshake(broker.addr, V311, &connect4).await;
    assert!(ack.session_present);

    // Flags 3.1 leaves free: the reserved CONNECT bit, DUP and QoS bits on SUBSCRIBE.
    let mut free = Connect::new(V31, "free-flags");
    free.extra_flags = 0x01;
    let (mut c, _) = RawClient::handshake(broker.addr, V31, &free).await;
    let mut sub = subscribe(V31, 8, &[("old/u", 1)], &[]);
    sub[0] = 0x8A; // DUP + QoS 1
    c.send(&sub).await;
    let (pkid, codes) = parse_suback(V31, &c.recv_expect(SUBACK).await);
    assert_eq!((pkid, codes), (8, vec![1]));
    // In 3.1.1 the same bytes are malformed.
    let mut c4 = RawClient::connected(broker.addr, V311, "strict").await;
    c4.send(&sub).await;
    c4.expect_disconnect_or_close(V311, 0).await;

    let (_, ack) =
        RawClient::try_handshake(broker.addr, V31, &Connect::new(V31, &"x".repeat(24))).await;
    assert_eq!(ack.reason, 2);
    let (_, ack) =
        RawClient::handshake(broker.addr, V31, &Connect::new(V31, &"y".repeat(23))).await;
    assert_eq!(ack.reason, 0);
    broker.stop().await;
}

/// Item 6: the client's Maximum Packet Size binds every packet Tern sends [MQTT-3.1.2-24]:
/// CONNACK leaves out optional properties to fit; a SUBACK that cannot fit ends the connection
/// (DISCONNECT 0x95, which fits); a client that cannot take even a bare CONNACK gets none.
#[tokio::test]
async fn client_maximum_packet_size_binds_every_packet() {
    let broker = TestBroker::start().await;
    let small = Connect::new(V5, "small").props(prop_u32(MAXIMUM_PACKET_SIZE, 20));
    let mut c = RawClient::connect(broker.addr).await;
    c.send(&small.build()).await;
    let (first, body) = c.recv_packet().await;
    assert_eq!(first, CONNACK);
    let total = 1 + varint(body.len()).len() + body.len();
    assert!(
        total <= 20,
        "CONNACK of {total} bytes to a client that takes 20"
    );
    assert_eq!(parse_connack(V5, &body).reason, 0);
    // Room for a few subscriptions; 30 filters make a SUBACK of 35 bytes.
    c.subscribe(V5, "a", 1).await;
    let filters: Vec<String> = (0..30).map(|i| format!("f/{i}")).collect();
    let pairs: Vec<(&str, u8)> = filters.iter().map(|f| (f.as_str(), 0)).collect();
    c.send(&subscribe(V5, 2, &pairs, &[])).await;
    c.expect_disconnect(0x95).await;

    let tiny = Connect::new(V5, "tiny").props(prop_u32(MAXIMUM_PACKET_SIZE, 4));
    let mut c = RawClient::connect(broker.addr).await;
    c.send(&tiny.build()).await;
    let got = c.expect_closed().await;
    assert!(
        got.is_empty(),
        "a CONNACK cannot fit in 4 bytes: {got:02x?}"
    );
    assert_broker_serves(broker.addr, V5).await;
    broker.stop().await;
}

/// Item 7: a PUBLISH whose topic name holds a wildcard is malformed (MQTT 5 §4.13.1): v5
/// DISCONNECT 0x81, 3.1.1 close; not PUBACK 0x90, which is for well-formed names the broker
/// declines.
#[tokio::test]
async fn wildcard_in_publish_topic_is_malformed() {
    let broker = TestBroker::start().await;
    for level in LEVELS {
        for (topic, qos) in [("a/+", 0), ("a/#", 1), ("+", 2), ("a/b#", 1)] {
            let mut c = RawClient::connected(broker.addr, level, "wild").await;
            let mut p = Publish::new(level, topic, b"x");
            if qos > 0 {
                p = p.qos(qos, 1);
            }
            c.send(&p.build()).await;
            c.expect_disconnect_or_close(level, 0x81).await;
        }
    }
    assert_broker_serves(broker.addr, V5).await;
    broker.stop().await;
}

/// Item 9: a connection whose first byte announces anything but CONNECT is closed as soon as
/// that byte arrives [MQTT-3.1.0-1], not after the whole packet or the CONNECT timeout.
#[tokio::test]
async fn non_connect_first_byte_closes_at_once() {
    let broker = TestBroker::start_with(|c| c.limits.connect_timeout_secs = 30).await;
    for first in [PUBLISH, 0x32, SUBSCRIBE, PINGREQ, 0x00, 0xF0] {
        let mut c = RawClient::connect(broker.addr).await;
        let started = tokio::time::Instant::now();
        // One byte of a packet that would be much longer.
        c.send(&[first]).await;
        let got = c.expect_closed().await;
        assert!(got.is_empty(), "{first:#04x}: {got:02x?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{first:#04x} closed after {:?}",
            started.elapsed()
        );
    }
    // A partial CONNECT is still waited for.
    let mut c = RawClient::connect(broker.addr).await;
    let connect = Connect::new(V311, "slow").build();
    c.send(&connect[..3]).await;
    c.expect_silence(Duration::from_millis(300)).await;
    c.send(&connect[3..]).await;
    assert_eq!(c.recv_expect(CONNACK).await, vec![0, 0]);
    let _ = WAIT;
    broker.stop().await;
}
