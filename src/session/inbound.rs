//! The session as receiver: the acknowledgement each accepted PUBLISH gets, and the packet ids
//! of inbound QoS 2 messages between PUBLISH and PUBREL, so a message sent again before PUBREL
//! is forwarded once [MQTT-4.3.3-10].

use super::effect::{AckOutcome, Effect, Qos2In, Reply, ReplyKind, StoreOp};
use super::Session;
use crate::protocol::{PacketId, QoS, ReasonCode};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Numbers inbound QoS 2 messages ([`Session::inbound_qos2_serial`]): a random upper half
/// drawn at start and a count, so numbers from different processes (the nodes of a cluster,
/// a node and its next run) do not meet.
static NEXT_SERIAL: std::sync::LazyLock<AtomicU64> =
    std::sync::LazyLock::new(|| AtomicU64::new(u64::from(rand::random::<u32>()) << 32 | 1));

/// Inbound QoS 2 ids awaiting PUBREL, each with its serial number. Boxed and dropped once
/// empty: most sessions never receive QoS 2, and an empty `BTreeMap` inline is three words of
/// every idle client's session (the difference between jemalloc's 96- and 80-byte classes).
#[derive(Debug, Default)]
#[allow(clippy::box_collection)]
pub(super) struct AwaitingRelease(Option<Box<BTreeMap<PacketId, u64>>>);

impl AwaitingRelease {
    fn contains(&self, pkid: PacketId) -> bool {
        self.0.as_ref().is_some_and(|m| m.contains_key(&pkid))
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }

    fn get(&self, pkid: PacketId) -> Option<u64> {
        self.0.as_ref().and_then(|m| m.get(&pkid).copied())
    }

    fn insert(&mut self, pkid: PacketId, serial: u64) {
        self.0.get_or_insert_with(Box::default).insert(pkid, serial);
    }

    /// Whether `pkid` was there.
    fn remove(&mut self, pkid: PacketId) -> bool {
        let Some(m) = &mut self.0 else {
            return false;
        };
        let was = m.remove(&pkid).is_some();
        if m.is_empty() {
            self.0 = None;
        }
        was
    }

    fn iter(&self) -> impl Iterator<Item = (PacketId, u64)> + '_ {
        self.0.iter().flat_map(|m| m.iter().map(|(p, s)| (*p, *s)))
    }
}

impl Session {
    /// An inbound QoS 2 PUBLISH under `pkid`, with at most `receive_maximum` such messages
    /// awaiting PUBREL. A new one is remembered until PUBREL; one sent again is acknowledged
    /// again (PUBREC appended) and not forwarded.
    pub fn on_publish_qos2(
        &mut self,
        pkid: PacketId,
        receive_maximum: usize,
        out: &mut Vec<Effect>,
    ) -> Qos2In {
        if self.inbound_qos2.contains(pkid) {
            out.push(Effect::Reply(Reply::new(
                ReplyKind::PubRec,
                pkid,
                ReasonCode::Success,
            )));
            return Qos2In::Duplicate;
        }
        if self.inbound_qos2.len() >= receive_maximum {
            return Qos2In::OverLimit;
        }
        self.inbound_qos2
            .insert(pkid, NEXT_SERIAL.fetch_add(1, Ordering::Relaxed));
        Qos2In::New
    }

    /// The number given the inbound QoS 2 message under `pkid` when it first came (unique
    /// across processes, the same for every copy sent before PUBREL): cluster mode stores each
    /// such message once by it, and keeps it with a persistent session, so a copy sent again
    /// to another node is stored once too.
    pub fn inbound_qos2_serial(&self, pkid: PacketId) -> Option<u64> {
        self.inbound_qos2.get(pkid)
    }

    /// Acknowledges an inbound PUBLISH at `qos` under `pkid` with `reason` (PUBACK or PUBREC;
    /// nothing at QoS 0). A QoS 2 message refused (reason ≥ 0x80) ends its flow at PUBREC: the
    /// same id next time is a new message [MQTT-4.3.3-9].
    pub fn acknowledge(
        &mut self,
        qos: QoS,
        pkid: Option<PacketId>,
        reason: ReasonCode,
        out: &mut Vec<Effect>,
    ) {
        let Some(pkid) = pkid else {
            return;
        };
        let kind = match qos {
            QoS::AtMostOnce => return,
            QoS::AtLeastOnce => ReplyKind::PubAck,
            QoS::ExactlyOnce => {
                if reason.is_error() && self.inbound_qos2.remove(pkid) {
                    // Stored with the message's batch when the session is stored.
                    out.push(Effect::Store(StoreOp::InboundReleased(pkid)));
                }
                ReplyKind::PubRec
            }
        };
        out.push(Effect::Reply(Reply::new(kind, pkid, reason)));
    }

    /// PUBREL from the sender: the id is free again, PUBCOMP. An unknown id gets PUBCOMP 0x92
    /// (Packet Identifier not found), so the sender can end its side all the same.
    pub fn on_pubrel(&mut self, pkid: PacketId, out: &mut Vec<Effect>) -> AckOutcome {
        let (reason, outcome) = if self.inbound_qos2.remove(pkid) {
            out.push(Effect::Store(StoreOp::InboundReleased(pkid)));
            (ReasonCode::Success, AckOutcome::Done)
        } else {
            (ReasonCode::PacketIdentifierNotFound, AckOutcome::Unknown)
        };
        out.push(Effect::Reply(Reply::new(ReplyKind::PubComp, pkid, reason)));
        outcome
    }

    /// An inbound QoS 2 id that awaited PUBREL when the session was stored.
    pub fn restore_inbound_qos2(&mut self, pkid: PacketId) {
        self.inbound_qos2
            .insert(pkid, NEXT_SERIAL.fetch_add(1, Ordering::Relaxed));
    }

    /// An inbound QoS 2 id that awaited PUBREL, with its number, as the cluster kept them.
    pub fn restore_inbound_qos2_serial(&mut self, pkid: PacketId, serial: u64) {
        self.inbound_qos2.insert(pkid, serial);
    }

    /// Inbound QoS 2 ids awaiting PUBREL, with their numbers.
    pub fn inbound_qos2_serials(&self) -> impl Iterator<Item = (PacketId, u64)> + '_ {
        self.inbound_qos2.iter()
    }

    /// Forgets every inbound QoS 2 id awaiting PUBREL, in the store too (a bridge's remote that
    /// lost its session will not send PUBREL for them, and will reuse the ids).
    pub fn forget_inbound_qos2(&mut self, out: &mut Vec<Effect>) {
        for (pkid, _) in std::mem::take(&mut self.inbound_qos2).iter() {
            out.push(Effect::Store(StoreOp::InboundReleased(pkid)));
        }
    }

    /// Inbound QoS 2 messages awaiting PUBREL (counted against the receive maximum).
    pub fn inbound_qos2_len(&self) -> usize {
        self.inbound_qos2.len()
    }
}
