//! Property-based tests (proptest): no input panics the decoder, valid packets round-trip, byte
//! splitting never changes what a stream decodes to.

use super::*;

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

/// A valid topic filter: levels of text or `+`, maybe a last `#`, maybe a `$share/` group.
fn topic_filter() -> impl Strategy<Value = String> {
    let level = prop_oneof![3 => "[^\u{0}/+#]{0,6}", 1 => Just("+".to_string())];
    (
        proptest::collection::vec(level, 1..5),
        any::<bool>(),
        proptest::option::of("[^\u{0}/+#]{1,6}"),
    )
        .prop_map(|(levels, hash, share)| {
            let mut f = levels.join("/");
            if f.is_empty() {
                f.push('x');
            }
            if hash {
                f.push_str("/#");
            }
            match share {
                Some(name) => format!("$share/{name}/{f}"),
                None => f,
            }
        })
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
                    properties: properties.into(),
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
        topic_filter(),
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
            filter: TopicFilter::parse(&filter).unwrap(),
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
        1 => (1u16.., proptest::collection::vec(topic_filter(), 1..4), user_properties())
            .prop_map(move |(pkid, filters, user)| Packet::Unsubscribe(Unsubscribe {
                pkid,
                filters: filters.iter().map(|f: &String| TopicFilter::parse(f).unwrap()).collect(),
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
        any::<bool>(),
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
                bridge,
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
                    // The bridge bit exists for v3 only.
                    bridge: bridge && !v5,
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
