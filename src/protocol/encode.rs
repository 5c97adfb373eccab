//! Encoding of every packet (server-to-client for the broker, client-to-server for tests and
//! bridges). A body is built first and framed after, so lengths are always exact; any string over
//! 65,535 bytes is an error, never silently truncated.

use bytes::{BufMut, BytesMut};

use super::outgoing::{put_varint, OutgoingPublish};
use super::*;

type Result<T> = std::result::Result<T, EncodeError>;

/// Writes v5 properties into a scratch buffer.
#[derive(Default)]
struct PropWriter {
    buf: BytesMut,
}

impl PropWriter {
    fn byte(&mut self, id: u8, v: Option<u8>) {
        if let Some(v) = v {
            self.buf.put_u8(id);
            self.buf.put_u8(v);
        }
    }
    fn u16(&mut self, id: u8, v: Option<u16>) {
        if let Some(v) = v {
            self.buf.put_u8(id);
            self.buf.put_u16(v);
        }
    }
    fn u32(&mut self, id: u8, v: Option<u32>) {
        if let Some(v) = v {
            self.buf.put_u8(id);
            self.buf.put_u32(v);
        }
    }
    fn varint(&mut self, id: u8, v: Option<u32>) {
        if let Some(v) = v {
            self.buf.put_u8(id);
            put_varint(&mut self.buf, v as usize);
        }
    }
    fn string(&mut self, id: u8, v: Option<&str>) -> Result<()> {
        self.binary(id, v.map(str::as_bytes))
    }
    fn binary(&mut self, id: u8, v: Option<&[u8]>) -> Result<()> {
        if let Some(v) = v {
            self.buf.put_u8(id);
            put_binary(&mut self.buf, v)?;
        }
        Ok(())
    }
    fn user(&mut self, props: &UserProperties) -> Result<()> {
        for (k, v) in props {
            self.buf.put_u8(0x26);
            put_binary(&mut self.buf, k.as_bytes())?;
            put_binary(&mut self.buf, v.as_bytes())?;
        }
        Ok(())
    }
    fn reason(&mut self, p: &AckProperties) -> Result<()> {
        self.string(0x1F, p.reason_string.as_deref())?;
        self.user(&p.user_properties)
    }
    /// Appends the property block (length + properties) to `out`.
    fn finish(self, out: &mut BytesMut) {
        put_varint(out, self.buf.len());
        out.put_slice(&self.buf);
    }
}

fn put_binary(out: &mut BytesMut, v: &[u8]) -> Result<()> {
    let len = u16::try_from(v.len()).map_err(|_| EncodeError::StringTooLong)?;
    out.put_u16(len);
    out.put_slice(v);
    Ok(())
}

/// Frames `body` behind `byte1` and its remaining length.
fn frame(out: &mut BytesMut, byte1: u8, body: &[u8]) -> Result<()> {
    if body.len() > 268_435_455 {
        return Err(EncodeError::PacketTooLarge);
    }
    out.reserve(5 + body.len());
    out.put_u8(byte1);
    put_varint(out, body.len());
    out.put_slice(body);
    Ok(())
}

/// Appends `packet`, encoded for `version`, to `out`.
pub fn encode(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) -> Result<()> {
    let v5 = version.is_v5();
    let mut b = BytesMut::new();
    let byte1 = match packet {
        Packet::Connect(c) => {
            connect(c, &mut b)?;
            0x10
        }
        Packet::ConnAck(c) => {
            // MQTT 3.1 has no Session Present flag: the byte is reserved, 0.
            let present = c.session_present && version != ProtocolVersion::V31;
            connack(c, present, v5, &mut b)?;
            0x20
        }
        Packet::Publish(p) => return encode_publish(p, version, out),
        Packet::PubAck(a) => {
            ack(a, v5, &mut b)?;
            0x40
        }
        Packet::PubRec(a) => {
            ack(a, v5, &mut b)?;
            0x50
        }
        Packet::PubRel(a) => {
            ack(a, v5, &mut b)?;
            0x62
        }
        Packet::PubComp(a) => {
            ack(a, v5, &mut b)?;
            0x70
        }
        Packet::Subscribe(s) => {
            subscribe(s, v5, &mut b)?;
            0x82
        }
        Packet::SubAck(s) => {
            b.put_u16(s.pkid);
            if v5 {
                let mut p = PropWriter::default();
                p.reason(&s.properties)?;
                p.finish(&mut b);
            }
            for r in &s.reasons {
                let code = *r as u8;
                b.put_u8(if !v5 && code >= 0x80 { 0x80 } else { code });
            }
            0x90
        }
        Packet::Unsubscribe(u) => {
            b.put_u16(u.pkid);
            if v5 {
                let mut p = PropWriter::default();
                p.user(&u.user_properties)?;
                p.finish(&mut b);
            }
            for f in &u.filters {
                put_binary(&mut b, f.as_str().as_bytes())?;
            }
            0xA2
        }
        Packet::UnsubAck(u) => {
            b.put_u16(u.pkid);
            if v5 {
                let mut p = PropWriter::default();
                p.reason(&u.properties)?;
                p.finish(&mut b);
                for r in &u.reasons {
                    b.put_u8(*r as u8);
                }
            }
            0xB0
        }
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(d) => {
            if v5 {
                disconnect(d, &mut b)?;
            }
            0xE0
        }
        Packet::Auth(a) => {
            if !v5 {
                return Err(EncodeError::NotInVersion);
            }
            b.put_u8(a.reason as u8);
            let mut p = PropWriter::default();
            p.string(0x15, a.authentication_method.as_deref())?;
            p.binary(0x16, a.authentication_data.as_deref())?;
            p.reason(&a.properties)?;
            p.finish(&mut b);
            0xF0
        }
    };
    frame(out, byte1, &b)
}

/// Appends a PUBLISH built from a [`Publish`] value.
pub fn encode_publish(p: &Publish, version: ProtocolVersion, out: &mut BytesMut) -> Result<()> {
    outgoing_of(p).encode(version, out)
}

/// Total bytes `p` takes on the wire for `version`.
pub fn publish_len(p: &Publish, version: ProtocolVersion) -> usize {
    outgoing_of(p).len(version)
}

fn outgoing_of(p: &Publish) -> OutgoingPublish<'_> {
    OutgoingPublish {
        topic: &p.topic,
        payload: &p.payload,
        qos: p.qos,
        dup: p.dup,
        retain: p.retain,
        pkid: p.pkid,
        properties: &p.properties,
        topic_alias: p.properties.topic_alias,
        subscription_ids: &p.properties.subscription_identifiers,
        message_expiry: p.properties.message_expiry_interval,
    }
}

/// v3.1.1 CONNACK return code for a reason code [MQTT-3.2.2.3].
fn v3_return_code(reason: ReasonCode) -> u8 {
    match reason {
        ReasonCode::Success => 0,
        ReasonCode::UnsupportedProtocolVersion => 1,
        ReasonCode::ClientIdentifierNotValid => 2,
        ReasonCode::BadUserNameOrPassword => 4,
        ReasonCode::NotAuthorized | ReasonCode::Banned => 5,
        _ => 3,
    }
}

fn connack(c: &ConnAck, present: bool, v5: bool, b: &mut BytesMut) -> Result<()> {
    b.put_u8(u8::from(present));
    if !v5 {
        b.put_u8(v3_return_code(c.reason));
        return Ok(());
    }
    b.put_u8(c.reason as u8);
    let q = &c.properties;
    let mut p = PropWriter::default();
    p.u32(0x11, q.session_expiry_interval);
    p.u16(0x21, q.receive_maximum);
    p.byte(0x24, q.maximum_qos);
    p.byte(0x25, q.retain_available);
    p.u32(0x27, q.maximum_packet_size);
    p.string(0x12, q.assigned_client_identifier.as_deref())?;
    p.u16(0x22, q.topic_alias_maximum);
    p.string(0x1F, q.reason_string.as_deref())?;
    p.user(&q.user_properties)?;
    p.byte(0x28, q.wildcard_subscription_available);
    p.byte(0x29, q.subscription_identifiers_available);
    p.byte(0x2A, q.shared_subscription_available);
    p.u16(0x13, q.server_keep_alive);
    p.string(0x1A, q.response_information.as_deref())?;
    p.string(0x1C, q.server_reference.as_deref())?;
    p.string(0x15, q.authentication_method.as_deref())?;
    p.binary(0x16, q.authentication_data.as_deref())?;
    p.finish(b);
    Ok(())
}

fn ack(a: &Ack, v5: bool, b: &mut BytesMut) -> Result<()> {
    b.put_u16(a.pkid);
    let no_props = a.properties.reason_string.is_none() && a.properties.user_properties.is_empty();
    if !v5 || (a.reason == ReasonCode::Success && no_props) {
        return Ok(());
    }
    b.put_u8(a.reason as u8);
    if !no_props {
        let mut p = PropWriter::default();
        p.reason(&a.properties)?;
        p.finish(b);
    }
    Ok(())
}

fn disconnect(d: &Disconnect, b: &mut BytesMut) -> Result<()> {
    let q = &d.properties;
    let no_props = q.session_expiry_interval.is_none()
        && q.reason_string.is_none()
        && q.user_properties.is_empty()
        && q.server_reference.is_none();
    if d.reason == ReasonCode::Success && no_props {
        return Ok(());
    }
    b.put_u8(d.reason as u8);
    let mut p = PropWriter::default();
    p.u32(0x11, q.session_expiry_interval);
    p.string(0x1F, q.reason_string.as_deref())?;
    p.user(&q.user_properties)?;
    p.string(0x1C, q.server_reference.as_deref())?;
    p.finish(b);
    Ok(())
}

fn connect(c: &Connect, b: &mut BytesMut) -> Result<()> {
    let (name, level): (&[u8], u8) = match c.version {
        ProtocolVersion::V31 => (b"MQIsdp", 3),
        ProtocolVersion::V311 => (b"MQTT", 4),
        ProtocolVersion::V5 => (b"MQTT", 5),
    };
    let v5 = c.version.is_v5();
    put_binary(b, name)?;
    b.put_u8(if c.bridge && !v5 { level | 0x80 } else { level });
    let mut flags = 0u8;
    if c.clean_start {
        flags |= 0x02;
    }
    if let Some(w) = &c.will {
        flags |= 0x04 | ((w.qos as u8) << 3);
        if w.retain {
            flags |= 0x20;
        }
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    b.put_u8(flags);
    b.put_u16(c.keep_alive);
    if v5 {
        let q = &c.properties;
        let mut p = PropWriter::default();
        p.u32(0x11, q.session_expiry_interval);
        p.u16(0x21, q.receive_maximum);
        p.u32(0x27, q.maximum_packet_size);
        p.u16(0x22, q.topic_alias_maximum);
        p.byte(0x19, q.request_response_information);
        p.byte(0x17, q.request_problem_information);
        p.user(&q.user_properties)?;
        p.string(0x15, q.authentication_method.as_deref())?;
        p.binary(0x16, q.authentication_data.as_deref())?;
        p.finish(b);
    }
    put_binary(b, c.client_id.as_bytes())?;
    if let Some(w) = &c.will {
        if v5 {
            let q = &w.properties;
            let mut p = PropWriter::default();
            p.u32(0x18, w.delay_interval);
            p.byte(0x01, q.payload_format_indicator);
            p.u32(0x02, q.message_expiry_interval);
            p.string(0x03, q.content_type.as_deref())?;
            p.string(0x08, q.response_topic.as_deref())?;
            p.binary(0x09, q.correlation_data.as_deref())?;
            p.user(&q.user_properties)?;
            p.finish(b);
        }
        put_binary(b, w.topic.as_bytes())?;
        put_binary(b, &w.payload)?;
    }
    if let Some(u) = &c.username {
        put_binary(b, u.as_bytes())?;
    }
    if let Some(pw) = &c.password {
        put_binary(b, pw)?;
    }
    Ok(())
}

fn subscribe(s: &Subscribe, v5: bool, b: &mut BytesMut) -> Result<()> {
    b.put_u16(s.pkid);
    if v5 {
        let mut p = PropWriter::default();
        p.varint(0x0B, s.subscription_identifier);
        p.user(&s.user_properties)?;
        p.finish(b);
    }
    for f in &s.filters {
        put_binary(b, f.filter.as_str().as_bytes())?;
        let o = &f.options;
        let mut byte = o.qos as u8;
        if v5 {
            byte |= u8::from(o.no_local) << 2
                | u8::from(o.retain_as_published) << 3
                | (o.retain_handling as u8) << 4;
        }
        b.put_u8(byte);
    }
    Ok(())
}
