//! The PROTOCOL-GAPS table, row by row, and the CONNECT checklist (7)-(9), (12).

use super::*;

/// [MQTT-3.14.2-1] A v5 DISCONNECT with remaining length 0 (what libmosquitto sends) is valid.
#[test]
fn v5_disconnect_with_no_body_is_valid() {
    let p = after_connect(5, &[0xE0, 0x00]).unwrap();
    assert_eq!(p, Packet::Disconnect(Disconnect::default()));
}

/// [MQTT-3.14.2-1] A v5 DISCONNECT of one byte is a reason code without properties.
#[test]
fn v5_disconnect_with_only_a_reason_code_is_valid() {
    let p = after_connect(5, &[0xE0, 0x01, 0x04]).unwrap();
    assert!(matches!(p, Packet::Disconnect(d) if d.reason == ReasonCode::DisconnectWithWill));
}

/// [MQTT-3.14.2-1] A DISCONNECT reason code outside the DISCONNECT list (0x01 is Granted QoS
/// 1, a SUBACK code) is malformed; every listed one is accepted.
#[test]
fn v5_disconnect_reason_must_be_a_disconnect_code() {
    assert_eq!(code(after_connect(5, &[0xE0, 0x01, 0x01])), 0x81);
    assert_eq!(code(after_connect(5, &[0xE0, 0x01, 0x10])), 0x81);
    for reason in [0x00, 0x04, 0x80, 0x8E, 0x98, 0xA2] {
        let p = after_connect(5, &[0xE0, 0x01, reason]).unwrap();
        assert!(matches!(p, Packet::Disconnect(d) if d.reason as u8 == reason));
    }
}

/// [MQTT-3.4.2-1] [MQTT-3.5.2-1] [MQTT-3.6.2-1] [MQTT-3.7.2-1] Each v5 acknowledgement carries
/// only its own reason codes: PUBREL/PUBCOMP only 0x00 and 0x92, PUBACK/PUBREC not 0x92.
#[test]
fn v5_ack_reason_must_belong_to_its_packet_type() {
    for first in [0x40, 0x50, 0x62, 0x70] {
        assert!(
            after_connect(5, &[first, 0x03, 0, 1, 0x00]).is_ok(),
            "{first:#x}"
        );
        assert_eq!(
            code(after_connect(5, &[first, 0x03, 0, 1, 0x02])),
            0x81,
            "{first:#x}"
        );
    }
    assert!(after_connect(5, &[0x40, 0x03, 0, 1, 0x10]).is_ok());
    assert!(after_connect(5, &[0x50, 0x03, 0, 1, 0x97]).is_ok());
    assert_eq!(code(after_connect(5, &[0x40, 0x03, 0, 1, 0x92])), 0x81);
    assert!(after_connect(5, &[0x62, 0x03, 0, 1, 0x92]).is_ok());
    assert_eq!(code(after_connect(5, &[0x70, 0x03, 0, 1, 0x80])), 0x81);
}

/// [MQTT-1.5.5-1] A Variable Byte Integer uses the fewest bytes: `C0 80 00` (PINGREQ with a
/// two-byte remaining length of 0) is malformed, as is a property length so encoded.
#[test]
fn variable_byte_integers_must_be_shortest() {
    assert_eq!(code(after_connect(4, &[0xC0, 0x80, 0x00])), 0x81);
    assert_eq!(code(after_connect(5, &[0xC0, 0x80, 0x80, 0x00])), 0x81);
    // v5 PUBACK with reason 0 and a property length of 0 written in two bytes.
    assert_eq!(
        code(after_connect(5, &[0x40, 0x05, 0, 1, 0x00, 0x80, 0x00])),
        0x81
    );
    assert!(after_connect(5, &[0x40, 0x04, 0, 1, 0x00, 0x00]).is_ok());
    // 128 needs two bytes and is fine: a PUBLISH of remaining length 128.
    let mut publish = vec![0x30, 0x80, 0x01, 0x00, 0x01, b't'];
    publish.extend_from_slice(&[b'x'; 125]);
    assert!(after_connect(4, &publish).is_ok());
}

/// [MQTT-3.14.1] A v3.1.1 DISCONNECT has no body.
#[test]
fn v3_disconnect_with_a_body_is_malformed() {
    assert_eq!(
        after_connect(4, &[0xE0, 0x00]).unwrap(),
        Packet::Disconnect(Disconnect::default())
    );
    assert_eq!(code(after_connect(4, &[0xE0, 0x01, 0x00])), 0x81);
}

/// [MQTT-3.15.2-1] AUTH `F0 00` is valid in v5 (reason Success, no properties).
#[test]
fn v5_auth_with_no_body_is_valid() {
    assert_eq!(
        after_connect(5, &[0xF0, 0x00]).unwrap(),
        Packet::Auth(Box::default())
    );
}

/// [MQTT-2.1.2] Type 15 is reserved in v3.1.1: AUTH there is malformed.
#[test]
fn auth_in_v3_is_malformed() {
    assert_eq!(code(after_connect(4, &[0xF0, 0x00])), 0x81);
}

/// [MQTT-3.15.2-1] An AUTH reason code other than 0x00, 0x18, 0x19 is malformed.
#[test]
fn auth_with_an_invalid_reason_code_is_malformed() {
    let p = after_connect(5, &[0xF0, 0x01, 0x18]).unwrap();
    assert!(matches!(p, Packet::Auth(a) if a.reason == ReasonCode::ContinueAuthentication));
    assert_eq!(code(after_connect(5, &[0xF0, 0x01, 0x80])), 0x81);
}

/// MQTT 3.1 (`MQIsdp`, level 3) CONNECT is accepted as V31.
#[test]
fn mqtt31_connect_is_accepted() {
    let p = first(&connect_bytes(b"MQIsdp", 3, 0x02, &[0, 1, b'x'])).unwrap();
    assert!(
        matches!(&p, Packet::Connect(c) if c.version == ProtocolVersion::V31 && c.client_id == "x")
    );
}

/// [MQTT-3.1.3-5] The password is binary data: `FF FE` is accepted.
#[test]
fn binary_password_is_accepted() {
    let bytes = connect_bytes(
        b"MQTT",
        4,
        0xC2,
        &[0, 1, b'x', 0, 1, b'u', 0, 2, 0xFF, 0xFE],
    );
    let p = first(&bytes).unwrap();
    assert!(matches!(&p, Packet::Connect(c)
        if c.password.as_deref() == Some(&[0xFF, 0xFE][..]) && c.username.as_deref() == Some("u")));
}

/// [MQTT-3.1.2-3] The CONNECT reserved flag (bit 0) must be 0.
#[test]
fn connect_reserved_flag_is_malformed() {
    for level in [4, 5] {
        let bytes = connect_bytes(b"MQTT", level, 0x03, &[0, 1, b'x']);
        assert_eq!(code(first(&bytes)), 0x81, "level {level}");
    }
}

/// [MQTT-2.1.3-1] CONNECT fixed-header flags `0x1F` (low nibble not 0) are malformed.
#[test]
fn connect_fixed_header_flags_are_malformed() {
    for nibble in 1..16u8 {
        let mut bytes = connect_bytes(b"MQTT", 4, 0x02, &[0, 1, b'x']);
        bytes[0] = 0x10 | nibble;
        assert_eq!(code(first(&bytes)), 0x81, "flags {nibble:#x}");
    }
}

/// [MQTT-3.1.2-2] The level byte picks the codec: a level 5 body has a property block that a
/// level 4 body lacks, and each is read as its own version.
#[test]
fn connect_level_selects_the_body_layout() {
    let p = first(CONNECT_V5).unwrap();
    assert!(
        matches!(&p, Packet::Connect(c) if c.version == ProtocolVersion::V5 && c.client_id == "c")
    );
    let p = first(CONNECT_V4).unwrap();
    assert!(
        matches!(&p, Packet::Connect(c) if c.version == ProtocolVersion::V311 && c.client_id == "c")
    );
    // A level 4 body announced as level 5: the client id length is read as a property length
    // and the frame cannot parse, instead of being misparsed as client_id "" (mqttbytes).
    let mut v4_body_as_v5 = CONNECT_V4.to_vec();
    v4_body_as_v5[8] = 5;
    assert_eq!(code(first(&v4_body_as_v5)), 0x81);
    // A level 5 body announced as level 4 leaves a trailing byte.
    let mut v5_body_as_v4 = CONNECT_V5.to_vec();
    v5_body_as_v4[8] = 4;
    assert_eq!(code(first(&v5_body_as_v4)), 0x81);
}

/// [MQTT-3.1.2-22] In v3.1.1 a password needs a user name; v5 allows a password alone.
#[test]
fn password_without_username_is_v3_only_error() {
    let v4 = connect_bytes(b"MQTT", 4, 0x42, &[0, 1, b'x', 0, 1, b'p']);
    assert_eq!(code(first(&v4)), 0x81);
    let v5 = connect_bytes(b"MQTT", 5, 0x42, &[0, 1, b'x', 0, 1, b'p']);
    let p = first(&v5).unwrap();
    assert!(matches!(&p, Packet::Connect(c)
        if c.username.is_none() && c.password.as_deref() == Some(&b"p"[..])));
}

/// Bytes after the last CONNECT field are malformed (mqttbytes ignores them).
#[test]
fn connect_with_trailing_bytes_is_malformed() {
    for level in [4, 5] {
        let bytes = connect_bytes(b"MQTT", level, 0x02, &[0, 1, b'x', 9, 9]);
        assert_eq!(code(first(&bytes)), 0x81, "level {level}");
    }
}

/// [MQTT-1.5.3-2] A client id containing U+0000 is malformed.
#[test]
fn client_id_with_nul_is_malformed() {
    for level in [4, 5] {
        let bytes = connect_bytes(b"MQTT", level, 0x02, &[0, 2, b'x', 0]);
        assert_eq!(code(first(&bytes)), 0x81, "level {level}");
    }
}

/// [MQTT-1.5.3-1] A client id that is not UTF-8 is malformed.
#[test]
fn client_id_not_utf8_is_malformed() {
    let bytes = connect_bytes(b"MQTT", 4, 0x02, &[0, 2, 0xC3, 0x28]);
    assert_eq!(code(first(&bytes)), 0x81);
}

/// [MQTT-1.5.3-2] A user name containing U+0000 is malformed.
#[test]
fn username_with_nul_is_malformed() {
    let bytes = connect_bytes(b"MQTT", 4, 0x82, &[0, 1, b'x', 0, 1, 0]);
    assert_eq!(code(first(&bytes)), 0x81);
}

/// [MQTT-3.1.2-11] Will QoS or Will Retain without the Will Flag is malformed.
#[test]
fn will_qos_or_retain_without_will_flag_is_malformed() {
    assert_eq!(
        code(first(&connect_bytes(b"MQTT", 4, 0x0A, &[0, 1, b'x']))),
        0x81
    );
    assert_eq!(
        code(first(&connect_bytes(b"MQTT", 4, 0x22, &[0, 1, b'x']))),
        0x81
    );
}

/// [MQTT-3.1.2-12] Will QoS 3 is malformed.
#[test]
fn will_qos_3_is_malformed() {
    let bytes = connect_bytes(b"MQTT", 4, 0x1E, &[0, 1, b'x', 0, 1, b't', 0, 0]);
    assert_eq!(code(first(&bytes)), 0x81);
}

/// [MQTT-3.1.3-11] The will topic must be a valid topic name: no wildcard, no U+0000.
#[test]
fn will_topic_must_be_a_topic_name() {
    let ok = connect_bytes(b"MQTT", 4, 0x06, &[0, 1, b'x', 0, 1, b't', 0, 1, b'p']);
    let p = first(&ok).unwrap();
    assert!(matches!(&p, Packet::Connect(c)
        if c.will.as_ref().is_some_and(|w| w.topic == "t" && w.payload == Bytes::from_static(b"p"))));
    // Malformed (MQTT 5 §4.13.1), not a name the server declines (0x90).
    let wildcard = connect_bytes(b"MQTT", 4, 0x06, &[0, 1, b'x', 0, 1, b'#', 0, 0]);
    assert_eq!(code(first(&wildcard)), 0x81);
    let nul = connect_bytes(b"MQTT", 4, 0x06, &[0, 1, b'x', 0, 2, b'a', 0, 0, 0]);
    assert_eq!(code(first(&nul)), 0x81);
}

/// [MQTT-3.1.3-8] An empty client id with Clean Session 0 decodes: the 0x02 refusal (and the
/// 23-byte limit of 3.1) is the handshake's decision, not the codec's.
#[test]
fn client_id_policy_is_left_to_the_handshake() {
    let p = first(&connect_bytes(b"MQTT", 4, 0x00, &[0, 0])).unwrap();
    assert!(matches!(p, Packet::Connect(c) if c.client_id.is_empty() && !c.clean_start));
    let mut rest = vec![0, 24];
    rest.extend_from_slice(&[b'x'; 24]);
    let p = first(&connect_bytes(b"MQIsdp", 3, 0x02, &rest)).unwrap();
    assert!(matches!(p, Packet::Connect(c) if c.client_id.len() == 24));
}

/// [MQTT-3.1.2-2] An unknown level is refused with a v3 CONNACK 0x01 unless the level byte is 5.
#[test]
fn unsupported_protocol_level_is_refused() {
    let e = first(&connect_bytes(b"MQTT", 6, 0x02, &[0, 1, b'x'])).unwrap_err();
    assert!(matches!(
        e,
        DecodeError::UnsupportedProtocol { level: 6, .. }
    ));
    assert_eq!(e.reason_code(), ReasonCode::UnsupportedProtocolVersion);
    assert!(!e.wants_v5_connack());
    let e = first(&connect_bytes(b"MQIsdp", 4, 0x02, &[0, 1, b'x'])).unwrap_err();
    assert_eq!(e.reason_code(), ReasonCode::UnsupportedProtocolVersion);
    assert!(!e.wants_v5_connack());
    let e = first(&connect_bytes(b"MQTT", 3, 0x02, &[0, 1, b'x'])).unwrap_err();
    assert!(matches!(
        e,
        DecodeError::UnsupportedProtocol { level: 3, .. }
    ));
}

/// [MQTT-3.1.2-1] A protocol name other than MQTT (or 3.1's MQIsdp) is not MQTT at all: an
/// error without a CONNACK (no version is hinted), whatever the level says.
#[test]
fn unsupported_protocol_name_is_refused() {
    for level in [3, 4, 5] {
        let mut d = Decoder::new(1024);
        let mut buf = BytesMut::from(&connect_bytes(b"MQTX", level, 0x02, &[0, 1, b'x'])[..]);
        let e = d.decode(&mut buf).unwrap_err();
        assert!(matches!(e, DecodeError::Protocol(_)), "{e:?}");
        assert_eq!(d.version_hint(), None);
    }
}

/// The refused CONNECT's level is remembered so the refusal uses the right CONNACK version.
#[test]
fn version_hint_survives_a_refused_connect() {
    let mut d = Decoder::new(1024);
    let mut buf = BytesMut::from(&connect_bytes(b"MQTT", 5, 0x03, &[0, 1, b'x'])[..]);
    assert!(d.decode(&mut buf).is_err());
    assert_eq!(d.version(), None);
    assert_eq!(d.version_hint(), Some(ProtocolVersion::V5));
}

/// [MQTT-3.1.0-1] The first packet must be CONNECT.
#[test]
fn first_packet_not_connect_is_a_protocol_error() {
    assert_eq!(code(first(&[0xC0, 0x00])), 0x82);
    assert_eq!(code(first(&[0x30, 0x03, 0, 1, b't'])), 0x82);
}

/// [MQTT-3.1.0-2] A second CONNECT is a protocol error.
#[test]
fn second_connect_is_a_protocol_error() {
    assert_eq!(code(after_connect(4, CONNECT_V4)), 0x82);
    assert_eq!(code(after_connect(5, CONNECT_V5)), 0x82);
}

/// Acknowledgements of only a packet id are read in place: each leaves the buffer exactly
/// where the next packet starts, packet id 0 is malformed [MQTT-2.2.1-3] in every version and
/// direction, and an incomplete one waits for its last byte.
#[test]
fn short_acks_read_in_place() {
    for version in [4, 5] {
        let mut d = Decoder::new(1024);
        let mut buf = BytesMut::from(connect_for(version));
        assert!(matches!(d.decode(&mut buf), Ok(Some(Packet::Connect(_)))));
        buf.extend_from_slice(&[0x40, 2, 0, 1, 0x50, 2, 0, 2, 0x62, 2, 0, 3, 0x70, 2, 1, 4]);
        buf.extend_from_slice(&[0x40, 2, 0]);
        let ids: Vec<(u8, u16)> = std::iter::from_fn(|| d.decode(&mut buf).unwrap())
            .map(|p| match p {
                Packet::PubAck(a) => (4, a.pkid),
                Packet::PubRec(a) => (5, a.pkid),
                Packet::PubRel(a) => (6, a.pkid),
                Packet::PubComp(a) => (7, a.pkid),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, [(4, 1), (5, 2), (6, 3), (7, 260)]);
        assert_eq!(&buf[..], &[0x40, 2, 0]);
        buf.extend_from_slice(&[9]);
        assert!(matches!(d.decode(&mut buf), Ok(Some(Packet::PubAck(a))) if a.pkid == 9));
        assert!(buf.is_empty());
        for first in [0x40, 0x50, 0x62, 0x70] {
            assert_eq!(code(after_connect(version, &[first, 2, 0, 0])), 0x81);
        }
    }
}
