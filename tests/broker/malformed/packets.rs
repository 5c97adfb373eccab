//! Forbidden packets after a successful CONNECT, for 3.1.1 and 5.0 (v5: with the DISCONNECT
//! reason the spec gives).

use super::*;

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
