//! What the broker keeps in the store, and in what form. Today: retained messages. Every record
//! starts with a record-format byte, so a later Tern can read (or migrate) what this one wrote.
//!
//! A message is stored as a v5 PUBLISH packet (the protocol module's own encoding, so every
//! property survives) after a header holding what the packet cannot: when the message expires,
//! in wall-clock time, since `Instant`s do not survive a restart.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, BytesMut};
use tracing::{info, warn};

use crate::config::PersistenceConfig;
use crate::protocol::{self, Decoder, Packet, ProtocolVersion, QoS};
use crate::session::Message;
use crate::store::{BatchPolicy, Committer, Engine, FjallEngine, Op, Space, StoreError, Ticket};

/// Record format of a stored message.
const MESSAGE_RECORD_V1: u8 = 1;

/// The broker's side of the store.
pub struct Durable {
    committer: Committer,
}

/// What was read back at start.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Retained messages still within their expiry.
    pub retained: Vec<Arc<Message>>,
    /// Records that could not be read and were dropped, each logged with its key.
    pub unreadable: usize,
}

impl Durable {
    /// Opens the store in `config.path` and reads back what it holds.
    pub fn open(config: &PersistenceConfig) -> Result<(Durable, Recovered), StoreError> {
        let started = Instant::now();
        std::fs::create_dir_all(&config.path).map_err(|e| StoreError::Engine {
            path: config.path.clone(),
            message: e.to_string(),
        })?;
        let engine = FjallEngine::open(&config.path)?;
        let (recovered, cleanup) = recover(&engine)?;
        let policy = BatchPolicy {
            max_ops: config.batch_max_operations,
            max_wait: Duration::from_micros(config.batch_wait_us),
            durability: config.durability,
        };
        let committer =
            Committer::start(Box::new(engine), policy).map_err(|e| StoreError::Engine {
                path: config.path.clone(),
                message: e.to_string(),
            })?;
        if !cleanup.is_empty() {
            committer.submit_detached(cleanup);
        }
        info!(
            path = %config.path.display(),
            retained = recovered.retained.len(),
            unreadable = recovered.unreadable,
            took_ms = started.elapsed().as_millis() as u64,
            "store opened"
        );
        Ok((Durable { committer }, recovered))
    }

    /// Records a retained message (an empty payload deletes it); the ticket completes once that
    /// is durable.
    pub fn retain(&self, msg: &Message) -> Ticket {
        let key = msg.topic().as_bytes().to_vec();
        let op = if msg.publish.payload.is_empty() {
            Op::Delete(Space::Retained, key)
        } else {
            Op::Put(Space::Retained, key, encode_message(msg))
        };
        self.committer.submit(vec![op])
    }
}

/// Reads every retained message back; returns the deletes for records that expired or could not
/// be read.
fn recover(engine: &dyn Engine) -> Result<(Recovered, Vec<Op>), StoreError> {
    let mut recovered = Recovered::default();
    let mut cleanup = Vec::new();
    let now = (Instant::now(), SystemTime::now());
    engine.scan(Space::Retained, b"", &mut |key, value| {
        match decode_message(value, now) {
            Ok(Some(msg)) if msg.topic().as_bytes() == key => {
                recovered.retained.push(Arc::new(msg));
            }
            Ok(None) => cleanup.push(Op::Delete(Space::Retained, key.to_vec())),
            Ok(Some(_)) | Err(_) => {
                warn!(key = %String::from_utf8_lossy(key), "unreadable retained message dropped");
                recovered.unreadable += 1;
                cleanup.push(Op::Delete(Space::Retained, key.to_vec()));
            }
        }
        true
    })?;
    Ok((recovered, cleanup))
}

/// Header (format, expiry in Unix milliseconds or 0) then the message as a v5 PUBLISH.
fn encode_message(msg: &Message) -> Vec<u8> {
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

/// A stored message; `Ok(None)` if it has expired.
fn decode_message(
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
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::protocol::{Publish, PublishProperties};

    fn message(expiry: Option<u32>) -> Message {
        let publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "a/b".into(),
            pkid: 9,
            payload: bytes::Bytes::from_static(b"payload"),
            properties: PublishProperties {
                message_expiry_interval: expiry,
                content_type: Some("text/plain".into()),
                user_properties: vec![("k".into(), "v".into())],
                ..PublishProperties::default()
            },
        };
        Message::new(publish, None, Instant::now())
    }

    /// A stored message comes back with topic, payload, QoS, retain flag and properties, and
    /// with the expiry it had left.
    #[test]
    fn message_round_trips() {
        let msg = message(Some(3600));
        let back = decode_message(&encode_message(&msg), (Instant::now(), SystemTime::now()))
            .unwrap()
            .unwrap();
        assert_eq!(back.publish, msg.publish);
        let left = back.remaining_expiry(Instant::now()).unwrap();
        assert!((3598..=3600).contains(&left), "{left}");
        let plain = message(None);
        let back = decode_message(&encode_message(&plain), (Instant::now(), SystemTime::now()))
            .unwrap()
            .unwrap();
        assert_eq!(back.expires_at, None);
    }

    /// A message whose expiry passed while Tern was down is not restored.
    #[test]
    fn expired_message_is_not_restored() {
        let record = encode_message(&message(Some(1)));
        let later = SystemTime::now() + Duration::from_secs(5);
        assert!(decode_message(&record, (Instant::now(), later))
            .unwrap()
            .is_none());
    }

    /// Damaged records are errors, never panics.
    #[test]
    fn damaged_records_are_refused() {
        let record = encode_message(&message(None));
        for cut in 0..record.len() {
            assert!(decode_message(&record[..cut], (Instant::now(), SystemTime::now())).is_err());
        }
        let mut extra = record.clone();
        extra.push(0);
        assert!(decode_message(&extra, (Instant::now(), SystemTime::now())).is_err());
        let mut other = record;
        other[0] = 9;
        assert!(decode_message(&other, (Instant::now(), SystemTime::now())).is_err());
    }
}
