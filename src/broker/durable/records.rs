//! Record formats: how sessions, subscriptions, stored messages with their recipients and
//! acknowledgements are laid out in the store, and read back. Every record starts with a
//! format byte, so a later Tern can read (or migrate) what this one wrote.

use super::*;

/// Format, expiry interval, disconnection time in Unix milliseconds (0: connected), then, if
/// it has a will, the Will Delay and the will as a message record.
pub(super) fn session_op(
    client_id: &str,
    expiry_interval: u32,
    disconnected: Option<SystemTime>,
    will: Option<(&Message, u32)>,
) -> Op {
    let mut v = Vec::with_capacity(13);
    v.push(SESSION_RECORD_V1);
    v.extend_from_slice(&expiry_interval.to_be_bytes());
    let at = disconnected.map_or(0, |t| {
        t.duration_since(UNIX_EPOCH).map_or(1, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
        })
    });
    v.extend_from_slice(&at.to_be_bytes());
    if let Some((msg, delay)) = will {
        v.extend_from_slice(&delay.to_be_bytes());
        v.extend_from_slice(&encode_message(msg));
    }
    Op::Put(Space::Sessions, client_key(client_id), v)
}

/// A stored session: expiry interval, disconnection time, will (Will Delay, message; the
/// message `None` if it expired); `None` if damaged.
#[allow(clippy::type_complexity)]
pub(super) fn decode_session(
    record: &[u8],
    now: (Instant, SystemTime),
) -> Option<(u32, Option<SystemTime>, Option<(u32, Option<Message>)>)> {
    let mut r = record;
    if r.remaining() < 13 || r.get_u8() != SESSION_RECORD_V1 {
        return None;
    }
    let expiry = r.get_u32();
    let at = r.get_u64();
    let disconnected = (at != 0).then(|| UNIX_EPOCH + Duration::from_millis(at));
    if r.is_empty() {
        return Some((expiry, disconnected, None));
    }
    if r.remaining() < 4 {
        return None;
    }
    let delay = r.get_u32();
    let will = decode_message(r, now).ok()?;
    Some((expiry, disconnected, Some((delay, will))))
}

/// Format, QoS, flags (No Local, Retain As Published), Retain Handling, Subscription Identifier
/// (0: none).
pub(super) fn encode_subscription(sub: &Subscription) -> Vec<u8> {
    let o = &sub.options;
    let mut v = vec![
        SUBSCRIPTION_RECORD_V1,
        o.qos as u8,
        u8::from(o.no_local) | u8::from(o.retain_as_published) << 1,
        o.retain_handling as u8,
    ];
    v.extend_from_slice(&sub.id.unwrap_or(0).to_be_bytes());
    v
}

pub(super) fn decode_subscription(record: &[u8]) -> Option<Subscription> {
    let mut r = record;
    if r.remaining() != 8 || r.get_u8() != SUBSCRIPTION_RECORD_V1 {
        return None;
    }
    let qos = QoS::from_u8(r.get_u8())?;
    let flags = r.get_u8();
    let retain_handling = match r.get_u8() {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return None,
    };
    let id = r.get_u32();
    Some(Subscription {
        options: SubscriptionOptions {
            qos,
            no_local: flags & 1 != 0,
            retain_as_published: flags & 2 != 0,
            retain_handling,
        },
        id: (id != 0).then_some(id),
    })
}

/// The client id at the start of a key, and the rest.
pub(super) fn split_client_key(key: &[u8]) -> Option<(&str, &[u8])> {
    let (len, rest) = key.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    let id = std::str::from_utf8(rest.get(..len)?).ok()?;
    Some((id, rest.get(len..)?))
}

/// One recipient: client id (u16 length, bytes), QoS, RETAIN, Subscription Identifiers (count,
/// then each).
pub(super) fn encode_recipient(out: &mut Vec<u8>, client_id: &str, d: &Delivery) {
    out.extend_from_slice(&client_key(client_id));
    let ids = &d.sub_ids()[..d.sub_ids().len().min(255)];
    out.extend_from_slice(&[d.qos as u8, u8::from(d.retain)]);
    out.push(u8::try_from(ids.len()).unwrap_or(u8::MAX));
    for id in ids {
        out.extend_from_slice(&id.to_be_bytes());
    }
}

/// A recipient of a stored message, as read back.
pub(super) struct Recipient {
    pub(super) client_id: String,
    pub(super) qos: QoS,
    pub(super) retain: bool,
    pub(super) sub_ids: Vec<u32>,
}

/// One recipient as it stands in a stored message record (borrowed, nothing decoded yet).
pub(super) struct RawRecipient<'a> {
    pub(super) client_id: &'a [u8],
    pub(super) qos: QoS,
    pub(super) retain: bool,
    /// Subscription Identifiers, 4 bytes each.
    pub(super) ids: &'a [u8],
}

impl RawRecipient<'_> {
    pub(super) fn sub_ids(&self) -> Vec<u32> {
        self.ids
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
}

/// Walks the recipients of a stored message record, in order; returns the message's own record
/// after them. Allocates nothing: a record can list thousands.
pub(super) fn walk_log<'a>(
    record: &'a [u8],
    mut each: impl FnMut(RawRecipient<'a>) -> Result<(), String>,
) -> Result<&'a [u8], String> {
    let mut r = record;
    if r.remaining() < 3 || r.get_u8() != LOG_RECORD_V1 {
        return Err("unknown record format".into());
    }
    for _ in 0..r.get_u16() {
        if r.remaining() < 2 {
            return Err("short".into());
        }
        let len = usize::from(r.get_u16());
        if r.remaining() < len + 3 {
            return Err("short".into());
        }
        let (client_id, rest) = r.split_at(len);
        r = rest;
        let qos = QoS::from_u8(r.get_u8()).ok_or("bad QoS")?;
        let retain = r.get_u8() != 0;
        let ids = 4 * usize::from(r.get_u8());
        if r.remaining() < ids {
            return Err("short".into());
        }
        let (ids, rest) = r.split_at(ids);
        r = rest;
        each(RawRecipient {
            client_id,
            qos,
            retain,
            ids,
        })?;
    }
    Ok(r)
}

/// Recipients of a stored message record, and the message's own record after them.
pub(super) fn split_log(record: &[u8]) -> Result<(Vec<Recipient>, &[u8]), String> {
    let mut recipients = Vec::new();
    let body = walk_log(record, |raw| {
        let client_id = std::str::from_utf8(raw.client_id)
            .map_err(|_| "client id not UTF-8")?
            .to_string();
        recipients.push(Recipient {
            client_id,
            qos: raw.qos,
            retain: raw.retain,
            sub_ids: raw.sub_ids(),
        });
        Ok(())
    })?;
    Ok((recipients, body))
}

/// Stored message record `record` (sequence `seq`) as a delivery to `client_id`; `Ok(None)`
/// if the message expired.
pub(super) fn delivery_for(
    record: &[u8],
    client_id: &str,
    seq: u64,
    now: (Instant, SystemTime),
) -> Result<Option<Delivery>, String> {
    let (r, body) = recipient_in(record, client_id)?;
    Ok(decode_message(body, now)?.map(|msg| r.delivery(Arc::new(msg), seq)))
}

/// One recipient's options for a stored message.
pub(super) struct Options {
    pub(super) qos: QoS,
    pub(super) retain: bool,
    pub(super) sub_ids: Vec<u32>,
}

impl Options {
    pub(super) fn delivery(self, msg: Arc<Message>, seq: u64) -> Delivery {
        Delivery::new(msg, self.qos, self.retain)
            .with_sub_ids(self.sub_ids)
            .with_seq(Seq::new(seq))
    }
}

/// `client_id`'s options in a stored message record, and the message's own record.
pub(super) fn recipient_in<'a>(
    record: &'a [u8],
    client_id: &str,
) -> Result<(Options, &'a [u8]), String> {
    let mut found = None;
    let body = walk_log(record, |raw| {
        if found.is_none() && raw.client_id == client_id.as_bytes() {
            found = Some(Options {
                qos: raw.qos,
                retain: raw.retain,
                sub_ids: raw.sub_ids(),
            });
        }
        Ok(())
    })?;
    Ok((found.ok_or("not a recipient")?, body))
}

/// Key of an acknowledgement: sequence, then the client, so a message's acknowledgements are
/// one prefix.
pub(super) fn ack_key(seq: u64, client_id: &str) -> Vec<u8> {
    let mut k = seq.to_be_bytes().to_vec();
    k.extend_from_slice(&client_key(client_id));
    k
}

/// Header (format, expiry in Unix milliseconds or 0) then the message as a v5 PUBLISH.
pub(super) fn encode_message(msg: &Message) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8(MESSAGE_RECORD_V1);
    let expires = msg.expires_at.map_or(0, |at| {
        let left = at.saturating_duration_since(Instant::now());
        let wall = SystemTime::now() + left;
        wall.duration_since(UNIX_EPOCH).map_or(1, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
        })
    });
    out.put_u64(expires);
    let mut publish = msg.publish.clone();
    // A QoS 1/2 PUBLISH must carry a packet id to be well-formed; it means nothing here.
    publish.pkid = u16::from(publish.qos != QoS::AtMostOnce);
    // The encoder only fails on sizes no accepted message has.
    let _ = protocol::encode(&Packet::Publish(publish), ProtocolVersion::V5, &mut out);
    out.to_vec()
}

/// Whether the stored message record has expired, read from its header alone.
pub(super) fn message_expired(record: &[u8], wall_now: SystemTime) -> Result<bool, String> {
    let mut r = record;
    if r.remaining() < 9 || r.get_u8() != MESSAGE_RECORD_V1 {
        return Err("unknown record format".into());
    }
    let expires = r.get_u64();
    Ok(expires != 0 && UNIX_EPOCH + Duration::from_millis(expires) <= wall_now)
}

/// The payload size of a stored message record, read from its framing alone (a queue's byte
/// bound counts it without decoding the message); 0 if the record is not well formed.
pub(super) fn payload_len(record: &[u8]) -> u32 {
    fn var_int(r: &mut &[u8]) -> Option<usize> {
        let mut value = 0usize;
        for shift in [0, 7, 14, 21] {
            let b = *r.first()?;
            *r = &r[1..];
            value |= usize::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    fn skip(r: &mut &[u8], n: usize) -> Option<()> {
        *r = r.get(n..)?;
        Some(())
    }
    let parse = || -> Option<usize> {
        // Format byte and expiry, then the PUBLISH as a v5 packet.
        let mut r = record.get(9..)?;
        let byte1 = *r.first()?;
        skip(&mut r, 1)?;
        let remaining = var_int(&mut r)?;
        let body = r.get(..remaining)?;
        let mut b = body;
        let topic_len = usize::from(u16::from_be_bytes([*b.first()?, *b.get(1)?]));
        skip(&mut b, 2 + topic_len)?;
        if (byte1 >> 1) & 0x03 != 0 {
            skip(&mut b, 2)?;
        }
        let props = var_int(&mut b)?;
        skip(&mut b, props)?;
        Some(b.len())
    };
    parse().map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// A stored message; `Ok(None)` if it has expired.
pub(super) fn decode_message(
    record: &[u8],
    (now, wall_now): (Instant, SystemTime),
) -> Result<Option<Message>, String> {
    let mut r = record;
    if r.remaining() < 9 || r.get_u8() != MESSAGE_RECORD_V1 {
        return Err("unknown record format".into());
    }
    let expires = r.get_u64();
    let expires_at = if expires == 0 {
        None
    } else {
        let wall = UNIX_EPOCH + Duration::from_millis(expires);
        match wall.duration_since(wall_now) {
            Ok(left) if !left.is_zero() => Some(now + left),
            _ => return Ok(None),
        }
    };
    let mut buf = BytesMut::from(r);
    let packet = Decoder::resumed(u32::MAX, ProtocolVersion::V5)
        .decode(&mut buf)
        .map_err(|e| e.to_string())?;
    let Some(Packet::Publish(mut publish)) = packet else {
        return Err("not a PUBLISH".into());
    };
    if !buf.is_empty() {
        return Err("trailing bytes".into());
    }
    publish.pkid = 0;
    Ok(Some(Message {
        publish,
        expires_at,
        publisher: None,
        accepted: now,
    }))
}
