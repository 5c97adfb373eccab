//! Bytes ⇄ [`Packet`]: the only module that touches wire bytes or mqttbytes, and the only place
//! where MQTT 3.1.1 and 5.0 differ. Every packet a peer sends is framed and checked here
//! (fixed-header flags, sizes, UTF-8, properties) before anything else sees it; each failure is a
//! typed [`DecodeError`] that knows its reason code.

mod types;

pub use types::*;
