//! Raw MQTT packets built byte by byte, independent of `tern::protocol` (like mosquitto's
//! `mosq_test.gen_*`), plus [`RawClient`], a bare TCP client that sends exact bytes and reads
//! whole packets back, and small parsers for what the broker sends.
//!
//! Builders return the complete packet (fixed header included). Version arguments are protocol
//! levels: [`V31`], [`V311`], [`V5`]; v5-only fields (properties, reason codes) are emitted only
//! when the version is [`V5`]. Properties are passed as raw bytes *without* their length prefix;
//! build them with the `prop_*` helpers and concatenate, e.g.
//! `[prop_u32(SESSION_EXPIRY, 60), prop_u16(RECEIVE_MAXIMUM, 10)].concat()`.
//!
//! ```ignore
//! let mut c = RawClient::connect(broker.addr).await;
//! c.send(&Connect::new(V5, "c1").build()).await;
//! let ack = parse_connack(V5, &c.recv_expect(CONNACK).await);
//! ```
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::WAIT;

/// MQTT 3.1 (`MQIsdp`).
pub const V31: u8 = 3;
/// MQTT 3.1.1.
pub const V311: u8 = 4;
/// MQTT 5.0.
pub const V5: u8 = 5;

// Packet types: the high nibble of the first byte, already shifted.
/// CONNECT first byte.
pub const CONNECT: u8 = 0x10;
/// CONNACK first byte.
pub const CONNACK: u8 = 0x20;
/// PUBLISH type nibble (flags in the low nibble vary).
pub const PUBLISH: u8 = 0x30;
/// PUBACK first byte.
pub const PUBACK: u8 = 0x40;
/// PUBREC first byte.
pub const PUBREC: u8 = 0x50;
/// PUBREL first byte (reserved flags 0b0010).
pub const PUBREL: u8 = 0x62;
/// PUBCOMP first byte.
pub const PUBCOMP: u8 = 0x70;
/// SUBSCRIBE first byte (reserved flags 0b0010).
pub const SUBSCRIBE: u8 = 0x82;
/// SUBACK first byte.
pub const SUBACK: u8 = 0x90;
/// UNSUBSCRIBE first byte (reserved flags 0b0010).
pub const UNSUBSCRIBE: u8 = 0xA2;
/// UNSUBACK first byte.
pub const UNSUBACK: u8 = 0xB0;
/// PINGREQ first byte.
pub const PINGREQ: u8 = 0xC0;
/// PINGRESP first byte.
pub const PINGRESP: u8 = 0xD0;
/// DISCONNECT first byte.
pub const DISCONNECT: u8 = 0xE0;
/// AUTH first byte (v5).
pub const AUTH: u8 = 0xF0;

// v5 property identifiers.
/// Byte.
pub const PAYLOAD_FORMAT: u8 = 0x01;
/// Four-byte integer.
pub const MESSAGE_EXPIRY: u8 = 0x02;
/// UTF-8 string.
pub const CONTENT_TYPE: u8 = 0x03;
/// UTF-8 string.
pub const RESPONSE_TOPIC: u8 = 0x08;
/// Binary data.
pub const CORRELATION_DATA: u8 = 0x09;
/// Variable byte integer.
pub const SUBSCRIPTION_ID: u8 = 0x0B;
/// Four-byte integer.
pub const SESSION_EXPIRY: u8 = 0x11;
/// UTF-8 string.
pub const ASSIGNED_CLIENT_ID: u8 = 0x12;
/// Two-byte integer.
pub const SERVER_KEEP_ALIVE: u8 = 0x13;
/// UTF-8 string.
pub const AUTH_METHOD: u8 = 0x15;
/// Binary data.
pub const AUTH_DATA: u8 = 0x16;
/// Byte.
pub const REQUEST_PROBLEM_INFO: u8 = 0x17;
/// Four-byte integer.
pub const WILL_DELAY: u8 = 0x18;
/// Byte.
pub const REQUEST_RESPONSE_INFO: u8 = 0x19;
/// UTF-8 string.
pub const RESPONSE_INFO: u8 = 0x1A;
/// UTF-8 string.
pub const SERVER_REFERENCE: u8 = 0x1C;
/// UTF-8 string.
pub const REASON_STRING: u8 = 0x1F;
/// Two-byte integer.
pub const RECEIVE_MAXIMUM: u8 = 0x21;
/// Two-byte integer.
pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
/// Two-byte integer.
pub const TOPIC_ALIAS: u8 = 0x23;
/// Byte.
pub const MAXIMUM_QOS: u8 = 0x24;
/// Byte.
pub const RETAIN_AVAILABLE: u8 = 0x25;
/// UTF-8 string pair.
pub const USER_PROPERTY: u8 = 0x26;
/// Four-byte integer.
pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
/// Byte.
pub const WILDCARD_SUB_AVAILABLE: u8 = 0x28;
/// Byte.
pub const SUB_ID_AVAILABLE: u8 = 0x29;
/// Byte.
pub const SHARED_SUB_AVAILABLE: u8 = 0x2A;

// ---------------------------------------------------------------------------------------------
// Encoding primitives
// ---------------------------------------------------------------------------------------------

/// Variable Byte Integer (1 to 4 bytes) [MQTT-1.5.5].
pub fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(4);
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return out;
        }
    }
}

/// Two-byte big-endian length followed by the bytes (UTF-8 string or binary data).
pub fn bin(b: &[u8]) -> Vec<u8> {
    let mut out = (b.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(b);
    out
}

/// A UTF-8 encoded string: two-byte length + bytes.
pub fn string(s: &str) -> Vec<u8> {
    bin(s.as_bytes())
}

/// A complete packet: `first` byte, Remaining Length, then `body`.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(varint(body.len()));
    out.extend_from_slice(body);
    out
}

/// A property block: its Variable Byte Integer length followed by `props`.
pub fn props_block(props: &[u8]) -> Vec<u8> {
    let mut out = varint(props.len());
    out.extend_from_slice(props);
    out
}

/// Property with a Byte value.
pub fn prop_u8(id: u8, v: u8) -> Vec<u8> {
    vec![id, v]
}

/// Property with a Two Byte Integer value.
pub fn prop_u16(id: u8, v: u16) -> Vec<u8> {
    let mut out = vec![id];
    out.extend(v.to_be_bytes());
    out
}

/// Property with a Four Byte Integer value.
pub fn prop_u32(id: u8, v: u32) -> Vec<u8> {
    let mut out = vec![id];
    out.extend(v.to_be_bytes());
    out
}

/// Property with a Variable Byte Integer value.
pub fn prop_varint(id: u8, v: usize) -> Vec<u8> {
    let mut out = vec![id];
    out.extend(varint(v));
    out
}

/// Property with a UTF-8 string value.
pub fn prop_str(id: u8, v: &str) -> Vec<u8> {
    let mut out = vec![id];
    out.extend(string(v));
    out
}

/// Property with a Binary Data value.
pub fn prop_bin(id: u8, v: &[u8]) -> Vec<u8> {
    let mut out = vec![id];
    out.extend(bin(v));
    out
}

/// User Property (string pair).
pub fn prop_user(k: &str, v: &str) -> Vec<u8> {
    let mut out = vec![USER_PROPERTY];
    out.extend(string(k));
    out.extend(string(v));
    out
}

// ---------------------------------------------------------------------------------------------
// Packet builders
// ---------------------------------------------------------------------------------------------

/// The Will of a [`Connect`].
#[derive(Clone, Debug)]
pub struct Will {
    /// Will Topic.
    pub topic: String,
    /// Will Payload.
    pub payload: Vec<u8>,
    /// Will QoS (0..=3; 3 is invalid, for malformed tests).
    pub qos: u8,
    /// Will Retain.
    pub retain: bool,
    /// v5 Will Properties (raw, without length).
    pub props: Vec<u8>,
}

impl Will {
    /// A QoS 0, non-retained will.
    pub fn new(topic: &str, payload: &[u8]) -> Will {
        Will {
            topic: topic.into(),
            payload: payload.to_vec(),
            qos: 0,
            retain: false,
            props: Vec::new(),
        }
    }
}

/// A CONNECT packet; fields are public so tests can set anything, builder methods for the usual.
#[derive(Clone, Debug)]
pub struct Connect {
    /// Protocol Level byte (3, 4, 5 or anything for malformed tests).
    pub level: u8,
    /// Protocol Name; defaults to `MQTT` (`MQIsdp` for level 3).
    pub protocol_name: String,
    /// Client Identifier.
    pub client_id: String,
    /// Clean Session (v3) / Clean Start (v5). Default true.
    pub clean: bool,
    /// Keep Alive seconds. Default 60.
    pub keepalive: u16,
    /// Will.
    pub will: Option<Will>,
    /// User Name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Vec<u8>>,
    /// v5 CONNECT properties (raw, without length).
    pub props: Vec<u8>,
    /// OR-ed into the Connect Flags byte after computing it (e.g. 0x01 for the reserved bit).
    pub extra_flags: u8,
    /// Overrides the computed Connect Flags byte entirely.
    pub flags_override: Option<u8>,
}

impl Connect {
    /// Clean session, keep-alive 60, no will, no credentials, no properties.
    pub fn new(level: u8, client_id: &str) -> Connect {
        Connect {
            level,
            protocol_name: if level == V31 { "MQIsdp" } else { "MQTT" }.into(),
            client_id: client_id.into(),
            clean: true,
            keepalive: 60,
            will: None,
            username: None,
            password: None,
            props: Vec::new(),
            extra_flags: 0,
            flags_override: None,
        }
    }

    /// Sets Clean Session / Clean Start.
    pub fn clean(mut self, clean: bool) -> Connect {
        self.clean = clean;
        self
    }

    /// Sets Keep Alive.
    pub fn keepalive(mut self, secs: u16) -> Connect {
        self.keepalive = secs;
        self
    }

    /// Sets the Will.
    pub fn will(mut self, will: Will) -> Connect {
        self.will = Some(will);
        self
    }

    /// Sets User Name.
    pub fn username(mut self, u: &str) -> Connect {
        self.username = Some(u.into());
        self
    }

    /// Sets Password.
    pub fn password(mut self, p: &[u8]) -> Connect {
        self.password = Some(p.to_vec());
        self
    }

    /// Sets the v5 properties (raw, without length).
    pub fn props(mut self, props: Vec<u8>) -> Connect {
        self.props = props;
        self
    }

    /// Sets the Protocol Name.
    pub fn protocol_name(mut self, name: &str) -> Connect {
        self.protocol_name = name.into();
        self
    }

    /// The Connect Flags byte this packet will carry.
    pub fn flags(&self) -> u8 {
        if let Some(f) = self.flags_override {
            return f;
        }
        let mut f = 0u8;
        if self.clean {
            f |= 0x02;
        }
        if let Some(w) = &self.will {
            f |= 0x04 | (w.qos << 3);
            if w.retain {
                f |= 0x20;
            }
        }
        if self.password.is_some() {
            f |= 0x40;
        }
        if self.username.is_some() {
            f |= 0x80;
        }
        f | self.extra_flags
    }

    /// The complete packet.
    pub fn build(&self) -> Vec<u8> {
        let v5 = self.level == V5;
        let mut b = string(&self.protocol_name);
        b.push(self.level);
        b.push(self.flags());
        b.extend(self.keepalive.to_be_bytes());
        if v5 {
            b.extend(props_block(&self.props));
        }
        b.extend(string(&self.client_id));
        if let Some(w) = &self.will {
            if v5 {
                b.extend(props_block(&w.props));
            }
            b.extend(string(&w.topic));
            b.extend(bin(&w.payload));
        }
        if let Some(u) = &self.username {
            b.extend(string(u));
        }
        if let Some(p) = &self.password {
            b.extend(bin(p));
        }
        packet(CONNECT, &b)
    }
}

/// A plain CONNECT: clean, keep-alive 60, nothing else.
pub fn connect(level: u8, client_id: &str) -> Vec<u8> {
    Connect::new(level, client_id).build()
}

/// A PUBLISH packet with every field settable.
#[derive(Clone, Debug)]
pub struct Publish {
    /// Protocol level (decides whether a property block is written).
    pub level: u8,
    /// Topic Name (raw bytes, so invalid UTF-8 is possible).
    pub topic: Vec<u8>,
    /// QoS (0..=3).
    pub qos: u8,
    /// RETAIN flag.
    pub retain: bool,
    /// DUP flag.
    pub dup: bool,
    /// Packet Identifier; written when qos > 0 (or when `force_pkid`).
    pub pkid: u16,
    /// v5 properties (raw, without length).
    pub props: Vec<u8>,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Publish {
    /// QoS 0, not retained, no properties.
    pub fn new(level: u8, topic: &str, payload: &[u8]) -> Publish {
        Publish {
            level,
            topic: topic.as_bytes().to_vec(),
            qos: 0,
            retain: false,
            dup: false,
            pkid: 0,
            props: Vec::new(),
            payload: payload.to_vec(),
        }
    }

    /// Sets QoS and Packet Identifier.
    pub fn qos(mut self, qos: u8, pkid: u16) -> Publish {
        self.qos = qos;
        self.pkid = pkid;
        self
    }

    /// Sets RETAIN.
    pub fn retain(mut self, retain: bool) -> Publish {
        self.retain = retain;
        self
    }

    /// Sets DUP.
    pub fn dup(mut self, dup: bool) -> Publish {
        self.dup = dup;
        self
    }

    /// Sets v5 properties (raw, without length).
    pub fn props(mut self, props: Vec<u8>) -> Publish {
        self.props = props;
        self
    }

    /// Sets raw topic bytes.
    pub fn topic_bytes(mut self, topic: &[u8]) -> Publish {
        self.topic = topic.to_vec();
        self
    }

    /// The complete packet.
    pub fn build(&self) -> Vec<u8> {
        let first =
            PUBLISH | (u8::from(self.dup) << 3) | ((self.qos & 3) << 1) | u8::from(self.retain);
        let mut b = bin(&self.topic);
        if self.qos > 0 {
            b.extend(self.pkid.to_be_bytes());
        }
        if self.level == V5 {
            b.extend(props_block(&self.props));
        }
        b.extend_from_slice(&self.payload);
        packet(first, &b)
    }
}

/// A plain PUBLISH (no retain, no dup, no properties); `pkid` is ignored for QoS 0.
pub fn publish(level: u8, topic: &str, qos: u8, pkid: u16, payload: &[u8]) -> Vec<u8> {
    Publish::new(level, topic, payload).qos(qos, pkid).build()
}

/// PUBACK/PUBREC/PUBREL/PUBCOMP with an optional v5 reason code (`None`: the 2-byte short form,
/// valid in every version). `first` is [`PUBACK`], [`PUBREC`], [`PUBREL`] or [`PUBCOMP`].
pub fn ack(first: u8, pkid: u16, reason: Option<u8>) -> Vec<u8> {
    let mut b = pkid.to_be_bytes().to_vec();
    if let Some(r) = reason {
        b.push(r);
        b.push(0); // empty property block
    }
    packet(first, &b)
}

/// PUBACK, short form.
pub fn puback(pkid: u16) -> Vec<u8> {
    ack(PUBACK, pkid, None)
}

/// PUBREC, short form.
pub fn pubrec(pkid: u16) -> Vec<u8> {
    ack(PUBREC, pkid, None)
}

/// PUBREL, short form.
pub fn pubrel(pkid: u16) -> Vec<u8> {
    ack(PUBREL, pkid, None)
}

/// PUBCOMP, short form.
pub fn pubcomp(pkid: u16) -> Vec<u8> {
    ack(PUBCOMP, pkid, None)
}

/// SUBSCRIBE with `(filter, options byte)` pairs. The options byte is the QoS in v3; in v5 it also
/// carries No Local (0x04), Retain As Published (0x08) and Retain Handling (0x10/0x20).
/// `props` (v5 only, raw) may carry e.g. `prop_varint(SUBSCRIPTION_ID, 7)`.
pub fn subscribe(level: u8, pkid: u16, filters: &[(&str, u8)], props: &[u8]) -> Vec<u8> {
    let mut b = pkid.to_be_bytes().to_vec();
    if level == V5 {
        b.extend(props_block(props));
    }
    for (f, o) in filters {
        b.extend(string(f));
        b.push(*o);
    }
    packet(SUBSCRIBE, &b)
}

/// UNSUBSCRIBE with the given filters.
pub fn unsubscribe(level: u8, pkid: u16, filters: &[&str], props: &[u8]) -> Vec<u8> {
    let mut b = pkid.to_be_bytes().to_vec();
    if level == V5 {
        b.extend(props_block(props));
    }
    for f in filters {
        b.extend(string(f));
    }
    packet(UNSUBSCRIBE, &b)
}

/// PINGREQ.
pub fn pingreq() -> Vec<u8> {
    vec![PINGREQ, 0]
}

/// DISCONNECT without reason (v3, or v5 normal disconnection short form `E0 00`).
pub fn disconnect() -> Vec<u8> {
    vec![DISCONNECT, 0]
}

/// v5 DISCONNECT with a reason code and properties (raw, without length).
pub fn disconnect_v5(reason: u8, props: &[u8]) -> Vec<u8> {
    let mut b = vec![reason];
    b.extend(props_block(props));
    packet(DISCONNECT, &b)
}

/// v5 AUTH with a reason code and properties (raw, without length).
pub fn auth(reason: u8, props: &[u8]) -> Vec<u8> {
    let mut b = vec![reason];
    b.extend(props_block(props));
    packet(AUTH, &b)
}

// ---------------------------------------------------------------------------------------------
// Parsers
// ---------------------------------------------------------------------------------------------

/// A decoded v5 property value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PropValue {
    /// Byte.
    Byte(u8),
    /// Two Byte Integer.
    U16(u16),
    /// Four Byte Integer.
    U32(u32),
    /// Variable Byte Integer.
    Varint(u32),
    /// UTF-8 string.
    Str(String),
    /// Binary Data.
    Bin(Vec<u8>),
    /// UTF-8 string pair.
    Pair(String, String),
}

impl PropValue {
    /// The value as an integer, whatever its width (panics for strings).
    pub fn int(&self) -> u32 {
        match self {
            PropValue::Byte(v) => u32::from(*v),
            PropValue::U16(v) => u32::from(*v),
            PropValue::U32(v) | PropValue::Varint(v) => *v,
            other => panic!("property is not an integer: {other:?}"),
        }
    }

    /// The value as a string (panics for non-strings).
    pub fn str(&self) -> &str {
        match self {
            PropValue::Str(s) => s,
            other => panic!("property is not a string: {other:?}"),
        }
    }
}

/// Decoded properties in wire order (ids may repeat, e.g. user properties).
pub type Props = Vec<(u8, PropValue)>;

/// The first value of property `id`, if present.
pub fn prop(props: &Props, id: u8) -> Option<&PropValue> {
    props.iter().find(|(i, _)| *i == id).map(|(_, v)| v)
}

/// A byte cursor that panics with a clear message on truncation.
struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    fn new(b: &'a [u8]) -> Self {
        Cur { b, pos: 0 }
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        assert!(
            self.pos + n <= self.b.len(),
            "packet truncated: need {n} bytes at {} of {:02x?}",
            self.pos,
            self.b
        );
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        s
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn u16(&mut self) -> u16 {
        let s = self.take(2);
        u16::from_be_bytes([s[0], s[1]])
    }
    fn u32(&mut self) -> u32 {
        let s = self.take(4);
        u32::from_be_bytes([s[0], s[1], s[2], s[3]])
    }
    fn varint(&mut self) -> u32 {
        let mut v = 0u32;
        for i in 0..4 {
            let b = self.u8();
            v |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return v;
            }
        }
        panic!(
            "variable byte integer longer than 4 bytes in {:02x?}",
            self.b
        )
    }
    fn bin(&mut self) -> Vec<u8> {
        let n = self.u16() as usize;
        self.take(n).to_vec()
    }
    fn string(&mut self) -> String {
        String::from_utf8(self.bin()).expect("broker sent invalid UTF-8 string")
    }
    fn rest(&mut self) -> &'a [u8] {
        self.take(self.b.len() - self.pos)
    }
    fn done(&self) -> bool {
        self.pos >= self.b.len()
    }
    fn props(&mut self) -> Props {
        let len = self.varint() as usize;
        let mut c = Cur::new(self.take(len));
        let mut out = Vec::new();
        while !c.done() {
            let id = c.u8();
            let v = match id {
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => PropValue::Byte(c.u8()),
                0x13 | 0x21 | 0x22 | 0x23 => PropValue::U16(c.u16()),
                0x02 | 0x11 | 0x18 | 0x27 => PropValue::U32(c.u32()),
                0x0B => PropValue::Varint(c.varint()),
                0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => PropValue::Str(c.string()),
                0x09 | 0x16 => PropValue::Bin(c.bin()),
                0x26 => PropValue::Pair(c.string(), c.string()),
                other => panic!("broker sent unknown property id {other:#04x}"),
            };
            out.push((id, v));
        }
        out
    }
}

/// Decodes a property block (length prefix included) from the start of `b`.
pub fn parse_props(b: &[u8]) -> Props {
    Cur::new(b).props()
}

/// A decoded CONNACK.
#[derive(Clone, Debug)]
pub struct Connack {
    /// Session Present flag.
    pub session_present: bool,
    /// v3 Connect Return Code or v5 Reason Code.
    pub reason: u8,
    /// v5 properties (empty for v3).
    pub props: Props,
}

impl Connack {
    /// The first value of property `id`.
    pub fn prop(&self, id: u8) -> Option<&PropValue> {
        prop(&self.props, id)
    }
}

/// Decodes a CONNACK body. A v3-format (2-byte) CONNACK is accepted whatever `level`, because the
/// server answers an unsupported protocol level in the v3 format.
pub fn parse_connack(level: u8, body: &[u8]) -> Connack {
    let mut c = Cur::new(body);
    let flags = c.u8();
    assert_eq!(flags & 0xFE, 0, "CONNACK reserved flags set: {body:02x?}");
    let reason = c.u8();
    let props = if level == V5 && !c.done() {
        c.props()
    } else {
        Vec::new()
    };
    Connack {
        session_present: flags & 1 == 1,
        reason,
        props,
    }
}

/// Decodes a SUBACK body: (packet id, one reason/return code per filter). v5 properties skipped.
pub fn parse_suback(level: u8, body: &[u8]) -> (u16, Vec<u8>) {
    let mut c = Cur::new(body);
    let pkid = c.u16();
    if level == V5 {
        c.props();
    }
    (pkid, c.rest().to_vec())
}

/// Decodes an UNSUBACK body: (packet id, v5 reason codes; empty for v3).
pub fn parse_unsuback(level: u8, body: &[u8]) -> (u16, Vec<u8>) {
    parse_suback(level, body)
}

/// Decodes a DISCONNECT body (v5): (reason, properties). An empty body means 0x00.
pub fn parse_disconnect(body: &[u8]) -> (u8, Props) {
    if body.is_empty() {
        return (0, Vec::new());
    }
    let mut c = Cur::new(body);
    let reason = c.u8();
    let props = if c.done() { Vec::new() } else { c.props() };
    (reason, props)
}

/// Decodes a PUBACK/PUBREC/PUBREL/PUBCOMP body: (packet id, reason; 0 when absent).
pub fn parse_ack(body: &[u8]) -> (u16, u8) {
    let mut c = Cur::new(body);
    let pkid = c.u16();
    let reason = if c.done() { 0 } else { c.u8() };
    (pkid, reason)
}

/// A decoded PUBLISH received from the broker.
#[derive(Clone, Debug)]
pub struct Received {
    /// Topic Name (empty when a v5 topic alias is used).
    pub topic: String,
    /// QoS from the fixed header.
    pub qos: u8,
    /// DUP flag.
    pub dup: bool,
    /// RETAIN flag.
    pub retain: bool,
    /// Packet Identifier (0 for QoS 0).
    pub pkid: u16,
    /// v5 properties (empty for v3).
    pub props: Props,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Received {
    /// The first value of property `id`.
    pub fn prop(&self, id: u8) -> Option<&PropValue> {
        prop(&self.props, id)
    }
}

/// Decodes a PUBLISH from its first byte and body.
pub fn parse_publish(level: u8, first: u8, body: &[u8]) -> Received {
    assert_eq!(first & 0xF0, PUBLISH, "not a PUBLISH: {first:#04x}");
    let qos = (first >> 1) & 3;
    let mut c = Cur::new(body);
    let topic = c.string();
    let pkid = if qos > 0 { c.u16() } else { 0 };
    let props = if level == V5 { c.props() } else { Vec::new() };
    Received {
        topic,
        qos,
        dup: first & 0x08 != 0,
        retain: first & 0x01 != 0,
        pkid,
        props,
        payload: c.rest().to_vec(),
    }
}

// ---------------------------------------------------------------------------------------------
// RawClient
// ---------------------------------------------------------------------------------------------

/// What [`RawClient::next_event`] saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A whole packet: first byte and body.
    Packet(u8, Vec<u8>),
    /// EOF or a socket error (reset): the broker closed the connection.
    Closed,
    /// Nothing within the timeout.
    Timeout,
}

/// A bare TCP client: sends exact bytes, reads whole packets. Every read is bounded by a timeout
/// and reads are cancel-safe (partial packets stay buffered).
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    closed: bool,
}

impl RawClient {
    /// Opens a TCP connection (panics if it cannot within [`WAIT`]).
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("TCP connect timed out")
            .expect("TCP connect failed");
        stream.set_nodelay(true).expect("set_nodelay");
        RawClient {
            stream,
            buf: Vec::new(),
            closed: false,
        }
    }

    /// A client on a TCP connection opened elsewhere (e.g. from a chosen source address).
    pub fn from_stream(stream: TcpStream) -> RawClient {
        stream.set_nodelay(true).expect("set_nodelay");
        RawClient {
            stream,
            buf: Vec::new(),
            closed: false,
        }
    }

    /// Connects, sends `connect` and returns the CONNACK whatever its code (and the client).
    pub async fn try_handshake(
        addr: SocketAddr,
        level: u8,
        connect: &Connect,
    ) -> (RawClient, Connack) {
        let mut c = RawClient::connect(addr).await;
        c.send(&connect.build()).await;
        let body = c.recv_expect(CONNACK).await;
        (c, parse_connack(level, &body))
    }

    /// Connects and completes an MQTT handshake with `connect`, asserting CONNACK success.
    pub async fn handshake(addr: SocketAddr, level: u8, connect: &Connect) -> (RawClient, Connack) {
        let mut c = RawClient::connect(addr).await;
        c.send(&connect.build()).await;
        let body = c.recv_expect(CONNACK).await;
        let ack = parse_connack(level, &body);
        assert_eq!(ack.reason, 0, "CONNACK refused: {ack:?}");
        (c, ack)
    }

    /// Connects with a clean session as `client_id`, asserting CONNACK success.
    pub async fn connected(addr: SocketAddr, level: u8, client_id: &str) -> RawClient {
        Self::handshake(addr, level, &Connect::new(level, client_id))
            .await
            .0
    }

    /// Writes all of `bytes`; panics on error (use [`RawClient::try_send`] when the broker may
    /// already have closed the connection).
    pub async fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).await.expect("send failed");
    }

    /// Writes all of `bytes`, bounded by [`WAIT`] (a timeout is reported as `TimedOut`).
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match tokio::time::timeout(WAIT, self.stream.write_all(bytes)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }

    /// Splits a complete packet off the front of the buffer, if there is one.
    fn take_buffered(&mut self) -> Option<(u8, Vec<u8>)> {
        if self.buf.len() < 2 {
            return None;
        }
        let mut len = 0usize;
        let mut i = 1;
        loop {
            let b = *self.buf.get(i)?;
            len |= usize::from(b & 0x7f) << (7 * (i - 1));
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            assert!(i <= 4, "broker sent a remaining length over 4 bytes");
        }
        if self.buf.len() < i + len {
            return None;
        }
        let first = self.buf[0];
        let body = self.buf[i..i + len].to_vec();
        self.buf.drain(..i + len);
        Some((first, body))
    }

    /// The next packet, or Closed, or Timeout after `within`.
    pub async fn next_event(&mut self, within: Duration) -> Event {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some((f, b)) = self.take_buffered() {
                return Event::Packet(f, b);
            }
            if self.closed {
                return Event::Closed;
            }
            let mut tmp = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut tmp)).await {
                Err(_) => return Event::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => self.closed = true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }

    /// The next packet within [`WAIT`]; panics on close or timeout.
    pub async fn recv_packet(&mut self) -> (u8, Vec<u8>) {
        match self.next_event(WAIT).await {
            Event::Packet(f, b) => (f, b),
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// The next packet, asserting its first byte equals `first` (for PUBLISH use
    /// [`RawClient::recv_publish`]); returns the body.
    pub async fn recv_expect(&mut self, first: u8) -> Vec<u8> {
        let (f, b) = self.recv_packet().await;
        assert_eq!(
            f, first,
            "expected packet {first:#04x}, got {f:#04x} body {b:02x?}"
        );
        b
    }

    /// The next packet, which must be a PUBLISH.
    pub async fn recv_publish(&mut self, level: u8) -> Received {
        let (f, b) = self.recv_packet().await;
        parse_publish(level, f, &b)
    }

    /// Asserts nothing arrives (and the connection stays open) for `within`.
    pub async fn expect_silence(&mut self, within: Duration) {
        match self.next_event(within).await {
            Event::Timeout => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    /// Waits (up to [`WAIT`]) for the broker to close the connection; returns the packets that
    /// arrived first. Panics if the connection is still open after [`WAIT`].
    pub async fn expect_closed(&mut self) -> Vec<(u8, Vec<u8>)> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Event::Packet(f, b) => got.push((f, b)),
                Event::Closed => return got,
                Event::Timeout => panic!("connection still open after {WAIT:?}; got {got:02x?}"),
            }
        }
    }

    /// Waits for close and asserts the packets before it were exactly one v5 DISCONNECT with
    /// `reason` (PUBLISHes that were already in flight are skipped).
    pub async fn expect_disconnect(&mut self, reason: u8) {
        self.expect_disconnect_in(&[reason]).await;
    }

    /// Like [`RawClient::expect_disconnect`], accepting any reason in `reasons`; returns it.
    pub async fn expect_disconnect_in(&mut self, reasons: &[u8]) -> u8 {
        let got = self.expect_closed().await;
        let discs: Vec<_> = got.iter().filter(|(f, _)| f & 0xF0 != PUBLISH).collect();
        assert_eq!(
            discs.len(),
            1,
            "expected one DISCONNECT {reasons:02x?} before close, got {got:02x?}"
        );
        let (f, b) = discs[0];
        assert_eq!(*f, DISCONNECT, "expected DISCONNECT, got {f:#04x} {b:02x?}");
        let reason = parse_disconnect(b).0;
        assert!(
            reasons.contains(&reason),
            "DISCONNECT reason: expected one of {reasons:02x?}, got {reason:#04x}"
        );
        reason
    }

    /// Half-closes the connection (sends FIN): the broker then sees end of stream.
    pub async fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// For v5 expects DISCONNECT `reason` then close; for v3 expects a close with no packet.
    pub async fn expect_disconnect_or_close(&mut self, level: u8, reason: u8) {
        if level == V5 {
            self.expect_disconnect(reason).await;
        } else {
            let got = self.expect_closed().await;
            let other: Vec<_> = got.iter().filter(|(f, _)| f & 0xF0 != PUBLISH).collect();
            assert!(other.is_empty(), "v3 close preceded by {got:02x?}");
        }
    }

    /// Like [`RawClient::expect_disconnect_or_close`], accepting any v5 reason in `reasons`;
    /// `Err` describes what came instead.
    pub async fn expect_disconnect_or_close_in(
        &mut self,
        level: u8,
        reasons: &[u8],
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Event::Packet(f, b) => got.push((f, b)),
                Event::Closed => break,
                Event::Timeout => return Err(format!("still open; got {got:02x?}")),
            }
        }
        let other: Vec<_> = got.iter().filter(|(f, _)| f & 0xF0 != PUBLISH).collect();
        match (level == V5, other.as_slice()) {
            (false, []) => Ok(()),
            (true, [(DISCONNECT, b)]) if reasons.contains(&parse_disconnect(b).0) => Ok(()),
            _ => Err(format!(
                "expected a close (v5: DISCONNECT {reasons:02x?}), got {got:02x?}"
            )),
        }
    }

    /// Subscribes to one filter and asserts the SUBACK grants it (reason < 0x80).
    pub async fn subscribe(&mut self, level: u8, filter: &str, qos: u8) {
        self.send(&subscribe(level, 1, &[(filter, qos)], &[])).await;
        let (pkid, reasons) = parse_suback(level, &self.recv_expect(SUBACK).await);
        assert_eq!(pkid, 1);
        assert_eq!(reasons.len(), 1);
        assert!(
            reasons[0] < 0x80,
            "subscription to {filter} refused: {reasons:02x?}"
        );
    }

    /// PINGREQ → PINGRESP, proving the connection is alive and served.
    pub async fn ping(&mut self) {
        self.send(&pingreq()).await;
        let b = self.recv_expect(PINGRESP).await;
        assert!(b.is_empty());
    }
}

/// Proves the broker still serves: a fresh subscriber and publisher (both `level`) complete a QoS 1
/// round trip on a unique topic.
pub async fn assert_broker_serves(addr: SocketAddr, level: u8) {
    let id = format!("probe-{}", rand_suffix());
    let topic = format!("probe/{id}");
    let mut sub = RawClient::connected(addr, level, &format!("{id}-s")).await;
    sub.subscribe(level, &topic, 1).await;
    let mut publ = RawClient::connected(addr, level, &format!("{id}-p")).await;
    assert_round_trip(&mut publ, &mut sub, level, &topic).await;
    publ.send(&disconnect()).await;
    sub.send(&disconnect()).await;
}

/// `publ` publishes QoS 1 on `topic`, `sub` (already subscribed to `topic` at QoS ≥ 1) receives
/// it; both acks are exchanged.
pub async fn assert_round_trip(publ: &mut RawClient, sub: &mut RawClient, level: u8, topic: &str) {
    let payload = rand_suffix().into_bytes();
    publ.send(&publish(level, topic, 1, 77, &payload)).await;
    let (pkid, reason) = parse_ack(&publ.recv_expect(PUBACK).await);
    assert_eq!(pkid, 77);
    assert!(reason < 0x80, "PUBACK reason {reason:#04x}");
    let got = sub.recv_publish(level).await;
    assert_eq!(got.topic, topic);
    assert_eq!(got.payload, payload);
    if got.qos > 0 {
        sub.send(&puback(got.pkid)).await;
    }
}

/// A short unique-enough string for client ids and topics.
pub fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{t:x}{}", N.fetch_add(1, Ordering::Relaxed))
}
