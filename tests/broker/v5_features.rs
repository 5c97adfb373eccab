//! MQTT 5 extras: topic aliases in both directions, Message Expiry Interval, the client's Maximum
//! Packet Size, forwarding of PUBLISH properties, Request Problem Information, and the capabilities
//! a CONNACK advertises. CONNECT validation itself is in connect.rs.

use std::collections::HashMap;
use std::time::Duration;

use crate::harness::TestBroker;
use crate::support::*;
use crate::wire::*;

/// A v5 subscriber to `filter` at QoS 1 whose CONNECT carries `props`.
async fn v5_sub(b: &TestBroker, id: &str, props: Vec<u8>, filter: &str) -> RawClient {
    let (mut c, _) = RawClient::handshake(b.addr, V5, &Connect::new(V5, id).props(props)).await;
    sub_all(&mut c, V5, &[filter], 1).await;
    c
}

/// [MQTT-3.3.2-12] (v5 3.3.2.3.4) A PUBLISH with a Topic Name and a Topic Alias
/// sets the alias; a later PUBLISH with that alias and an empty Topic Name is delivered with the
/// full topic. Subscribers see the real topic, never the publisher's alias.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_alias_inbound_resolved() {
    let b = TestBroker::start().await;
    let mut s = v5_sub(&b, "s", Vec::new(), "ta/#").await;
    let mut s3 = RawClient::connected(b.addr, V311, "s3").await;
    sub_all(&mut s3, V311, &["ta/#"], 1).await;
    let mut p = RawClient::connected(b.addr, V5, "p").await;
    send_flow(
        &mut p,
        Publish::new(V5, "ta/first", b"1")
            .qos(1, 0)
            .props(prop_u16(TOPIC_ALIAS, 1)),
    )
    .await;
    send_flow(
        &mut p,
        Publish::new(V5, "", b"2")
            .qos(1, 0)
            .props(prop_u16(TOPIC_ALIAS, 1)),
    )
    .await;
    // Re-map alias 1 to another topic.
    send_flow(
        &mut p,
        Publish::new(V5, "ta/second", b"3")
            .qos(0, 0)
            .props(prop_u16(TOPIC_ALIAS, 1)),
    )
    .await;
    send_flow(
        &mut p,
        Publish::new(V5, "", b"4")
            .qos(1, 0)
            .props(prop_u16(TOPIC_ALIAS, 1)),
    )
    .await;
    for (c, v) in [(&mut s, V5), (&mut s3, V311)] {
        let got: Vec<Received> = [
            recv_acked(c, v).await,
            recv_acked(c, v).await,
            recv_acked(c, v).await,
            recv_acked(c, v).await,
        ]
        .into();
        let topics: Vec<&str> = got.iter().map(|r| r.topic.as_str()).collect();
        assert_eq!(topics, ["ta/first", "ta/first", "ta/second", "ta/second"]);
        assert!(got.iter().all(|r| r.prop(TOPIC_ALIAS).is_none()));
    }
    b.stop().await;
}

/// [MQTT-3.3.2-9] (v5 3.3.2.3.4) A Topic Alias of 0 or above the Topic Alias Maximum the server
/// sent in CONNACK is answered with DISCONNECT 0x94 (Topic Alias invalid).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_alias_above_maximum_is_disconnected() {
    let b = TestBroker::start_with(|c| c.limits.topic_alias_maximum = 2).await;
    for alias in [3u16, 0] {
        let (mut p, ack) = RawClient::handshake(b.addr, V5, &Connect::new(V5, "p")).await;
        assert_eq!(ack.prop(TOPIC_ALIAS_MAXIMUM), Some(&PropValue::U16(2)));
        p.send(
            &Publish::new(V5, "tam/t", b"x")
                .qos(1, 1)
                .props(prop_u16(TOPIC_ALIAS, alias))
                .build(),
        )
        .await;
        p.expect_disconnect(0x94).await;
    }
    b.stop().await;
}

/// [MQTT-3.3.2-8] [MQTT-3.3.2-10] (v5 3.3.2.3.4) The server may alias outbound topics only up to
/// the client's Topic Alias Maximum: a repeated topic arrives as alias + empty Topic Name; a client
/// that sent no Topic Alias Maximum never gets an alias.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_topic_alias_only_when_client_allows() {
    let b = TestBroker::start().await;
    let topic = "alias/a/rather/long/topic/name";
    let mut allowed = v5_sub(&b, "allowed", prop_u16(TOPIC_ALIAS_MAXIMUM, 5), topic).await;
    let mut plain = v5_sub(&b, "plain", Vec::new(), topic).await;
    let mut p = RawClient::connected(b.addr, V5, "p").await;
    for i in 0..4u8 {
        pub_msg(&mut p, V5, topic, 1, &[i]).await;
    }

    let mut aliases: HashMap<u32, String> = HashMap::new();
    let mut empty_topic_seen = false;
    for i in 0..4u8 {
        let r = recv_acked(&mut allowed, V5).await;
        assert_eq!(r.payload, [i]);
        let resolved = match r.prop(TOPIC_ALIAS).map(PropValue::int) {
            Some(a) => {
                assert!((1..=5).contains(&a), "alias {a} outside 1..=5");
                if r.topic.is_empty() {
                    empty_topic_seen = true;
                    aliases
                        .get(&a)
                        .expect("alias used before it was set")
                        .clone()
                } else {
                    aliases.insert(a, r.topic.clone());
                    r.topic.clone()
                }
            }
            None => r.topic.clone(),
        };
        assert_eq!(resolved, topic);
    }
    assert!(
        empty_topic_seen,
        "a repeated topic should be sent as alias + empty topic"
    );

    for i in 0..4u8 {
        let r = recv_acked(&mut plain, V5).await;
        assert_eq!(r.payload, [i]);
        assert_eq!(r.topic, topic);
        assert_eq!(r.prop(TOPIC_ALIAS), None, "client did not allow aliases");
    }
    b.stop().await;
}

/// [MQTT-3.3.2-5] A message whose Message Expiry Interval passed while queued for an offline
/// session is not delivered; [MQTT-3.3.2-6] one still valid is forwarded with the remaining
/// interval, which is no more than the original.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_expiry_drops_stale_queued_messages() {
    let b = TestBroker::start().await;
    let (mut c, _) = connect_persistent(b.addr, V5, "late", true).await;
    sub_all(&mut c, V5, &["mx/t"], 1).await;
    c.send(&disconnect()).await;
    c.expect_closed().await;

    let mut p = RawClient::connected(b.addr, V5, "p").await;
    for (payload, expiry) in [(&b"short"[..], 1u32), (b"long", 100)] {
        send_flow(
            &mut p,
            Publish::new(V5, "mx/t", payload)
                .qos(1, 0)
                .props(prop_u32(MESSAGE_EXPIRY, expiry)),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(2200)).await;

    let (mut c, sp) = connect_persistent(b.addr, V5, "late", false).await;
    assert!(sp);
    pub_msg(&mut p, V5, "mx/t", 1, b"fence").await;
    let got = collect_until(&mut c, V5, b"fence").await;
    assert_eq!(payloads(&got), ["long"], "expired message dropped");
    let left = got[0]
        .prop(MESSAGE_EXPIRY)
        .expect("remaining Message Expiry Interval forwarded")
        .int();
    assert!(left <= 99, "2.2 s passed: remaining {left} s of 100");
    assert!(left >= 90, "remaining {left} s of 100 after ~2 s");

    // Live delivery: never more than what the publisher set.
    send_flow(
        &mut p,
        Publish::new(V5, "mx/t", b"live")
            .qos(1, 0)
            .props(prop_u32(MESSAGE_EXPIRY, 30)),
    )
    .await;
    let r = recv_acked(&mut c, V5).await;
    let left = r.prop(MESSAGE_EXPIRY).expect("forwarded").int();
    assert!((1..=30).contains(&left), "remaining {left}");
    b.stop().await;
}

/// [MQTT-3.1.2-24] [MQTT-3.1.2-25] The server does not send a client a packet larger than the
/// Maximum Packet Size it asked for; that message is dropped for it alone and the connection stays
/// up, while other subscribers get it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_maximum_packet_size_respected() {
    let b = TestBroker::start().await;
    let mut small = v5_sub(&b, "small", prop_u32(MAXIMUM_PACKET_SIZE, 128), "mps/t").await;
    let mut big = v5_sub(&b, "big", Vec::new(), "mps/t").await;
    let mut p = RawClient::connected(b.addr, V5, "p").await;
    let payload = vec![b'x'; 500];
    pub_msg(&mut p, V5, "mps/t", 1, &payload).await;
    pub_msg(&mut p, V5, "mps/t", 1, b"fence").await;

    let got = collect_until(&mut big, V5, b"fence").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, payload);
    let got = collect_until(&mut small, V5, b"fence").await;
    assert!(got.is_empty(), "oversized message must not be sent");
    small.ping().await;
    b.stop().await;
}

/// [MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-18] [MQTT-3.3.2-20]
/// Payload Format Indicator, Content Type, Response Topic, Correlation Data and User Properties (in
/// order, repeated keys kept) reach subscribers unchanged, for every delivery QoS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_properties_forwarded_unchanged() {
    let b = TestBroker::start().await;
    let mut s = v5_sub(&b, "s", Vec::new(), "rr/req").await;
    let mut p = RawClient::connected(b.addr, V5, "p").await;
    let props = [
        prop_u8(PAYLOAD_FORMAT, 1),
        prop_str(CONTENT_TYPE, "text/plain; charset=utf-8"),
        prop_str(RESPONSE_TOPIC, "rr/resp/42"),
        prop_bin(CORRELATION_DATA, &[0, 1, 2, 255]),
        prop_user("z", "1"),
        prop_user("a", "2"),
        prop_user("z", "3"),
    ]
    .concat();
    for qos in 0..=2u8 {
        send_flow(
            &mut p,
            Publish::new(V5, "rr/req", "héllo".as_bytes())
                .qos(qos, 0)
                .props(props.clone()),
        )
        .await;
        let r = recv_acked(&mut s, V5).await;
        assert_eq!(r.payload, "héllo".as_bytes());
        assert_eq!(r.prop(PAYLOAD_FORMAT), Some(&PropValue::Byte(1)));
        assert_eq!(
            r.prop(CONTENT_TYPE),
            Some(&PropValue::Str("text/plain; charset=utf-8".into()))
        );
        assert_eq!(
            r.prop(RESPONSE_TOPIC),
            Some(&PropValue::Str("rr/resp/42".into()))
        );
        assert_eq!(
            r.prop(CORRELATION_DATA),
            Some(&PropValue::Bin(vec![0, 1, 2, 255]))
        );
        let pair = |k: &str, v: &str| PropValue::Pair(k.into(), v.into());
        assert_eq!(
            all_props(&r.props, USER_PROPERTY),
            [pair("z", "1"), pair("a", "2"), pair("z", "3")],
            "QoS {qos}"
        );
    }
    b.stop().await;
}

/// The same properties through rumqttc's MQTT 5 client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_properties_forwarded_to_rumqttc() {
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    let b = TestBroker::start().await;
    let mut s = crate::rmq::V5::connect(b.port(), "rs").await;
    s.subscribe("rr/t", crate::rmq::Q5::AtLeastOnce).await;
    let p = crate::rmq::V5::connect(b.port(), "rp").await;
    let props = PublishProperties {
        payload_format_indicator: Some(1),
        response_topic: Some("rr/back".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"id-7")),
        user_properties: vec![("k".into(), "v".into())],
        content_type: Some("application/json".into()),
        ..Default::default()
    };
    p.client
        .publish_with_properties("rr/t", crate::rmq::Q5::AtLeastOnce, false, "{}", props)
        .await
        .unwrap();
    let got = s.next_publish().await;
    let gp = got.properties.expect("properties forwarded");
    assert_eq!(gp.payload_format_indicator, Some(1));
    assert_eq!(gp.response_topic.as_deref(), Some("rr/back"));
    assert_eq!(gp.correlation_data.as_deref(), Some(&b"id-7"[..]));
    assert_eq!(gp.user_properties, [("k".to_string(), "v".to_string())]);
    assert_eq!(gp.content_type.as_deref(), Some("application/json"));
    b.stop().await;
}

/// [MQTT-3.1.2-29] With Request Problem Information 0 the server sends no Reason String and no
/// User Property on PUBACK, PUBREC, PUBCOMP, SUBACK or UNSUBACK, even for failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_problem_information_zero_suppresses_reason_strings() {
    let b = TestBroker::start_with(|c| c.limits.max_topic_levels = 3).await;
    let connect = Connect::new(V5, "quiet").props(prop_u8(REQUEST_PROBLEM_INFO, 0));
    let (mut c, _) = RawClient::handshake(b.addr, V5, &connect).await;
    let quiet = |what: &str, props: Props| {
        assert!(
            prop(&props, REASON_STRING).is_none() && prop(&props, USER_PROPERTY).is_none(),
            "{what}: {props:?}"
        );
    };
    // PUBACK for a topic nobody subscribed to (reason 0x00 or 0x10).
    c.send(&publish(V5, "nobody/here", 1, 11, b"x")).await;
    quiet("PUBACK", ack_props(&c.recv_expect(PUBACK).await, 3));
    // PUBREC, then PUBCOMP for it and PUBCOMP (0x92 expected) for an unknown packet id.
    c.send(&publish(V5, "nobody/here", 2, 12, b"x")).await;
    quiet("PUBREC", ack_props(&c.recv_expect(PUBREC).await, 3));
    c.send(&pubrel(12)).await;
    quiet("PUBCOMP", ack_props(&c.recv_expect(PUBCOMP).await, 3));
    c.send(&pubrel(999)).await;
    let body = c.recv_expect(PUBCOMP).await;
    let (pkid, reason) = parse_ack(&body);
    assert_eq!(pkid, 999);
    assert!(
        reason == 0 || reason == 0x92,
        "PUBCOMP reason {reason:#04x}"
    );
    quiet("PUBCOMP unknown id", ack_props(&body, 3));
    // UNSUBACK 0x11.
    c.send(&unsubscribe(V5, 13, &["never/subscribed"], &[]))
        .await;
    quiet("UNSUBACK", ack_props(&c.recv_expect(UNSUBACK).await, 2));
    // SUBACK with a refused filter (more levels than allowed).
    c.send(&subscribe(
        V5,
        14,
        &[("too/many/levels/here", 1), ("ok", 1)],
        &[],
    ))
    .await;
    quiet("SUBACK", ack_props(&c.recv_expect(SUBACK).await, 2));
    b.stop().await;
}

/// (v5 3.2.2.3) CONNACK advertises the server's limits and features: Receive
/// Maximum, Topic Alias Maximum and Maximum Packet Size as configured; Retain, Wildcard,
/// Subscription Identifier and Shared Subscription available (absent or 1); Maximum QoS absent
/// (QoS 2 supported; the property may only carry 0 or 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_advertises_capabilities() {
    let b = TestBroker::start_with(|c| {
        c.limits.receive_maximum = 50;
        c.limits.topic_alias_maximum = 7;
        c.limits.max_packet_size = 65_536;
    })
    .await;
    let (_c, ack) = RawClient::handshake(b.addr, V5, &Connect::new(V5, "caps")).await;
    assert_eq!(ack.prop(RECEIVE_MAXIMUM), Some(&PropValue::U16(50)));
    assert_eq!(ack.prop(TOPIC_ALIAS_MAXIMUM), Some(&PropValue::U16(7)));
    assert_eq!(ack.prop(MAXIMUM_PACKET_SIZE), Some(&PropValue::U32(65_536)));
    assert_eq!(ack.prop(MAXIMUM_QOS), None, "QoS 2 supported");
    for (name, id) in [
        ("Retain Available", RETAIN_AVAILABLE),
        ("Wildcard Subscription Available", WILDCARD_SUB_AVAILABLE),
        ("Subscription Identifier Available", SUB_ID_AVAILABLE),
        ("Shared Subscription Available", SHARED_SUB_AVAILABLE),
    ] {
        let v = ack.prop(id).map(PropValue::int);
        assert!(v.is_none() || v == Some(1), "{name}: {v:?}");
    }
    // Each property at most once.
    let mut ids: Vec<u8> = ack.props.iter().map(|(i, _)| *i).collect();
    ids.retain(|i| *i != USER_PROPERTY);
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "duplicate CONNACK property: {:?}", ack.props);
    b.stop().await;
}
