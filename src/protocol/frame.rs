//! The fixed header of one packet, read before its body is buffered (so the maximum packet size
//! is checked from it), and the reserved-flag rule per packet type. Both directions of decoding
//! frame packets here; nothing here reads a body.

use mqttbytes::FixedHeader;

use super::{DecodeError, ProtocolVersion};

type Result<T> = std::result::Result<T, DecodeError>;

/// The fixed header of a frame whose bytes are all buffered.
pub(super) struct Frame {
    pub(super) byte1: u8,
    pub(super) header_len: usize,
    pub(super) remaining: usize,
}

impl Frame {
    /// The packet type: the high nibble of byte 1.
    pub(super) fn packet_type(&self) -> u8 {
        self.byte1 >> 4
    }

    /// The same header as mqttbytes wants it, for the bodies it parses after our checks.
    pub(super) fn mqttbytes(&self) -> FixedHeader {
        FixedHeader::new(self.byte1, self.header_len - 1, self.remaining)
    }
}

/// Reads the fixed header at the start of `buf`: `Ok(None)` if it is not complete yet.
pub(super) fn fixed_header(buf: &[u8]) -> Result<Option<Frame>> {
    let Some(&byte1) = buf.first() else {
        return Ok(None);
    };
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return Err(DecodeError::Malformed(
                    "[MQTT-1.5.5-1] remaining length not in its shortest form",
                ));
            }
            return Ok(Some(Frame {
                byte1,
                header_len: 2 + i,
                remaining,
            }));
        }
    }
    Err(DecodeError::Malformed(
        "[MQTT-1.5.5-1] remaining length longer than 4 bytes",
    ))
}

/// [MQTT-2.1.3-1] (3.1.1: [MQTT-2.2.2-2]) The low nibble of byte 1 must be exactly `expected`.
/// MQTT 3.1 has no such rule: its clients set DUP and QoS bits on other packets too.
pub(super) fn check_flags(version: ProtocolVersion, byte1: u8, expected: u8) -> Result<()> {
    if version != ProtocolVersion::V31 && byte1 & 0x0F != expected {
        return Err(DecodeError::Malformed(
            "[MQTT-2.1.3-1] reserved fixed-header flags are wrong",
        ));
    }
    Ok(())
}
