//! Typed decode and encode failures. Each decode error names the spec rule it breaks and maps
//! to the one reason code a v5 peer is told (0x81 malformed, 0x82 protocol error, …).

use super::ReasonCode;

/// Why bytes from a peer are not an acceptable packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Bytes that do not follow the packet grammar.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// A well-formed packet that breaks a protocol rule.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The packet is larger than the maximum packet size.
    #[error("[MQTT-3.1.2-24] packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge {
        /// Total size announced by the fixed header.
        size: usize,
        /// The limit.
        max: u32,
    },
    /// A v5 Topic Alias of 0 [MQTT-3.3.2-8].
    #[error("[MQTT-3.3.2-8] topic alias 0")]
    TopicAliasZero,
    /// CONNECT with a protocol name/level Tern does not speak.
    #[error("[MQTT-3.1.2-2] unsupported protocol {name:?} level {level}")]
    UnsupportedProtocol {
        /// Protocol name sent.
        name: String,
        /// Protocol level sent.
        level: u8,
    },
}

impl DecodeError {
    /// The reason code for a v5 DISCONNECT or CONNACK.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::Malformed(_) => ReasonCode::MalformedPacket,
            DecodeError::Protocol(_) => ReasonCode::ProtocolError,
            DecodeError::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            DecodeError::TopicAliasZero => ReasonCode::TopicAliasInvalid,
            DecodeError::UnsupportedProtocol { .. } => ReasonCode::UnsupportedProtocolVersion,
        }
    }

    /// For an unsupported protocol: whether the refusal is a v5 CONNACK (level byte 5) rather
    /// than a v3 one.
    pub fn wants_v5_connack(&self) -> bool {
        matches!(self, DecodeError::UnsupportedProtocol { level: 5, .. })
    }

    /// mqttbytes only ever sees a complete, checked frame; any error it still reports is
    /// malformed.
    pub(super) fn from_mqttbytes(_: mqttbytes::Error) -> DecodeError {
        DecodeError::Malformed("packet body does not parse")
    }
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string or binary field longer than 65,535 bytes [MQTT-1.5.4-1].
    #[error("string or binary field longer than 65535 bytes")]
    StringTooLong,
    /// More than the 268,435,455 bytes a remaining length can express.
    #[error("packet larger than the protocol maximum")]
    PacketTooLarge,
    /// The packet does not exist in this protocol version (e.g. AUTH in 3.1.1).
    #[error("packet not defined for this protocol version")]
    NotInVersion,
}
