//! Packet builders: encoding primitives, properties, and every packet a client sends, byte by
//! byte, with every field settable (including to values the spec forbids).

use super::*;

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
