//! What a session's flows ask of whoever carries them out: a client's connection, a bridge's
//! link to its remote. The session decides; they send, store and wait. Effects are appended to
//! a `Vec` the caller owns and reuses, so a packet costs no allocation here.

use super::{Delivery, Link, Seq};
use crate::protocol::{Ack, Packet, PacketId, ReasonCode};

/// One thing to do, in the order given.
#[derive(Debug)]
pub enum Effect {
    /// Send PUBACK, PUBREC, PUBREL or PUBCOMP.
    Reply(Reply),
    /// Send `delivery` as a PUBLISH under `pkid` (none at QoS 0), with DUP as given.
    Publish {
        /// Its flow's packet id.
        pkid: Option<PacketId>,
        /// Sent before (a resend on resume) [MQTT-4.4.0-1].
        dup: bool,
        /// What to send.
        delivery: Delivery,
    },
    /// Record this in the store; nothing waits for it (losing it costs at most a duplicate).
    Store(StoreOp),
    /// Record this in the store; the packets after it go out only once it is durable, each
    /// after every earlier packet of its kind (acknowledgements keep their order, and so do
    /// PUBLISHes).
    Durable(StoreOp),
    /// A delivery was not sent, for this reason (`expired`, `too_large`, or the carrier's own);
    /// its share in the store is released by a [`StoreOp::Delivered`] next to it.
    Dropped(&'static str),
    /// A delivery a declared queue handed out got this far: the queue is told.
    Settle(Link, Settled),
}

/// How far a queue's delivery got with the session it was handed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// PUBREC: the receiver has it; it may never be sent again, but its flow goes on.
    Received,
    /// Acknowledged (PUBACK, PUBCOMP, or a refusal, which also ends the flow), or written at
    /// QoS 0.
    Consumed,
    /// Not delivered, for this reason (`expired`, `too_large`, `session_ended`, ...).
    Dropped(&'static str),
}

/// An acknowledgement to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Which packet.
    pub kind: ReplyKind,
    /// Of which flow.
    pub pkid: PacketId,
    /// v5 reason code (3.1.1 has none on the wire).
    pub reason: ReasonCode,
}

/// The acknowledgement packets of the QoS 1/2 flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// QoS 1: the receiver has the message.
    PubAck,
    /// QoS 2, first step: the receiver has the message.
    PubRec,
    /// QoS 2, second step: the sender will not send the PUBLISH again.
    PubRel,
    /// QoS 2, last step: the flow is over.
    PubComp,
}

impl Reply {
    /// `kind` for `pkid` with `reason`.
    pub fn new(kind: ReplyKind, pkid: PacketId, reason: ReasonCode) -> Reply {
        Reply { kind, pkid, reason }
    }

    /// As a packet to encode.
    pub fn packet(self) -> Packet {
        let ack = Ack {
            pkid: self.pkid.get(),
            reason: self.reason,
            ..Ack::default()
        };
        match self.kind {
            ReplyKind::PubAck => Packet::PubAck(ack),
            ReplyKind::PubRec => Packet::PubRec(ack),
            ReplyKind::PubRel => Packet::PubRel(ack),
            ReplyKind::PubComp => Packet::PubComp(ack),
        }
    }
}

/// A change to what the store keeps of a session's flows. Applied by one function on the broker's
/// side, and only for a session the store keeps (for any other, a no-op).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// The session is done with stored message `Seq`: sent at QoS 0, expired, dropped, or
    /// handed to another session.
    Delivered(Seq),
    /// Stored QoS 2 message `Seq` goes out under `PacketId`: after a restart it is sent again
    /// under the same id, with DUP, so the receiver can tell it from a new message.
    Sent(PacketId, Seq),
    /// The receiver acknowledged (or refused) stored message `Seq` sent under `PacketId`.
    Acked(PacketId, Seq),
    /// PUBREC for stored message `Seq` under `PacketId`: the flow is kept at PUBREL, and the
    /// PUBLISH may never be sent again.
    Released(PacketId, Seq),
    /// PUBCOMP: the outbound flow under `PacketId` is over.
    Completed(PacketId),
    /// PUBREL from the sender: its inbound QoS 2 id `PacketId` is free again.
    InboundReleased(PacketId),
}

/// What an acknowledgement meant for the flow it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// It moved or ended its flow.
    Done,
    /// No flow waits under its packet id (acknowledged twice, or after the flow was dropped):
    /// answered where MQTT asks for an answer, otherwise ignored. Worth counting.
    Unknown,
    /// Its packet id is in a flow that does not take it: PUBACK for QoS 2, PUBREC for QoS 1,
    /// PUBCOMP before PUBREL. A protocol violation [MQTT-4.3.2-1] [MQTT-4.3.3-1].
    WrongFlow,
}

/// What an inbound QoS 2 PUBLISH is to the session that receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos2In {
    /// New: forward it, then acknowledge it ([`super::Session::acknowledge`]).
    New,
    /// Sent again before PUBREL: acknowledged (PUBREC appended), not forwarded again
    /// [MQTT-4.3.3-10].
    Duplicate,
    /// New, but as many QoS 2 messages as the receive maximum already await PUBREL: a
    /// protocol violation (v5 0x93 Receive Maximum exceeded [MQTT-3.3.4-7]).
    OverLimit,
}
