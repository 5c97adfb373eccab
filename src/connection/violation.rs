//! Why Tern ends a client's connection itself, and the one place that maps each reason to what
//! the client is told: a v5 DISCONNECT with a reason code, or (3.1.1, which has no such packet)
//! a close. Where the spec names the class of a rule the code follows it; where it names none,
//! the choice is written next to the variant.

use crate::protocol::{DecodeError, ReasonCode};

/// A violation by the client, or a failure on our side that ends the connection.
#[derive(Debug, thiserror::Error)]
pub(super) enum Violation {
    /// Bytes that are not an acceptable packet: the decoder's class (0x81 malformed, 0x82
    /// protocol error, 0x94, 0x95).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// An acknowledgement of a flow in another QoS or stage (PUBACK for QoS 2, PUBREC for QoS
    /// 1, PUBCOMP before PUBREL): 0x82.
    #[error(
        "{packet} for packet identifier {pkid}, in another QoS flow [MQTT-4.3.2-1] [MQTT-4.3.3-1]"
    )]
    WrongFlow {
        /// The acknowledgement received.
        packet: &'static str,
        /// Its packet id.
        pkid: u16,
    },
    /// A Topic Alias above our Topic Alias Maximum: 0x94.
    #[error("[MQTT-3.3.2-9] topic alias {0} out of range")]
    TopicAliasOutOfRange(u16),
    /// A PUBLISH with an empty topic and an alias never set: 0x82 (MQTT 5 §3.3.2.3.4 calls it
    /// a Protocol Error).
    #[error("MQTT 5 §3.3.2.3.4: topic alias {0} was never set")]
    UnknownTopicAlias(u16),
    /// No Local on a shared subscription: 0x82.
    #[error("[MQTT-3.8.3-4] No Local on a shared subscription")]
    NoLocalOnShared,
    /// DISCONNECT raising a Session Expiry of 0 given at CONNECT: 0x82.
    #[error("[MQTT-3.14.2-2] session expiry raised from 0 at DISCONNECT")]
    ExpiryRaised,
    /// More QoS 2 messages awaiting PUBREL than our Receive Maximum: 0x93.
    #[error("[MQTT-3.3.4-7] more unacknowledged QoS 2 messages than Receive Maximum")]
    ReceiveMaximumExceeded,
    /// AUTH from a client that named no Authentication Method: 0x82 (MQTT 5 §4.12).
    #[error("MQTT 5 §4.12: AUTH without an authentication method")]
    AuthWithoutMethod,
    /// A 3.1.1 PUBLISH to a topic name the broker declines (more levels than allowed): 3.1.1
    /// cannot refuse a message, so the connection closes. (A v5 client gets PUBACK 0x90.)
    #[error("topic name refused: {0}")]
    TopicNameRefused(crate::topic::TopicError),
    /// A control packet that cannot fit the client's Maximum Packet Size even without its
    /// optional properties: 0x95.
    #[error("[MQTT-3.1.2-24] a packet for the client exceeds its Maximum Packet Size")]
    Unsendable,
    /// Cluster mode: a payload larger than the NATS servers carry: 0x95 (never truncated).
    #[error("a payload of {0} bytes is larger than the cluster's NATS servers accept")]
    ClusterPayloadTooLarge(usize),
    /// Cluster mode: JetStream did not store what a packet for the client promised (no
    /// quorum, unreachable, timed out): 0x88 Server unavailable; the client sends it again,
    /// to this node or another.
    #[error("the cluster is unavailable: {0}")]
    ClusterUnavailable(String),
    /// The store failed to write what a packet for the client promised: 0x80 (not the
    /// client's fault; the spec names no code).
    #[error("the store could not write what the client was to be told: {0}")]
    StoreFailed(String),
}

impl Violation {
    /// The reason code a v5 client is told in DISCONNECT. A 3.1.1 client is told nothing: its
    /// connection closes.
    pub(super) fn reason(&self) -> ReasonCode {
        match self {
            Violation::Decode(e) => e.reason_code(),
            Violation::WrongFlow { .. }
            | Violation::UnknownTopicAlias(_)
            | Violation::NoLocalOnShared
            | Violation::ExpiryRaised
            | Violation::AuthWithoutMethod => ReasonCode::ProtocolError,
            Violation::TopicAliasOutOfRange(_) => ReasonCode::TopicAliasInvalid,
            Violation::ReceiveMaximumExceeded => ReasonCode::ReceiveMaximumExceeded,
            Violation::TopicNameRefused(_) => ReasonCode::TopicNameInvalid,
            Violation::Unsendable | Violation::ClusterPayloadTooLarge(_) => {
                ReasonCode::PacketTooLarge
            }
            Violation::StoreFailed(_) => ReasonCode::UnspecifiedError,
            Violation::ClusterUnavailable(_) => ReasonCode::ServerUnavailable,
        }
    }

    /// Whether the client broke a rule (counted as a protocol violation); false for our own
    /// failures.
    pub(super) fn by_client(&self) -> bool {
        !matches!(
            self,
            Violation::StoreFailed(_) | Violation::Unsendable | Violation::ClusterUnavailable(_)
        )
    }
}
