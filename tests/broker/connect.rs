//! CONNECT handling: protocol name/level, client identifiers, packet order, the CONNECT
//! deadline, enhanced authentication, and the normal DISCONNECT.

use std::time::{Duration, Instant};

use crate::harness::{TestBroker, WAIT};
use crate::support::{pub_msg, recv_acked, send_flow, sub_all, sub_raw};
use crate::wire::*;

/// Asserts the connection is closed and that whatever came before the close was at most one
/// CONNACK refusing the connection (v3: return code != 0, v5: reason >= 0x80), with its reason in
/// `allowed` when `allowed` is not empty. Returns the CONNACK's reason, if any.
async fn expect_refused_or_closed(c: &mut RawClient, level: u8, allowed: &[u8]) -> Option<u8> {
    let got = c.expect_closed().await;
    assert!(
        got.len() <= 1,
        "expected at most a CONNACK before close: {got:02x?}"
    );
    let (first, body) = got.first()?;
    assert_eq!(
        *first, CONNACK,
        "only a CONNACK may precede the close: {got:02x?}"
    );
    let ack = parse_connack(level, body);
    assert!(ack.reason != 0, "connection accepted: {ack:?}");
    if !allowed.is_empty() {
        assert!(
            allowed.contains(&ack.reason),
            "CONNACK reason {:#04x} not in {allowed:02x?}",
            ack.reason
        );
    }
    Some(ack.reason)
}

/// [MQTT-3.1.2-2] (3.1.1) An unsupported Protocol Level gets CONNACK 0x01, in the 3.1.1 format,
/// and the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_protocol_level_gets_connack_0x01_then_close() {
    let broker = TestBroker::start().await;
    // 0x85: the bridge bit (below) is a v3 convention, not defined for v5.
    for level in [0u8, 1, 2, 6, 0x7F, 0x85, 0x86] {
        let mut c = RawClient::connect(broker.addr).await;
        c.send(
            &Connect::new(level, "badlevel")
                .protocol_name("MQTT")
                .build(),
        )
        .await;
        let got = c.expect_closed().await;
        assert_eq!(
            got,
            vec![(CONNACK, vec![0x00, 0x01])],
            "protocol level {level}: expected CONNACK 20 02 00 01 then close"
        );
    }
    assert_broker_serves(broker.addr, V311).await;
    broker.stop().await;
}

/// A v3 protocol level with its top bit set (0x83, 0x84) is what Mosquitto's bridges send
/// (`try_private`, on by default): it is accepted, and such a bridge's subscriptions are No Local
/// (its own messages do not come back) and Retain As Published (live retained messages keep
/// their flag), as Mosquitto does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_protocol_level_gets_no_local_and_retain_as_published() {
    let broker = TestBroker::start().await;
    for (level, name) in [(V311, "MQTT"), (V31, "MQIsdp")] {
        let topic = |t: &str| format!("bridged/{level}/{t}");
        let connect = Connect::new(level | 0x80, &format!("edge-{level}")).protocol_name(name);
        let (mut bridge, ack) = RawClient::handshake(broker.addr, level, &connect).await;
        assert_eq!(ack.reason, 0, "level {:#04x} refused", level | 0x80);
        sub_all(&mut bridge, level, &[&topic("#")], 1).await;
        pub_msg(&mut bridge, level, &topic("own"), 1, b"own").await;
        let mut device = RawClient::connected(broker.addr, V311, &format!("dev-{level}")).await;
        send_flow(
            &mut device,
            Publish::new(V311, &topic("kept"), b"kept")
                .qos(1, 0)
                .retain(true),
        )
        .await;
        pub_msg(&mut device, V311, &topic("live"), 1, b"live").await;
        // Its own message would have been routed first.
        let first = recv_acked(&mut bridge, level).await;
        assert_eq!(first.payload, b"kept", "first delivery: {first:?}");
        assert!(first.retain, "retain flag not kept for a bridge: {first:?}");
        let second = recv_acked(&mut bridge, level).await;
        assert_eq!(second.payload, b"live");
        assert!(!second.retain);
        // The same level without the bit: an ordinary client, which gets its own messages.
        let mut plain = RawClient::connected(broker.addr, level, &format!("plain-{level}")).await;
        sub_raw(&mut plain, level, &[(&topic("p"), 1)], &[]).await;
        pub_msg(&mut plain, level, &topic("p"), 1, b"p").await;
        let got = recv_acked(&mut plain, level).await;
        assert_eq!(got.payload, b"p");
        send_flow(
            &mut device,
            Publish::new(V311, &topic("kept"), b"")
                .qos(1, 0)
                .retain(true),
        )
        .await;
    }
    assert_broker_serves(broker.addr, V311).await;
    broker.stop().await;
}

/// [MQTT-3.1.2-1] A wrong Protocol Name with level 4: the server may close at once, or refuse with
/// CONNACK 0x01 (3.1.1 format); it must not accept the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocol_name_v311_is_refused() {
    let broker = TestBroker::start().await;
    for name in ["MQTX", "mqtt", "MQIsdp", ""] {
        let mut c = RawClient::connect(broker.addr).await;
        c.send(&Connect::new(V311, "badname").protocol_name(name).build())
            .await;
        let reason = expect_refused_or_closed(&mut c, V311, &[0x01]).await;
        if let Some(r) = reason {
            assert_eq!(r, 0x01, "protocol name {name:?}");
        }
    }
    assert_broker_serves(broker.addr, V311).await;
    broker.stop().await;
}

/// [MQTT-3.1.2-1] [MQTT-3.1.2-2] (5.0) A wrong Protocol Name with level 5: closed, after at
/// most a CONNACK 0x84 (Unsupported Protocol Version).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocol_name_v5_is_refused_with_0x84_or_closed() {
    let broker = TestBroker::start().await;
    for name in ["MQTX", "mqtt", "MQIsdp"] {
        let mut c = RawClient::connect(broker.addr).await;
        c.send(&Connect::new(V5, "badname5").protocol_name(name).build())
            .await;
        expect_refused_or_closed(&mut c, V5, &[0x84, 0x01]).await;
    }
    assert_broker_serves(broker.addr, V5).await;
    broker.stop().await;
}

/// MQTT 3.1 (`MQIsdp`, level 3) clients are accepted and served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt31_mqisdp_is_accepted() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::connect(broker.addr).await;
    c.send(&connect(V31, "old-client")).await;
    assert_eq!(c.recv_packet().await, (CONNACK, vec![0x00, 0x00]));
    c.ping().await;
    c.subscribe(V31, "v31/t", 1).await;
    let mut p = RawClient::connected(broker.addr, V311, "v311-pub").await;
    assert_round_trip(&mut p, &mut c, V31, "v31/t").await;
    broker.stop().await;
}

/// [MQTT-3.1.3-6] [MQTT-3.1.3-7] (3.1.1) An empty Client Identifier with Clean Session 1 is
/// accepted; two such clients get distinct identities and both keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_client_id_v311_clean_session_is_accepted() {
    let broker = TestBroker::start().await;
    let (mut a, ack_a) = RawClient::handshake(broker.addr, V311, &Connect::new(V311, "")).await;
    let (mut b, ack_b) = RawClient::handshake(broker.addr, V311, &Connect::new(V311, "")).await;
    assert!(!ack_a.session_present && !ack_b.session_present);
    // Neither took the other over.
    a.ping().await;
    b.ping().await;
    a.subscribe(V311, "empty/t", 1).await;
    assert_round_trip(&mut b, &mut a, V311, "empty/t").await;
    broker.stop().await;
}

/// [MQTT-3.1.3-8] (3.1.1) An empty Client Identifier with Clean Session 0 gets CONNACK 0x02
/// (identifier rejected) and the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_client_id_v311_persistent_is_rejected_with_0x02() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::connect(broker.addr).await;
    c.send(&Connect::new(V311, "").clean(false).build()).await;
    let got = c.expect_closed().await;
    assert_eq!(got, vec![(CONNACK, vec![0x00, 0x02])]);
    assert_broker_serves(broker.addr, V311).await;
    broker.stop().await;
}

/// [MQTT-3.1.3-6] [MQTT-3.2.2-16] (5.0) An empty Client Identifier is accepted and the CONNACK
/// carries an Assigned Client Identifier, unique per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_client_id_v5_gets_assigned_client_identifier() {
    let broker = TestBroker::start().await;
    let (mut a, ack_a) = RawClient::handshake(broker.addr, V5, &Connect::new(V5, "")).await;
    let (mut b, ack_b) = RawClient::handshake(broker.addr, V5, &Connect::new(V5, "")).await;
    let id_a = ack_a
        .prop(ASSIGNED_CLIENT_ID)
        .expect("Assigned Client Identifier in CONNACK")
        .str()
        .to_string();
    let id_b = ack_b
        .prop(ASSIGNED_CLIENT_ID)
        .expect("Assigned Client Identifier in CONNACK")
        .str()
        .to_string();
    assert!(!id_a.is_empty());
    assert_ne!(id_a, id_b, "assigned identifiers must be unique");
    a.ping().await;
    b.ping().await;
    broker.stop().await;
}

/// [MQTT-3.2.2-16] (5.0) A client that supplies its own identifier gets no Assigned Client
/// Identifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_client_v5_gets_no_assigned_client_identifier() {
    let broker = TestBroker::start().await;
    let (_c, ack) = RawClient::handshake(broker.addr, V5, &Connect::new(V5, "named")).await;
    assert!(ack.prop(ASSIGNED_CLIENT_ID).is_none(), "{ack:?}");
    broker.stop().await;
}

/// [MQTT-3.1.0-1] The first packet must be CONNECT; anything else closes the connection without
/// an answer (no PINGRESP, no SUBACK, no CONNACK).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_packet_not_connect_is_closed() {
    let broker = TestBroker::start().await;
    for level in [V311, V5] {
        let firsts = [
            pingreq(),
            publish(level, "a/b", 0, 0, b"x"),
            publish(level, "a/b", 1, 1, b"x"),
            subscribe(level, 1, &[("a/#", 0)], &[]),
            disconnect(),
            vec![CONNACK, 2, 0, 0],
        ];
        for bytes in firsts {
            let mut c = RawClient::connect(broker.addr).await;
            c.send(&bytes).await;
            let got = c.expect_closed().await;
            assert!(
                got.is_empty(),
                "first packet {bytes:02x?}: expected close with no answer, got {got:02x?}"
            );
        }
    }
    assert_broker_serves(broker.addr, V311).await;
    broker.stop().await;
}

/// [MQTT-3.1.0-2] A second CONNECT is a protocol violation: v3 closed, v5 DISCONNECT 0x82 then
/// closed. Other clients are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connect_is_a_protocol_error() {
    let broker = TestBroker::start().await;
    for level in [V311, V5] {
        let mut c = RawClient::connected(broker.addr, level, "twice").await;
        c.send(&connect(level, "twice")).await;
        c.expect_disconnect_or_close(level, 0x82).await;
        assert_broker_serves(broker.addr, level).await;
    }
    broker.stop().await;
}

/// A connection that sends nothing is closed once `connect_timeout_secs` passes (not before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_is_closed_after_connect_timeout() {
    let broker = TestBroker::start_with(|c| c.limits.connect_timeout_secs = 1).await;
    let start = Instant::now();
    let mut c = RawClient::connect(broker.addr).await;
    let got = c.expect_closed().await;
    let took = start.elapsed();
    assert!(got.is_empty(), "{got:02x?}");
    assert!(
        took >= Duration::from_millis(800),
        "closed too early: {took:?}"
    );
    assert!(took <= Duration::from_secs(3), "closed too late: {took:?}");
    assert_broker_serves(broker.addr, V311).await;
    broker.stop().await;
}

/// The CONNECT deadline is counted from accept: a CONNECT trickled one byte every 300 ms (which
/// would take ~7 s) is cut off at ~1 s, not kept alive by each byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_connect_does_not_extend_the_deadline() {
    let broker = TestBroker::start_with(|c| c.limits.connect_timeout_secs = 1).await;
    let bytes = connect(V311, "trickle-trickle");
    assert!(bytes.len() >= 20);
    let start = Instant::now();
    let mut c = RawClient::connect(broker.addr).await;
    let mut closed_after = None;
    for b in &bytes {
        if c.try_send(&[*b]).await.is_err() {
            closed_after = Some(start.elapsed());
            break;
        }
        match c.next_event(Duration::from_millis(300)).await {
            Event::Timeout => {}
            Event::Closed => {
                closed_after = Some(start.elapsed());
                break;
            }
            Event::Packet(f, b) => panic!("unexpected packet {f:#04x} {b:02x?}"),
        }
    }
    let took = closed_after.expect("connection survived the whole trickle");
    assert!(
        took >= Duration::from_millis(800),
        "closed too early: {took:?}"
    );
    assert!(took <= Duration::from_secs(3), "closed too late: {took:?}");
    broker.stop().await;
}

/// [MQTT-4.12.0-1] (5.0) An unsupported Authentication Method is refused with CONNACK 0x8C (Bad
/// authentication method; the spec also allows 0x87 Not Authorized) and the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_unknown_authentication_method_gets_0x8c() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::connect(broker.addr).await;
    c.send(
        &Connect::new(V5, "auth")
            .props(prop_str(AUTH_METHOD, "SCRAM-SHA-1"))
            .build(),
    )
    .await;
    let got = c.expect_closed().await;
    assert_eq!(
        got.len(),
        1,
        "expected exactly a CONNACK before close: {got:02x?}"
    );
    assert_eq!(got[0].0, CONNACK);
    let ack = parse_connack(V5, &got[0].1);
    assert!(ack.reason == 0x8C || ack.reason == 0x87, "{ack:?}");
    assert!(!ack.session_present);
    assert_broker_serves(broker.addr, V5).await;
    broker.stop().await;
}

/// [MQTT-4.12.0-7] (5.0) A client that sent no Authentication Method must not send
/// AUTH; doing so is a Protocol Error: DISCONNECT 0x82, then close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_auth_without_method_is_a_protocol_error() {
    let broker = TestBroker::start().await;
    for bytes in [
        auth(0x18, &prop_str(AUTH_METHOD, "SCRAM-SHA-1")),
        auth(0x19, &[]),
        vec![AUTH, 0],
    ] {
        let mut c = RawClient::connected(broker.addr, V5, "auth-late").await;
        c.send(&bytes).await;
        c.expect_disconnect(0x82).await;
    }
    assert_broker_serves(broker.addr, V5).await;
    broker.stop().await;
}

/// [MQTT-3.2.2-3] [MQTT-3.2.2-2] A first connection never has a session; Session Present is 0
/// with Clean Session/Start 0 and with 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_connection_has_no_session_present() {
    let broker = TestBroker::start().await;
    for level in [V311, V5] {
        for clean in [false, true] {
            let mut conn = Connect::new(level, &format!("fresh-{level}-{clean}")).clean(clean);
            if level == V5 {
                conn = conn.props(prop_u32(SESSION_EXPIRY, 300));
            }
            let (_c, ack) = RawClient::handshake(broker.addr, level, &conn).await;
            assert!(!ack.session_present, "level {level} clean {clean}: {ack:?}");
        }
    }
    broker.stop().await;
}

/// The CONNACK of a normal v3.1.1 connection is exactly `20 02 00 00`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_connack_is_byte_exact() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::connect(broker.addr).await;
    c.send(&connect(V311, "exact")).await;
    let (first, body) = tokio::time::timeout(WAIT, c.recv_packet())
        .await
        .expect("CONNACK");
    assert_eq!((first, body), (CONNACK, vec![0, 0]));
    broker.stop().await;
}

/// [MQTT-3.2.2-9] .. [MQTT-3.2.2-20] (5.0) The CONNACK advertises the configured limits that
/// differ from the protocol defaults: Receive Maximum, Topic Alias Maximum, Maximum Packet Size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_connack_advertises_configured_limits() {
    let broker = TestBroker::start_with(|c| {
        c.limits.receive_maximum = 42;
        c.limits.topic_alias_maximum = 7;
        c.limits.max_packet_size = 4096;
    })
    .await;
    let (mut c, ack) = RawClient::handshake(broker.addr, V5, &Connect::new(V5, "limits")).await;
    assert!(!ack.session_present);
    assert_eq!(
        ack.prop(RECEIVE_MAXIMUM).map(PropValue::int),
        Some(42),
        "{ack:?}"
    );
    assert_eq!(
        ack.prop(TOPIC_ALIAS_MAXIMUM).map(PropValue::int),
        Some(7),
        "{ack:?}"
    );
    assert_eq!(
        ack.prop(MAXIMUM_PACKET_SIZE).map(PropValue::int),
        Some(4096),
        "{ack:?}"
    );
    // Each property at most once [2.2.2.2].
    let mut ids: Vec<u8> = ack
        .props
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| *id != USER_PROPERTY)
        .collect();
    let n = ids.len();
    ids.dedup();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "duplicate CONNACK property: {ack:?}");
    c.ping().await;
    broker.stop().await;
}
