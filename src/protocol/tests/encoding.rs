//! Encoding: checklist (13), exact short forms, publish_len.

use super::*;

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
        // A topic filter that long cannot be made at all (`TopicFilter::parse` refuses it).
        assert!(TopicFilter::parse(&long).is_err());
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
            &Packet::Auth(Box::default()),
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
            Packet::Auth(Box::default()),
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
        encode(
            &Packet::ConnAck(Box::new(ack)),
            ProtocolVersion::V311,
            &mut out,
        )
        .unwrap();
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
            p.properties = props.into();
            p.properties.subscription_identifiers = vec![1, 300_000];
            for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
                let mut out = BytesMut::new();
                encode_publish(&p, v, &mut out).unwrap();
                assert_eq!(out.len(), publish_len(&p, v), "{payload_len} {v:?}");
            }
        }
    }
}
