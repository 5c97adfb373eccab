//! Byte-level tests of the codec: every way mqttbytes 0.6 alone would get a packet wrong or miss a
//! rule (`gaps.rs`) and every per-packet rule, with the malformed inputs written out byte by byte; round trips of every
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

fn publish(topic: &str, qos: QoS, pkid: u16, payload: &'static [u8]) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid,
        payload: Bytes::from_static(payload),
        properties: PublishProperties::default().into(),
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
        bridge: false,
    }
}

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

mod encoding;
mod framing;
mod from_server;
mod gaps;
mod properties;
mod proptests;
mod publish;
mod round_trips;
mod subscribe;
