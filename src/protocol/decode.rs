//! The [`Decoder`]: one frame at a time (its fixed header from `frame`, the maximum packet size
//! checked before the body is buffered), then the body by direction. Client-to-server packets
//! are decoded here: CONNECT, SUBSCRIBE, UNSUBSCRIBE and PINGREQ, and through `both_ways` the
//! packets either side sends; for Tern's own client side ([`Decoder::client`], the bridge) what
//! a server sends goes to `from_server`. The bodies of SUBSCRIBE and UNSUBSCRIBE are checked
//! here and then parsed by mqttbytes.

use bytes::{Bytes, BytesMut};
use mqttbytes::FixedHeader;

use super::both_ways::{self, check_topic_name, publish_properties, TwoWay};
use super::frame::{check_flags, fixed_header, Frame};
use super::reader::{read_properties, Props, Reader, Scope};
use super::*;

type Result<T> = std::result::Result<T, DecodeError>;

/// Turns a client's byte stream into packets, one complete frame at a time.
#[derive(Debug)]
pub struct Decoder {
    version: Option<ProtocolVersion>,
    hint: Option<ProtocolVersion>,
    max_packet_size: u32,
    /// Decodes what a server sends (Tern as a client: the bridge).
    from_server: bool,
}

impl Decoder {
    /// A decoder for a new connection; `max_packet_size` bounds the total size of one packet.
    pub fn new(max_packet_size: u32) -> Decoder {
        Decoder {
            version: None,
            hint: None,
            max_packet_size,
            from_server: false,
        }
    }

    /// A decoder for what a server sends to us as a client that connected with `version`:
    /// CONNACK, PUBLISH, the acks, SUBACK, UNSUBACK, PINGRESP, DISCONNECT, AUTH.
    pub fn client(max_packet_size: u32, version: ProtocolVersion) -> Decoder {
        Decoder {
            version: Some(version),
            hint: Some(version),
            max_packet_size,
            from_server: true,
        }
    }

    /// A decoder for a connection whose CONNECT (of `version`) was decoded earlier, by another
    /// decoder: a connection waking from dormancy.
    pub fn resumed(max_packet_size: u32, version: ProtocolVersion) -> Decoder {
        Decoder {
            version: Some(version),
            hint: Some(version),
            max_packet_size,
            from_server: false,
        }
    }

    /// Changes the packet size limit.
    pub fn set_max_packet_size(&mut self, n: u32) {
        self.max_packet_size = n;
    }

    /// The version negotiated by CONNECT, once decoded.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// The protocol level a CONNECT announced, even if that CONNECT was then refused, so the
    /// refusal can be a v5 CONNACK.
    pub fn version_hint(&self) -> Option<ProtocolVersion> {
        self.version.or(self.hint)
    }

    /// Removes one complete packet from the front of `buf`; `Ok(None)` if more bytes are needed.
    /// After an error the connection must be closed: the stream position is lost.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>> {
        if let (None, false, Some(&byte1)) = (self.version, self.from_server, buf.first()) {
            // Known from the first byte: no need to wait for the rest of the packet, or for the
            // CONNECT deadline.
            if byte1 >> 4 != 1 {
                return Err(DecodeError::Protocol(
                    "[MQTT-3.1.0-1] the first packet is not CONNECT",
                ));
            }
        }
        let Some(frame) = fixed_header(buf)? else {
            return Ok(None);
        };
        let total = frame.header_len + frame.remaining;
        if total > self.max_packet_size as usize {
            return Err(DecodeError::PacketTooLarge {
                size: total,
                max: self.max_packet_size,
            });
        }
        if buf.len() < total {
            return Ok(None);
        }
        if let Some(version) = self.version {
            if let Some(ack) = both_ways::short_ack(version, &frame, buf)? {
                return Ok(Some(ack));
            }
        }
        let bytes = buf.split_to(total).freeze();
        let packet_type = frame.packet_type();
        if let (true, Some(version)) = (self.from_server, self.version) {
            return super::from_server::decode(version, &frame, bytes).map(Some);
        }
        let Some(version) = self.version else {
            if packet_type != 1 {
                return Err(DecodeError::Protocol(
                    "[MQTT-3.1.0-1] the first packet is not CONNECT",
                ));
            }
            let connect = self.decode_connect(bytes.slice(frame.header_len..))?;
            check_flags(connect.version, frame.byte1, 0)?;
            self.version = Some(connect.version);
            return Ok(Some(Packet::Connect(Box::new(connect))));
        };
        decode_packet(version, &frame, bytes).map(Some)
    }

    fn decode_connect(&mut self, body: Bytes) -> Result<Connect> {
        let mut r = Reader::new(body);
        let name = r.binary()?;
        let level = r.u8()?;
        let bridge = level & 0x80 != 0;
        let version = match (&name[..], level & !0x80) {
            (b"MQTT", 4) => ProtocolVersion::V311,
            (b"MQTT", 5) if !bridge => ProtocolVersion::V5,
            (b"MQIsdp", 3) => ProtocolVersion::V31,
            (b"MQTT" | b"MQIsdp", _) => {
                return Err(DecodeError::UnsupportedProtocol {
                    name: String::from_utf8_lossy(&name).into_owned(),
                    level,
                })
            }
            // Not MQTT at all: no CONNACK, whose format would be a guess.
            _ => {
                return Err(DecodeError::Protocol(
                    "[MQTT-3.1.2-1] protocol name is not MQTT",
                ))
            }
        };
        self.hint = Some(version);
        let mut connect = connect_body(version, &mut r)?;
        connect.bridge = bridge;
        Ok(connect)
    }
}

fn connect_body(version: ProtocolVersion, r: &mut Reader) -> Result<Connect> {
    let v5 = version.is_v5();
    let flags = r.u8()?;
    // MQTT 3.1 left the bit unspecified; 3.1.1 and 5.0 reserve it.
    if flags & 0x01 != 0 && version != ProtocolVersion::V31 {
        return Err(DecodeError::Malformed(
            "[MQTT-3.1.2-3] CONNECT reserved flag is set",
        ));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::Malformed(
            "[MQTT-3.1.2-11] will QoS or retain set without the will flag",
        ));
    }
    let will_qos =
        QoS::from_u8(will_qos).ok_or(DecodeError::Malformed("[MQTT-3.1.2-12] will QoS 3"))?;
    if !v5 && has_password && !has_username {
        return Err(DecodeError::Malformed(
            "[MQTT-3.1.2-22] password without user name",
        ));
    }
    let keep_alive = r.u16()?;
    let props = if v5 {
        read_properties(r, Scope::Connect)?
    } else {
        Props::default()
    };
    if props.authentication_data.is_some() && props.authentication_method.is_none() {
        return Err(DecodeError::Protocol(
            "MQTT 5 §3.1.2.11.10: Authentication Data without an Authentication Method",
        ));
    }
    let client_id = r.string()?;
    let will = if will_flag {
        let wp = if v5 {
            read_properties(r, Scope::Will)?
        } else {
            Props::default()
        };
        let topic = r.string()?;
        check_topic_name(&topic)?;
        let payload = r.binary()?;
        Some(LastWill {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            delay_interval: wp.will_delay_interval,
            properties: publish_properties(wp)?,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?)
    } else {
        None
    };
    r.finish()?;
    Ok(Connect {
        version,
        client_id,
        clean_start,
        keep_alive,
        username,
        password,
        will,
        properties: ConnectProperties {
            session_expiry_interval: props.session_expiry_interval,
            receive_maximum: props.receive_maximum,
            maximum_packet_size: props.maximum_packet_size,
            topic_alias_maximum: props.topic_alias_maximum,
            request_response_information: props.request_response_information,
            request_problem_information: props.request_problem_information,
            user_properties: props.user_properties,
            authentication_method: props.authentication_method,
            authentication_data: props.authentication_data,
        },
        bridge: false,
    })
}

/// A topic filter of SUBSCRIBE or UNSUBSCRIBE that breaks the filter grammar is a malformed
/// packet ([MQTT-4.7.1-1], [MQTT-4.7.3-1]; 3.1.1 [MQTT-4.8.0-1]); a bad `$share/` form a
/// protocol error ([MQTT-4.8.2-1], [MQTT-4.8.2-2]). Level limits are the broker's, checked later.
fn filter(r: &mut Reader) -> Result<TopicFilter> {
    TopicFilter::parse(&r.string()?).map_err(|e| match e.is_share_syntax() {
        true => DecodeError::Protocol(e.rule()),
        false => DecodeError::Malformed(e.rule()),
    })
}

/// Decodes one complete frame a client sent after its CONNECT.
fn decode_packet(version: ProtocolVersion, frame: &Frame, bytes: Bytes) -> Result<Packet> {
    if let Some(kind) = TwoWay::of(frame.packet_type(), version) {
        return both_ways::decode(kind, version, frame, bytes, false);
    }
    let v5 = version.is_v5();
    let body = Reader::new(bytes.slice(frame.header_len..));
    let header = frame.mqttbytes();
    match frame.packet_type() {
        1 => Err(DecodeError::Protocol("[MQTT-3.1.0-2] second CONNECT")),
        8 => {
            check_flags(version, frame.byte1, 0b0010)?;
            decode_subscribe(v5, header, bytes, body)
        }
        10 => {
            check_flags(version, frame.byte1, 0b0010)?;
            decode_unsubscribe(v5, header, bytes, body)
        }
        12 => {
            check_flags(version, frame.byte1, 0)?;
            if frame.remaining != 0 {
                return Err(DecodeError::Malformed("[MQTT-3.12] PINGREQ with a body"));
            }
            Ok(Packet::PingReq)
        }
        0 | 15 => Err(DecodeError::Malformed("[MQTT-2.1.2] reserved packet type")),
        _ => Err(DecodeError::Protocol(
            "[MQTT-2.1.2] a server-to-client packet sent by a client",
        )),
    }
}

fn subscription_options(v5: bool, byte: u8) -> Result<SubscriptionOptions> {
    let reserved = if v5 { 0xC0 } else { 0xFC };
    if byte & reserved != 0 {
        return Err(DecodeError::Malformed(
            "[MQTT-3.8.3-5] reserved subscription option bits set",
        ));
    }
    // 3.1.1 makes it malformed [MQTT-3-8.3-4]; either way the connection closes.
    let qos = QoS::from_u8(byte & 0x03).ok_or(DecodeError::Protocol(
        "MQTT 5 §3.8.3.1: Maximum QoS 3 in subscription options",
    ))?;
    let retain_handling = match (byte >> 4) & 0x03 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => {
            return Err(DecodeError::Protocol(
                "MQTT 5 §3.8.3.1: Retain Handling 3 in subscription options",
            ))
        }
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling,
    })
}

fn decode_subscribe(v5: bool, header: FixedHeader, bytes: Bytes, mut r: Reader) -> Result<Packet> {
    let pkid = r.u16()?;
    if pkid == 0 {
        return Err(DecodeError::Malformed("[MQTT-2.2.1-3] packet identifier 0"));
    }
    let props = if v5 {
        read_properties(&mut r, Scope::Subscribe)?
    } else {
        Props::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = filter(&mut r)?;
        let options = subscription_options(v5, r.u8()?)?;
        filters.push(SubscribeFilter { filter, options });
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol(
            "[MQTT-3.8.3-3] SUBSCRIBE without a topic filter",
        ));
    }
    // The bytes are valid; mqttbytes must parse them too (v3.1.1 body, v5 filter list).
    if v5 {
        mqttbytes::v5::Subscribe::read(header, bytes).map_err(DecodeError::from_mqttbytes)?;
    } else {
        mqttbytes::v4::Subscribe::read(header, bytes).map_err(DecodeError::from_mqttbytes)?;
    }
    Ok(Packet::Subscribe(Subscribe {
        pkid,
        filters,
        subscription_identifier: props.subscription_identifier,
        user_properties: props.user_properties,
    }))
}

fn decode_unsubscribe(
    v5: bool,
    header: FixedHeader,
    bytes: Bytes,
    mut r: Reader,
) -> Result<Packet> {
    let pkid = r.u16()?;
    if pkid == 0 {
        return Err(DecodeError::Malformed("[MQTT-2.2.1-3] packet identifier 0"));
    }
    let props = if v5 {
        read_properties(&mut r, Scope::Unsubscribe)?
    } else {
        Props::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(filter(&mut r)?);
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol(
            "[MQTT-3.10.3-2] UNSUBSCRIBE without a topic filter",
        ));
    }
    // mqttbytes 0.6's v5 UNSUBSCRIBE reader prints to stderr (a stray `dbg!`), so only the
    // v3.1.1 body goes through it.
    if !v5 {
        mqttbytes::v4::Unsubscribe::read(header, bytes).map_err(DecodeError::from_mqttbytes)?;
    }
    Ok(Packet::Unsubscribe(Unsubscribe {
        pkid,
        filters,
        user_properties: props.user_properties,
    }))
}
