//! The packets both a client and a server send (PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP,
//! DISCONNECT and, in v5, AUTH), decoded with the same checks whichever side sent them; only the
//! properties allowed differ (a server may send some a client may not). Both directions of
//! decoding come here for these types; nothing here knows which packets are one-way.

use bytes::{Buf, Bytes, BytesMut};

use super::frame::{check_flags, Frame};
use super::reader::{read_properties, read_properties_from, Props, Reader, Scope};
use super::*;

type Result<T> = std::result::Result<T, DecodeError>;

/// A packet type both sides send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TwoWay {
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Disconnect,
    /// v5 only.
    Auth,
}

impl TwoWay {
    /// The two-way packet of type `packet_type` in `version`, if it is one (AUTH is not in 3.1.1,
    /// where type 15 is reserved).
    pub(super) fn of(packet_type: u8, version: ProtocolVersion) -> Option<TwoWay> {
        Some(match packet_type {
            3 => TwoWay::Publish,
            4 => TwoWay::PubAck,
            5 => TwoWay::PubRec,
            6 => TwoWay::PubRel,
            7 => TwoWay::PubComp,
            14 => TwoWay::Disconnect,
            15 if version.is_v5() => TwoWay::Auth,
            _ => return None,
        })
    }
}

/// Decodes one complete frame of type `kind` (`bytes`: the whole frame); `from_server` allows
/// the properties only a server may send.
pub(super) fn decode(
    kind: TwoWay,
    version: ProtocolVersion,
    frame: &Frame,
    bytes: Bytes,
    from_server: bool,
) -> Result<Packet> {
    let v5 = version.is_v5();
    match kind {
        TwoWay::Publish => publish(version, frame, bytes, from_server),
        TwoWay::PubAck => {
            check_flags(version, frame.byte1, 0)?;
            ack(v5, frame, bytes).map(Packet::PubAck)
        }
        TwoWay::PubRec => {
            check_flags(version, frame.byte1, 0)?;
            ack(v5, frame, bytes).map(Packet::PubRec)
        }
        TwoWay::PubRel => {
            check_flags(version, frame.byte1, 0b0010)?;
            ack(v5, frame, bytes).map(Packet::PubRel)
        }
        TwoWay::PubComp => {
            check_flags(version, frame.byte1, 0)?;
            ack(v5, frame, bytes).map(Packet::PubComp)
        }
        TwoWay::Disconnect => {
            check_flags(version, frame.byte1, 0)?;
            disconnect(v5, Reader::at(bytes, frame.header_len))
        }
        TwoWay::Auth => {
            check_flags(version, frame.byte1, 0)?;
            auth(Reader::at(bytes, frame.header_len))
        }
    }
}

/// The v5 properties of a PUBLISH or a will, with the Response Topic checked.
pub(super) fn publish_properties(p: Props) -> Result<PublishProperties> {
    if p.response_topic
        .as_deref()
        .is_some_and(|t| check_topic_name(t).is_err())
    {
        return Err(DecodeError::Protocol(
            "[MQTT-3.3.2-14] Response Topic is not a valid topic name",
        ));
    }
    Ok(PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        topic_alias: p.topic_alias,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        user_properties: p.user_properties,
        subscription_identifiers: Vec::new(),
        content_type: p.content_type,
    })
}

/// [MQTT-3.3.2-2] / [MQTT-4.7.3-1] A topic name is non-empty and has no wildcard: a name that
/// breaks this is a malformed packet (MQTT 5 §4.13.1), not one the server declines (0x90).
pub(super) fn check_topic_name(topic: &str) -> Result<()> {
    if topic.is_empty() {
        return Err(DecodeError::Malformed("[MQTT-4.7.3-1] empty topic name"));
    }
    // A byte scan: both are ASCII, so this finds exactly them (a `char` pattern decodes
    // every character and costs about 1% of a QoS 1 message's CPU).
    if topic.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(DecodeError::Malformed(
            "[MQTT-3.3.2-2] topic name contains a wildcard",
        ));
    }
    Ok(())
}

fn publish(
    version: ProtocolVersion,
    frame: &Frame,
    bytes: Bytes,
    from_server: bool,
) -> Result<Packet> {
    let qos = QoS::from_u8((frame.byte1 >> 1) & 0x03)
        .ok_or(DecodeError::Malformed("[MQTT-3.3.1-4] PUBLISH with QoS 3"))?;
    let dup = frame.byte1 & 0x08 != 0;
    if qos == QoS::AtMostOnce && dup {
        return Err(DecodeError::Malformed(
            "[MQTT-3.3.1-2] DUP set on a QoS 0 PUBLISH",
        ));
    }
    // Check what mqttbytes does not: UTF-8 without U+0000, packet id, property rules.
    let mut r = Reader::at(bytes, frame.header_len);
    let topic = r.string()?;
    let pkid = if qos == QoS::AtMostOnce { 0 } else { r.u16()? };
    if qos != QoS::AtMostOnce && pkid == 0 {
        return Err(DecodeError::Malformed(
            "[MQTT-2.2.1-3] packet identifier 0 on a QoS 1/2 PUBLISH",
        ));
    }
    let properties: Sparse<_> = if !version.is_v5() || r.empty_properties() {
        Sparse::default()
    } else {
        publish_properties(read_properties_from(&mut r, Scope::Publish, from_server)?)?.into()
    };
    if topic.is_empty() && version.is_v5() {
        if properties.topic_alias.is_none() {
            return Err(DecodeError::Protocol(
                "MQTT 5 §3.3.2.3.4: empty topic name without a Topic Alias",
            ));
        }
    } else {
        check_topic_name(&topic)?;
    }
    // The rest of the frame is the payload: read here rather than by a second parse through
    // mqttbytes, which would allocate and validate the topic (and v5 properties) again for
    // every message. It keeps the frame's own bytes: no reference-count traffic on the
    // shared read buffer beyond the frame's split.
    let payload = r.into_rest();
    Ok(Packet::Publish(Publish {
        dup,
        qos,
        retain: frame.byte1 & 0x01 != 0,
        topic,
        pkid,
        payload,
        properties,
    }))
}

const PKID_ZERO: DecodeError = DecodeError::Malformed("[MQTT-2.2.1-3] packet identifier 0");

/// A PUBACK, PUBREC, PUBREL or PUBCOMP that is only a packet id (nearly all of them), read
/// where it lies in `buf`, which it then leaves: it never splits the read buffer, so a
/// stream of acknowledgements costs no reference-count traffic on it. `Ok(None)` for any
/// other packet. `frame` is complete in `buf`.
pub(super) fn short_ack(
    version: ProtocolVersion,
    frame: &Frame,
    buf: &mut BytesMut,
) -> Result<Option<Packet>> {
    let (packet, flags): (fn(Ack) -> Packet, u8) = match frame.packet_type() {
        4 => (Packet::PubAck, 0),
        5 => (Packet::PubRec, 0),
        6 => (Packet::PubRel, 0b0010),
        7 => (Packet::PubComp, 0),
        _ => return Ok(None),
    };
    if frame.remaining != 2 {
        return Ok(None);
    }
    let Some(&[hi, lo]) = buf.get(frame.header_len..frame.header_len + 2) else {
        return Ok(None);
    };
    check_flags(version, frame.byte1, flags)?;
    let pkid = u16::from_be_bytes([hi, lo]);
    if pkid == 0 {
        return Err(PKID_ZERO);
    }
    buf.advance(frame.header_len + 2);
    Ok(Some(packet(Ack {
        pkid,
        ..Ack::default()
    })))
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP.
fn ack(v5: bool, frame: &Frame, bytes: Bytes) -> Result<Ack> {
    let mut r = Reader::at(bytes, frame.header_len);
    let pkid = r.u16()?;
    if pkid == 0 {
        return Err(PKID_ZERO);
    }
    if !v5 {
        // The v3.1.1 body is just the packet id.
        r.finish()?;
        return Ok(Ack {
            pkid,
            ..Ack::default()
        });
    }
    let mut ack = Ack {
        pkid,
        ..Ack::default()
    };
    if r.is_empty() {
        return Ok(ack);
    }
    let code = r.u8()?;
    // PUBACK/PUBREC share one list (3.4.2.1, 3.5.2.1), PUBREL/PUBCOMP another (3.6.2.1, 3.7.2.1).
    let allowed: &[u8] = match frame.packet_type() {
        4 | 5 => &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99],
        _ => &[0x00, 0x92],
    };
    ack.reason = ReasonCode::from_u8(code)
        .filter(|_| allowed.contains(&code))
        .ok_or(DecodeError::Malformed(
            "[MQTT-3.4.2-1] reason code not allowed for this packet type",
        ))?;
    if !r.is_empty() {
        let p = read_properties(&mut r, Scope::Ack)?;
        ack.properties = AckProperties {
            reason_string: p.reason_string,
            user_properties: p.user_properties,
        };
    }
    r.finish()?;
    Ok(ack)
}

/// Reason codes a DISCONNECT may carry (MQTT 5.0 3.14.2.1).
const DISCONNECT_REASONS: [u8; 29] = [
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];

fn disconnect(v5: bool, mut r: Reader) -> Result<Packet> {
    let mut d = Disconnect::default();
    if !v5 {
        if !r.is_empty() {
            return Err(DecodeError::Malformed(
                "[MQTT-3.14.1] DISCONNECT with a body",
            ));
        }
        return Ok(Packet::Disconnect(d));
    }
    // v5 short forms: no body means reason 0x00, a lone byte means no properties.
    if r.is_empty() {
        return Ok(Packet::Disconnect(d));
    }
    let code = r.u8()?;
    d.reason = ReasonCode::from_u8(code)
        .filter(|_| DISCONNECT_REASONS.contains(&code))
        .ok_or(DecodeError::Malformed(
            "[MQTT-3.14.2-1] reason code not allowed in DISCONNECT",
        ))?;
    if !r.is_empty() {
        let p = read_properties(&mut r, Scope::Disconnect)?;
        d.properties = DisconnectProperties {
            session_expiry_interval: p.session_expiry_interval,
            reason_string: p.reason_string,
            user_properties: p.user_properties,
            server_reference: p.server_reference,
        };
    }
    r.finish()?;
    Ok(Packet::Disconnect(d))
}

fn auth(mut r: Reader) -> Result<Packet> {
    let mut a = Auth::default();
    if r.is_empty() {
        return Ok(Packet::Auth(Box::new(a)));
    }
    a.reason = match r.u8()? {
        0x00 => ReasonCode::Success,
        0x18 => ReasonCode::ContinueAuthentication,
        0x19 => ReasonCode::ReAuthenticate,
        _ => {
            return Err(DecodeError::Malformed(
                "MQTT 5 §3.15.2.1: reason code not allowed in AUTH",
            ))
        }
    };
    if !r.is_empty() {
        let p = read_properties(&mut r, Scope::Auth)?;
        a.authentication_method = p.authentication_method;
        a.authentication_data = p.authentication_data;
        a.properties = AckProperties {
            reason_string: p.reason_string,
            user_properties: p.user_properties,
        };
    }
    r.finish()?;
    Ok(Packet::Auth(Box::new(a)))
}
