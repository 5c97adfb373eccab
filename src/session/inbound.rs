//! The session as receiver: the acknowledgement each accepted PUBLISH gets, and the packet ids
//! of inbound QoS 2 messages between PUBLISH and PUBREL, so a message sent again before PUBREL
//! is forwarded once [MQTT-4.3.3-10].

use super::effect::{AckOutcome, Effect, Qos2In, Reply, ReplyKind, StoreOp};
use super::Session;
use crate::protocol::{PacketId, QoS, ReasonCode};
use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};

/// Numbers inbound QoS 2 messages ([`Session::inbound_qos2_serial`]): a random upper half
/// drawn at start and a count, so numbers from different processes (the nodes of a cluster,
/// a node and its next run) do not meet.
static NEXT_SERIAL: std::sync::LazyLock<AtomicU64> =
    std::sync::LazyLock::new(|| AtomicU64::new(u64::from(rand::random::<u32>()) << 32 | 1));

/// What few sessions hold, boxed only while there is some: most sessions never receive QoS 2
/// and run outside a cluster, and two more words inline in every idle client's session would
/// take it from jemalloc's 64-byte class to the 80-byte one.
#[derive(Debug, Default)]
pub(super) struct Seldom(Option<Box<SeldomFields>>);

#[derive(Debug, Default)]
struct SeldomFields {
    /// Inbound QoS 2 ids awaiting PUBREL, each with its serial number.
    awaiting: BTreeMap<PacketId, u64>,
    /// Cluster mode: see [`Session::claim`].
    claim: Option<NonZeroU64>,
}

impl Seldom {
    fn awaiting(&self) -> Option<&BTreeMap<PacketId, u64>> {
        self.0.as_ref().map(|f| &f.awaiting)
    }

    fn contains(&self, pkid: PacketId) -> bool {
        self.awaiting().is_some_and(|m| m.contains_key(&pkid))
    }

    fn len(&self) -> usize {
        self.awaiting().map_or(0, BTreeMap::len)
    }

    fn get(&self, pkid: PacketId) -> Option<u64> {
        self.awaiting().and_then(|m| m.get(&pkid).copied())
    }

    fn insert(&mut self, pkid: PacketId, serial: u64) {
        self.0
            .get_or_insert_with(Box::default)
            .awaiting
            .insert(pkid, serial);
    }

    /// Whether `pkid` was there.
    fn remove(&mut self, pkid: PacketId) -> bool {
        let Some(f) = &mut self.0 else {
            return false;
        };
        let was = f.awaiting.remove(&pkid).is_some();
        self.drop_if_empty();
        was
    }

    /// Takes every id awaiting PUBREL.
    fn take_awaiting(&mut self) -> BTreeMap<PacketId, u64> {
        let taken = self
            .0
            .as_mut()
            .map(|f| std::mem::take(&mut f.awaiting))
            .unwrap_or_default();
        self.drop_if_empty();
        taken
    }

    fn iter(&self) -> impl Iterator<Item = (PacketId, u64)> + '_ {
        self.awaiting()
            .into_iter()
            .flat_map(|m| m.iter().map(|(p, s)| (*p, *s)))
    }

    pub(super) fn claim(&self) -> Option<NonZeroU64> {
        self.0.as_ref().and_then(|f| f.claim)
    }

    pub(super) fn set_claim(&mut self, claim: Option<NonZeroU64>) {
        if claim.is_some() {
            self.0.get_or_insert_with(Box::default).claim = claim;
        } else if let Some(f) = &mut self.0 {
            f.claim = None;
            self.drop_if_empty();
        }
    }

    fn drop_if_empty(&mut self) {
        if self
            .0
            .as_ref()
            .is_some_and(|f| f.awaiting.is_empty() && f.claim.is_none())
        {
            self.0 = None;
        }
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
        if self.seldom.contains(pkid) {
            out.push(Effect::Reply(Reply::new(
                ReplyKind::PubRec,
                pkid,
                ReasonCode::Success,
            )));
            return Qos2In::Duplicate;
        }
        if self.seldom.len() >= receive_maximum {
            return Qos2In::OverLimit;
        }
        self.seldom
            .insert(pkid, NEXT_SERIAL.fetch_add(1, Ordering::Relaxed));
        Qos2In::New
    }

    /// The number given the inbound QoS 2 message under `pkid` when it first came (unique
    /// across processes, the same for every copy sent before PUBREL): cluster mode stores each
    /// such message once by it, and keeps it with a persistent session, so a copy sent again
    /// to another node is stored once too.
    pub fn inbound_qos2_serial(&self, pkid: PacketId) -> Option<u64> {
        self.seldom.get(pkid)
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
                if reason.is_error() && self.seldom.remove(pkid) {
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
        let (reason, outcome) = if self.seldom.remove(pkid) {
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
        self.seldom
            .insert(pkid, NEXT_SERIAL.fetch_add(1, Ordering::Relaxed));
    }

    /// An inbound QoS 2 id that awaited PUBREL, with its number, as the cluster kept them.
    pub fn restore_inbound_qos2_serial(&mut self, pkid: PacketId, serial: u64) {
        self.seldom.insert(pkid, serial);
    }

    /// Inbound QoS 2 ids awaiting PUBREL, with their numbers.
    pub fn inbound_qos2_serials(&self) -> impl Iterator<Item = (PacketId, u64)> + '_ {
        self.seldom.iter()
    }

    /// Forgets every inbound QoS 2 id awaiting PUBREL, in the store too (a bridge's remote that
    /// lost its session will not send PUBREL for them, and will reuse the ids).
    pub fn forget_inbound_qos2(&mut self, out: &mut Vec<Effect>) {
        for pkid in self.seldom.take_awaiting().into_keys() {
            out.push(Effect::Store(StoreOp::InboundReleased(pkid)));
        }
    }

    /// Inbound QoS 2 messages awaiting PUBREL (counted against the receive maximum).
    pub fn inbound_qos2_len(&self) -> usize {
        self.seldom.len()
    }
}
