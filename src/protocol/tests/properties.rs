//! v5 properties: checklist (10), (15).

use super::*;

/// [MQTT-2.2.2-2] A property other than User Property twice is a protocol error (0x82).
#[test]
fn duplicate_property_is_a_protocol_error() {
    let dup = v5_publish_with_props(&[0x01, 0, 0x01, 0]);
    assert_eq!(code(after_connect(5, &dup)), 0x82);
    // Table row: v5 CONNECT with Session Expiry twice.
    let c = v5_connect_with_props(&[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2]);
    assert_eq!(code(first(&c)), 0x82);
}

/// [MQTT-3.3.2-17] User Property may repeat, and order is kept.
#[test]
fn repeated_user_property_is_valid() {
    let p = v5_publish_with_props(&[0x26, 0, 1, b'k', 0, 1, b'v', 0x26, 0, 1, b'k', 0, 1, b'w']);
    let Packet::Publish(p) = after_connect(5, &p).unwrap() else {
        panic!()
    };
    assert_eq!(
        p.properties.user_properties,
        vec![("k".into(), "v".into()), ("k".into(), "w".into())]
    );
}

/// MQTT 5 §2.2.2.2: a known property that does not belong in the packet makes it malformed.
#[test]
fn property_not_allowed_in_packet_is_malformed() {
    // Session Expiry Interval in PUBLISH.
    assert_eq!(
        code(after_connect(
            5,
            &v5_publish_with_props(&[0x11, 0, 0, 0, 1])
        )),
        0x81
    );
    // Server-only Maximum QoS in PUBLISH and in CONNECT.
    assert_eq!(
        code(after_connect(5, &v5_publish_with_props(&[0x24, 1]))),
        0x81
    );
    assert_eq!(code(first(&v5_connect_with_props(&[0x24, 1]))), 0x81);
    // Topic Alias in CONNECT.
    assert_eq!(code(first(&v5_connect_with_props(&[0x23, 0, 1]))), 0x81);
    // Reason String in SUBSCRIBE.
    let sub = [0x81, 0x0B, 0, 1, 4, 0x1F, 0, 1, b'r', 0, 1, b't', 0];
    assert_eq!(code(after_connect(5, &sub)), 0x81);
}

/// [MQTT-2.2.2] An unknown property identifier is malformed (0x81).
#[test]
fn unknown_property_id_is_malformed() {
    assert_eq!(
        code(after_connect(5, &v5_publish_with_props(&[0x7F, 0]))),
        0x81
    );
    assert_eq!(code(first(&v5_connect_with_props(&[0x04, 0]))), 0x81);
}

/// [MQTT-3.3.2-8] Topic Alias 0 is 0x94.
#[test]
fn topic_alias_0_is_invalid() {
    assert_eq!(
        code(after_connect(5, &v5_publish_with_props(&[0x23, 0, 0]))),
        0x94
    );
}

/// [MQTT-3.3.4-6] A Subscription Identifier in a client's PUBLISH is a protocol error (0x82).
#[test]
fn subscription_identifier_in_client_publish_is_a_protocol_error() {
    assert_eq!(
        code(after_connect(5, &v5_publish_with_props(&[0x0B, 1]))),
        0x82
    );
}

/// [MQTT-3.3.2-13] Payload Format Indicator other than 0 or 1 is a protocol error.
#[test]
fn payload_format_indicator_2_is_a_protocol_error() {
    assert_eq!(
        code(after_connect(5, &v5_publish_with_props(&[0x01, 2]))),
        0x82
    );
}

/// [MQTT-3.3.2-14] A Response Topic with a wildcard is a protocol error.
#[test]
fn response_topic_with_wildcard_is_a_protocol_error() {
    let p = v5_publish_with_props(&[0x08, 0, 1, b'#']);
    assert_eq!(code(after_connect(5, &p)), 0x82);
}

/// MQTT 5 §3.1.2.11.3: Receive Maximum 0 in CONNECT is a protocol error (0x82).
#[test]
fn receive_maximum_0_is_a_protocol_error() {
    assert_eq!(code(first(&v5_connect_with_props(&[0x21, 0, 0]))), 0x82);
    let p = first(&v5_connect_with_props(&[0x21, 0, 1])).unwrap();
    assert!(matches!(p, Packet::Connect(c) if c.properties.receive_maximum == Some(1)));
}

/// MQTT 5 §3.1.2.11.4: Maximum Packet Size 0 in CONNECT is a protocol error (0x82).
#[test]
fn maximum_packet_size_0_is_a_protocol_error() {
    assert_eq!(
        code(first(&v5_connect_with_props(&[0x27, 0, 0, 0, 0]))),
        0x82
    );
    let p = first(&v5_connect_with_props(&[0x27, 0, 0, 1, 0])).unwrap();
    assert!(matches!(p, Packet::Connect(c) if c.properties.maximum_packet_size == Some(256)));
}

/// MQTT 5 §3.1.2.11.6, §3.1.2.11.7: Request Problem/Response Information other than 0 or 1 is a protocol error.
#[test]
fn request_information_flags_above_1_are_protocol_errors() {
    assert_eq!(code(first(&v5_connect_with_props(&[0x17, 2]))), 0x82);
    assert_eq!(code(first(&v5_connect_with_props(&[0x19, 2]))), 0x82);
}

/// MQTT 5 §3.1.2.11.10: Authentication Data without an Authentication Method is a
/// protocol error.
#[test]
fn authentication_data_without_method_is_a_protocol_error() {
    assert_eq!(code(first(&v5_connect_with_props(&[0x16, 0, 1, 9]))), 0x82);
    let p = first(&v5_connect_with_props(&[0x15, 0, 1, b'm', 0x16, 0, 1, 9])).unwrap();
    assert!(matches!(p, Packet::Connect(c)
        if c.properties.authentication_method.as_deref() == Some("m")
            && c.properties.authentication_data.as_deref() == Some(&[9u8][..])));
}

/// [MQTT-1.5.5] A property block longer than the frame is malformed, never "need more bytes"
/// (mqttbytes returns InsufficientBytes after splitting the frame off).
#[test]
fn truncated_property_block_is_malformed() {
    // Property length 5 but only 2 bytes follow (the client id).
    let mut c = v5_connect_with_props(&[]);
    c.truncate(c.len() - 3);
    c.extend_from_slice(&[5, 0x11, 0]);
    c[1] = (c.len() - 2) as u8;
    assert_eq!(code(first(&c)), 0x81);
    // Property length varint with its continuation bit set on the last byte of the frame.
    let c = [
        0x10, 0x0B, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0x80,
    ];
    assert_eq!(code(first(&c)), 0x81);
}

/// MQTT 5 §3.1.3.2: Will properties: Will Delay Interval is allowed, Topic Alias is not.
#[test]
fn will_properties_are_checked() {
    // flags: will, clean start; props empty; client id "x"; will props; will topic "t"; payload "".
    let will = |props: &[u8]| {
        let mut rest = vec![0, 1, b'x', props.len() as u8];
        rest.extend_from_slice(props);
        rest.extend_from_slice(&[0, 1, b't', 0, 0]);
        connect_bytes(b"MQTT", 5, 0x06, &rest)
    };
    let p = first(&will(&[0x18, 0, 0, 0, 9])).unwrap();
    assert!(
        matches!(p, Packet::Connect(c) if c.will.as_ref().is_some_and(|w| w.delay_interval == Some(9)))
    );
    assert_eq!(code(first(&will(&[0x23, 0, 1]))), 0x81);
    assert_eq!(code(first(&will(&[0x11, 0, 0, 0, 1]))), 0x81);
}
