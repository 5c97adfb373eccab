//! SUBSCRIBE, UNSUBSCRIBE, acks: checklist (2), (6), (17).

use super::*;

/// [MQTT-3.8.1-1] SUBSCRIBE with fixed-header flags 0 instead of 2 is malformed.
#[test]
fn subscribe_flags_0_is_malformed() {
    assert_eq!(
        code(after_connect(4, &[0x80, 0x06, 0, 1, 0, 1, b't', 0])),
        0x81
    );
    assert_eq!(
        code(after_connect(5, &[0x80, 0x07, 0, 1, 0, 0, 1, b't', 0])),
        0x81
    );
}

/// [MQTT-3.8.3-3] SUBSCRIBE without a filter is a protocol error.
#[test]
fn subscribe_without_filters_is_a_protocol_error() {
    assert_eq!(code(after_connect(4, &[0x82, 0x02, 0, 1])), 0x82);
    assert_eq!(code(after_connect(5, &[0x82, 0x03, 0, 1, 0])), 0x82);
}

/// [MQTT-3.8.3-5] v3.1.1 subscription options: bits 2-7 are reserved.
#[test]
fn v3_subscribe_reserved_option_bits_are_malformed() {
    for bit in 2..8 {
        let sub = [0x82, 0x06, 0, 1, 0, 1, b't', 1 << bit];
        assert_eq!(code(after_connect(4, &sub)), 0x81, "bit {bit}");
    }
}

/// [MQTT-3.8.3-5] v5 subscription options: bits 6-7 are reserved, bits 2-5 are options.
#[test]
fn v5_subscribe_reserved_option_bits_are_malformed() {
    for bit in [6, 7] {
        let sub = [0x82, 0x07, 0, 1, 0, 0, 1, b't', 1 << bit];
        assert_eq!(code(after_connect(5, &sub)), 0x81, "bit {bit}");
    }
    let Packet::Subscribe(s) = after_connect(5, &[0x82, 0x07, 0, 1, 0, 0, 1, b't', 0x2E]).unwrap()
    else {
        panic!()
    };
    let o = s.filters[0].options;
    assert!(o.no_local && o.retain_as_published);
    assert_eq!(
        (o.qos, o.retain_handling),
        (QoS::ExactlyOnce, RetainHandling::DoNotSend)
    );
}

/// [MQTT-3.8.3-4] Subscription QoS 3 is malformed.
#[test]
fn subscribe_qos_3_is_a_protocol_error() {
    // 3.1.1 closes either way; MQTT 5 §3.8.3.1 names it a Protocol Error.
    assert!(after_connect(4, &[0x82, 0x06, 0, 1, 0, 1, b't', 0x03]).is_err());
    assert_eq!(
        code(after_connect(5, &[0x82, 0x07, 0, 1, 0, 0, 1, b't', 0x03])),
        0x82
    );
}

/// [MQTT-3.8.3-6] Retain Handling 3 is a protocol error.
#[test]
fn subscribe_retain_handling_3_is_a_protocol_error() {
    assert_eq!(
        code(after_connect(5, &[0x82, 0x07, 0, 1, 0, 0, 1, b't', 0x30])),
        0x82
    );
}

/// MQTT 5 §3.8.2.1.2: Subscription Identifier is decoded; 0 is a protocol error.
#[test]
fn subscription_identifier_is_decoded_and_0_refused() {
    let sub = [0x82, 0x0A, 0, 1, 3, 0x0B, 0x80, 0x01, 0, 1, b't', 1];
    let Packet::Subscribe(s) = after_connect(5, &sub).unwrap() else {
        panic!()
    };
    assert_eq!(s.subscription_identifier, Some(128));
    let sub = [0x82, 0x08, 0, 1, 2, 0x0B, 0, 0, 1, b't'];
    assert_eq!(code(after_connect(5, &[&sub[..], &[1]].concat())), 0x82);
}

/// [MQTT-1.5.3-2] A filter with U+0000 is malformed; filter syntax is left to the broker.
#[test]
fn subscribe_filter_grammar_is_checked() {
    assert_eq!(
        code(after_connect(4, &[0x82, 0x07, 0, 1, 0, 2, b'a', 0, 0])),
        0x81
    );
    // A wildcard that is not a whole level, an empty filter, `#` not last: malformed.
    for (v, filter) in [
        (4, &b"a+b"[..]),
        (5, b"a+b"),
        (4, b""),
        (5, b"#/a"),
        (4, b"a/#/b"),
    ] {
        let mut sub = vec![0x82, 0, 0, 1];
        if v == 5 {
            sub.push(0);
        }
        sub.extend_from_slice(&[0, filter.len() as u8]);
        sub.extend_from_slice(filter);
        sub.push(1);
        sub[1] = (sub.len() - 2) as u8;
        assert_eq!(code(after_connect(v, &sub)), 0x81, "{filter:?}");
    }
    // A bad `$share/` form: a protocol error.
    for filter in [&b"$share/p"[..], b"$share/p/", b"$share//t", b"$share/a+/t"] {
        let mut sub = vec![0x82, 0, 0, 1, 0, 0, filter.len() as u8];
        sub.extend_from_slice(filter);
        sub.push(1);
        sub[1] = (sub.len() - 2) as u8;
        assert_eq!(code(after_connect(5, &sub)), 0x82, "{filter:?}");
    }
    let p = after_connect(4, &[0x82, 0x08, 0, 1, 0, 3, b'a', b'/', b'+', 1]).unwrap();
    assert!(matches!(p, Packet::Subscribe(s) if s.filters[0].filter == "a/+"));
}

/// [MQTT-3.8.3-4] No Local on a `$share/` filter decodes: the 0x82 is the broker's (it parses
/// share names).
#[test]
fn no_local_on_shared_filter_is_left_to_the_broker() {
    let mut sub = vec![0x82, 0x00, 0, 1, 0, 0, 10];
    sub.extend_from_slice(b"$share/g/t");
    sub.push(0x04);
    sub[1] = (sub.len() - 2) as u8;
    let Packet::Subscribe(s) = after_connect(5, &sub).unwrap() else {
        panic!()
    };
    assert!(s.filters[0].options.no_local && s.filters[0].filter == "$share/g/t");
}

/// [MQTT-2.2.1-3] SUBSCRIBE / UNSUBSCRIBE with packet id 0 are malformed.
#[test]
fn subscribe_and_unsubscribe_packet_id_0_are_malformed() {
    assert_eq!(
        code(after_connect(4, &[0x82, 0x06, 0, 0, 0, 1, b't', 0])),
        0x81
    );
    assert_eq!(
        code(after_connect(4, &[0xA2, 0x05, 0, 0, 0, 1, b't'])),
        0x81
    );
}

/// [MQTT-3.8.3-1] A filter without its options byte is malformed.
#[test]
fn subscribe_filter_without_options_is_malformed() {
    assert_eq!(
        code(after_connect(4, &[0x82, 0x05, 0, 1, 0, 1, b't'])),
        0x81
    );
}

/// [MQTT-3.10.3-2] UNSUBSCRIBE without a filter is a protocol error.
#[test]
fn unsubscribe_without_filters_is_a_protocol_error() {
    assert_eq!(code(after_connect(4, &[0xA2, 0x02, 0, 1])), 0x82);
    assert_eq!(code(after_connect(5, &[0xA2, 0x03, 0, 1, 0])), 0x82);
}

/// [MQTT-3.10.1-1] UNSUBSCRIBE with flags 0 instead of 2 is malformed.
#[test]
fn unsubscribe_flags_0_is_malformed() {
    assert_eq!(
        code(after_connect(4, &[0xA0, 0x05, 0, 1, 0, 1, b't'])),
        0x81
    );
}

/// [MQTT-3.6.1-1] PUBREL with flags 0 instead of 2 is malformed.
#[test]
fn pubrel_flags_0_is_malformed() {
    assert_eq!(code(after_connect(4, &[0x60, 0x02, 0, 1])), 0x81);
    assert_eq!(code(after_connect(5, &[0x60, 0x02, 0, 1])), 0x81);
    assert!(matches!(after_connect(4, &[0x62, 0x02, 0, 1]), Ok(Packet::PubRel(a)) if a.pkid == 1));
}

/// [MQTT-2.1.3-1] PUBACK/PUBREC/PUBCOMP flags must be 0.
#[test]
fn ack_flags_must_be_0() {
    for byte1 in [0x42u8, 0x52, 0x72] {
        assert_eq!(
            code(after_connect(4, &[byte1, 0x02, 0, 1])),
            0x81,
            "{byte1:#x}"
        );
    }
}

/// Trailing bytes after a v3.1.1 ack are malformed; a v5 ack with extra bytes after its
/// properties is malformed.
#[test]
fn ack_with_trailing_bytes_is_malformed() {
    assert_eq!(code(after_connect(4, &[0x40, 0x03, 0, 1, 0])), 0x81);
    assert_eq!(code(after_connect(5, &[0x40, 0x05, 0, 1, 0, 0, 9])), 0x81);
}

/// [MQTT-3.4.2-1] v5 acks: 2-byte short form, reason only, reason and properties.
#[test]
fn v5_ack_forms_are_decoded() {
    assert_eq!(
        after_connect(5, &[0x40, 0x02, 0, 7]).unwrap(),
        Packet::PubAck(Ack {
            pkid: 7,
            ..Ack::default()
        })
    );
    let p = after_connect(5, &[0x50, 0x03, 0, 7, 0x10]).unwrap();
    assert!(matches!(p, Packet::PubRec(a) if a.reason == ReasonCode::NoMatchingSubscribers));
    let p = after_connect(5, &[0x70, 0x08, 0, 7, 0x92, 4, 0x1F, 0, 1, b'r']).unwrap();
    assert!(matches!(p, Packet::PubComp(a)
        if a.reason == ReasonCode::PacketIdentifierNotFound
            && a.properties.reason_string.as_deref() == Some("r")));
    // Unknown reason code.
    assert_eq!(code(after_connect(5, &[0x40, 0x03, 0, 7, 0x05])), 0x81);
}
