//! v5 property misuse after CONNECT: each gets the DISCONNECT reason its rule names.

use super::*;

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
