//! What is sent instead of a valid CONNECT: each case closes its connection (after at most a
//! refusing CONNACK) and nothing else.

use super::*;

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
