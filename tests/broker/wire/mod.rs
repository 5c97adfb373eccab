//! Raw MQTT packets built byte by byte, independent of `tern::protocol` (like mosquitto's
//! `mosq_test.gen_*`), plus [`RawClient`], a bare TCP client that sends exact bytes and reads
//! whole packets back, and small parsers for what the broker sends.
//!
//! Builders return the complete packet (fixed header included). Version arguments are protocol
//! levels: [`V31`], [`V311`], [`V5`]; v5-only fields (properties, reason codes) are emitted only
//! when the version is [`V5`]. Properties are passed as raw bytes *without* their length prefix;
//! build them with the `prop_*` helpers and concatenate, e.g.
//! `[prop_u32(SESSION_EXPIRY, 60), prop_u16(RECEIVE_MAXIMUM, 10)].concat()`.
//!
//! ```ignore
//! let mut c = RawClient::connect(broker.addr).await;
//! c.send(&Connect::new(V5, "c1").build()).await;
//! let ack = parse_connack(V5, &c.recv_expect(CONNACK).await);
//! ```
#![allow(dead_code)]

mod build;
mod client;
mod parse;

pub use build::*;
pub use client::*;
pub use parse::*;

/// MQTT 3.1 (`MQIsdp`).
pub const V31: u8 = 3;
/// MQTT 3.1.1.
pub const V311: u8 = 4;
/// MQTT 5.0.
pub const V5: u8 = 5;

// Packet types: the high nibble of the first byte, already shifted.
/// CONNECT first byte.
pub const CONNECT: u8 = 0x10;
/// CONNACK first byte.
pub const CONNACK: u8 = 0x20;
/// PUBLISH type nibble (flags in the low nibble vary).
pub const PUBLISH: u8 = 0x30;
/// PUBACK first byte.
pub const PUBACK: u8 = 0x40;
/// PUBREC first byte.
pub const PUBREC: u8 = 0x50;
/// PUBREL first byte (reserved flags 0b0010).
pub const PUBREL: u8 = 0x62;
/// PUBCOMP first byte.
pub const PUBCOMP: u8 = 0x70;
/// SUBSCRIBE first byte (reserved flags 0b0010).
pub const SUBSCRIBE: u8 = 0x82;
/// SUBACK first byte.
pub const SUBACK: u8 = 0x90;
/// UNSUBSCRIBE first byte (reserved flags 0b0010).
pub const UNSUBSCRIBE: u8 = 0xA2;
/// UNSUBACK first byte.
pub const UNSUBACK: u8 = 0xB0;
/// PINGREQ first byte.
pub const PINGREQ: u8 = 0xC0;
/// PINGRESP first byte.
pub const PINGRESP: u8 = 0xD0;
/// DISCONNECT first byte.
pub const DISCONNECT: u8 = 0xE0;
/// AUTH first byte (v5).
pub const AUTH: u8 = 0xF0;

// v5 property identifiers.
/// Byte.
pub const PAYLOAD_FORMAT: u8 = 0x01;
/// Four-byte integer.
pub const MESSAGE_EXPIRY: u8 = 0x02;
/// UTF-8 string.
pub const CONTENT_TYPE: u8 = 0x03;
/// UTF-8 string.
pub const RESPONSE_TOPIC: u8 = 0x08;
/// Binary data.
pub const CORRELATION_DATA: u8 = 0x09;
/// Variable byte integer.
pub const SUBSCRIPTION_ID: u8 = 0x0B;
/// Four-byte integer.
pub const SESSION_EXPIRY: u8 = 0x11;
/// UTF-8 string.
pub const ASSIGNED_CLIENT_ID: u8 = 0x12;
/// Two-byte integer.
pub const SERVER_KEEP_ALIVE: u8 = 0x13;
/// UTF-8 string.
pub const AUTH_METHOD: u8 = 0x15;
/// Binary data.
pub const AUTH_DATA: u8 = 0x16;
/// Byte.
pub const REQUEST_PROBLEM_INFO: u8 = 0x17;
/// Four-byte integer.
pub const WILL_DELAY: u8 = 0x18;
/// Byte.
pub const REQUEST_RESPONSE_INFO: u8 = 0x19;
/// UTF-8 string.
pub const RESPONSE_INFO: u8 = 0x1A;
/// UTF-8 string.
pub const SERVER_REFERENCE: u8 = 0x1C;
/// UTF-8 string.
pub const REASON_STRING: u8 = 0x1F;
/// Two-byte integer.
pub const RECEIVE_MAXIMUM: u8 = 0x21;
/// Two-byte integer.
pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
/// Two-byte integer.
pub const TOPIC_ALIAS: u8 = 0x23;
/// Byte.
pub const MAXIMUM_QOS: u8 = 0x24;
/// Byte.
pub const RETAIN_AVAILABLE: u8 = 0x25;
/// UTF-8 string pair.
pub const USER_PROPERTY: u8 = 0x26;
/// Four-byte integer.
pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
/// Byte.
pub const WILDCARD_SUB_AVAILABLE: u8 = 0x28;
/// Byte.
pub const SUB_ID_AVAILABLE: u8 = 0x29;
/// Byte.
pub const SHARED_SUB_AVAILABLE: u8 = 0x2A;
