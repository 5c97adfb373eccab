//! What outlives a connection: the per-client state machine for QoS 1/2 flows, packet ids, the
//! outbound inflight window and the inbound QoS 2 set. Pure data, no tokio and no sockets, so every
//! flow is unit-tested with an injected `now`.
//! Invariants kept here: inflight ≤ window, unique packet ids, in-order DUP resend on resume,
//! inbound QoS 2 forwarded once until PUBREL.

mod message;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub use message::{Delivery, Message, SharedTag};

/// Outbound QoS 1/2 flows in progress across every session (for the metrics): kept by each
/// change to a session's inflight list, and by a session's drop.
static INFLIGHT: AtomicI64 = AtomicI64::new(0);

/// Outbound QoS 1/2 deliveries sent and not yet completed, in all sessions.
pub fn inflight_total() -> i64 {
    INFLIGHT.load(Ordering::Relaxed)
}

use crate::protocol::{QoS, ReasonCode, SubscriptionOptions};

/// Session Expiry Interval meaning "never expires".
pub const NEVER_EXPIRES: u32 = u32::MAX;

/// One subscription as the client made it; the router holds the matching index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Options from SUBSCRIBE.
    pub options: SubscriptionOptions,
    /// v5 Subscription Identifier.
    pub id: Option<u32>,
}

/// Where a QoS 1/2 message sent to the client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// PUBREC received and PUBREL sent, waiting for PUBCOMP.
    Released,
}

#[derive(Debug, Clone)]
struct Inflight {
    pkid: u16,
    qos: QoS,
    state: OutState,
    /// The message while it may have to be sent again; gone once the client has it (PUBREC),
    /// and for a PUBREL restored from the store.
    delivery: Option<Delivery>,
}

/// What to (re)send for one inflight entry when a session resumes.
#[derive(Debug)]
pub enum Resend<'a> {
    /// The PUBLISH again, with DUP set.
    Publish {
        /// Its packet id.
        pkid: u16,
        /// The delivery.
        delivery: &'a Delivery,
    },
    /// PUBREL again.
    PubRel(u16),
}

/// What an acknowledgement that matches no flow waiting for it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unexpected {
    /// No message is in flight under this packet id (e.g. acknowledged twice).
    Unknown,
    /// The packet id belongs to a flow that does not take this acknowledgement: PUBACK for a
    /// QoS 2 message, PUBREC for a QoS 1 one, PUBCOMP before PUBREL. A protocol violation.
    WrongFlow,
}

/// What a PUBREC means for the outbound flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubRecOutcome {
    /// Send PUBREL for this packet id; `seq` is the stored delivery it releases (0: none, or
    /// a repeated PUBREC).
    SendPubRel {
        /// Stored sequence of the delivery.
        seq: u64,
    },
    /// The client refused the message (reason ≥ 0x80): the flow ends, no PUBREL.
    Ended {
        /// Stored sequence of the delivery.
        seq: u64,
    },
    /// No such packet id awaits PUBREC, or it awaits another acknowledgement.
    Unexpected(Unexpected),
}

/// The state of one client's session.
#[derive(Debug)]
pub struct Session {
    client_id: Arc<str>,
    /// Seconds the session outlives its connection; [`NEVER_EXPIRES`] for ever.
    pub expiry_interval: u32,
    /// The store holds a record of this session (persistence on, expiry interval > 0).
    pub stored: bool,
    /// Ordered maps, not hash maps: they cost nothing while empty, and most sessions hold a few
    /// entries at most (memory per idle client).
    subscriptions: BTreeMap<String, Subscription>,
    inflight: VecDeque<Inflight>,
    window: u16,
    next_pkid: u16,
    inbound_qos2: BTreeSet<u16>,
}

impl Session {
    /// A fresh session with an inflight window of `window` messages.
    pub fn new(client_id: Arc<str>, expiry_interval: u32, window: u16) -> Session {
        Session {
            client_id,
            expiry_interval,
            stored: false,
            subscriptions: BTreeMap::new(),
            inflight: VecDeque::new(),
            window: window.max(1),
            next_pkid: 1,
            inbound_qos2: BTreeSet::new(),
        }
    }

    /// The client id.
    pub fn client_id(&self) -> &Arc<str> {
        &self.client_id
    }

    /// Sets the outbound window for the current connection (config maximum, capped by the client's
    /// Receive Maximum). Entries already inflight stay; new ones wait until below the window.
    pub fn set_window(&mut self, window: u16) {
        self.window = window.max(1);
    }

    /// How many more QoS 1/2 messages may be sent now.
    pub fn window_free(&self) -> usize {
        usize::from(self.window).saturating_sub(self.inflight.len())
    }

    /// Number of unacknowledged outbound messages.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// Subscriptions, keyed by the filter as sent (with any `$share/` prefix).
    pub fn subscriptions(&self) -> &BTreeMap<String, Subscription> {
        &self.subscriptions
    }

    /// Records a subscription; true if it replaced an existing one.
    pub fn subscribe(&mut self, filter: String, sub: Subscription) -> bool {
        self.subscriptions.insert(filter, sub).is_some()
    }

    /// Removes a subscription; true if it existed.
    pub fn unsubscribe(&mut self, filter: &str) -> bool {
        self.subscriptions.remove(filter).is_some()
    }

    /// Starts sending a delivery. Returns the packet id to use (0 for QoS 0), or `None` if the
    /// message expired while it waited [MQTT-3.3.2-5]. The caller checks [`Self::window_free`]
    /// before starting a QoS 1/2 delivery.
    pub fn start(&mut self, delivery: Delivery, now: Instant) -> Option<(u16, Delivery)> {
        if delivery.msg.is_expired(now) {
            return None;
        }
        if delivery.qos == QoS::AtMostOnce {
            return Some((0, delivery));
        }
        let pkid = self.allocate_pkid();
        self.inflight.push_back(Inflight {
            pkid,
            qos: delivery.qos,
            state: OutState::Published,
            delivery: Some(delivery.clone()),
        });
        INFLIGHT.fetch_add(1, Ordering::Relaxed);
        Some((pkid, delivery))
    }

    fn allocate_pkid(&mut self) -> u16 {
        // The window is at most 65535 entries, so a free id always exists.
        loop {
            let id = self.next_pkid;
            self.next_pkid = if id == u16::MAX { 1 } else { id + 1 };
            if !self.inflight.iter().any(|e| e.pkid == id) {
                return id;
            }
        }
    }

    fn position(&self, pkid: u16, state: OutState, qos: QoS) -> Result<usize, Unexpected> {
        match self.inflight.iter().position(|e| e.pkid == pkid) {
            None => Err(Unexpected::Unknown),
            Some(i) if self.inflight[i].state == state && self.inflight[i].qos == qos => Ok(i),
            Some(_) => Err(Unexpected::WrongFlow),
        }
    }

    /// PUBACK from the client: the delivery's stored sequence (0: not stored) if it ended a
    /// QoS 1 flow.
    pub fn puback(&mut self, pkid: u16) -> Result<u64, Unexpected> {
        let i = self.position(pkid, OutState::Published, QoS::AtLeastOnce)?;
        let entry = self.inflight.remove(i).ok_or(Unexpected::Unknown)?;
        INFLIGHT.fetch_sub(1, Ordering::Relaxed);
        Ok(entry.delivery.map_or(0, |d| d.seq))
    }

    /// Stored sequence numbers of the messages inflight (sent, not yet acknowledged).
    pub fn stored_seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.inflight
            .iter()
            .filter_map(|e| e.delivery.as_ref().map(|d| d.seq))
            .filter(|seq| *seq != 0)
    }

    /// Deliveries that were sent under these packet ids and not acknowledged when the session
    /// was stored, in sending order: sent again on resume, with DUP, under the same ids.
    pub fn restore_inflight(&mut self, restored: Vec<(u16, Delivery)>) {
        let first = self.inflight.len();
        INFLIGHT.fetch_add(restored.len() as i64, Ordering::Relaxed);
        for (pkid, delivery) in restored {
            self.inflight.push_back(Inflight {
                pkid,
                qos: delivery.qos,
                state: OutState::Published,
                delivery: Some(delivery),
            });
        }
        // Packet id 0: it may have been sent, its id is not known; a fresh one, clear of every
        // id restored above.
        for i in first..self.inflight.len() {
            if self.inflight[i].pkid == 0 {
                self.inflight[i].pkid = self.allocate_pkid();
            }
        }
    }

    /// A PUBREL that was outstanding when the session was stored: sent again on resume.
    pub fn restore_released(&mut self, pkid: u16) {
        INFLIGHT.fetch_add(1, Ordering::Relaxed);
        self.inflight.push_back(Inflight {
            pkid,
            qos: QoS::ExactlyOnce,
            state: OutState::Released,
            delivery: None,
        });
    }

    /// PUBREC from the client.
    pub fn pubrec(&mut self, pkid: u16, reason: ReasonCode) -> PubRecOutcome {
        if self
            .position(pkid, OutState::Released, QoS::ExactlyOnce)
            .is_ok()
        {
            // A duplicate PUBREC: PUBREL again [MQTT-4.3.3-4].
            return PubRecOutcome::SendPubRel { seq: 0 };
        }
        let i = match self.position(pkid, OutState::Published, QoS::ExactlyOnce) {
            Ok(i) => i,
            Err(e) => return PubRecOutcome::Unexpected(e),
        };
        if reason.is_error() {
            INFLIGHT.fetch_sub(1, Ordering::Relaxed);
            let seq = self
                .inflight
                .remove(i)
                .and_then(|e| e.delivery)
                .map_or(0, |d| d.seq);
            return PubRecOutcome::Ended { seq };
        }
        let mut seq = 0;
        if let Some(entry) = self.inflight.get_mut(i) {
            entry.state = OutState::Released;
            seq = entry.delivery.take().map_or(0, |d| d.seq);
        }
        PubRecOutcome::SendPubRel { seq }
    }

    /// PUBCOMP from the client: `Ok` if it ended a QoS 2 flow.
    pub fn pubcomp(&mut self, pkid: u16) -> Result<(), Unexpected> {
        let i = self.position(pkid, OutState::Released, QoS::ExactlyOnce)?;
        self.inflight.remove(i);
        INFLIGHT.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    /// What to send again, in the original order, when the session resumes [MQTT-4.4.0-1].
    pub fn resend(&self) -> impl Iterator<Item = Resend<'_>> {
        self.inflight
            .iter()
            .filter_map(|e| match (e.state, &e.delivery) {
                (OutState::Published, Some(delivery)) => Some(Resend::Publish {
                    pkid: e.pkid,
                    delivery,
                }),
                (OutState::Published, None) => None,
                (OutState::Released, _) => Some(Resend::PubRel(e.pkid)),
            })
    }

    /// Takes back inflight messages that came through a shared subscription and that the client
    /// has not received for sure (QoS 1 unacknowledged, QoS 2 before PUBREC), so they can go to
    /// another member of the group.
    pub fn take_shared_unreceived(&mut self) -> Vec<Delivery> {
        let mut taken = Vec::new();
        self.inflight.retain(|e| match &e.delivery {
            Some(d) if d.shared.is_some() && e.state == OutState::Published => {
                taken.push(d.clone());
                false
            }
            _ => true,
        });
        INFLIGHT.fetch_sub(taken.len() as i64, Ordering::Relaxed);
        taken
    }

    /// An inbound QoS 2 PUBLISH with this packet id arrived: true if it is new and must be
    /// forwarded, false if it is a resend of one not yet released [MQTT-4.3.3-10].
    pub fn inbound_qos2_begin(&mut self, pkid: u16) -> bool {
        self.inbound_qos2.insert(pkid)
    }

    /// Whether an inbound QoS 2 message with this id awaits PUBREL.
    pub fn inbound_qos2_pending(&self, pkid: u16) -> bool {
        self.inbound_qos2.contains(&pkid)
    }

    /// PUBREL from the client: true if the packet id was awaiting it.
    pub fn inbound_qos2_release(&mut self, pkid: u16) -> bool {
        self.inbound_qos2.remove(&pkid)
    }

    /// Forgets every inbound QoS 2 packet id awaiting PUBREL, returning them (a bridge's
    /// remote that lost its session).
    pub fn inbound_qos2_take(&mut self) -> Vec<u16> {
        std::mem::take(&mut self.inbound_qos2).into_iter().collect()
    }

    /// Inbound QoS 2 messages awaiting PUBREL (counted against our Receive Maximum).
    pub fn inbound_qos2_len(&self) -> usize {
        self.inbound_qos2.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
