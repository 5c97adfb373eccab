//! Malformed and forbidden input: each case must close only the offending connection (v5: after a
//! DISCONNECT with the reason the spec gives), while bystander clients connected before, and new
//! clients connected after, keep working. The broker never dies.
//!
//! Cases run in sequence on one broker per test; every failing case is collected and reported at
//! the end, so one failure does not hide the others.

use std::net::SocketAddr;

use crate::harness::{TestBroker, WAIT};
use crate::wire::*;

/// Malformed Packet.
const MALFORMED: &[u8] = &[0x81];
/// Protocol Error.
const PROTOCOL: &[u8] = &[0x82];
/// The spec forbids it without naming the class: Malformed Packet or Protocol Error.
const EITHER: &[u8] = &[0x81, 0x82];
/// A Topic Name that is forbidden: malformed, protocol error or Topic Name invalid.
const BAD_TOPIC: &[u8] = &[0x81, 0x82, 0x90];

/// One malformed input.
struct Case {
    /// What is wrong, with its spec id.
    name: &'static str,
    /// Protocol level of the CONNECT that precedes `bytes` (or of `bytes` itself).
    level: u8,
    /// `bytes` follow a successful CONNECT (true) or are the first thing sent (false).
    connected: bool,
    /// Sent verbatim.
    bytes: Vec<u8>,
    /// v5: the reasons allowed in the DISCONNECT (connected) or the refusing CONNACK (not
    /// connected; a CONNACK is optional there).
    reasons: &'static [u8],
}

/// A case sent instead of a valid CONNECT.
fn pre(name: &'static str, level: u8, bytes: Vec<u8>, reasons: &'static [u8]) -> Case {
    Case {
        name,
        level,
        connected: false,
        bytes,
        reasons,
    }
}

/// A case sent after a successful CONNECT.
fn post(name: &'static str, level: u8, bytes: Vec<u8>, reasons: &'static [u8]) -> Case {
    Case {
        name,
        level,
        connected: true,
        bytes,
        reasons,
    }
}

/// `p` with its first byte replaced.
fn with_first(mut p: Vec<u8>, first: u8) -> Vec<u8> {
    p[0] = first;
    p
}

/// `p` with the first occurrence of `from` replaced by `to` (same length).
fn patch(mut p: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = p
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    p[at..at + to.len()].copy_from_slice(to);
    p
}

/// Runs one case; panics describe the failure.
async fn run_case(addr: SocketAddr, i: usize, case: Case) {
    let level = case.level;
    let mut c = if case.connected {
        RawClient::connected(addr, level, &format!("victim{i}")).await
    } else {
        RawClient::connect(addr).await
    };
    // The broker may close before everything is written; that is fine.
    let _ = c.try_send(&case.bytes).await;
    if !case.connected {
        let got = c.expect_closed().await;
        assert!(
            got.len() <= 1,
            "more than a CONNACK before close: {got:02x?}"
        );
        if let Some((first, body)) = got.first() {
            assert_eq!(
                *first, CONNACK,
                "only a CONNACK may precede the close: {got:02x?}"
            );
            let ack = parse_connack(level, body);
            assert!(ack.reason != 0, "malformed CONNECT accepted: {ack:?}");
            if level == V5 && body.len() > 2 && !case.reasons.is_empty() {
                assert!(
                    case.reasons.contains(&ack.reason),
                    "CONNACK reason {:#04x}, expected one of {:02x?}",
                    ack.reason,
                    case.reasons
                );
            }
        }
    } else if level == V5 {
        c.expect_disconnect_in(case.reasons).await;
    } else {
        c.expect_disconnect_or_close(level, 0).await;
    }
}

/// The text of a task's panic.
fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into()),
        Err(e) => e.to_string(),
    }
}

/// Runs every case against one broker with bystanders; asserts all passed and the broker serves.
async fn run_cases(cases: Vec<Case>) {
    let broker = TestBroker::start().await;
    let addr = broker.addr;
    let mut sub = RawClient::connected(addr, V311, "bystander-sub").await;
    sub.subscribe(V311, "bystander/t", 1).await;
    let mut publ = RawClient::connected(addr, V311, "bystander-pub").await;
    let total = cases.len();
    let mut failures = Vec::new();
    for (i, case) in cases.into_iter().enumerate() {
        let name = format!("#{i} {} (level {})", case.name, case.level);
        match tokio::time::timeout(WAIT * 2, tokio::spawn(run_case(addr, i, case))).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{name}: {}", panic_text(e))),
            Err(_) => failures.push(format!("{name}: timed out")),
        }
        // Bystanders connected before the case still work.
        assert_round_trip(&mut publ, &mut sub, V311, "bystander/t").await;
    }
    // New clients are served.
    assert_broker_serves(addr, V311).await;
    assert_broker_serves(addr, V5).await;
    broker.stop().await;
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// [MQTT-3.1.4-1] (5.0) [MQTT-3.1.4-1] (3.1.1) A CONNECT that does not conform closes the
/// connection (after at most a refusing CONNACK); nothing else is affected. Spec ids per case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_connect_closes_only_that_connection() {
    let mut cases = Vec::new();
    for l in [V311, V5] {
        let base = || Connect::new(l, "mal");
        cases.extend([
            // [MQTT-2.2.2-2] (3.1.1) [MQTT-2.1.3-1] (5.0)
            pre(
                "CONNECT fixed header flags 0001",
                l,
                with_first(base().build(), 0x11),
                MALFORMED,
            ),
            // [MQTT-3.1.2-3]
            pre(
                "CONNECT reserved flag bit 0 set",
                l,
                Connect {
                    extra_flags: 0x01,
                    ..base()
                }
                .build(),
                MALFORMED,
            ),
            // [MQTT-3.1.2-14]
            pre(
                "Will QoS 3",
                l,
                base()
                    .will(Will {
                        qos: 3,
                        ..Will::new("w", b"x")
                    })
                    .build(),
                MALFORMED,
            ),
            // [MQTT-3.1.2-13] (3.1.1) [MQTT-3.1.2-11] (5.0)
            pre(
                "Will QoS 1 without Will Flag",
                l,
                Connect {
                    flags_override: Some(0x02 | 0x08),
                    ..base()
                }
                .build(),
                EITHER,
            ),
            // [MQTT-3.1.2-15]
            pre(
                "Will Retain without Will Flag",
                l,
                Connect {
                    flags_override: Some(0x02 | 0x20),
                    ..base()
                }
                .build(),
                EITHER,
            ),
            // [MQTT-3.1.2-9]
            pre(
                "Will Flag without will fields",
                l,
                Connect {
                    flags_override: Some(0x02 | 0x04),
                    ..base()
                }
                .build(),
                MALFORMED,
            ),
            // [MQTT-3.1.2-19]
            pre(
                "User Name Flag without user name",
                l,
                Connect {
                    flags_override: Some(0x02 | 0x80),
                    ..base()
                }
                .build(),
                MALFORMED,
            ),
            // [MQTT-1.5.3-2] (3.1.1) [MQTT-1.5.4-2] (5.0)
            pre(
                "U+0000 in client id",
                l,
                Connect::new(l, "a\0b").build(),
                &[0x81, 0x85],
            ),
            // [MQTT-1.5.3-1] (3.1.1) [MQTT-1.5.4-1] (5.0)
            pre(
                "invalid UTF-8 in client id",
                l,
                patch(Connect::new(l, "idXY").build(), b"XY", &[0xC3, 0x28]),
                &[0x81, 0x85],
            ),
            // [MQTT-1.5.3-1] (3.1.1) [MQTT-1.5.4-1] (5.0)
            pre(
                "UTF-16 surrogate in client id",
                l,
                patch(
                    Connect::new(l, "idXYZ").build(),
                    b"XYZ",
                    &[0xED, 0xA0, 0x80],
                ),
                &[0x81, 0x85],
            ),
            // [MQTT-4.7.1-1] (3.1.1) [MQTT-3.3.2-2] (5.0): the Will Topic is a Topic Name
            pre(
                "Will Topic with wildcard",
                l,
                base().will(Will::new("w/#", b"x")).build(),
                BAD_TOPIC,
            ),
            // [MQTT-1.5.3-2] (3.1.1) [MQTT-1.5.4-2] (5.0)
            pre(
                "U+0000 in Will Topic",
                l,
                base().will(Will::new("w\0x", b"x")).build(),
                &[0x81, 0x90],
            ),
            // [MQTT-2.2.3] remaining length shorter than the fields it contains
            pre(
                "CONNECT truncated by its remaining length",
                l,
                {
                    let full = base().build();
                    let body = &full[2..full.len() - 2];
                    packet(CONNECT, body)
                },
                MALFORMED,
            ),
            pre(
                "protocol name length beyond packet",
                l,
                vec![CONNECT, 0x02, 0x00, 0x04],
                MALFORMED,
            ),
        ]);
    }
    cases.extend([
        // [MQTT-3.1.2-22] (3.1.1)
        pre(
            "password without user name (3.1.1)",
            V311,
            Connect::new(V311, "pw").password(b"secret").build(),
            &[],
        ),
        // [MQTT-2.2] (3.1.1) reserved packet type 0
        pre("type-0 packet first", V311, vec![0x00, 0x00], &[]),
        // [MQTT-2.2.3] (3.1.1) [MQTT-1.5.5] (5.0) at most 4 bytes
        pre(
            "remaining length varint of 5 bytes",
            V311,
            vec![CONNECT, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            &[],
        ),
        // 3.1.2.11 (5.0): "It is a Protocol Error to include the Receive Maximum value of 0"
        pre(
            "Receive Maximum 0",
            V5,
            Connect::new(V5, "rm0")
                .props(prop_u16(RECEIVE_MAXIMUM, 0))
                .build(),
            PROTOCOL,
        ),
        // 2.2.2.2 (5.0): the same property more than once is a Protocol Error
        pre(
            "duplicate Session Expiry Interval",
            V5,
            Connect::new(V5, "dup")
                .props([prop_u32(SESSION_EXPIRY, 10), prop_u32(SESSION_EXPIRY, 20)].concat())
                .build(),
            PROTOCOL,
        ),
        // 3.1.2.11 (5.0): Maximum Packet Size 0 is a Protocol Error
        pre(
            "Maximum Packet Size 0",
            V5,
            Connect::new(V5, "mps0")
                .props(prop_u32(MAXIMUM_PACKET_SIZE, 0))
                .build(),
            PROTOCOL,
        ),
        // 3.1.2.11 (5.0): Request Problem Information other than 0/1 is a Protocol Error
        pre(
            "Request Problem Information 2",
            V5,
            Connect::new(V5, "rpi2")
                .props(prop_u8(REQUEST_PROBLEM_INFO, 2))
                .build(),
            PROTOCOL,
        ),
        // 2.2.2.2 (5.0): an identifier not valid for CONNECT
        pre(
            "unknown property 0x7F in CONNECT",
            V5,
            Connect::new(V5, "p7f").props(vec![0x7F, 0x00]).build(),
            EITHER,
        ),
        pre(
            "Topic Alias (a PUBLISH property) in CONNECT",
            V5,
            Connect::new(V5, "ta")
                .props(prop_u16(TOPIC_ALIAS, 1))
                .build(),
            EITHER,
        ),
    ]);
    run_cases(cases).await;
}

/// Cases valid for both versions, sent after a successful CONNECT.
fn post_cases(l: u8) -> Vec<Case> {
    let v5 = l == V5;
    let props0: &[u8] = if v5 { &[0] } else { &[] };
    let mut cases = vec![
        // [MQTT-3.8.1-1]
        post(
            "SUBSCRIBE flags 0000",
            l,
            with_first(subscribe(l, 1, &[("a", 0)], &[]), 0x80),
            MALFORMED,
        ),
        post(
            "SUBSCRIBE flags 0011",
            l,
            with_first(subscribe(l, 1, &[("a", 0)], &[]), 0x83),
            MALFORMED,
        ),
        // [MQTT-3.6.1-1]
        post(
            "PUBREL flags 0000",
            l,
            vec![0x60, 0x02, 0x00, 0x01],
            MALFORMED,
        ),
        // [MQTT-3.10.1-1]
        post(
            "UNSUBSCRIBE flags 0000",
            l,
            with_first(unsubscribe(l, 1, &["a"], &[]), 0xA0),
            MALFORMED,
        ),
        // [MQTT-2.2.2-2] (3.1.1) [MQTT-2.1.3-1] (5.0)
        post(
            "PUBACK flags 0001",
            l,
            vec![0x41, 0x02, 0x00, 0x01],
            MALFORMED,
        ),
        post("PINGREQ flags 0001", l, vec![0xC1, 0x00], MALFORMED),
        // [MQTT-3.14.1-1]
        post("DISCONNECT flags 0001", l, vec![0xE1, 0x00], MALFORMED),
        // 3.12 PINGREQ has no variable header or payload
        post(
            "PINGREQ with remaining length 1",
            l,
            vec![PINGREQ, 0x01, 0x00],
            MALFORMED,
        ),
        // [MQTT-3.3.1-4]
        post(
            "PUBLISH QoS 3",
            l,
            with_first(publish(l, "a/b", 1, 1, b"x"), 0x36),
            MALFORMED,
        ),
        // [MQTT-3.3.1-2]
        post(
            "PUBLISH QoS 0 with DUP",
            l,
            Publish::new(l, "a/b", b"x").dup(true).build(),
            EITHER,
        ),
        // [MQTT-2.3.1-1] (3.1.1) [MQTT-2.2.1-3] (5.0)
        post(
            "PUBLISH QoS 1 with packet id 0",
            l,
            publish(l, "a/b", 1, 0, b"x"),
            EITHER,
        ),
        post(
            "PUBLISH QoS 2 with packet id 0",
            l,
            publish(l, "a/b", 2, 0, b"x"),
            EITHER,
        ),
        post(
            "SUBSCRIBE with packet id 0",
            l,
            subscribe(l, 0, &[("a", 0)], &[]),
            EITHER,
        ),
        post(
            "UNSUBSCRIBE with packet id 0",
            l,
            unsubscribe(l, 0, &["a"], &[]),
            EITHER,
        ),
        // [MQTT-3.3.2-2] (both)
        post(
            "PUBLISH topic a/#",
            l,
            publish(l, "a/#", 0, 0, b"x"),
            BAD_TOPIC,
        ),
        post(
            "PUBLISH topic a/+/b",
            l,
            publish(l, "a/+/b", 0, 0, b"x"),
            BAD_TOPIC,
        ),
        post("PUBLISH topic +", l, publish(l, "+", 0, 0, b"x"), BAD_TOPIC),
        post(
            "PUBLISH QoS 1 topic #",
            l,
            publish(l, "#", 1, 1, b"x"),
            BAD_TOPIC,
        ),
        // [MQTT-1.5.3-2] (3.1.1) [MQTT-1.5.4-2] (5.0)
        post(
            "U+0000 in topic",
            l,
            publish(l, "a\0b", 0, 0, b"x"),
            MALFORMED,
        ),
        post(
            "U+0000 in topic filter",
            l,
            subscribe(l, 1, &[("a/\0", 0)], &[]),
            MALFORMED,
        ),
        // [MQTT-1.5.3-1] (3.1.1) [MQTT-1.5.4-1] (5.0)
        post(
            "invalid UTF-8 in topic",
            l,
            Publish::new(l, "", b"x")
                .topic_bytes(&[b'a', 0xFF, b'b'])
                .build(),
            MALFORMED,
        ),
        post(
            "UTF-16 surrogate in topic",
            l,
            Publish::new(l, "", b"x")
                .topic_bytes(&[b'a', 0xED, 0xA0, 0x80])
                .build(),
            MALFORMED,
        ),
        // [MQTT-3.8.3-3] (3.1.1) [MQTT-3.8.3-2] (5.0)
        post(
            "SUBSCRIBE with no filters",
            l,
            subscribe(l, 1, &[], &[]),
            PROTOCOL,
        ),
        // [MQTT-3.10.3-2]
        post(
            "UNSUBSCRIBE with no filters",
            l,
            unsubscribe(l, 1, &[], &[]),
            PROTOCOL,
        ),
        // [MQTT-2.2.3] (3.1.1) [MQTT-1.5.5] (5.0): at most 4 bytes
        post(
            "remaining length varint of 5 bytes",
            l,
            vec![PUBLISH, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            MALFORMED,
        ),
        // 2.2.1 reserved packet type 0
        post("type-0 packet", l, vec![0x00, 0x00], EITHER),
        // Server-to-client packets sent by a client
        post(
            "CONNACK from client",
            l,
            [&[CONNACK, 2 + props0.len() as u8, 0, 0][..], props0].concat(),
            EITHER,
        ),
        post(
            "SUBACK from client",
            l,
            [&[SUBACK, 3 + props0.len() as u8, 0, 1][..], props0, &[0]].concat(),
            EITHER,
        ),
        post(
            "UNSUBACK from client",
            l,
            [&[UNSUBACK, 2 + props0.len() as u8, 0, 1][..], props0].concat(),
            EITHER,
        ),
        post("PINGRESP from client", l, vec![PINGRESP, 0], EITHER),
        // 1.5.3 / 1.5.4: a string longer than its packet
        post(
            "topic length beyond packet",
            l,
            vec![PUBLISH, 0x04, 0x00, 0x10, b'a', b'b'],
            MALFORMED,
        ),
        post(
            "topic filter length beyond packet",
            l,
            [
                &[SUBSCRIBE, 5 + props0.len() as u8, 0, 1][..],
                props0,
                &[0, 9, b'a'],
            ]
            .concat(),
            MALFORMED,
        ),
    ];
    if v5 {
        cases.extend([
            // [MQTT-3.8.3-5]
            post(
                "SUBSCRIBE option reserved bits 0xC0",
                l,
                subscribe(l, 1, &[("a", 0xC0)], &[]),
                MALFORMED,
            ),
            // 3.8.3.1: Maximum QoS 3 is a Protocol Error
            post(
                "SUBSCRIBE QoS 3",
                l,
                subscribe(l, 1, &[("a", 3)], &[]),
                EITHER,
            ),
            // 3.8.3.1: Retain Handling 3 is a Protocol Error
            post(
                "SUBSCRIBE Retain Handling 3",
                l,
                subscribe(l, 1, &[("a", 0x30)], &[]),
                PROTOCOL,
            ),
            // 3.3.2.1: zero-length Topic Name without a Topic Alias is a Protocol Error
            post(
                "PUBLISH empty topic, no alias",
                l,
                publish(l, "", 0, 0, b"x"),
                PROTOCOL,
            ),
        ]);
    } else {
        cases.extend([
            // [MQTT-3-8.3-4] (3.1.1)
            post(
                "SUBSCRIBE option reserved bit 2",
                l,
                subscribe(l, 1, &[("a", 0x04)], &[]),
                &[],
            ),
            post("SUBSCRIBE QoS 3", l, subscribe(l, 1, &[("a", 3)], &[]), &[]),
            // [MQTT-4.7.3-1] (3.1.1)
            post("PUBLISH empty topic", l, publish(l, "", 0, 0, b"x"), &[]),
            // 2.2.1 (3.1.1): type 15 is reserved
            post("AUTH (reserved in 3.1.1)", l, vec![AUTH, 0x00], &[]),
        ]);
    }
    cases
}

/// (3.1.1) [MQTT-4.8.0-1] Forbidden packets after CONNECT close that connection only. Spec ids
/// per case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_v311_close_only_that_connection() {
    run_cases(post_cases(V311)).await;
}

/// (5.0) [MQTT-4.13.1-1] Malformed packets and protocol errors after CONNECT get a DISCONNECT with
/// 0x81 / 0x82 (or the specific code) and close that connection only. Spec ids per case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_v5_get_disconnect_and_close_only_that_connection() {
    run_cases(post_cases(V5)).await;
}

/// (5.0) Property misuse after CONNECT: duplicates, Topic Alias 0 / above maximum (0x94), a
/// Subscription Identifier from a client, broken property blocks. Spec ids per case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_property_errors_get_the_right_disconnect_reason() {
    let l = V5;
    let p = |props: Vec<u8>| Publish::new(l, "a/b", b"x").props(props).build();
    let cases = vec![
        // 2.2.2.2: the same property twice is a Protocol Error
        post(
            "duplicate Payload Format Indicator",
            l,
            p([prop_u8(PAYLOAD_FORMAT, 0), prop_u8(PAYLOAD_FORMAT, 0)].concat()),
            PROTOCOL,
        ),
        post(
            "duplicate Message Expiry Interval",
            l,
            p([prop_u32(MESSAGE_EXPIRY, 5), prop_u32(MESSAGE_EXPIRY, 6)].concat()),
            PROTOCOL,
        ),
        post(
            "duplicate Topic Alias",
            l,
            p([prop_u16(TOPIC_ALIAS, 1), prop_u16(TOPIC_ALIAS, 2)].concat()),
            PROTOCOL,
        ),
        post(
            "two Subscription Identifiers in SUBSCRIBE",
            l,
            subscribe(
                l,
                1,
                &[("a", 0)],
                &[
                    prop_varint(SUBSCRIPTION_ID, 1),
                    prop_varint(SUBSCRIPTION_ID, 2),
                ]
                .concat(),
            ),
            PROTOCOL,
        ),
        // [MQTT-3.3.2-8] (0x94 Topic Alias invalid; Protocol Error also fits)
        post(
            "Topic Alias 0",
            l,
            p(prop_u16(TOPIC_ALIAS, 0)),
            &[0x94, 0x82],
        ),
        // [MQTT-3.3.2-9] (default topic_alias_maximum is 10)
        post(
            "Topic Alias above maximum",
            l,
            p(prop_u16(TOPIC_ALIAS, 11)),
            &[0x94],
        ),
        post(
            "Topic Alias 65535",
            l,
            p(prop_u16(TOPIC_ALIAS, 65535)),
            &[0x94],
        ),
        // 3.3.2.3.4: an alias that was never mapped, with an empty Topic Name
        post(
            "unmapped Topic Alias with empty topic",
            l,
            Publish::new(l, "", b"x")
                .props(prop_u16(TOPIC_ALIAS, 3))
                .build(),
            &[0x82, 0x94],
        ),
        // [MQTT-3.3.4-6]
        post(
            "client PUBLISH with Subscription Identifier",
            l,
            p(prop_varint(SUBSCRIPTION_ID, 1)),
            PROTOCOL,
        ),
        // 3.8.2.1.2: Subscription Identifier 0 is a Protocol Error
        post(
            "SUBSCRIBE with Subscription Identifier 0",
            l,
            subscribe(l, 1, &[("a", 0)], &prop_varint(SUBSCRIPTION_ID, 0)),
            PROTOCOL,
        ),
        // [MQTT-3.3.2-14]
        post(
            "Response Topic with wildcard",
            l,
            p(prop_str(RESPONSE_TOPIC, "r/#")),
            BAD_TOPIC,
        ),
        // 2.2.2: a property block longer than the packet
        post(
            "property length beyond packet",
            l,
            vec![PUBLISH, 0x06, 0x00, 0x01, b't', 0x20, 0x01, 0x01],
            MALFORMED,
        ),
        // 2.2.2.2: identifiers not valid for PUBLISH
        post(
            "unknown property 0x7F in PUBLISH",
            l,
            p(vec![0x7F, 0x00]),
            EITHER,
        ),
        post(
            "Session Expiry (CONNECT-only) in PUBLISH",
            l,
            p(prop_u32(SESSION_EXPIRY, 1)),
            EITHER,
        ),
        // 3.14.2.2.2: a non-zero Session Expiry on DISCONNECT when CONNECT had 0
        post(
            "DISCONNECT raising Session Expiry from 0",
            l,
            disconnect_v5(0x00, &prop_u32(SESSION_EXPIRY, 60)),
            PROTOCOL,
        ),
        // [MQTT-3.15.1-1]
        post("AUTH flags 0001", l, vec![0xF1, 0x00], MALFORMED),
    ];
    run_cases(cases).await;
}

/// A client that sends half a packet and then drops the connection: the broker discards the
/// fragment, publishes the client's Will (the connection closed without DISCONNECT) and keeps
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame_then_close_publishes_will_and_broker_survives() {
    let broker = TestBroker::start().await;
    for level in [V311, V5] {
        let will_topic = format!("will/trunc/{level}");
        let mut watcher = RawClient::connected(broker.addr, level, &format!("w{level}")).await;
        watcher.subscribe(level, &will_topic, 0).await;
        for cut in [1usize, 2, 5] {
            let conn = Connect::new(level, &format!("trunc{level}-{cut}"))
                .will(Will::new(&will_topic, format!("cut{cut}").as_bytes()));
            let (mut c, _) = RawClient::handshake(broker.addr, level, &conn).await;
            let full = publish(level, "trunc/t", 1, 1, &[b'p'; 100]);
            c.send(&full[..cut]).await;
            drop(c);
            let will = watcher.recv_publish(level).await;
            assert_eq!(will.topic, will_topic);
            assert_eq!(will.payload, format!("cut{cut}").as_bytes());
        }
        // A truncated CONNECT, then close.
        let mut c = RawClient::connect(broker.addr).await;
        let full = connect(level, "halfconnect");
        c.send(&full[..full.len() / 2]).await;
        drop(c);
        assert_broker_serves(broker.addr, level).await;
    }
    broker.stop().await;
}

/// Pseudo-random garbage (fixed seed), as the first bytes or after a CONNECT, followed by a
/// half-close: each connection ends within the timeout and the broker keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_garbage_never_kills_the_broker() {
    let broker = TestBroker::start().await;
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut sub = RawClient::connected(broker.addr, V311, "g-sub").await;
    sub.subscribe(V311, "g/t", 1).await;
    let mut publ = RawClient::connected(broker.addr, V311, "g-pub").await;
    for i in 0..40 {
        let len = 1 + (next() % 300) as usize;
        let mut garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let level = if i % 2 == 0 { V311 } else { V5 };
        let mut c = if i % 4 < 2 {
            RawClient::connect(broker.addr).await
        } else {
            // A plausible first byte makes the garbage reach the packet decoders.
            garbage[0] = [PUBLISH, SUBSCRIBE, UNSUBSCRIBE, PUBREL, 0x32][i % 5];
            RawClient::connected(broker.addr, level, &format!("garbage{i}")).await
        };
        let _ = c.try_send(&garbage).await;
        c.shutdown_write().await;
        let _ = tokio::time::timeout(WAIT, c.expect_closed())
            .await
            .unwrap_or_else(|_| panic!("garbage #{i} {garbage:02x?}: connection never closed"));
        assert_round_trip(&mut publ, &mut sub, V311, "g/t").await;
    }
    assert_broker_serves(broker.addr, V5).await;
    broker.stop().await;
}

/// [MQTT-3.14.4-3] A normal DISCONNECT (`E0 00`, valid in 3.1.1 and 5.0: reason 0x00 may be
/// omitted) ends the connection without error and discards the Will.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_disconnect_e000_discards_the_will() {
    let broker = TestBroker::start().await;
    for level in [V311, V5] {
        let will_topic = format!("will/normal/{level}");
        let mut watcher = RawClient::connected(broker.addr, level, &format!("nw{level}")).await;
        watcher.subscribe(level, &will_topic, 0).await;
        let conn = Connect::new(level, &format!("leaver{level}"))
            .will(Will::new(&will_topic, b"should not appear"));
        let (mut c, _) = RawClient::handshake(broker.addr, level, &conn).await;
        c.send(&disconnect()).await;
        let got = c.expect_closed().await;
        assert!(
            got.is_empty(),
            "level {level}: answered a normal DISCONNECT with {got:02x?}"
        );
        // Proof that nothing was published: the next message on the will topic is ours.
        let mut publ = RawClient::connected(broker.addr, level, &format!("np{level}")).await;
        assert_round_trip(&mut publ, &mut watcher, level, &will_topic).await;
    }
    broker.stop().await;
}

/// [MQTT-3.14.2-1] (5.0) DISCONNECT with reason 0x04 (Disconnect with Will Message) publishes the
/// Will; the server does not answer with a DISCONNECT of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_disconnect_with_will_message_publishes_the_will() {
    let broker = TestBroker::start().await;
    let mut watcher = RawClient::connected(broker.addr, V5, "watch").await;
    watcher.subscribe(V5, "will/04", 0).await;
    let conn = Connect::new(V5, "leaver").will(Will::new("will/04", b"bye"));
    let (mut c, _) = RawClient::handshake(broker.addr, V5, &conn).await;
    c.send(&disconnect_v5(0x04, &[])).await;
    let got = c.expect_closed().await;
    assert!(got.is_empty(), "{got:02x?}");
    let will = watcher.recv_publish(V5).await;
    assert_eq!(
        (will.topic.as_str(), will.payload.as_slice()),
        ("will/04", &b"bye"[..])
    );
    broker.stop().await;
}
