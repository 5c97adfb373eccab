//! Parsers for what the broker sends: properties, CONNACK, SUBACK, UNSUBACK, DISCONNECT, the
//! acks and PUBLISH. They panic, with a clear message, on anything they cannot read.

use super::*;

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
