//! The QoS 1/2 and persistence behaviour of a session, as a table of events and the effects
//! they give, without tokio or sockets. The session is the same code whoever carries it out:
//! every outbound case runs for a client's session (broker to client) and for a bridge's
//! (`$bridge/…`, bridge to remote); what differs between MQTT 3.1.1 and 5.0 is only the
//! encoding of the replies, checked in `versions`.

mod delivery;
mod gate;
mod inbound;
mod outbound;
mod queued;
mod versions;
mod window;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::protocol::{PacketId, Publish, PublishProperties, QoS, ReasonCode};

/// Both roles of a sending session: a client's, and a bridge's towards its remote.
const ROLES: [&str; 2] = ["device-7", "$bridge/cloud"];

fn message(n: u8, expiry: Option<u32>, now: Instant) -> Arc<Message> {
    let publish = Publish {
        dup: false,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: format!("t/{n}"),
        pkid: 0,
        payload: Bytes::from(vec![n]),
        properties: PublishProperties {
            message_expiry_interval: expiry,
            ..PublishProperties::default()
        }
        .into(),
    };
    Arc::new(Message::new(publish, None, now))
}

/// Delivery `n` at `qos`, stored under sequence `seq` (0: not stored).
fn delivery(qos: QoS, n: u8, seq: u64) -> Delivery {
    Delivery::new(message(n, None, Instant::now()), qos, false).with_seq(Seq::new(seq))
}

fn seq(n: u64) -> Seq {
    Seq::new(n).unwrap()
}

fn id(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn session(role: &str, window: u16) -> Session {
    Session::new(role.into(), 0, window)
}

/// An effect reduced to what a table row compares.
#[derive(Debug, PartialEq, Eq)]
enum E {
    /// PUBLISH: payload byte, packet id (0 for none), DUP.
    Publish(u8, u16, bool),
    Reply(ReplyKind, u16, ReasonCode),
    Store(StoreOp),
    Durable(StoreOp),
    Dropped(&'static str),
    /// A queue's delivery: its id there, how it ended.
    Settle(u64, Settled),
}

/// Takes the effects appended so far, reduced.
fn took(out: &mut Vec<Effect>) -> Vec<E> {
    out.drain(..)
        .map(|e| match e {
            Effect::Publish {
                pkid,
                dup,
                delivery,
            } => E::Publish(
                delivery.msg.publish.payload[0],
                pkid.map_or(0, PacketId::get),
                dup,
            ),
            Effect::Reply(r) => E::Reply(r.kind, r.pkid.get(), r.reason),
            Effect::Store(op) => E::Store(op),
            Effect::Durable(op) => E::Durable(op),
            Effect::Dropped(why) => E::Dropped(why),
            Effect::Settle(link, how) => E::Settle(link.id.get(), how),
        })
        .collect()
}

/// Starts `d` and returns the packet id it got.
fn start(s: &mut Session, d: Delivery, out: &mut Vec<Effect>) -> u16 {
    s.start(d, Instant::now(), out);
    match out.last() {
        Some(Effect::Publish { pkid, .. }) => pkid.map_or(0, PacketId::get),
        other => panic!("no PUBLISH: {other:?}"),
    }
}

/// [MQTT-3.3.2-5] A message that expired while queued is dropped, not sent; a stored one is
/// no longer owed. The interval forwarded is what remains.
#[test]
fn expired_messages_are_dropped() {
    for role in ROLES {
        let mut s = session(role, 10);
        let mut out = Vec::new();
        let now = Instant::now();
        let msg = message(1, Some(10), now);
        assert_eq!(
            msg.remaining_expiry(now + Duration::from_millis(2500)),
            Some(8)
        );
        let d = |seq_no| {
            Delivery::new(Arc::clone(&msg), QoS::AtLeastOnce, false).with_seq(Seq::new(seq_no))
        };
        s.start(d(5), now + Duration::from_secs(11), &mut out);
        assert_eq!(
            took(&mut out),
            [E::Dropped("expired"), E::Store(StoreOp::Delivered(seq(5)))]
        );
        s.start(d(0), now + Duration::from_secs(11), &mut out);
        assert_eq!(took(&mut out), [E::Dropped("expired")]);
        assert_eq!(s.inflight_len(), 0);
        s.start(d(0), now + Duration::from_secs(1), &mut out);
        assert_eq!(took(&mut out), [E::Publish(1, 1, false)]);
    }
}

/// A delivery the carrier cannot send (too large for the receiver) is dropped and released.
#[test]
fn undeliverable_messages_are_released() {
    for role in ROLES {
        let mut s = session(role, 10);
        let mut out = Vec::new();
        s.drop_delivery(&delivery(QoS::AtLeastOnce, 1, 9), "too_large", &mut out);
        assert_eq!(
            took(&mut out),
            [
                E::Dropped("too_large"),
                E::Store(StoreOp::Delivered(seq(9)))
            ]
        );
        s.drop_delivery(&delivery(QoS::AtLeastOnce, 1, 0), "too_large", &mut out);
        assert_eq!(took(&mut out), [E::Dropped("too_large")]);
    }
}

/// The effects `Vec` is the caller's: events append to it and never take its room away.
#[test]
fn effects_reuse_the_callers_vec() {
    let mut s = session(ROLES[0], 100);
    let mut out = Vec::with_capacity(8);
    let room = out.capacity();
    for n in 0..50 {
        let pkid = start(&mut s, delivery(QoS::AtLeastOnce, n, 0), &mut out);
        out.clear();
        s.on_puback(id(pkid), &mut out);
        out.clear();
    }
    assert_eq!(out.capacity(), room);
}
