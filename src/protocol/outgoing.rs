//! The server's PUBLISH encoder: the shared parts of a message (topic, payload, forwarded
//! properties) are borrowed, the per-subscriber parts passed alongside, so fan-out encodes each
//! copy straight into the subscriber's write buffer without building a packet per subscriber.

use bytes::{BufMut, Bytes, BytesMut};

use super::{EncodeError, ProtocolVersion, PublishProperties, QoS};

/// One PUBLISH as a subscriber receives it.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingPublish<'a> {
    /// Topic name; empty when `topic_alias` stands for an already-sent topic.
    pub topic: &'a str,
    /// Payload.
    pub payload: &'a Bytes,
    /// Delivered QoS.
    pub qos: QoS,
    /// DUP flag.
    pub dup: bool,
    /// RETAIN flag.
    pub retain: bool,
    /// Packet id (ignored for QoS 0).
    pub pkid: u16,
    /// Properties forwarded unchanged (their Topic Alias, Subscription Identifiers and Message
    /// Expiry Interval are ignored: the fields below replace them).
    pub properties: &'a PublishProperties,
    /// Topic Alias for this connection.
    pub topic_alias: Option<u16>,
    /// Subscription Identifiers of the matching subscriptions.
    pub subscription_ids: &'a [u32],
    /// Remaining Message Expiry Interval.
    pub message_expiry: Option<u32>,
}

pub(crate) fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub(crate) fn put_varint(out: &mut BytesMut, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if n == 0 {
            break;
        }
    }
}

fn put_str(out: &mut BytesMut, s: &[u8]) {
    out.put_u16(s.len() as u16);
    out.put_slice(s);
}

impl OutgoingPublish<'_> {
    fn properties_len(&self) -> usize {
        let p = self.properties;
        let mut n = 0;
        if p.payload_format_indicator.is_some() {
            n += 2;
        }
        if self.message_expiry.is_some() {
            n += 5;
        }
        if let Some(t) = &p.content_type {
            n += 3 + t.len();
        }
        if let Some(t) = &p.response_topic {
            n += 3 + t.len();
        }
        if let Some(d) = &p.correlation_data {
            n += 3 + d.len();
        }
        for id in self.subscription_ids {
            n += 1 + varint_len(*id as usize);
        }
        if self.topic_alias.is_some() {
            n += 3;
        }
        for (k, v) in &p.user_properties {
            n += 5 + k.len() + v.len();
        }
        n
    }

    fn remaining_len(&self, version: ProtocolVersion) -> usize {
        let mut n = 2 + self.topic.len() + self.payload.len();
        if self.qos != QoS::AtMostOnce {
            n += 2;
        }
        if version.is_v5() {
            let p = self.properties_len();
            n += varint_len(p) + p;
        }
        n
    }

    /// Bytes on the wire, fixed header included (what Maximum Packet Size limits).
    pub fn len(&self, version: ProtocolVersion) -> usize {
        let r = self.remaining_len(version);
        1 + varint_len(r) + r
    }

    /// Appends the packet to `out`.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        let p = self.properties;
        let too_long = [
            Some(self.topic.len()),
            p.content_type.as_ref().map(String::len),
            p.response_topic.as_ref().map(String::len),
            p.correlation_data.as_ref().map(Bytes::len),
        ]
        .into_iter()
        .flatten()
        .chain(
            p.user_properties
                .iter()
                .flat_map(|(k, v)| [k.len(), v.len()]),
        )
        .any(|l| l > usize::from(u16::MAX));
        if too_long {
            return Err(EncodeError::StringTooLong);
        }
        let remaining = self.remaining_len(version);
        if remaining > 268_435_455 {
            return Err(EncodeError::PacketTooLarge);
        }
        out.reserve(5 + remaining);
        let mut byte1 = 0x30 | ((self.qos as u8) << 1);
        if self.dup && self.qos != QoS::AtMostOnce {
            byte1 |= 0x08;
        }
        if self.retain {
            byte1 |= 0x01;
        }
        out.put_u8(byte1);
        put_varint(out, remaining);
        put_str(out, self.topic.as_bytes());
        if self.qos != QoS::AtMostOnce {
            out.put_u16(self.pkid);
        }
        if version.is_v5() {
            put_varint(out, self.properties_len());
            if let Some(v) = p.payload_format_indicator {
                out.put_u8(0x01);
                out.put_u8(v);
            }
            if let Some(v) = self.message_expiry {
                out.put_u8(0x02);
                out.put_u32(v);
            }
            if let Some(v) = &p.content_type {
                out.put_u8(0x03);
                put_str(out, v.as_bytes());
            }
            if let Some(v) = &p.response_topic {
                out.put_u8(0x08);
                put_str(out, v.as_bytes());
            }
            if let Some(v) = &p.correlation_data {
                out.put_u8(0x09);
                put_str(out, v);
            }
            for id in self.subscription_ids {
                out.put_u8(0x0B);
                put_varint(out, *id as usize);
            }
            if let Some(v) = self.topic_alias {
                out.put_u8(0x23);
                out.put_u16(v);
            }
            for (k, v) in &p.user_properties {
                out.put_u8(0x26);
                put_str(out, k.as_bytes());
                put_str(out, v.as_bytes());
            }
        }
        out.put_slice(self.payload);
        Ok(())
    }
}
