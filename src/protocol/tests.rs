//! Byte-level tests of the codec: every row of shared/PROTOCOL-GAPS.md that concerns one packet,
//! round trips for both versions, and properties that no input panics the decoder.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

const CONNECT_V4: &[u8] = &[
    0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'c',
];
const CONNECT_V5: &[u8] = &[
    0x10, 0x0E, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 1, b'c',
];

fn decode_all(bytes: &[u8]) -> Result<Vec<Packet>, DecodeError> {
    let mut d = Decoder::new(1024 * 1024);
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(p) = d.decode(&mut buf)? {
        out.push(p);
    }
    Ok(out)
}

/// Decodes `packet` after a valid CONNECT of `version` (4 or 5).
fn after_connect(version: u8, packet: &[u8]) -> Result<Packet, DecodeError> {
    let mut bytes = if version == 5 { CONNECT_V5 } else { CONNECT_V4 }.to_vec();
    bytes.extend_from_slice(packet);
    let mut packets = decode_all(&bytes)?;
    assert_eq!(packets.len(), 2, "one CONNECT and the packet under test");
    Ok(packets.remove(1))
}

fn code(r: Result<Packet, DecodeError>) -> u8 {
    match r {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e.reason_code() as u8,
    }
}

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

/// [MQTT-3.14.2-1] A v5 DISCONNECT with remaining length 0 (what libmosquitto sends) is valid.
#[test]
fn v5_short_disconnect_is_valid() {
    let p = after_connect(5, &[0xE0, 0x00]).unwrap();
    assert_eq!(p, Packet::Disconnect(Disconnect::default()));
    let p = after_connect(5, &[0xE0, 0x01, 0x04]).unwrap();
    assert!(matches!(p, Packet::Disconnect(d) if d.reason == ReasonCode::DisconnectWithWill));
}

/// [MQTT-3.15.2-2] AUTH `F0 00` is valid in v5 and a reserved type in v3.1.1.
#[test]
fn auth_only_in_v5() {
    assert_eq!(
        after_connect(5, &[0xF0, 0x00]).unwrap(),
        Packet::Auth(Auth::default())
    );
    assert_eq!(code(after_connect(4, &[0xF0, 0x00])), 0x81);
}

/// MQTT 3.1 (`MQIsdp`, level 3) CONNECT is accepted.
#[test]
fn mqtt31_connect_accepted() {
    let bytes = connect_bytes(b"MQIsdp", 3, 0x02, &[0, 1, b'x']);
    let p = decode_all(&bytes).unwrap();
    assert!(matches!(&p[0], Packet::Connect(c) if c.version == ProtocolVersion::V31));
}

/// [MQTT-3.1.3-5] A binary password (not UTF-8) is accepted.
#[test]
fn binary_password_accepted() {
    let bytes = connect_bytes(
        b"MQTT",
        4,
        0xC2,
        &[0, 1, b'x', 0, 1, b'u', 0, 2, 0xFF, 0xFE],
    );
    let p = decode_all(&bytes).unwrap();
    assert!(
        matches!(&p[0], Packet::Connect(c) if c.password.as_deref() == Some(&[0xFF, 0xFE][..]))
    );
}

/// [MQTT-3.1.2-3] CONNECT reserved flag; [MQTT-2.1.3-1] fixed-header flags; [MQTT-3.1.2-22]
/// password without user name (v3.1.1 only); trailing bytes; U+0000 in the client id.
#[test]
fn malformed_connects_are_refused() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "reserved bit",
            connect_bytes(b"MQTT", 4, 0x03, &[0, 1, b'x']),
        ),
        (
            "will qos 3",
            connect_bytes(b"MQTT", 4, 0x1E, &[0, 1, b'x', 0, 1, b't', 0, 0]),
        ),
        (
            "will retain without will",
            connect_bytes(b"MQTT", 4, 0x22, &[0, 1, b'x']),
        ),
        (
            "password without user",
            connect_bytes(b"MQTT", 4, 0x42, &[0, 1, b'x', 0, 1, b'p']),
        ),
        (
            "trailing junk",
            connect_bytes(b"MQTT", 4, 0x02, &[0, 1, b'x', 9, 9]),
        ),
        (
            "NUL in client id",
            connect_bytes(b"MQTT", 4, 0x02, &[0, 2, b'x', 0]),
        ),
        (
            "will topic with wildcard",
            connect_bytes(b"MQTT", 4, 0x06, &[0, 1, b'x', 0, 1, b'#', 0, 0]),
        ),
    ];
    for (name, bytes) in cases {
        assert!(decode_all(&bytes).is_err(), "{name} accepted");
    }
    let mut flags = connect_bytes(b"MQTT", 4, 0x02, &[0, 1, b'x']);
    flags[0] = 0x1F;
    assert_eq!(
        decode_all(&flags).unwrap_err().reason_code(),
        ReasonCode::MalformedPacket
    );
    // v5 allows a password without a user name.
    let v5 = connect_bytes(b"MQTT", 5, 0x42, &[0, 1, b'x', 0, 1, b'p']);
    assert!(decode_all(&v5).is_ok());
}

/// [MQTT-3.1.2-2] Unknown protocol name or level: the refusal is a v3 CONNACK unless level is 5.
#[test]
fn unsupported_protocols() {
    let e = decode_all(&connect_bytes(b"MQTT", 6, 0x02, &[0, 1, b'x'])).unwrap_err();
    assert!(matches!(
        e,
        DecodeError::UnsupportedProtocol { level: 6, .. }
    ));
    assert!(!e.wants_v5_connack());
    let e = decode_all(&connect_bytes(b"MQTX", 5, 0x02, &[0, 1, b'x'])).unwrap_err();
    assert!(e.wants_v5_connack());
    let e = decode_all(&connect_bytes(b"MQIsdp", 4, 0x02, &[0, 1, b'x'])).unwrap_err();
    assert_eq!(e.reason_code(), ReasonCode::UnsupportedProtocolVersion);
}

/// [MQTT-3.1.0-1] The first packet must be CONNECT; [MQTT-3.1.0-2] a second one is an error.
#[test]
fn connect_first_and_once() {
    assert_eq!(
        decode_all(&[0xC0, 0x00]).unwrap_err().reason_code(),
        ReasonCode::ProtocolError
    );
    assert_eq!(code(after_connect(4, CONNECT_V4)), 0x82);
}

/// PUBLISH rules: topic UTF-8 without U+0000 and without wildcards, QoS 3, DUP on QoS 0,
/// packet id 0, empty topic (v3: invalid; v5: needs an alias).
#[test]
fn publish_validation() {
    assert_eq!(
        code(after_connect(4, &[0x30, 0x05, 0, 3, b'a', b'/', 0])),
        0x81
    );
    assert_eq!(
        code(after_connect(4, &[0x30, 0x05, 0, 3, b'a', b'/', b'#'])),
        0x90
    );
    assert_eq!(code(after_connect(4, &[0x30, 0x03, 0, 1, b'+'])), 0x90);
    assert_eq!(
        code(after_connect(4, &[0x30, 0x04, 0, 2, 0xC3, 0x28])),
        0x81
    );
    assert_eq!(
        code(after_connect(4, &[0x36, 0x05, 0, 1, b't', 0, 1])),
        0x81
    );
    assert_eq!(code(after_connect(4, &[0x38, 0x03, 0, 1, b't'])), 0x81);
    assert_eq!(
        code(after_connect(4, &[0x32, 0x05, 0, 1, b't', 0, 0])),
        0x81
    );
    assert_eq!(code(after_connect(4, &[0x30, 0x02, 0, 0])), 0x90);
    assert_eq!(code(after_connect(5, &[0x30, 0x03, 0, 0, 0])), 0x82);
    let p = after_connect(5, &[0x30, 0x06, 0, 0, 3, 0x23, 0, 1]).unwrap();
    assert!(matches!(p, Packet::Publish(p) if p.properties.topic_alias == Some(1)));
}

/// v5 property rules: duplicates and misplaced properties are protocol errors, unknown ids are
/// malformed, Topic Alias 0 is 0x94, a client's Subscription Identifier is a protocol error.
#[test]
fn v5_property_rules() {
    let publish = |props: &[u8]| {
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
    };
    assert_eq!(code(after_connect(5, &publish(&[0x01, 0, 0x01, 0]))), 0x82);
    assert_eq!(code(after_connect(5, &publish(&[0x11, 0, 0, 0, 1]))), 0x82);
    assert_eq!(code(after_connect(5, &publish(&[0x7F, 0]))), 0x81);
    assert_eq!(code(after_connect(5, &publish(&[0x23, 0, 0]))), 0x94);
    assert_eq!(code(after_connect(5, &publish(&[0x0B, 1]))), 0x82);
    assert_eq!(code(after_connect(5, &publish(&[0x01, 2]))), 0x82);
    let p = after_connect(
        5,
        &publish(&[0x26, 0, 1, b'k', 0, 1, b'v', 0x26, 0, 1, b'k', 0, 1, b'w']),
    )
    .unwrap();
    assert!(matches!(p, Packet::Publish(p) if p.properties.user_properties.len() == 2));
    // Receive Maximum 0 in CONNECT.
    let bytes = [
        0x10, 0x11, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 3, 0x21, 0, 0, 0, 1, b'c',
    ];
    assert_eq!(
        decode_all(&bytes).unwrap_err().reason_code(),
        ReasonCode::ProtocolError
    );
}

/// SUBSCRIBE / UNSUBSCRIBE / PUBREL rules.
#[test]
fn subscribe_rules() {
    // Flags 0 instead of 2.
    assert_eq!(
        code(after_connect(4, &[0x80, 0x06, 0, 1, 0, 1, b't', 0])),
        0x81
    );
    // No filters.
    assert_eq!(code(after_connect(4, &[0x82, 0x02, 0, 1])), 0x82);
    // Reserved option bits (v3: bit 2; v5: bit 6), QoS 3, Retain Handling 3.
    assert_eq!(
        code(after_connect(4, &[0x82, 0x06, 0, 1, 0, 1, b't', 0x04])),
        0x81
    );
    assert_eq!(
        code(after_connect(5, &[0x82, 0x07, 0, 1, 0, 0, 1, b't', 0x40])),
        0x81
    );
    assert_eq!(
        code(after_connect(5, &[0x82, 0x07, 0, 1, 0, 0, 1, b't', 0x03])),
        0x81
    );
    assert_eq!(
        code(after_connect(5, &[0x82, 0x07, 0, 1, 0, 0, 1, b't', 0x30])),
        0x82
    );
    // A filter is only UTF-8 checked here; its syntax is the broker's business.
    let p = after_connect(4, &[0x82, 0x08, 0, 1, 0, 3, b'a', b'+', b'b', 1]).unwrap();
    assert!(matches!(p, Packet::Subscribe(s) if s.filters[0].filter == "a+b"));
    let p = after_connect(5, &[0x82, 0x09, 0, 1, 2, 0x0B, 7, 0, 1, b't', 0x2E]).unwrap();
    let Packet::Subscribe(s) = p else { panic!() };
    assert_eq!(s.subscription_identifier, Some(7));
    let o = s.filters[0].options;
    assert!(o.no_local && o.retain_as_published && o.retain_handling == RetainHandling::DoNotSend);
    assert_eq!(o.qos, QoS::ExactlyOnce);
    // UNSUBSCRIBE without filters; PUBREL with flags 0.
    assert_eq!(code(after_connect(4, &[0xA2, 0x02, 0, 1])), 0x82);
    assert_eq!(code(after_connect(4, &[0x60, 0x02, 0, 1])), 0x81);
}

/// Framing: 5-byte remaining length, PINGREQ with a body, type 0, server-only packets, and the
/// maximum packet size checked from the fixed header alone.
#[test]
fn framing_rules() {
    assert_eq!(code(after_connect(4, &[0xC0, 0x01, 0])), 0x81);
    assert_eq!(code(after_connect(4, &[0x00, 0x00])), 0x81);
    for server_only in [0x20u8, 0x90, 0xB0, 0xD0] {
        assert_eq!(code(after_connect(4, &[server_only, 0x02, 0, 1])), 0x82);
    }
    let mut d = Decoder::new(1024 * 1024);
    let mut buf = BytesMut::from(CONNECT_V4);
    d.decode(&mut buf).unwrap().unwrap();
    buf.extend_from_slice(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
    assert_eq!(
        d.decode(&mut buf).unwrap_err().reason_code(),
        ReasonCode::MalformedPacket
    );
    let mut d = Decoder::new(100);
    let mut buf = BytesMut::from(CONNECT_V4);
    d.decode(&mut buf).unwrap().unwrap();
    buf.extend_from_slice(&[0x30, 0xE8, 0x07]);
    assert!(matches!(
        d.decode(&mut buf),
        Err(DecodeError::PacketTooLarge { size: 1003, .. })
    ));
}

/// A partial frame waits for more bytes and leaves the buffer intact; frames decode one by one.
#[test]
fn partial_and_batched_frames() {
    let mut d = Decoder::new(1024);
    let mut buf = BytesMut::from(&CONNECT_V4[..5]);
    assert_eq!(d.decode(&mut buf).unwrap(), None);
    assert_eq!(buf.len(), 5);
    buf.extend_from_slice(&CONNECT_V4[5..]);
    buf.extend_from_slice(&[0xC0, 0x00, 0xC0, 0x00]);
    assert!(matches!(
        d.decode(&mut buf).unwrap(),
        Some(Packet::Connect(_))
    ));
    assert_eq!(d.decode(&mut buf).unwrap(), Some(Packet::PingReq));
    assert_eq!(d.decode(&mut buf).unwrap(), Some(Packet::PingReq));
    assert_eq!(d.decode(&mut buf).unwrap(), None);
}

/// [MQTT-1.5.4-1] A string longer than 65,535 bytes is an encode error, never truncated.
#[test]
fn long_strings_fail_to_encode() {
    let p = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "t".repeat(70_000),
        pkid: 0,
        payload: Bytes::new(),
        properties: PublishProperties::default(),
    };
    let mut out = BytesMut::new();
    assert_eq!(
        encode_publish(&p, ProtocolVersion::V311, &mut out),
        Err(EncodeError::StringTooLong)
    );
}

fn round_trip(version: ProtocolVersion, packet: Packet) {
    let connect = Packet::Connect(Box::new(Connect {
        version,
        client_id: "c".into(),
        clean_start: true,
        keep_alive: 30,
        username: None,
        password: None,
        will: None,
        properties: ConnectProperties::default(),
    }));
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

/// Encode then decode gives back every client packet, in both versions.
#[test]
fn client_packets_round_trip() {
    for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let v5 = v.is_v5();
        let props = if v5 {
            full_publish_properties()
        } else {
            PublishProperties::default()
        };
        round_trip(
            v,
            Packet::Publish(Publish {
                dup: true,
                qos: QoS::ExactlyOnce,
                retain: true,
                topic: "a/b".into(),
                pkid: 9,
                payload: Bytes::from_static(b"payload"),
                properties: props,
            }),
        );
        round_trip(
            v,
            Packet::Subscribe(Subscribe {
                pkid: 3,
                filters: vec![SubscribeFilter {
                    filter: "a/+/#".into(),
                    options: SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: v5,
                        retain_as_published: v5,
                        retain_handling: if v5 {
                            RetainHandling::SendIfNew
                        } else {
                            RetainHandling::SendAtSubscribe
                        },
                    },
                }],
                subscription_identifier: v5.then_some(5),
                user_properties: Vec::new(),
            }),
        );
        round_trip(
            v,
            Packet::Unsubscribe(Unsubscribe {
                pkid: 4,
                filters: vec!["a".into(), "b/#".into()],
                user_properties: Vec::new(),
            }),
        );
        for make in [
            Packet::PubAck,
            Packet::PubRec,
            Packet::PubRel,
            Packet::PubComp,
        ] {
            round_trip(
                v,
                make(Ack {
                    pkid: 7,
                    ..Ack::default()
                }),
            );
        }
        round_trip(v, Packet::PingReq);
        round_trip(v, Packet::Disconnect(Disconnect::default()));
    }
    let v = ProtocolVersion::V5;
    round_trip(
        v,
        Packet::PubAck(Ack {
            pkid: 7,
            reason: ReasonCode::NoMatchingSubscribers,
            properties: AckProperties {
                reason_string: Some("why".into()),
                user_properties: vec![("a".into(), "b".into())],
            },
        }),
    );
    round_trip(
        v,
        Packet::Disconnect(Disconnect {
            reason: ReasonCode::DisconnectWithWill,
            properties: DisconnectProperties {
                session_expiry_interval: Some(10),
                reason_string: Some("bye".into()),
                user_properties: Vec::new(),
                server_reference: None,
            },
        }),
    );
}

/// A CONNECT with a will and every v5 property survives a round trip.
#[test]
fn connect_round_trip() {
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
            qos: QoS::AtLeastOnce,
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
            user_properties: vec![("x".into(), "y".into())],
            authentication_method: None,
            authentication_data: None,
        },
    };
    let mut bytes = BytesMut::new();
    encode(
        &Packet::Connect(Box::new(c.clone())),
        ProtocolVersion::V5,
        &mut bytes,
    )
    .unwrap();
    assert_eq!(
        decode_all(&bytes).unwrap(),
        vec![Packet::Connect(Box::new(c))]
    );
}

/// `publish_len` is the exact encoded size, and v3 CONNACK codes map from reason codes.
#[test]
fn lengths_and_connack_codes() {
    let mut p = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "a/b".into(),
        pkid: 1,
        payload: Bytes::from(vec![7u8; 300]),
        properties: full_publish_properties(),
    };
    p.properties.subscription_identifiers = vec![1, 300_000];
    for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut out = BytesMut::new();
        encode_publish(&p, v, &mut out).unwrap();
        assert_eq!(out.len(), publish_len(&p, v));
    }
    let mut out = BytesMut::new();
    let ack = ConnAck {
        reason: ReasonCode::ClientIdentifierNotValid,
        ..ConnAck::default()
    };
    encode(&Packet::ConnAck(ack), ProtocolVersion::V311, &mut out).unwrap();
    assert_eq!(&out[..], &[0x20, 0x02, 0x00, 0x02]);
}

fn topic_strategy() -> impl Strategy<Value = String> {
    "[a-z0-9/ $é]{1,20}"
}

proptest! {
    /// No byte string makes the decoder panic, before or after a CONNECT, and every packet it
    /// returns consumed bytes.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), v5 in any::<bool>()) {
        for prefix in [&[][..], if v5 { CONNECT_V5 } else { CONNECT_V4 }] {
            let mut d = Decoder::new(4096);
            let mut buf = BytesMut::from(prefix);
            buf.extend_from_slice(&bytes);
            loop {
                let before = buf.len();
                match d.decode(&mut buf) {
                    Ok(Some(_)) => prop_assert!(buf.len() < before),
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }

    /// Any valid PUBLISH round-trips in both versions, whole or split at any byte.
    #[test]
    fn publish_round_trips(topic in topic_strategy(), qos in 0u8..3, pkid in 1u16.., payload in proptest::collection::vec(any::<u8>(), 0..200), split in any::<prop::sample::Index>(), expiry in proptest::option::of(any::<u32>())) {
        for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let qos = QoS::from_u8(qos).unwrap();
            let mut properties = PublishProperties::default();
            if v.is_v5() {
                properties.message_expiry_interval = expiry;
            }
            let p = Publish { dup: false, qos, retain: false, topic: topic.clone(), pkid: if qos == QoS::AtMostOnce { 0 } else { pkid }, payload: Bytes::from(payload.clone()), properties };
            let mut stream = BytesMut::from(if v.is_v5() { CONNECT_V5 } else { CONNECT_V4 });
            encode_publish(&p, v, &mut stream).unwrap();
            let cut = split.index(stream.len());
            let mut d = Decoder::new(4096);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in [&stream[..cut], &stream[cut..]] {
                buf.put_slice(chunk);
                while let Some(packet) = d.decode(&mut buf).unwrap() {
                    got.push(packet);
                }
            }
            prop_assert_eq!(got.len(), 2);
            prop_assert_eq!(&got[1], &Packet::Publish(p));
        }
    }
}
