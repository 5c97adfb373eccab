//! What a server sends, decoded by Tern's client side (`Decoder::client`, for the bridge):
//! round trips of every server packet for both versions, CONNACK properties only a server
//! sends, and packets only a client may send refused.

use super::*;

fn decode_from_server(version: ProtocolVersion, bytes: &[u8]) -> Result<Packet, DecodeError> {
    let mut d = Decoder::client(1024 * 1024, version);
    let mut buf = BytesMut::from(bytes);
    let p = d.decode(&mut buf)?.expect("a whole packet");
    assert!(buf.is_empty(), "one packet, all of it read");
    Ok(p)
}

fn round_trip(version: ProtocolVersion, p: &Packet) -> Packet {
    let mut out = BytesMut::new();
    encode(p, version, &mut out).expect("encodes");
    decode_from_server(version, &out).expect("decodes")
}

#[test]
fn server_packets_round_trip() {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let v5 = version.is_v5();
        let refused = if v5 {
            ReasonCode::QuotaExceeded
        } else {
            ReasonCode::ServerUnavailable
        };
        let mut packets = vec![
            Packet::ConnAck(Box::new(ConnAck {
                session_present: true,
                reason: ReasonCode::Success,
                properties: ConnAckProperties::default(),
            })),
            Packet::ConnAck(Box::new(ConnAck {
                session_present: false,
                reason: refused,
                properties: ConnAckProperties::default(),
            })),
            Packet::SubAck(SubAck {
                pkid: 7,
                reasons: vec![
                    ReasonCode::Success,
                    ReasonCode::GrantedQoS1,
                    ReasonCode::GrantedQoS2,
                    ReasonCode::UnspecifiedError,
                ],
                properties: AckProperties::default(),
            }),
            Packet::UnsubAck(UnsubAck {
                pkid: 8,
                reasons: if v5 {
                    vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
                } else {
                    Vec::new()
                },
                properties: AckProperties::default(),
            }),
            Packet::PingResp,
            Packet::PubAck(Ack {
                pkid: 9,
                ..Ack::default()
            }),
            Packet::PubRel(Ack {
                pkid: 10,
                ..Ack::default()
            }),
            Packet::Publish(Publish {
                dup: true,
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: "a/b".into(),
                pkid: 11,
                payload: Bytes::from_static(b"payload"),
                properties: PublishProperties::default().into(),
            }),
        ];
        if v5 {
            packets.push(Packet::Disconnect(Disconnect {
                reason: ReasonCode::ServerShuttingDown,
                ..Disconnect::default()
            }));
        }
        for p in packets {
            assert_eq!(round_trip(version, &p), p, "{version:?}");
        }
    }
}

#[test]
fn connack_properties_only_a_server_sends() {
    let props = ConnAckProperties {
        session_expiry_interval: Some(60),
        receive_maximum: Some(10),
        maximum_qos: Some(1),
        retain_available: Some(0),
        maximum_packet_size: Some(4096),
        assigned_client_identifier: Some("auto-1".into()),
        topic_alias_maximum: Some(5),
        reason_string: Some("welcome".into()),
        user_properties: vec![("k".into(), "v".into())],
        wildcard_subscription_available: Some(1),
        subscription_identifiers_available: Some(0),
        shared_subscription_available: Some(1),
        server_keep_alive: Some(30),
        response_information: Some("resp/".into()),
        server_reference: None,
        authentication_method: None,
        authentication_data: None,
    };
    let ack = Packet::ConnAck(Box::new(ConnAck {
        session_present: false,
        reason: ReasonCode::Success,
        properties: props,
    }));
    assert_eq!(round_trip(ProtocolVersion::V5, &ack), ack);
    // A client may not send them: the server-side decoder refuses a CONNACK outright.
    let mut out = BytesMut::new();
    encode(&ack, ProtocolVersion::V5, &mut out).unwrap();
    let mut d = Decoder::resumed(1024, ProtocolVersion::V5);
    assert!(d.decode(&mut out).is_err());
}

#[test]
fn a_server_publish_may_carry_subscription_identifiers() {
    // PUBLISH QoS 0 "t", properties: Subscription Identifier 3 and 4.
    let bytes = [0x30, 0x09, 0, 1, b't', 4, 0x0B, 3, 0x0B, 4, b'x'];
    match decode_from_server(ProtocolVersion::V5, &bytes).unwrap() {
        Packet::Publish(p) => assert_eq!(&p.payload[..], b"x"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn client_packets_and_bad_acks_from_a_server_are_errors() {
    let v5 = ProtocolVersion::V5;
    for bytes in [
        CONNECT_V5,
        &[0x82, 0x06, 0, 1, 0, 1, b'a', 0][..],
        &[0xC0, 0x00],
        &[0xA2, 0x05, 0, 1, 0, 1, b'a'],
    ] {
        assert!(
            matches!(decode_from_server(v5, bytes), Err(DecodeError::Protocol(_))),
            "{bytes:02x?}"
        );
    }
    // CONNACK: reserved flag bits, session present on a refusal, v3 code 6.
    assert!(decode_from_server(v5, &[0x20, 0x03, 0x02, 0x00, 0x00]).is_err());
    assert!(decode_from_server(v5, &[0x20, 0x03, 0x01, 0x87, 0x00]).is_err());
    assert!(decode_from_server(ProtocolVersion::V311, &[0x20, 0x02, 0x00, 0x06]).is_err());
    // SUBACK with no codes, or with a code a SUBACK may not carry; PINGRESP with a body.
    assert!(decode_from_server(v5, &[0x90, 0x03, 0, 1, 0]).is_err());
    assert!(decode_from_server(ProtocolVersion::V311, &[0x90, 0x03, 0, 1, 0x87]).is_err());
    assert!(decode_from_server(v5, &[0xD0, 0x01, 0]).is_err());
}
