//! Round trips: encode a client packet, decode it back.

use super::*;

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
        bridge: false,
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
            bridge: false,
        };
        for bridge in [false, true] {
            let c = Connect {
                bridge,
                ..c.clone()
            };
            let mut bytes = BytesMut::new();
            encode(&Packet::Connect(Box::new(c.clone())), version, &mut bytes).unwrap();
            // The protocol level (after the 2-byte length and the name) carries the bridge bit.
            let level = bytes[2
                + 2
                + if version == ProtocolVersion::V31 {
                    6
                } else {
                    4
                }];
            assert_eq!(level & 0x80 != 0, bridge);
            assert_eq!(first(&bytes).unwrap(), Packet::Connect(Box::new(c)));
        }
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
                p.properties = full_publish_properties().into();
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
    round_trip(ProtocolVersion::V5, Packet::Auth(Box::default()));
    round_trip(
        ProtocolVersion::V5,
        Packet::Auth(Box::new(Auth {
            reason: ReasonCode::ContinueAuthentication,
            authentication_method: Some("SCRAM-SHA-1".into()),
            authentication_data: Some(Bytes::from_static(b"\xFF\x00")),
            properties: AckProperties {
                reason_string: Some("more".into()),
                user_properties: vec![("k".into(), "v".into())],
            },
        })),
    );
}
