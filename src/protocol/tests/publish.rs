//! PUBLISH: checklist (2), (12), (14), (15).

use super::*;

/// [MQTT-1.5.3-2] A topic containing U+0000 (`a/\0`) is malformed.
#[test]
fn publish_topic_with_nul_is_malformed() {
    for v in [4, 5] {
        let mut p = vec![0x30, 0x05, 0, 3, b'a', b'/', 0];
        if v == 5 {
            p = vec![0x30, 0x06, 0, 3, b'a', b'/', 0, 0];
        }
        assert_eq!(code(after_connect(v, &p)), 0x81, "v{v}");
    }
}

/// [MQTT-1.5.3-1] A topic that is not UTF-8 is malformed.
#[test]
fn publish_topic_not_utf8_is_malformed() {
    assert_eq!(
        code(after_connect(4, &[0x30, 0x04, 0, 2, 0xC3, 0x28])),
        0x81
    );
}

/// [MQTT-3.3.2-2] A topic name with `#` (`a/#`) is invalid (0x81).
#[test]
fn publish_topic_with_hash_is_invalid() {
    assert_eq!(
        code(after_connect(4, &[0x30, 0x05, 0, 3, b'a', b'/', b'#'])),
        0x81
    );
    assert_eq!(
        code(after_connect(5, &[0x30, 0x06, 0, 3, b'a', b'/', b'#', 0])),
        0x81
    );
}

/// [MQTT-3.3.2-2] A topic name `+` is invalid (0x81).
#[test]
fn publish_topic_with_plus_is_invalid() {
    assert_eq!(code(after_connect(4, &[0x30, 0x03, 0, 1, b'+'])), 0x81);
    assert_eq!(code(after_connect(5, &[0x30, 0x04, 0, 1, b'+', 0])), 0x81);
}

/// [MQTT-4.7.3-1] An empty topic name is invalid in v3.1.1 (0x81).
#[test]
fn v3_publish_with_empty_topic_is_invalid() {
    assert_eq!(code(after_connect(4, &[0x30, 0x02, 0, 0])), 0x81);
}

/// [MQTT-3.3.2-8] A v5 PUBLISH with an empty topic and no Topic Alias is a protocol error.
#[test]
fn v5_publish_with_empty_topic_and_no_alias_is_a_protocol_error() {
    assert_eq!(code(after_connect(5, &[0x30, 0x03, 0, 0, 0])), 0x82);
}

/// [MQTT-3.3.2-8] A v5 PUBLISH with an empty topic and a Topic Alias is valid.
#[test]
fn v5_publish_with_empty_topic_and_alias_is_valid() {
    let p = after_connect(5, &[0x30, 0x06, 0, 0, 3, 0x23, 0, 1]).unwrap();
    assert!(
        matches!(p, Packet::Publish(p) if p.topic.is_empty() && p.properties.topic_alias == Some(1))
    );
}

/// [MQTT-3.3.1-4] PUBLISH with QoS 3 (both QoS bits set) is malformed.
#[test]
fn publish_qos_3_is_malformed() {
    assert_eq!(
        code(after_connect(4, &[0x36, 0x05, 0, 1, b't', 0, 1])),
        0x81
    );
    assert_eq!(
        code(after_connect(5, &[0x36, 0x06, 0, 1, b't', 0, 1, 0])),
        0x81
    );
}

/// [MQTT-3.3.1-2] DUP on a QoS 0 PUBLISH is malformed.
#[test]
fn publish_dup_on_qos0_is_malformed() {
    assert_eq!(code(after_connect(4, &[0x38, 0x03, 0, 1, b't'])), 0x81);
    // DUP with QoS 1 is fine.
    let p = after_connect(4, &[0x3A, 0x05, 0, 1, b't', 0, 1]).unwrap();
    assert!(matches!(p, Packet::Publish(p) if p.dup && p.qos == QoS::AtLeastOnce));
}

/// [MQTT-2.2.1-3] A QoS 1/2 PUBLISH with packet id 0 is malformed.
#[test]
fn publish_packet_id_0_is_malformed() {
    assert_eq!(
        code(after_connect(4, &[0x32, 0x05, 0, 1, b't', 0, 0])),
        0x81
    );
    assert_eq!(
        code(after_connect(5, &[0x34, 0x06, 0, 1, b't', 0, 0, 0])),
        0x81
    );
}

/// [MQTT-3.3.2-1] A PUBLISH too short for its topic or packet id is malformed.
#[test]
fn publish_truncated_body_is_malformed() {
    assert_eq!(code(after_connect(4, &[0x30, 0x02, 0, 5])), 0x81);
    assert_eq!(code(after_connect(4, &[0x32, 0x04, 0, 1, b't', 0])), 0x81);
    // v5: no property length.
    assert_eq!(code(after_connect(5, &[0x30, 0x03, 0, 1, b't'])), 0x81);
}

/// A valid PUBLISH keeps its flags, packet id, topic and payload.
#[test]
fn publish_fields_are_decoded() {
    let p = after_connect(4, &[0x35, 0x08, 0, 3, b'a', b'/', b'b', 0x12, 0x34, b'x']).unwrap();
    let Packet::Publish(p) = p else { panic!() };
    assert_eq!(
        (p.qos, p.retain, p.dup, p.pkid),
        (QoS::ExactlyOnce, true, false, 0x1234)
    );
    assert_eq!((p.topic.as_str(), &p.payload[..]), ("a/b", &b"x"[..]));
}

/// Properties of a PUBLISH take a pointer until one is set: reading an empty set sees every
/// field empty, clearing in place never boxes, and an empty set compares equal however made.
#[test]
fn publish_properties_are_boxed_only_when_set() {
    let mut none: Sparse<PublishProperties> = PublishProperties::default().into();
    assert!(none.is_empty());
    assert_eq!(none.topic_alias, None);
    assert!(none.user_properties.is_empty());
    assert!(none.get_mut().is_none());
    assert_eq!(none, Sparse::default());

    let mut some: Sparse<PublishProperties> = PublishProperties {
        topic_alias: Some(3),
        ..PublishProperties::default()
    }
    .into();
    assert!(!some.is_empty());
    if let Some(p) = some.get_mut() {
        p.topic_alias = None;
    }
    assert!(some.is_empty());
    assert_eq!(some, none);

    none.message_expiry_interval = Some(10);
    assert_eq!(none.message_expiry_interval, Some(10));
    assert_ne!(none, some);
}
