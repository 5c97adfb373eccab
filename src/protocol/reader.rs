//! A bounds-checked cursor over one packet's bytes, and the v5 property walker. Every read that
//! would pass the end is a malformed-packet error, never a panic or a "need more bytes".

use bytes::Bytes;

use super::{DecodeError, UserProperties};

type Result<T> = std::result::Result<T, DecodeError>;

const SHORT: DecodeError =
    DecodeError::Malformed("[MQTT-1.5] field runs past the end of the packet");

/// Reads fields from the body of one packet.
pub(crate) struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Reader {
        Reader { buf, pos: 0 }
    }

    /// Reads `buf` from `pos` on. Taking the packet's own bytes (rather than a slice of them)
    /// saves a reference-count round trip on the shared read buffer per packet.
    pub(crate) fn at(buf: Bytes, pos: usize) -> Reader {
        Reader {
            pos: pos.min(buf.len()),
            buf,
        }
    }

    /// What is left, as the packet's own bytes: the payload of a PUBLISH, without touching
    /// the shared buffer's reference count.
    pub(crate) fn into_rest(self) -> Bytes {
        let mut rest = self.buf;
        bytes::Buf::advance(&mut rest, self.pos);
        rest
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Fails unless every byte was consumed (trailing bytes are malformed).
    pub(crate) fn finish(&self) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(
                "unexpected bytes after the end of the packet",
            ))
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        let b = *self.buf.get(self.pos).ok_or(SHORT)?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }

    /// Consumes an empty property block (its length, 0, is one byte in shortest form), if
    /// that is what comes next: most v5 packets have none, and this saves building the
    /// whole property set to find out.
    pub(crate) fn empty_properties(&mut self) -> bool {
        let empty = self.buf.get(self.pos) == Some(&0);
        if empty {
            self.pos += 1;
        }
        empty
    }

    /// Variable Byte Integer, at most 4 bytes [MQTT-1.5.5-1].
    pub(crate) fn varint(&mut self) -> Result<u32> {
        let mut value: u32 = 0;
        for i in 0..4 {
            let b = self.u8()?;
            value |= u32::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(DecodeError::Malformed(
                        "[MQTT-1.5.5-1] variable byte integer not in its shortest form",
                    ));
                }
                return Ok(value);
            }
        }
        Err(DecodeError::Malformed(
            "[MQTT-1.5.5-1] variable byte integer longer than 4 bytes",
        ))
    }

    /// `n` raw bytes, shared with the packet buffer.
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes> {
        if self.remaining() < n {
            return Err(SHORT);
        }
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    /// Binary Data: 2-byte length, then bytes.
    pub(crate) fn binary(&mut self) -> Result<Bytes> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }

    /// Binary Data, borrowed: for fields copied out anyway (strings).
    fn binary_ref(&mut self) -> Result<&[u8]> {
        let n = usize::from(self.u16()?);
        if self.remaining() < n {
            return Err(SHORT);
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.buf[start..start + n])
    }

    /// UTF-8 Encoded String without U+0000 [MQTT-1.5.4-1, -2].
    pub(crate) fn string(&mut self) -> Result<String> {
        let raw = self.binary_ref()?;
        let s = std::str::from_utf8(raw)
            .map_err(|_| DecodeError::Malformed("[MQTT-1.5.4-1] string is not valid UTF-8"))?;
        if s.contains('\0') {
            return Err(DecodeError::Malformed(
                "[MQTT-1.5.4-2] string contains U+0000",
            ));
        }
        Ok(s.to_owned())
    }
}

/// The packets (and the will) a property may appear in, as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Connect = 1 << 0,
    Will = 1 << 1,
    Publish = 1 << 2,
    Ack = 1 << 3,
    Subscribe = 1 << 4,
    Unsubscribe = 1 << 5,
    Disconnect = 1 << 6,
    Auth = 1 << 7,
    /// Only in what a server sends (read by the bridge's client side).
    ConnAck = 1 << 8,
}

const CONNECT: u16 = Scope::Connect as u16;
const WILL: u16 = Scope::Will as u16;
const PUBLISH: u16 = Scope::Publish as u16;
const ACK: u16 = Scope::Ack as u16;
const SUBSCRIBE: u16 = Scope::Subscribe as u16;
const DISCONNECT: u16 = Scope::Disconnect as u16;
const AUTH: u16 = Scope::Auth as u16;
const CONNACK: u16 = Scope::ConnAck as u16;
const ALL: u16 = 0x1FF;

/// Every property a client may send (and, read from a server, what a CONNACK carries), as
/// parsed from one property block.
#[derive(Debug, Default)]
pub(crate) struct Props {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub subscription_identifier: Option<u32>,
    pub session_expiry_interval: Option<u32>,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub reason_string: Option<String>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_packet_size: Option<u32>,
    pub server_reference: Option<String>,
    pub user_properties: UserProperties,
    pub assigned_client_identifier: Option<String>,
    pub server_keep_alive: Option<u16>,
    pub response_information: Option<String>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifiers_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

fn set<T>(slot: &mut Option<T>, v: T) -> Result<()> {
    if slot.is_some() {
        return Err(DecodeError::Protocol(
            "MQTT 5 §2.2.2.2: property included more than once",
        ));
    }
    *slot = Some(v);
    Ok(())
}

fn flag(r: &mut Reader, what: &'static str) -> Result<u8> {
    let v = r.u8()?;
    if v > 1 {
        return Err(DecodeError::Protocol(what));
    }
    Ok(v)
}

/// Reads a property block (length, then properties) allowed in `scope`. Unknown identifiers,
/// and known ones outside their packet, are malformed (MQTT 5 §2.2.2.2); duplicates and
/// values a property does not allow are protocol errors.
pub(crate) fn read_properties(r: &mut Reader, scope: Scope) -> Result<Props> {
    read_properties_from(r, scope, false)
}

/// Properties a server may send but a client may not, by where they may appear.
fn server_only(id: u32) -> u16 {
    match id {
        0x0B => PUBLISH,
        0x11 | 0x12 | 0x13 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F | 0x21 | 0x22 | 0x24 | 0x25
        | 0x27 | 0x28 | 0x29 | 0x2A => CONNACK,
        _ => 0,
    }
}

/// [`read_properties`] for a block a server sent (`from_server`) or a client sent.
pub(crate) fn read_properties_from(
    r: &mut Reader,
    scope: Scope,
    from_server: bool,
) -> Result<Props> {
    let len = r.varint()? as usize;
    let mut block = Reader::new(r.take(len)?);
    let mut p = Props::default();
    let scope = scope as u16;
    while !block.is_empty() {
        let id = block.varint()?;
        let allowed = match id {
            0x01 | 0x02 | 0x03 | 0x08 | 0x09 => PUBLISH | WILL,
            // A server's PUBLISH carries the Subscription Identifiers it matched.
            0x0B if from_server && scope == PUBLISH => PUBLISH,
            0x0B if scope == PUBLISH => {
                return Err(DecodeError::Protocol(
                    "[MQTT-3.3.4-6] a PUBLISH from a client carries a Subscription Identifier",
                ))
            }
            0x0B => SUBSCRIBE,
            0x11 => CONNECT | DISCONNECT,
            0x15 | 0x16 => CONNECT | AUTH,
            0x17 | 0x19 | 0x21 | 0x22 | 0x27 => CONNECT,
            0x18 => WILL,
            0x1C => DISCONNECT,
            0x1F => ACK | DISCONNECT | AUTH,
            0x23 => PUBLISH,
            0x26 => ALL,
            // Server-only properties (CONNACK) and anything else.
            0x12 | 0x13 | 0x1A | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 0,
            _ => {
                return Err(DecodeError::Malformed(
                    "MQTT 5 §2.2.2.2: unknown property identifier",
                ))
            }
        };
        let allowed = if from_server {
            allowed | server_only(id)
        } else {
            allowed
        };
        if allowed & scope == 0 {
            // "An Identifier which is not valid for its packet type" makes a malformed packet.
            return Err(DecodeError::Malformed(
                "MQTT 5 §2.2.2.2: property not allowed in this packet",
            ));
        }
        let b = &mut block;
        match id {
            0x01 => set(
                &mut p.payload_format_indicator,
                flag(
                    b,
                    "MQTT 5 §3.3.2.3.2: payload format indicator other than 0 or 1",
                )?,
            )?,
            0x02 => set(&mut p.message_expiry_interval, b.u32()?)?,
            0x03 => set(&mut p.content_type, b.string()?)?,
            0x08 => set(&mut p.response_topic, b.string()?)?,
            0x09 => set(&mut p.correlation_data, b.binary()?)?,
            0x0B => {
                let v = b.varint()?;
                if v == 0 {
                    return Err(DecodeError::Protocol(
                        "MQTT 5 §3.8.2.1.2: subscription identifier 0",
                    ));
                }
                if from_server {
                    // Several may come; the first is kept.
                    p.subscription_identifier.get_or_insert(v);
                } else {
                    set(&mut p.subscription_identifier, v)?
                }
            }
            0x12 => set(&mut p.assigned_client_identifier, b.string()?)?,
            0x13 => set(&mut p.server_keep_alive, b.u16()?)?,
            0x1A => set(&mut p.response_information, b.string()?)?,
            0x24 => set(
                &mut p.maximum_qos,
                flag(b, "MQTT 5 §3.2.2.3.4: maximum QoS other than 0 or 1")?,
            )?,
            0x25 => set(
                &mut p.retain_available,
                flag(b, "MQTT 5 §3.2.2.3.5: retain available other than 0 or 1")?,
            )?,
            0x28 => set(
                &mut p.wildcard_subscription_available,
                flag(
                    b,
                    "MQTT 5 §3.2.2.3.11: wildcard subscription available other than 0 or 1",
                )?,
            )?,
            0x29 => set(
                &mut p.subscription_identifiers_available,
                flag(
                    b,
                    "MQTT 5 §3.2.2.3.12: subscription identifiers available other than 0 or 1",
                )?,
            )?,
            0x2A => set(
                &mut p.shared_subscription_available,
                flag(
                    b,
                    "MQTT 5 §3.2.2.3.13: shared subscription available other than 0 or 1",
                )?,
            )?,
            0x11 => set(&mut p.session_expiry_interval, b.u32()?)?,
            0x15 => set(&mut p.authentication_method, b.string()?)?,
            0x16 => set(&mut p.authentication_data, b.binary()?)?,
            0x17 => set(
                &mut p.request_problem_information,
                flag(
                    b,
                    "MQTT 5 §3.1.2.11.7: request problem information other than 0 or 1",
                )?,
            )?,
            0x18 => set(&mut p.will_delay_interval, b.u32()?)?,
            0x19 => set(
                &mut p.request_response_information,
                flag(
                    b,
                    "MQTT 5 §3.1.2.11.6: request response information other than 0 or 1",
                )?,
            )?,
            0x1C => set(&mut p.server_reference, b.string()?)?,
            0x1F => set(&mut p.reason_string, b.string()?)?,
            0x21 => {
                let v = b.u16()?;
                if v == 0 {
                    return Err(DecodeError::Protocol(
                        "MQTT 5 §3.1.2.11.3: receive maximum 0",
                    ));
                }
                set(&mut p.receive_maximum, v)?
            }
            0x22 => set(&mut p.topic_alias_maximum, b.u16()?)?,
            0x23 => {
                let v = b.u16()?;
                if v == 0 {
                    return Err(DecodeError::TopicAliasZero);
                }
                set(&mut p.topic_alias, v)?
            }
            0x26 => {
                let k = b.string()?;
                let v = b.string()?;
                p.user_properties.push((k, v));
            }
            0x27 => {
                let v = b.u32()?;
                if v == 0 {
                    return Err(DecodeError::Protocol(
                        "MQTT 5 §3.1.2.11.4: maximum packet size 0",
                    ));
                }
                set(&mut p.maximum_packet_size, v)?
            }
            _ => {
                return Err(DecodeError::Malformed(
                    "MQTT 5 §2.2.2.2: unknown property identifier",
                ))
            }
        }
    }
    Ok(p)
}
