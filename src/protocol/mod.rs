//! Bytes ⇄ [`Packet`]: the only module that touches wire bytes or mqttbytes, and the only place
//! where MQTT 3.1.1 and 5.0 differ. Every packet a peer sends is framed and checked here
//! (fixed-header flags, sizes, UTF-8 without U+0000, property rules) before anything else sees
//! it; each failure is a typed [`DecodeError`] that knows its reason code.

mod both_ways;
mod decode;
mod encode;
mod error;
mod frame;
mod from_server;
mod outgoing;
mod reader;
mod types;

pub use decode::Decoder;
pub use encode::{encode, encode_publish, publish_len};
pub use error::{DecodeError, EncodeError};
pub use outgoing::OutgoingPublish;
pub use types::*;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
