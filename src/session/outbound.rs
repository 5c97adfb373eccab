//! The session as sender: QoS 1/2 flows of the messages it delivers (to its client, or a bridge's
//! to its remote). Packet ids, the inflight window, PUBACK, PUBREC/PUBREL/PUBCOMP, the ordered
//! resend on resume, and what the store must learn at each step.

use std::time::Instant;

use super::effect::{AckOutcome, Effect, Reply, ReplyKind, Settled, StoreOp};
use super::{count_inflight, Delivery, Link, Seq, Session};
use crate::protocol::{PacketId, QoS, ReasonCode};

/// Where a QoS 1/2 message sent by the session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OutState {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// PUBREC received and PUBREL sent, waiting for PUBCOMP.
    Released,
}

/// One outbound flow.
#[derive(Debug, Clone)]
pub(super) struct Inflight {
    pub(super) pkid: PacketId,
    pub(super) qos: QoS,
    pub(super) state: OutState,
    /// The message while it may have to be sent again; gone once the receiver has it
    /// (PUBREC), and for a PUBREL read back from the store.
    pub(super) delivery: Option<Delivery>,
    /// The queue that handed the message out, kept past PUBREC: it hears of PUBCOMP.
    pub(super) link: Option<Link>,
}

impl Inflight {
    fn seq(&self) -> Option<Seq> {
        self.delivery.as_ref().and_then(|d| d.seq)
    }

    /// The queue that handed it out hears how it ended.
    fn settle(&self, how: Settled, out: &mut Vec<Effect>) {
        if let Some(link) = self.link {
            out.push(Effect::Settle(link, how));
        }
    }
}

impl Session {
    /// Sets the outbound window for the current connection (config maximum, capped by the
    /// receiver's Receive Maximum). Flows already inflight stay; new ones wait below the window.
    pub fn set_window(&mut self, window: u16) {
        self.window = window.max(1);
    }

    /// QoS 1/2 messages that may be in flight at once.
    pub fn window(&self) -> u16 {
        self.window
    }

    /// How many more QoS 1/2 messages may be sent now.
    pub fn window_free(&self) -> usize {
        usize::from(self.window).saturating_sub(self.inflight.len())
    }

    /// Number of unacknowledged outbound messages.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// Starts sending `d`: a PUBLISH (QoS 1/2 under a fresh packet id, in the window), or a
    /// drop if it expired while it waited [MQTT-3.3.2-5]. A stored QoS 2 message goes out only
    /// once the store knows its packet id; a stored QoS 0 one is done with once sent. The
    /// caller checks [`Session::window_free`] before starting a QoS 1/2 delivery.
    pub fn start(&mut self, d: Delivery, now: Instant, out: &mut Vec<Effect>) {
        if d.msg.is_expired(now) {
            return self.drop_delivery(&d, "expired", out);
        }
        if d.qos == QoS::AtMostOnce {
            let (seq, link) = (d.seq, d.link());
            out.push(Effect::Publish {
                pkid: None,
                // DUP is for QoS 1/2 only [MQTT-3.3.1-2].
                dup: false,
                delivery: d,
            });
            if let Some(seq) = seq {
                out.push(Effect::Store(StoreOp::Delivered(seq)));
            }
            if let Some(link) = link {
                out.push(Effect::Settle(link, Settled::Consumed));
            }
            return;
        }
        let pkid = self.allocate_pkid();
        if let (QoS::ExactlyOnce, Some(seq)) = (d.qos, d.seq) {
            // QoS 2 only: a QoS 1 message may arrive twice anyway, and storing its id would
            // cost a write per delivery.
            out.push(Effect::Durable(StoreOp::Sent(pkid, seq)));
        }
        self.inflight.push_back(Inflight {
            pkid,
            qos: d.qos,
            state: OutState::Published,
            link: d.link(),
            delivery: Some(d.clone()),
        });
        count_inflight(1);
        out.push(Effect::Publish {
            pkid: Some(pkid),
            dup: d.dup,
            delivery: d,
        });
    }

    /// A delivery the carrier cannot send (`reason`: e.g. too large for the receiver): dropped,
    /// no longer owed in the store, and its queue, if a queue handed it out, is told.
    pub fn drop_delivery(&mut self, d: &Delivery, reason: &'static str, out: &mut Vec<Effect>) {
        out.push(Effect::Dropped(reason));
        if let Some(seq) = d.seq {
            out.push(Effect::Store(StoreOp::Delivered(seq)));
        }
        if let Some(link) = d.link() {
            out.push(Effect::Settle(link, Settled::Dropped(reason)));
        }
    }

    /// The next packet id not in use, counting on from the last one given (so an id comes
    /// back only after every other free one was used): O(1) amortized (`Flights::free_from`).
    fn allocate_pkid(&mut self) -> PacketId {
        // The window is at most 65535 entries, so a free id exists when a flow may start.
        let id = self
            .inflight
            .free_from(self.next_pkid)
            .unwrap_or(self.next_pkid);
        self.next_pkid = id.next();
        id
    }

    /// `pkid`'s flow, if it is in `state` at `qos`.
    fn check(&self, pkid: PacketId, state: OutState, qos: QoS) -> Result<(), AckOutcome> {
        match self.inflight.get(pkid) {
            None => Err(AckOutcome::Unknown),
            Some(e) if e.state == state && e.qos == qos => Ok(()),
            Some(_) => Err(AckOutcome::WrongFlow),
        }
    }

    fn remove(&mut self, pkid: PacketId) -> Option<Inflight> {
        let entry = self.inflight.remove(pkid)?;
        count_inflight(-1);
        Some(entry)
    }

    /// PUBACK from the receiver: a QoS 1 flow ends.
    pub fn on_puback(&mut self, pkid: PacketId, out: &mut Vec<Effect>) -> AckOutcome {
        if let Err(outcome) = self.check(pkid, OutState::Published, QoS::AtLeastOnce) {
            return outcome;
        }
        self.end_flow(pkid, Settled::Consumed, out);
        AckOutcome::Done
    }

    /// Ends the flow of `pkid` before the receiver had the message (acknowledged, refused, or
    /// given up): the store and the queue that handed it out learn `how`.
    fn end_flow(&mut self, pkid: PacketId, how: Settled, out: &mut Vec<Effect>) {
        if let Some(e) = self.remove(pkid) {
            if let Some(seq) = e.seq() {
                out.push(Effect::Store(StoreOp::Acked(pkid, seq)));
            }
            e.settle(how, out);
        }
    }

    /// PUBREC from the receiver: PUBREL, once the store holds the flow at PUBREL (after it the
    /// PUBLISH is never sent again) [MQTT-4.3.3-4]; a refusal (reason ≥ 0x80) ends the flow
    /// there [MQTT-4.3.3-9]. A PUBREC for an unknown id is answered with PUBREL 0x92 (Packet
    /// Identifier not found), so the receiver can end its side.
    pub fn on_pubrec(
        &mut self,
        pkid: PacketId,
        reason: ReasonCode,
        out: &mut Vec<Effect>,
    ) -> AckOutcome {
        let rel = |reason| Effect::Reply(Reply::new(ReplyKind::PubRel, pkid, reason));
        match self.check(pkid, OutState::Published, QoS::ExactlyOnce) {
            Ok(()) => {}
            Err(AckOutcome::WrongFlow)
                if self
                    .check(pkid, OutState::Released, QoS::ExactlyOnce)
                    .is_ok() =>
            {
                // A PUBREC again: PUBREL again [MQTT-4.3.3-4].
                out.push(rel(ReasonCode::Success));
                return AckOutcome::Done;
            }
            Err(AckOutcome::Unknown) => {
                if !reason.is_error() {
                    out.push(rel(ReasonCode::PacketIdentifierNotFound));
                }
                return AckOutcome::Unknown;
            }
            Err(outcome) => return outcome,
        }
        if reason.is_error() {
            self.end_flow(pkid, Settled::Consumed, out);
            return AckOutcome::Done;
        }
        let Some(entry) = self.inflight.get_mut(pkid) else {
            return AckOutcome::Unknown;
        };
        entry.state = OutState::Released;
        if let Some(seq) = entry.delivery.take().and_then(|d| d.seq) {
            out.push(Effect::Durable(StoreOp::Released(pkid, seq)));
        }
        entry.settle(Settled::Received, out);
        out.push(rel(ReasonCode::Success));
        AckOutcome::Done
    }

    /// PUBCOMP from the receiver: a QoS 2 flow ends.
    pub fn on_pubcomp(&mut self, pkid: PacketId, out: &mut Vec<Effect>) -> AckOutcome {
        match self.check(pkid, OutState::Released, QoS::ExactlyOnce) {
            Ok(()) => {
                if let Some(e) = self.remove(pkid) {
                    e.settle(Settled::Consumed, out);
                }
                out.push(Effect::Store(StoreOp::Completed(pkid)));
                AckOutcome::Done
            }
            Err(outcome) => outcome,
        }
    }

    /// Ends the flow of `pkid`, not yet received, as a refusal would (the carrier cannot send it
    /// again: e.g. a bridge's new remote takes less than the old one did).
    pub fn abandon(&mut self, pkid: PacketId, reason: &'static str, out: &mut Vec<Effect>) {
        if self
            .check(pkid, OutState::Published, QoS::AtLeastOnce)
            .or_else(|_| self.check(pkid, OutState::Published, QoS::ExactlyOnce))
            .is_err()
        {
            return;
        }
        out.push(Effect::Dropped(reason));
        self.end_flow(pkid, Settled::Dropped(reason), out);
    }

    /// What the receiver has not acknowledged, again, in the original order [MQTT-4.4.0-1]:
    /// PUBLISH with DUP set, PUBREL.
    pub fn resend(&self, out: &mut Vec<Effect>) {
        for e in self.inflight.iter() {
            match (e.state, &e.delivery) {
                (OutState::Published, Some(d)) => out.push(Effect::Publish {
                    pkid: Some(e.pkid),
                    dup: true,
                    delivery: d.clone(),
                }),
                (OutState::Published, None) => {}
                (OutState::Released, _) => out.push(Effect::Reply(Reply::new(
                    ReplyKind::PubRel,
                    e.pkid,
                    ReasonCode::Success,
                ))),
            }
        }
    }

    /// Whether a flow is in progress under `pkid` (for ids of other packets, e.g. a bridge's
    /// SUBSCRIBE).
    pub fn in_flight(&self, pkid: PacketId) -> bool {
        self.inflight.contains(pkid)
    }

    /// Stored sequence numbers of the messages inflight (sent, not yet acknowledged).
    pub fn stored_seqs(&self) -> impl Iterator<Item = Seq> + '_ {
        self.inflight.iter().filter_map(Inflight::seq)
    }

    /// Deliveries that were sent under these packet ids and not acknowledged when the session
    /// was stored, in sending order: sent again on resume, with DUP, under the same ids (`None`:
    /// it may have been sent, its id is not known; a fresh one is given).
    pub fn restore_inflight(&mut self, restored: Vec<(Option<PacketId>, Delivery)>) {
        // Fresh ids, clear of every id in use or restored: the known ones are all reserved
        // before the first fresh one is given.
        let mut known: Vec<u16> = restored
            .iter()
            .filter_map(|(pkid, _)| pkid.map(PacketId::get))
            .collect();
        known.sort_unstable();
        for (pkid, delivery) in restored {
            let pkid = match pkid {
                // A store that somehow holds an id twice: the second gets a fresh one.
                Some(pkid) if !self.inflight.contains(pkid) => Some(pkid),
                _ => self.fresh_pkid(&known),
            };
            // More than 65,535 (only from a damaged store): the rest are not resent.
            let Some(pkid) = pkid else { break };
            count_inflight(1);
            self.inflight.push_back(Inflight {
                pkid,
                qos: delivery.qos,
                state: OutState::Published,
                link: delivery.link(),
                delivery: Some(delivery),
            });
        }
    }

    /// A free packet id that is not in `known` (sorted); `None` if there is none.
    fn fresh_pkid(&mut self, known: &[u16]) -> Option<PacketId> {
        for _ in 0..=u16::MAX {
            let id = self.inflight.free_from(self.next_pkid)?;
            self.next_pkid = id.next();
            if known.binary_search(&id.get()).is_err() {
                return Some(id);
            }
        }
        None
    }

    /// A PUBREL that was outstanding when the session was stored: sent again on resume.
    pub fn restore_released(&mut self, pkid: PacketId) {
        if self.inflight.contains(pkid) {
            // Only from a damaged store: one flow per id.
            return;
        }
        count_inflight(1);
        self.inflight.push_back(Inflight {
            pkid,
            qos: QoS::ExactlyOnce,
            state: OutState::Released,
            delivery: None,
            link: None,
        });
    }

    /// Takes back the QoS 1 messages in flight that came through a shared subscription or a
    /// queue and were not acknowledged, so they can go to another member or consumer (with DUP
    /// set). A QoS 2 message stays: its delivery is completed to this session when its client
    /// is back, and never sent to another [MQTT-4.8.2-4] [MQTT-4.8.2-5].
    pub fn take_unreceived(&mut self) -> Vec<Delivery> {
        let mut taken = Vec::new();
        self.inflight.retain(|e| match &e.delivery {
            Some(d)
                if d.link().is_some()
                    && e.qos == QoS::AtLeastOnce
                    && e.state == OutState::Published =>
            {
                let mut d = d.clone();
                d.dup = true;
                taken.push(d);
                false
            }
            _ => true,
        });
        count_inflight(-(taken.len() as i64));
        taken
    }

    /// The session is ending: how each queue's delivery still in flight ended. One the receiver
    /// had (PUBREC) counts as consumed; any other is dropped, never sent to another consumer
    /// [MQTT-4.8.2-5].
    pub fn settle_ended(&self, out: &mut Vec<Effect>) {
        for e in self.inflight.iter() {
            let how = match e.state {
                OutState::Released => Settled::Consumed,
                OutState::Published => Settled::Dropped("session_ended"),
            };
            e.settle(how, out);
        }
    }
}
