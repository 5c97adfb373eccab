//! Server-to-client decoding, for Tern acting as a client (the bridge to another broker):
//! CONNACK, SUBACK and UNSUBACK bodies and PINGRESP here; PUBLISH, the acks, DISCONNECT and AUTH
//! through `both_ways`, the same checks as from a client, with the properties only a server may
//! send allowed. A packet only a client may send is a protocol error.

use bytes::Bytes;

use super::both_ways::{self, TwoWay};
use super::frame::{check_flags, Frame};
use super::reader::{read_properties_from, Reader, Scope};
use super::*;

type Result<T> = std::result::Result<T, DecodeError>;

/// Reason codes a v5 CONNACK may carry (MQTT 5.0 3.2.2.2).
const CONNACK_REASONS: [u8; 22] = [
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];

/// Reason codes a v5 SUBACK may carry (3.9.3).
const SUBACK_REASONS: [u8; 12] = [
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];

/// Reason codes a v5 UNSUBACK may carry (3.11.3).
const UNSUBACK_REASONS: [u8; 7] = [0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];

/// Decodes one complete frame a server sent to a client of `version`.
pub(super) fn decode(version: ProtocolVersion, frame: &Frame, bytes: Bytes) -> Result<Packet> {
    if let Some(kind) = TwoWay::of(frame.packet_type(), version) {
        return both_ways::decode(kind, version, frame, bytes, true);
    }
    let v5 = version.is_v5();
    let body = Reader::new(bytes.slice(frame.header_len..));
    match frame.packet_type() {
        2 => {
            check_flags(version, frame.byte1, 0)?;
            connack(v5, body).map(|c| Packet::ConnAck(Box::new(c)))
        }
        9 => {
            check_flags(version, frame.byte1, 0)?;
            suback(v5, body).map(Packet::SubAck)
        }
        11 => {
            check_flags(version, frame.byte1, 0)?;
            unsuback(v5, body).map(Packet::UnsubAck)
        }
        13 => {
            check_flags(version, frame.byte1, 0)?;
            if frame.remaining != 0 {
                return Err(DecodeError::Malformed("[MQTT-3.13] PINGRESP with a body"));
            }
            Ok(Packet::PingResp)
        }
        0 | 15 => Err(DecodeError::Malformed("[MQTT-2.1.2] reserved packet type")),
        _ => Err(DecodeError::Protocol(
            "[MQTT-2.1.2] a client-to-server packet sent by a server",
        )),
    }
}

fn connack(v5: bool, mut r: Reader) -> Result<ConnAck> {
    let flags = r.u8()?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::Malformed(
            "[MQTT-3.2.2-1] CONNACK reserved flags set",
        ));
    }
    let code = r.u8()?;
    let reason = if v5 {
        ReasonCode::from_u8(code)
            .filter(|_| CONNACK_REASONS.contains(&code))
            .ok_or(DecodeError::Malformed(
                "MQTT 5 §3.2.2.2: reason code not allowed in CONNACK",
            ))?
    } else {
        match code {
            0 => ReasonCode::Success,
            1 => ReasonCode::UnsupportedProtocolVersion,
            2 => ReasonCode::ClientIdentifierNotValid,
            3 => ReasonCode::ServerUnavailable,
            4 => ReasonCode::BadUserNameOrPassword,
            5 => ReasonCode::NotAuthorized,
            _ => {
                return Err(DecodeError::Malformed(
                    "MQTT 3.1.1 §3.2.2.3: CONNACK return code above 5",
                ))
            }
        }
    };
    let session_present = flags & 1 == 1;
    if session_present && reason != ReasonCode::Success {
        return Err(DecodeError::Malformed(
            "[MQTT-3.2.2-4] Session Present set on a refusal",
        ));
    }
    let mut ack = ConnAck {
        session_present,
        reason,
        properties: ConnAckProperties::default(),
    };
    if v5 && !r.is_empty() {
        let p = read_properties_from(&mut r, Scope::ConnAck, true)?;
        ack.properties = ConnAckProperties {
            session_expiry_interval: p.session_expiry_interval,
            receive_maximum: p.receive_maximum,
            maximum_qos: p.maximum_qos,
            retain_available: p.retain_available,
            maximum_packet_size: p.maximum_packet_size,
            assigned_client_identifier: p.assigned_client_identifier,
            topic_alias_maximum: p.topic_alias_maximum,
            reason_string: p.reason_string,
            user_properties: p.user_properties,
            wildcard_subscription_available: p.wildcard_subscription_available,
            subscription_identifiers_available: p.subscription_identifiers_available,
            shared_subscription_available: p.shared_subscription_available,
            server_keep_alive: p.server_keep_alive,
            response_information: p.response_information,
            server_reference: p.server_reference,
            authentication_method: p.authentication_method,
            authentication_data: p.authentication_data,
        };
    }
    r.finish()?;
    Ok(ack)
}

/// The v5 property block of SUBACK and UNSUBACK (Reason String, User Properties).
fn ack_properties(v5: bool, r: &mut Reader) -> Result<AckProperties> {
    if !v5 {
        return Ok(AckProperties::default());
    }
    let p = read_properties_from(r, Scope::Ack, true)?;
    Ok(AckProperties {
        reason_string: p.reason_string,
        user_properties: p.user_properties,
    })
}

fn pkid(r: &mut Reader) -> Result<u16> {
    match r.u16()? {
        0 => Err(DecodeError::Malformed("[MQTT-2.2.1-3] packet identifier 0")),
        id => Ok(id),
    }
}

fn suback(v5: bool, mut r: Reader) -> Result<SubAck> {
    let pkid = pkid(&mut r)?;
    let properties = ack_properties(v5, &mut r)?;
    let mut reasons = Vec::new();
    while !r.is_empty() {
        let code = r.u8()?;
        let ok = if v5 {
            SUBACK_REASONS.contains(&code)
        } else {
            matches!(code, 0 | 1 | 2 | 0x80)
        };
        let reason = ReasonCode::from_u8(code)
            .filter(|_| ok)
            .ok_or(DecodeError::Malformed(
                "[MQTT-3.9.3-2] return code not allowed in SUBACK",
            ))?;
        reasons.push(reason);
    }
    if reasons.is_empty() {
        return Err(DecodeError::Protocol("[MQTT-3.9.3-1] SUBACK without codes"));
    }
    Ok(SubAck {
        pkid,
        reasons,
        properties,
    })
}

fn unsuback(v5: bool, mut r: Reader) -> Result<UnsubAck> {
    let pkid = pkid(&mut r)?;
    let properties = ack_properties(v5, &mut r)?;
    let mut reasons = Vec::new();
    while v5 && !r.is_empty() {
        let code = r.u8()?;
        let reason = ReasonCode::from_u8(code)
            .filter(|_| UNSUBACK_REASONS.contains(&code))
            .ok_or(DecodeError::Malformed(
                "MQTT 5 §3.11.3: reason code not allowed in UNSUBACK",
            ))?;
        reasons.push(reason);
    }
    r.finish()?;
    Ok(UnsubAck {
        pkid,
        reasons,
        properties,
    })
}
