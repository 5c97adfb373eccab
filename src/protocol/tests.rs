//! Byte-level tests of the codec: every row of shared/PROTOCOL-GAPS.md and every per-packet item
//! of its checklist, with the malformed inputs written out byte by byte; round trips of every
//! client packet for both versions; and properties (no input panics the decoder, any valid
//! PUBLISH round-trips, byte splitting never changes what a stream decodes to).

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

/// `MQTT`/4, clean session, keep alive 60, client id "c".
const CONNECT_V4: &[u8] = &[
    0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'c',
];
/// `MQTT`/5, clean start, keep alive 60, no properties, client id "c".
const CONNECT_V5: &[u8] = &[
    0x10, 0x0E, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 1, b'c',
];

fn connect_for(version: u8) -> &'static [u8] {
    if version == 5 {
        CONNECT_V5
    } else {
        CONNECT_V4
    }
}

/// Decodes every complete packet in `bytes` with a fresh decoder.
fn decode_all(bytes: &[u8]) -> Result<Vec<Packet>, DecodeError> {
    let mut d = Decoder::new(1024 * 1024);
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(p) = d.decode(&mut buf)? {
        out.push(p);
    }
    assert!(buf.is_empty(), "left over: {buf:?}");
    Ok(out)
}

/// Decodes the first packet of a connection.
fn first(bytes: &[u8]) -> Result<Packet, DecodeError> {
    let mut d = Decoder::new(1024 * 1024);
    let mut buf = BytesMut::from(bytes);
    let p = d.decode(&mut buf)?.expect("a complete packet");
    assert!(buf.is_empty(), "bytes left after the packet: {buf:?}");
    Ok(p)
}

/// Decodes `packet` after a valid CONNECT of `version` (4 or 5).
fn after_connect(version: u8, packet: &[u8]) -> Result<Packet, DecodeError> {
    let mut d = Decoder::new(1024 * 1024);
    let mut buf = BytesMut::from(connect_for(version));
    assert!(matches!(d.decode(&mut buf), Ok(Some(Packet::Connect(_)))));
    buf.extend_from_slice(packet);
    let p = d.decode(&mut buf)?.expect("a complete packet");
    assert!(buf.is_empty(), "bytes left after the packet: {buf:?}");
    Ok(p)
}

/// The reason code of a refusal; panics if the packet was accepted.
fn code(r: Result<Packet, DecodeError>) -> u8 {
    match r {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e.reason_code() as u8,
    }
}

/// A CONNECT: protocol name, level, connect flags, keep alive 60, an empty v5 property block
/// when `level` is 5, then `rest` (payload). Remaining length is computed.
fn connect_bytes(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut body = vec![0, name.len() as u8];
    body.extend_from_slice(name);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&[0, 60]);
    if level == 5 {
        body.push(0);
    }
    body.extend_from_slice(rest);
    let mut out = vec![0x10, body.len() as u8];
    out.extend(body);
    out
}

/// A v5 CONNECT with the property block `props` and client id "c".
fn v5_connect_with_props(props: &[u8]) -> Vec<u8> {
    let mut body = vec![
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        5,
        0x02,
        0,
        60,
        props.len() as u8,
    ];
    body.extend_from_slice(props);
    body.extend_from_slice(&[0, 1, b'c']);
    let mut out = vec![0x10, body.len() as u8];
    out.extend(body);
    out
}

/// A v5 QoS 0 PUBLISH to "t" with the property block `props` and no payload.
fn v5_publish_with_props(props: &[u8]) -> Vec<u8> {
    let mut b = vec![
        0x30,
        (3 + 1 + props.len()) as u8,
        0,
        1,
        b't',
        props.len() as u8,
    ];
    b.extend_from_slice(props);
    b
}

// ---------------------------------------------------------------------------------------------
// The PROTOCOL-GAPS table, row by row, and the CONNECT checklist (7)-(9), (12).
// ---------------------------------------------------------------------------------------------

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
        Packet::Auth(Auth::default())
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
    let wildcard = connect_bytes(b"MQTT", 4, 0x06, &[0, 1, b'x', 0, 1, b'#', 0, 0]);
    assert_eq!(code(first(&wildcard)), 0x90);
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

/// [MQTT-3.1.2-1] An unknown protocol name is refused; level 5 asks for a v5 CONNACK (0x84).
#[test]
fn unsupported_protocol_name_is_refused() {
    let e = first(&connect_bytes(b"MQTX", 5, 0x02, &[0, 1, b'x'])).unwrap_err();
    assert!(matches!(&e, DecodeError::UnsupportedProtocol { name, level: 5 } if name == "MQTX"));
    assert!(e.wants_v5_connack());
    assert_eq!(e.reason_code() as u8, 0x84);
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

// ---------------------------------------------------------------------------------------------
// PUBLISH: checklist (2), (12), (14), (15).
// ---------------------------------------------------------------------------------------------

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

/// [MQTT-3.3.2-2] A topic name with `#` (`a/#`) is invalid (0x90).
#[test]
fn publish_topic_with_hash_is_invalid() {
    assert_eq!(
        code(after_connect(4, &[0x30, 0x05, 0, 3, b'a', b'/', b'#'])),
        0x90
    );
    assert_eq!(
        code(after_connect(5, &[0x30, 0x06, 0, 3, b'a', b'/', b'#', 0])),
        0x90
    );
}

/// [MQTT-3.3.2-2] A topic name `+` is invalid (0x90).
#[test]
fn publish_topic_with_plus_is_invalid() {
    assert_eq!(code(after_connect(4, &[0x30, 0x03, 0, 1, b'+'])), 0x90);
    assert_eq!(code(after_connect(5, &[0x30, 0x04, 0, 1, b'+', 0])), 0x90);
}

/// [MQTT-4.7.3-1] An empty topic name is invalid in v3.1.1 (0x90).
#[test]
fn v3_publish_with_empty_topic_is_invalid() {
    assert_eq!(code(after_connect(4, &[0x30, 0x02, 0, 0])), 0x90);
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

// ---------------------------------------------------------------------------------------------
// v5 properties: checklist (10), (15).
// ---------------------------------------------------------------------------------------------

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

/// [MQTT-2.2.2-2] A known property that does not belong in the packet is a protocol error.
#[test]
fn property_not_allowed_in_packet_is_a_protocol_error() {
    // Session Expiry Interval in PUBLISH.
    assert_eq!(
        code(after_connect(
            5,
            &v5_publish_with_props(&[0x11, 0, 0, 0, 1])
        )),
        0x82
    );
    // Server-only Maximum QoS in PUBLISH and in CONNECT.
    assert_eq!(
        code(after_connect(5, &v5_publish_with_props(&[0x24, 1]))),
        0x82
    );
    assert_eq!(code(first(&v5_connect_with_props(&[0x24, 1]))), 0x82);
    // Topic Alias in CONNECT.
    assert_eq!(code(first(&v5_connect_with_props(&[0x23, 0, 1]))), 0x82);
    // Reason String in SUBSCRIBE.
    let sub = [0x82, 0x0B, 0, 1, 4, 0x1F, 0, 1, b'r', 0, 1, b't', 0];
    assert_eq!(code(after_connect(5, &sub)), 0x82);
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

/// [MQTT-3.1.2-?] Receive Maximum 0 in CONNECT is a protocol error (0x82).
#[test]
fn receive_maximum_0_is_a_protocol_error() {
    assert_eq!(code(first(&v5_connect_with_props(&[0x21, 0, 0]))), 0x82);
    let p = first(&v5_connect_with_props(&[0x21, 0, 1])).unwrap();
    assert!(matches!(p, Packet::Connect(c) if c.properties.receive_maximum == Some(1)));
}

/// [MQTT-3.1.2-?] Maximum Packet Size 0 in CONNECT is a protocol error (0x82).
#[test]
fn maximum_packet_size_0_is_a_protocol_error() {
    assert_eq!(
        code(first(&v5_connect_with_props(&[0x27, 0, 0, 0, 0]))),
        0x82
    );
    let p = first(&v5_connect_with_props(&[0x27, 0, 0, 1, 0])).unwrap();
    assert!(matches!(p, Packet::Connect(c) if c.properties.maximum_packet_size == Some(256)));
}

/// [MQTT-3.1.2-?] Request Problem/Response Information other than 0 or 1 is a protocol error.
#[test]
fn request_information_flags_above_1_are_protocol_errors() {
    assert_eq!(code(first(&v5_connect_with_props(&[0x17, 2]))), 0x82);
    assert_eq!(code(first(&v5_connect_with_props(&[0x19, 2]))), 0x82);
}

/// [MQTT-3.1.2-?] (v5 §3.1.2.11.10) Authentication Data without an Authentication Method is a
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

/// [MQTT-3.1.3-?] Will properties: Will Delay Interval is allowed, Topic Alias is not.
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
    assert_eq!(code(first(&will(&[0x23, 0, 1]))), 0x82);
    assert_eq!(code(first(&will(&[0x11, 0, 0, 0, 1]))), 0x82);
}

// ---------------------------------------------------------------------------------------------
// SUBSCRIBE, UNSUBSCRIBE, acks: checklist (2), (6), (17).
// ---------------------------------------------------------------------------------------------

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
fn subscribe_qos_3_is_malformed() {
    assert_eq!(
        code(after_connect(4, &[0x82, 0x06, 0, 1, 0, 1, b't', 0x03])),
        0x81
    );
    assert_eq!(
        code(after_connect(5, &[0x82, 0x07, 0, 1, 0, 0, 1, b't', 0x03])),
        0x81
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

/// [MQTT-3.8.2-?] Subscription Identifier is decoded; 0 is a protocol error.
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
fn subscribe_filter_is_utf8_checked_only() {
    assert_eq!(
        code(after_connect(4, &[0x82, 0x07, 0, 1, 0, 2, b'a', 0, 0])),
        0x81
    );
    let p = after_connect(4, &[0x82, 0x08, 0, 1, 0, 3, b'a', b'+', b'b', 1]).unwrap();
    assert!(matches!(p, Packet::Subscribe(s) if s.filters[0].filter == "a+b"));
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

// ---------------------------------------------------------------------------------------------
// Framing: checklist (1)-(5).
// ---------------------------------------------------------------------------------------------

/// [MQTT-1.5.5-1] A remaining length of 5 bytes is malformed, detected with the header alone.
#[test]
fn remaining_length_of_5_bytes_is_malformed() {
    assert_eq!(
        code(after_connect(4, &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])),
        0x81
    );
    let mut d = Decoder::new(u32::MAX);
    let mut buf = BytesMut::from(CONNECT_V4);
    d.decode(&mut buf).unwrap();
    buf.extend_from_slice(&[0x30, 0x80, 0x80, 0x80, 0x80]);
    assert_eq!(d.decode(&mut buf).unwrap_err().reason_code() as u8, 0x81);
}

/// [MQTT-3.1.2-24] The total size (header included) is checked against the maximum from the
/// fixed header alone, before the body is buffered: 0x95.
#[test]
fn packet_too_large_is_detected_from_the_fixed_header() {
    // 2-byte header announcing 9 bytes: total 11 > 10.
    let mut d = Decoder::new(10);
    let mut buf = BytesMut::from(&[0x10, 0x09][..]);
    let e = d.decode(&mut buf).unwrap_err();
    assert_eq!(e, DecodeError::PacketTooLarge { size: 11, max: 10 });
    assert_eq!(e.reason_code() as u8, 0x95);
    // 5-byte header after CONNECT: 268,435,455 + 5.
    let mut d = Decoder::new(100);
    let mut buf = BytesMut::from(CONNECT_V4);
    d.decode(&mut buf).unwrap().unwrap();
    buf.extend_from_slice(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]);
    let e = d.decode(&mut buf).unwrap_err();
    assert_eq!(
        e,
        DecodeError::PacketTooLarge {
            size: 268_435_460,
            max: 100
        }
    );
    assert_eq!(e.reason_code(), ReasonCode::PacketTooLarge);
}

/// [MQTT-3.1.2-24] A packet of exactly the maximum size is accepted: the limit is inclusive and
/// counts the header.
#[test]
fn packet_of_exactly_max_size_is_accepted() {
    let mut d = Decoder::new(CONNECT_V4.len() as u32);
    let mut buf = BytesMut::from(CONNECT_V4);
    assert!(d.decode(&mut buf).unwrap().is_some());
    let mut d = Decoder::new(CONNECT_V4.len() as u32 - 1);
    let mut buf = BytesMut::from(CONNECT_V4);
    assert!(matches!(
        d.decode(&mut buf),
        Err(DecodeError::PacketTooLarge { .. })
    ));
}

/// [MQTT-3.12] PINGREQ with a body is malformed.
#[test]
fn pingreq_with_a_body_is_malformed() {
    assert_eq!(after_connect(4, &[0xC0, 0x00]).unwrap(), Packet::PingReq);
    assert_eq!(code(after_connect(4, &[0xC0, 0x01, 0])), 0x81);
    assert_eq!(code(after_connect(5, &[0xC0, 0x01, 0])), 0x81);
    assert_eq!(code(after_connect(4, &[0xC1, 0x00])), 0x81);
}

/// [MQTT-2.1.2] Packet type 0 is reserved: malformed.
#[test]
fn packet_type_0_is_malformed() {
    assert_eq!(code(after_connect(4, &[0x00, 0x00])), 0x81);
    assert_eq!(code(after_connect(5, &[0x00, 0x00])), 0x81);
}

/// [MQTT-2.1.2] CONNACK, SUBACK, UNSUBACK and PINGRESP from a client are protocol errors.
#[test]
fn server_only_packets_from_a_client_are_protocol_errors() {
    for v in [4, 5] {
        for byte1 in [0x20u8, 0x90, 0xB0, 0xD0] {
            assert_eq!(
                code(after_connect(v, &[byte1, 0x02, 0, 1])),
                0x82,
                "{byte1:#x}"
            );
        }
        assert_eq!(code(after_connect(v, &[0xD0, 0x00])), 0x82);
    }
}

/// A partial frame returns Ok(None) and leaves the buffer as it was, at every cut point.
#[test]
fn partial_frames_wait_and_leave_the_buffer_intact() {
    for cut in 0..CONNECT_V5.len() {
        let mut d = Decoder::new(1024);
        let mut buf = BytesMut::from(&CONNECT_V5[..cut]);
        assert_eq!(d.decode(&mut buf).unwrap(), None, "cut {cut}");
        assert_eq!(&buf[..], &CONNECT_V5[..cut]);
        buf.extend_from_slice(&CONNECT_V5[cut..]);
        assert!(matches!(d.decode(&mut buf), Ok(Some(Packet::Connect(_)))));
        assert!(buf.is_empty());
    }
}

/// After an MQTT 3.1 CONNECT the connection speaks 3.1.1 framing.
#[test]
fn mqtt31_connection_decodes_later_packets_as_v311() {
    let mut bytes = connect_bytes(b"MQIsdp", 3, 0x02, &[0, 1, b'x']);
    bytes.extend_from_slice(&[0x32, 0x05, 0, 1, b't', 0, 1, 0xE0, 0x00]);
    let got = decode_all(&bytes).unwrap();
    assert!(matches!(&got[1], Packet::Publish(p) if p.pkid == 1 && p.topic == "t"));
    assert_eq!(got[2], Packet::Disconnect(Disconnect::default()));
    // v3 DISCONNECT rules apply: no body.
    let mut bytes = connect_bytes(b"MQIsdp", 3, 0x02, &[0, 1, b'x']);
    bytes.extend_from_slice(&[0xE0, 0x01, 0x00]);
    assert!(decode_all(&bytes).is_err());
}

/// Several packets in one buffer come out one per call, in order.
#[test]
fn batched_frames_decode_one_at_a_time() {
    let mut d = Decoder::new(1024);
    let mut buf = BytesMut::from(CONNECT_V4);
    buf.extend_from_slice(&[0xC0, 0x00, 0x30, 0x03, 0, 1, b't', 0xE0, 0x00]);
    assert!(matches!(
        d.decode(&mut buf).unwrap(),
        Some(Packet::Connect(_))
    ));
    assert_eq!(buf.len(), 9);
    assert_eq!(d.decode(&mut buf).unwrap(), Some(Packet::PingReq));
    assert_eq!(buf.len(), 7);
    assert!(matches!(d.decode(&mut buf).unwrap(), Some(Packet::Publish(p)) if p.topic == "t"));
    assert_eq!(&buf[..], &[0xE0, 0x00]);
    assert!(matches!(
        d.decode(&mut buf).unwrap(),
        Some(Packet::Disconnect(_))
    ));
    assert_eq!(d.decode(&mut buf).unwrap(), None);
    assert_eq!(decode_all(&buf).unwrap(), vec![]);
}

// ---------------------------------------------------------------------------------------------
// Encoding: checklist (13), exact short forms, publish_len.
// ---------------------------------------------------------------------------------------------

fn publish(topic: &str, qos: QoS, pkid: u16, payload: &'static [u8]) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid,
        payload: Bytes::from_static(payload),
        properties: PublishProperties::default(),
    }
}

fn connect(version: ProtocolVersion) -> Connect {
    Connect {
        version,
        client_id: "c".into(),
        clean_start: true,
        keep_alive: 30,
        username: None,
        password: None,
        will: None,
        properties: ConnectProperties::default(),
    }
}

/// [MQTT-1.5.4-1] A string longer than 65,535 bytes is an encode error, never truncated.
#[test]
fn string_over_65535_bytes_fails_to_encode() {
    let long = "t".repeat(65_536);
    for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut out = BytesMut::new();
        let p = publish(&long, QoS::AtMostOnce, 0, b"");
        assert_eq!(
            encode_publish(&p, v, &mut out),
            Err(EncodeError::StringTooLong)
        );
        assert_eq!(
            encode(&Packet::Publish(p), v, &mut out),
            Err(EncodeError::StringTooLong)
        );
        let mut c = connect(v);
        c.client_id = long.clone();
        assert_eq!(
            encode(&Packet::Connect(Box::new(c)), v, &mut out),
            Err(EncodeError::StringTooLong)
        );
        let u = Unsubscribe {
            pkid: 1,
            filters: vec![long.clone()],
            user_properties: Vec::new(),
        };
        assert_eq!(
            encode(&Packet::Unsubscribe(u), v, &mut out),
            Err(EncodeError::StringTooLong)
        );
    }
    let mut c = connect(ProtocolVersion::V311);
    c.username = Some("u".into());
    c.password = Some(Bytes::from(vec![0u8; 65_536]));
    let mut out = BytesMut::new();
    assert_eq!(
        encode(
            &Packet::Connect(Box::new(c)),
            ProtocolVersion::V311,
            &mut out
        ),
        Err(EncodeError::StringTooLong)
    );
    let mut p = publish("t", QoS::AtMostOnce, 0, b"");
    p.properties.user_properties = vec![("k".into(), long.clone())];
    assert_eq!(
        encode_publish(&p, ProtocolVersion::V5, &mut out),
        Err(EncodeError::StringTooLong)
    );
    let a = Ack {
        pkid: 1,
        reason: ReasonCode::Success,
        properties: AckProperties {
            reason_string: Some(long),
            user_properties: Vec::new(),
        },
    };
    assert_eq!(
        encode(&Packet::PubAck(a), ProtocolVersion::V5, &mut out),
        Err(EncodeError::StringTooLong)
    );
}

/// [MQTT-1.5.4-1] A string of exactly 65,535 bytes encodes and decodes.
#[test]
fn string_of_65535_bytes_round_trips() {
    let p = publish(&"t".repeat(65_535), QoS::AtMostOnce, 0, b"x");
    round_trip(ProtocolVersion::V311, Packet::Publish(p));
}

/// AUTH does not exist in v3.1.1.
#[test]
fn auth_fails_to_encode_in_v3() {
    let mut out = BytesMut::new();
    assert_eq!(
        encode(
            &Packet::Auth(Auth::default()),
            ProtocolVersion::V311,
            &mut out
        ),
        Err(EncodeError::NotInVersion)
    );
}

/// The short forms are what goes on the wire: 2-byte acks, `E0 00`, `C0 00`, `62` for PUBREL.
#[test]
fn short_forms_are_encoded() {
    let cases: Vec<(Packet, ProtocolVersion, &[u8])> = vec![
        (Packet::PingReq, ProtocolVersion::V5, &[0xC0, 0x00]),
        (Packet::PingResp, ProtocolVersion::V311, &[0xD0, 0x00]),
        (
            Packet::Disconnect(Disconnect::default()),
            ProtocolVersion::V5,
            &[0xE0, 0x00],
        ),
        (
            Packet::Disconnect(Disconnect::default()),
            ProtocolVersion::V311,
            &[0xE0, 0x00],
        ),
        (
            Packet::PubAck(Ack {
                pkid: 7,
                ..Ack::default()
            }),
            ProtocolVersion::V5,
            &[0x40, 2, 0, 7],
        ),
        (
            Packet::PubRel(Ack {
                pkid: 7,
                ..Ack::default()
            }),
            ProtocolVersion::V311,
            &[0x62, 2, 0, 7],
        ),
        (
            Packet::Auth(Auth::default()),
            ProtocolVersion::V5,
            &[0xF0, 2, 0, 0],
        ),
    ];
    for (packet, v, bytes) in cases {
        let mut out = BytesMut::new();
        encode(&packet, v, &mut out).unwrap();
        assert_eq!(&out[..], bytes, "{packet:?}");
    }
    // A v3 ack drops the v5 reason code.
    let mut out = BytesMut::new();
    let a = Ack {
        pkid: 7,
        reason: ReasonCode::NoMatchingSubscribers,
        ..Ack::default()
    };
    encode(&Packet::PubAck(a), ProtocolVersion::V311, &mut out).unwrap();
    assert_eq!(&out[..], &[0x40, 2, 0, 7]);
}

/// [MQTT-3.2.2.3] A v3 CONNACK carries the return code mapped from the reason code.
#[test]
fn v3_connack_maps_reason_codes() {
    for (reason, rc) in [
        (ReasonCode::Success, 0),
        (ReasonCode::UnsupportedProtocolVersion, 1),
        (ReasonCode::ClientIdentifierNotValid, 2),
        (ReasonCode::ServerUnavailable, 3),
        (ReasonCode::BadUserNameOrPassword, 4),
        (ReasonCode::NotAuthorized, 5),
    ] {
        let mut out = BytesMut::new();
        let ack = ConnAck {
            reason,
            ..ConnAck::default()
        };
        encode(&Packet::ConnAck(ack), ProtocolVersion::V311, &mut out).unwrap();
        assert_eq!(&out[..], &[0x20, 0x02, 0x00, rc]);
    }
}

/// `publish_len` is the exact encoded size, with and without properties, across varint sizes.
#[test]
fn publish_len_equals_encoded_length() {
    for payload_len in [0usize, 1, 100, 127, 128, 16_383, 16_384, 70_000] {
        let mut p = publish("a/b", QoS::AtLeastOnce, 1, b"");
        p.payload = Bytes::from(vec![7u8; payload_len]);
        for props in [PublishProperties::default(), full_publish_properties()] {
            p.properties = props;
            p.properties.subscription_identifiers = vec![1, 300_000];
            for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
                let mut out = BytesMut::new();
                encode_publish(&p, v, &mut out).unwrap();
                assert_eq!(out.len(), publish_len(&p, v), "{payload_len} {v:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips: encode a client packet, decode it back.
// ---------------------------------------------------------------------------------------------

/// Encodes a CONNECT then `packet` for `version`, decodes both, and compares.
fn round_trip(version: ProtocolVersion, packet: Packet) {
    let connect = Packet::Connect(Box::new(connect(version)));
    let mut bytes = BytesMut::new();
    encode(&connect, version, &mut bytes).unwrap();
    encode(&packet, version, &mut bytes).unwrap();
    let got = decode_all(&bytes).unwrap();
    assert_eq!(got, vec![connect, packet], "{version:?}");
}

fn full_publish_properties() -> PublishProperties {
    PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        topic_alias: Some(3),
        response_topic: Some("r/t".into()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01")),
        user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
        subscription_identifiers: Vec::new(),
        content_type: Some("text/plain".into()),
    }
}

const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V311, ProtocolVersion::V5];

/// A v5 CONNECT with a will and every client property survives a round trip.
#[test]
fn v5_connect_with_will_and_all_properties_round_trips() {
    let mut will_props = full_publish_properties();
    will_props.topic_alias = None;
    let c = Connect {
        version: ProtocolVersion::V5,
        client_id: "client".into(),
        clean_start: false,
        keep_alive: 10,
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"\xFFpw")),
        will: Some(LastWill {
            topic: "w/t".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::ExactlyOnce,
            retain: true,
            delay_interval: Some(5),
            properties: will_props,
        }),
        properties: ConnectProperties {
            session_expiry_interval: Some(100),
            receive_maximum: Some(10),
            maximum_packet_size: Some(1000),
            topic_alias_maximum: Some(4),
            request_response_information: Some(1),
            request_problem_information: Some(0),
            user_properties: vec![("x".into(), "y".into()), ("x".into(), "z".into())],
            authentication_method: Some("SCRAM".into()),
            authentication_data: Some(Bytes::from_static(b"\x00data")),
        },
    };
    let mut bytes = BytesMut::new();
    encode(
        &Packet::Connect(Box::new(c.clone())),
        ProtocolVersion::V5,
        &mut bytes,
    )
    .unwrap();
    assert_eq!(first(&bytes).unwrap(), Packet::Connect(Box::new(c)));
}

/// v3.1.1 and 3.1 CONNECTs with a will, user name and binary password survive a round trip.
#[test]
fn v3_connect_with_will_round_trips() {
    for version in [ProtocolVersion::V311, ProtocolVersion::V31] {
        let c = Connect {
            version,
            client_id: "client".into(),
            clean_start: false,
            keep_alive: 0,
            username: Some("user".into()),
            password: Some(Bytes::from_static(b"\xFF\xFE")),
            will: Some(LastWill {
                topic: "w/t".into(),
                payload: Bytes::from_static(b"\x00gone"),
                qos: QoS::AtLeastOnce,
                retain: false,
                delay_interval: None,
                properties: PublishProperties::default(),
            }),
            properties: ConnectProperties::default(),
        };
        let mut bytes = BytesMut::new();
        encode(&Packet::Connect(Box::new(c.clone())), version, &mut bytes).unwrap();
        assert_eq!(first(&bytes).unwrap(), Packet::Connect(Box::new(c)));
    }
}

/// A minimal CONNECT (empty client id, no will, no credentials) round-trips in both versions.
#[test]
fn minimal_connect_round_trips() {
    for version in VERSIONS {
        let mut c = connect(version);
        c.client_id = String::new();
        let mut bytes = BytesMut::new();
        encode(&Packet::Connect(Box::new(c.clone())), version, &mut bytes).unwrap();
        assert_eq!(first(&bytes).unwrap(), Packet::Connect(Box::new(c)));
    }
}

/// PUBLISH at every QoS round-trips; in v5 with every client property.
#[test]
fn publish_round_trips() {
    for v in VERSIONS {
        for (qos, pkid) in [
            (QoS::AtMostOnce, 0),
            (QoS::AtLeastOnce, 1),
            (QoS::ExactlyOnce, 65_535),
        ] {
            let mut p = publish("a/b", qos, pkid, b"payload");
            p.retain = true;
            p.dup = qos != QoS::AtMostOnce;
            if v.is_v5() {
                p.properties = full_publish_properties();
            }
            round_trip(v, Packet::Publish(p));
        }
        round_trip(
            v,
            Packet::Publish(publish("é/$x y", QoS::AtMostOnce, 0, b"")),
        );
    }
    // v5 PUBLISH that uses an alias instead of a topic.
    let mut p = publish("", QoS::AtLeastOnce, 2, b"x");
    p.properties.topic_alias = Some(65_535);
    round_trip(ProtocolVersion::V5, Packet::Publish(p));
}

/// SUBSCRIBE with several filters, all options and (v5) a Subscription Identifier round-trips.
#[test]
fn subscribe_round_trips() {
    for v in VERSIONS {
        let v5 = v.is_v5();
        let opts = |qos, rh| SubscriptionOptions {
            qos,
            no_local: v5,
            retain_as_published: v5,
            retain_handling: if v5 {
                rh
            } else {
                RetainHandling::SendAtSubscribe
            },
        };
        round_trip(
            v,
            Packet::Subscribe(Subscribe {
                pkid: 3,
                filters: vec![
                    SubscribeFilter {
                        filter: "a/+/#".into(),
                        options: opts(QoS::AtMostOnce, RetainHandling::SendAtSubscribe),
                    },
                    SubscribeFilter {
                        filter: "$share/g/x".into(),
                        options: opts(QoS::AtLeastOnce, RetainHandling::SendIfNew),
                    },
                    SubscribeFilter {
                        filter: "#".into(),
                        options: opts(QoS::ExactlyOnce, RetainHandling::DoNotSend),
                    },
                ],
                subscription_identifier: v5.then_some(268_435_455),
                user_properties: if v5 {
                    vec![("a".into(), "b".into())]
                } else {
                    Vec::new()
                },
            }),
        );
    }
}

/// UNSUBSCRIBE round-trips, with user properties in v5.
#[test]
fn unsubscribe_round_trips() {
    for v in VERSIONS {
        round_trip(
            v,
            Packet::Unsubscribe(Unsubscribe {
                pkid: 4,
                filters: vec!["a".into(), "b/#".into()],
                user_properties: if v.is_v5() {
                    vec![("k".into(), "v".into())]
                } else {
                    Vec::new()
                },
            }),
        );
    }
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP round-trip in the short form (both versions) and, in v5,
/// with a reason code alone and with a reason code and properties.
#[test]
fn acks_round_trip_in_short_and_long_forms() {
    // Each with a failure code its packet type allows (3.4.2.1 to 3.7.2.1).
    type Maker = fn(Ack) -> Packet;
    let makers: [(Maker, ReasonCode); 4] = [
        (Packet::PubAck, ReasonCode::UnspecifiedError),
        (Packet::PubRec, ReasonCode::QuotaExceeded),
        (Packet::PubRel, ReasonCode::PacketIdentifierNotFound),
        (Packet::PubComp, ReasonCode::PacketIdentifierNotFound),
    ];
    for (make, failure) in makers {
        for v in VERSIONS {
            round_trip(
                v,
                make(Ack {
                    pkid: 7,
                    ..Ack::default()
                }),
            );
        }
        round_trip(
            ProtocolVersion::V5,
            make(Ack {
                pkid: 8,
                reason: failure,
                ..Ack::default()
            }),
        );
        round_trip(
            ProtocolVersion::V5,
            make(Ack {
                pkid: 9,
                reason: failure,
                properties: AckProperties {
                    reason_string: Some("why".into()),
                    user_properties: vec![("a".into(), "b".into())],
                },
            }),
        );
        // Success with properties: the reason byte must still be written.
        round_trip(
            ProtocolVersion::V5,
            make(Ack {
                pkid: 10,
                reason: ReasonCode::Success,
                properties: AckProperties {
                    reason_string: None,
                    user_properties: vec![("a".into(), "b".into())],
                },
            }),
        );
    }
}

/// PINGREQ round-trips in both versions.
#[test]
fn pingreq_round_trips() {
    for v in VERSIONS {
        round_trip(v, Packet::PingReq);
    }
}

/// DISCONNECT round-trips: empty in both versions, with reason and all properties in v5.
#[test]
fn disconnect_round_trips() {
    for v in VERSIONS {
        round_trip(v, Packet::Disconnect(Disconnect::default()));
    }
    round_trip(
        ProtocolVersion::V5,
        Packet::Disconnect(Disconnect {
            reason: ReasonCode::DisconnectWithWill,
            ..Disconnect::default()
        }),
    );
    round_trip(
        ProtocolVersion::V5,
        Packet::Disconnect(Disconnect {
            reason: ReasonCode::Success,
            properties: DisconnectProperties {
                session_expiry_interval: Some(10),
                reason_string: Some("bye".into()),
                user_properties: vec![("k".into(), "v".into())],
                server_reference: Some("other".into()),
            },
        }),
    );
}

/// AUTH round-trips in v5: default, and with method, data, reason string and user properties.
#[test]
fn auth_round_trips() {
    round_trip(ProtocolVersion::V5, Packet::Auth(Auth::default()));
    round_trip(
        ProtocolVersion::V5,
        Packet::Auth(Auth {
            reason: ReasonCode::ContinueAuthentication,
            authentication_method: Some("SCRAM-SHA-1".into()),
            authentication_data: Some(Bytes::from_static(b"\xFF\x00")),
            properties: AckProperties {
                reason_string: Some("more".into()),
                user_properties: vec![("k".into(), "v".into())],
            },
        }),
    );
}

// ---------------------------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------------------------

/// Feeds `bytes` to `d` until it needs more bytes or fails; every packet must consume bytes.
fn drain(d: &mut Decoder, buf: &mut BytesMut) -> Result<Vec<Packet>, TestCaseError> {
    let mut out = Vec::new();
    loop {
        let before = buf.len();
        match d.decode(buf) {
            Ok(Some(p)) => {
                prop_assert!(buf.len() < before, "{p:?} consumed nothing");
                out.push(p);
            }
            Ok(None) => {
                prop_assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                return Ok(out);
            }
            Err(_) => return Ok(out),
        }
    }
}

/// A frame with a correct remaining length around an arbitrary first byte and body, so that
/// random input gets past the framer into the body parsers.
fn framed_garbage() -> impl Strategy<Value = Vec<u8>> {
    (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..200)).prop_map(|(byte1, body)| {
        let mut out = BytesMut::new();
        out.put_u8(byte1);
        outgoing::put_varint(&mut out, body.len());
        out.put_slice(&body);
        out.to_vec()
    })
}

/// A UTF-8 string without U+0000.
fn mqtt_string() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,12}"
}

/// A valid topic name: non-empty, no wildcard, no U+0000.
fn topic_name() -> impl Strategy<Value = String> {
    "[^\u{0}+#]{1,24}"
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn user_properties() -> impl Strategy<Value = UserProperties> {
    proptest::collection::vec((mqtt_string(), mqtt_string()), 0..3)
}

/// The properties a client may put on a PUBLISH.
fn publish_properties() -> impl Strategy<Value = PublishProperties> {
    (
        proptest::option::of(0u8..=1),
        proptest::option::of(any::<u32>()),
        proptest::option::of(1u16..),
        proptest::option::of(topic_name()),
        proptest::option::of(bytes(20)),
        user_properties(),
        proptest::option::of(mqtt_string()),
    )
        .prop_map(
            |(pfi, expiry, alias, response, corr, user, ct)| PublishProperties {
                payload_format_indicator: pfi,
                message_expiry_interval: expiry,
                topic_alias: alias,
                response_topic: response,
                correlation_data: corr,
                user_properties: user,
                subscription_identifiers: Vec::new(),
                content_type: ct,
            },
        )
}

/// A valid client PUBLISH for `version`.
fn valid_publish(version: ProtocolVersion) -> impl Strategy<Value = Publish> {
    let v5 = version.is_v5();
    (
        topic_name(),
        qos(),
        1u16..,
        any::<bool>(),
        any::<bool>(),
        bytes(300),
        publish_properties(),
        any::<bool>(),
    )
        .prop_map(
            move |(topic, qos, pkid, dup, retain, payload, props, empty_topic)| {
                let properties = if v5 {
                    props
                } else {
                    PublishProperties::default()
                };
                // v5: with an alias the topic may be empty.
                let topic = if v5 && empty_topic && properties.topic_alias.is_some() {
                    String::new()
                } else {
                    topic
                };
                let qos0 = qos == QoS::AtMostOnce;
                Publish {
                    dup: dup && !qos0,
                    qos,
                    retain,
                    topic,
                    pkid: if qos0 { 0 } else { pkid },
                    payload,
                    properties,
                }
            },
        )
}

/// PUBACK/PUBREC (`release` false) or PUBREL/PUBCOMP (`release` true), with reason codes their
/// type allows.
fn ack(version: ProtocolVersion, release: bool) -> impl Strategy<Value = Ack> {
    let v5 = version.is_v5();
    let reason = if release {
        prop_oneof![
            Just(ReasonCode::Success),
            Just(ReasonCode::PacketIdentifierNotFound)
        ]
        .boxed()
    } else {
        prop_oneof![
            Just(ReasonCode::Success),
            Just(ReasonCode::NoMatchingSubscribers),
            Just(ReasonCode::UnspecifiedError),
            Just(ReasonCode::PacketIdentifierInUse),
            Just(ReasonCode::QuotaExceeded),
        ]
        .boxed()
    };
    (
        1u16..,
        reason,
        proptest::option::of(mqtt_string()),
        user_properties(),
    )
        .prop_map(move |(pkid, reason, reason_string, user_properties)| {
            if v5 {
                Ack {
                    pkid,
                    reason,
                    properties: AckProperties {
                        reason_string,
                        user_properties,
                    },
                }
            } else {
                Ack {
                    pkid,
                    ..Ack::default()
                }
            }
        })
}

fn subscribe(version: ProtocolVersion) -> impl Strategy<Value = Subscribe> {
    let v5 = version.is_v5();
    let filter = (
        "[^\u{0}]{1,12}",
        qos(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(RetainHandling::SendAtSubscribe),
            Just(RetainHandling::SendIfNew),
            Just(RetainHandling::DoNotSend)
        ],
    )
        .prop_map(move |(filter, qos, nl, rap, rh)| SubscribeFilter {
            filter,
            options: SubscriptionOptions {
                qos,
                no_local: nl && v5,
                retain_as_published: rap && v5,
                retain_handling: if v5 {
                    rh
                } else {
                    RetainHandling::SendAtSubscribe
                },
            },
        });
    (
        1u16..,
        proptest::collection::vec(filter, 1..4),
        proptest::option::of(1u32..=268_435_455),
        user_properties(),
    )
        .prop_map(move |(pkid, filters, id, user)| Subscribe {
            pkid,
            filters,
            subscription_identifier: id.filter(|_| v5),
            user_properties: if v5 { user } else { Vec::new() },
        })
}

/// Any valid client packet except CONNECT.
fn client_packet(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version.is_v5();
    prop_oneof![
        4 => valid_publish(version).prop_map(Packet::Publish),
        1 => ack(version, false).prop_map(Packet::PubAck),
        1 => ack(version, false).prop_map(Packet::PubRec),
        1 => ack(version, true).prop_map(Packet::PubRel),
        1 => ack(version, true).prop_map(Packet::PubComp),
        2 => subscribe(version).prop_map(Packet::Subscribe),
        1 => (1u16.., proptest::collection::vec("[^\u{0}]{1,12}", 1..4), user_properties())
            .prop_map(move |(pkid, filters, user)| Packet::Unsubscribe(Unsubscribe {
                pkid,
                filters,
                user_properties: if v5 { user } else { Vec::new() },
            })),
        1 => Just(Packet::PingReq),
        1 => proptest::option::of(any::<u32>()).prop_map(move |sei| Packet::Disconnect(Disconnect {
            properties: DisconnectProperties {
                session_expiry_interval: sei.filter(|_| v5),
                ..DisconnectProperties::default()
            },
            ..Disconnect::default()
        })),
    ]
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(ProtocolVersion::V311), Just(ProtocolVersion::V5)]
}

/// A version, then a CONNECT and 1..8 client packets of that version.
fn stream() -> impl Strategy<Value = (ProtocolVersion, Vec<Packet>)> {
    version().prop_flat_map(|v| {
        (
            Just(v),
            proptest::collection::vec(client_packet(v), 1..8).prop_map(move |mut packets| {
                packets.insert(0, Packet::Connect(Box::new(connect(v))));
                packets
            }),
        )
    })
}

/// A valid CONNECT of any version, with a will, credentials and v5 properties at random.
fn valid_connect() -> impl Strategy<Value = Connect> {
    let will = (
        topic_name(),
        bytes(50),
        qos(),
        any::<bool>(),
        proptest::option::of(any::<u32>()),
        publish_properties(),
    )
        .prop_map(|(topic, payload, qos, retain, delay, mut properties)| {
            properties.topic_alias = None;
            LastWill {
                topic,
                payload,
                qos,
                retain,
                delay_interval: delay,
                properties,
            }
        });
    let props = (
        proptest::option::of(any::<u32>()),
        proptest::option::of(1u16..),
        proptest::option::of(1u32..),
        proptest::option::of(any::<u16>()),
        proptest::option::of(0u8..=1),
        proptest::option::of(0u8..=1),
        user_properties(),
        proptest::option::of((mqtt_string(), proptest::option::of(bytes(20)))),
    )
        .prop_map(
            |(sei, rm, mps, tam, rri, rpi, user, auth)| ConnectProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                user_properties: user,
                authentication_method: auth.as_ref().map(|a| a.0.clone()),
                authentication_data: auth.and_then(|a| a.1),
            },
        );
    (
        prop_oneof![
            Just(ProtocolVersion::V31),
            Just(ProtocolVersion::V311),
            Just(ProtocolVersion::V5)
        ],
        mqtt_string(),
        any::<bool>(),
        any::<u16>(),
        proptest::option::of(mqtt_string()),
        proptest::option::of(bytes(20)),
        proptest::option::of(will),
        props,
    )
        .prop_map(
            |(
                version,
                client_id,
                clean_start,
                keep_alive,
                username,
                password,
                mut will,
                properties,
            )| {
                let v5 = version.is_v5();
                if let (false, Some(w)) = (v5, will.as_mut()) {
                    w.delay_interval = None;
                    w.properties = PublishProperties::default();
                }
                Connect {
                    version,
                    client_id,
                    clean_start,
                    keep_alive,
                    // v3: a password needs a user name.
                    password: if v5 || username.is_some() {
                        password
                    } else {
                        None
                    },
                    username,
                    will,
                    properties: if v5 {
                        properties
                    } else {
                        ConnectProperties::default()
                    },
                }
            },
        )
}

proptest! {
    /// No byte string makes the decoder panic as a first packet, and every packet it returns
    /// consumed bytes.
    #[test]
    fn arbitrary_bytes_as_first_packet_never_panic(
        raw in proptest::collection::vec(any::<u8>(), 0..300),
        framed in framed_garbage(),
    ) {
        for input in [&raw, &framed] {
            let mut d = Decoder::new(4096);
            drain(&mut d, &mut BytesMut::from(&input[..]))?;
        }
        let mut with_connect = BytesMut::from(&framed[..]);
        with_connect[0] = 0x10;
        drain(&mut Decoder::new(4096), &mut with_connect)?;
    }

    /// No byte string makes the decoder panic after a valid v3.1.1 or v5 CONNECT, and every
    /// packet it returns consumed bytes.
    #[test]
    fn arbitrary_bytes_after_connect_never_panic(
        raw in proptest::collection::vec(any::<u8>(), 0..300),
        framed in proptest::collection::vec(framed_garbage(), 1..4),
    ) {
        for prefix in [CONNECT_V4, CONNECT_V5] {
            for input in [raw.clone(), framed.concat()] {
                let mut d = Decoder::new(4096);
                let mut buf = BytesMut::from(prefix);
                buf.extend_from_slice(&input);
                let got = drain(&mut d, &mut buf)?;
                prop_assert!(matches!(got.first(), Some(Packet::Connect(_))));
            }
        }
    }

    /// Any valid PUBLISH (random topic, QoS, packet id, flags, payload, v5 properties)
    /// round-trips, and `publish_len` is its encoded size.
    #[test]
    fn valid_publish_round_trips(
        (v, p) in version().prop_flat_map(|v| (Just(v), valid_publish(v)))
    ) {
        let mut out = BytesMut::new();
        encode_publish(&p, v, &mut out).unwrap();
        prop_assert_eq!(out.len(), publish_len(&p, v));
        let mut d = Decoder::new(u32::MAX);
        let mut buf = BytesMut::new();
        encode(&Packet::Connect(Box::new(connect(v))), v, &mut buf).unwrap();
        buf.extend_from_slice(&out);
        let got = drain(&mut d, &mut buf)?;
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got.len(), 2);
        prop_assert_eq!(&got[1], &Packet::Publish(p));
    }

    /// Any valid CONNECT (3.1, 3.1.1, 5.0; will, credentials, properties) round-trips.
    #[test]
    fn valid_connect_round_trips(c in valid_connect()) {
        let mut out = BytesMut::new();
        encode(&Packet::Connect(Box::new(c.clone())), c.version, &mut out).unwrap();
        let mut d = Decoder::new(u32::MAX);
        let got = d.decode(&mut out).unwrap();
        prop_assert!(out.is_empty());
        prop_assert_eq!(d.version(), Some(c.version));
        prop_assert_eq!(got, Some(Packet::Connect(Box::new(c))));
    }

    /// Any stream of valid client packets decodes to the same packets however it is split into
    /// chunks, and to the packets that were encoded.
    #[test]
    fn split_stream_decodes_like_whole_stream(
        (v, packets) in stream(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut stream = BytesMut::new();
        for p in &packets {
            encode(p, v, &mut stream).unwrap();
        }
        let whole = decode_all(&stream).unwrap();
        prop_assert_eq!(&whole, &packets);

        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.push(0);
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut d = Decoder::new(1024 * 1024);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for w in cuts.windows(2) {
            buf.put_slice(&stream[w[0]..w[1]]);
            got.extend(drain(&mut d, &mut buf)?);
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, whole);
    }

    /// Byte-at-a-time feeding gives the same packets as feeding the stream whole.
    #[test]
    fn byte_at_a_time_decodes_like_whole_stream((v, packets) in stream()) {
        let mut stream = BytesMut::new();
        for p in &packets {
            encode(p, v, &mut stream).unwrap();
        }
        let mut d = Decoder::new(1024 * 1024);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in &stream[..] {
            buf.put_u8(*b);
            got.extend(drain(&mut d, &mut buf)?);
        }
        prop_assert_eq!(got, packets);
    }
}
