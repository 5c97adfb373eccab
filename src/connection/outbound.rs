//! What one connection sends: the per-subscriber parts of a PUBLISH (packet id, DUP, retain,
//! QoS, Subscription Identifiers, remaining expiry, outbound Topic Alias) and the client's
//! Maximum Packet Size, applied at encode time.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use crate::protocol::{self, OutgoingPublish, Packet, ProtocolVersion};
use crate::session::Delivery;

/// Encoding state of one connection.
pub struct Outbound {
    version: ProtocolVersion,
    /// Never 0: CONNECT with Maximum Packet Size 0 is refused by the decoder.
    max_packet_size: Option<NonZeroU32>,
    alias_max: u16,
    /// Topic Aliases both ways, allocated once the first one is given out or comes in: one
    /// pointer for the many clients that use none (every dormant connection keeps it).
    aliases: Option<Box<Aliases>>,
    problem_info: bool,
}

/// A connection's Topic Aliases.
#[derive(Default)]
struct Aliases {
    /// Topic → alias, as given out to the client.
    sent: HashMap<Arc<str>, u16>,
    /// Topics of the client's aliases, indexed by alias - 1 (at most our maximum).
    received: Vec<Option<String>>,
}

impl Outbound {
    /// The protocol version it encodes for.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The topic the client's Topic Alias `alias` (from 1) stands for, if it set one.
    pub fn inbound_topic(&self, alias: u16) -> Option<&String> {
        let i = usize::from(alias.checked_sub(1)?);
        self.aliases.as_ref()?.received.get(i)?.as_ref()
    }

    /// Records that the client's Topic Alias `alias` (from 1, at most our maximum) now stands
    /// for `topic` [MQTT-3.3.2-12].
    pub fn learn_inbound(&mut self, alias: u16, topic: &str) {
        let Some(i) = alias.checked_sub(1).map(usize::from) else {
            return;
        };
        let received = &mut self.aliases.get_or_insert_with(Box::default).received;
        if received.len() <= i {
            // Grows once per new highest alias, at most to our Topic Alias Maximum.
            received.resize(i + 1, None);
        }
        received[i] = Some(topic.to_string());
    }

    /// For a client with these CONNECT properties.
    pub fn new(
        version: ProtocolVersion,
        max_packet_size: Option<u32>,
        alias_max: u16,
        problem_info: bool,
    ) -> Outbound {
        Outbound {
            version,
            max_packet_size: max_packet_size.and_then(NonZeroU32::new),
            alias_max: if version.is_v5() { alias_max } else { 0 },
            aliases: None,
            problem_info,
        }
    }

    /// The PUBLISH for `d` as this client receives it, borrowing the shared message.
    fn outgoing<'a>(
        &self,
        d: &'a Delivery,
        pkid: u16,
        dup: bool,
        now: Instant,
    ) -> OutgoingPublish<'a> {
        let p = &d.msg.publish;
        let v5 = self.version.is_v5();
        OutgoingPublish {
            topic: &p.topic,
            payload: &p.payload,
            qos: d.qos,
            dup,
            retain: d.retain,
            pkid,
            properties: &p.properties,
            topic_alias: None,
            subscription_ids: if v5 { d.sub_ids() } else { &[] },
            message_expiry: if v5 {
                d.msg.remaining_expiry(now)
            } else {
                None
            },
        }
    }

    /// Whether the delivery fits the client's Maximum Packet Size [MQTT-3.1.2-24].
    pub fn fits(&self, d: &Delivery, now: Instant) -> bool {
        self.max_packet_size.is_none_or(|max| {
            self.outgoing(d, 1, false, now).len(self.version) <= max.get() as usize
        })
    }

    /// Appends the PUBLISH for `d` to `out`.
    pub fn publish(
        &mut self,
        out: &mut BytesMut,
        d: &Delivery,
        pkid: u16,
        dup: bool,
        now: Instant,
    ) -> bool {
        let mut p = self.outgoing(d, pkid, dup, now);
        if self.alias_max > 0 {
            let aliases = &mut self.aliases.get_or_insert_with(Box::default).sent;
            if let Some(&alias) = aliases.get(p.topic) {
                p.topic_alias = Some(alias);
                p.topic = "";
            } else if aliases.len() < usize::from(self.alias_max) {
                let alias = aliases.len() as u16 + 1;
                aliases.insert(p.topic.into(), alias);
                p.topic_alias = Some(alias);
            }
        }
        if let Err(e) = p.encode(self.version, out) {
            tracing::warn!(error = %e, "PUBLISH could not be encoded");
            return false;
        }
        if !dup {
            crate::metrics::delivery_latency(d.msg.accepted, now);
        }
        true
    }

    /// Appends an ack or control packet within the client's Maximum Packet Size
    /// [MQTT-3.1.2-24]: optional properties are left out until it fits (Reason String and User
    /// Properties first [MQTT-3.1.2-25], then a CONNACK's capability properties). Without
    /// Request Problem Information, Reason String and User Properties are left out anyway
    /// [MQTT-3.1.2-29]. False if even the bare packet is too large: nothing was written, and
    /// the connection cannot go on.
    pub fn ack(&mut self, out: &mut BytesMut, packet: Packet) -> bool {
        match self.encode_within(out, packet) {
            Some(sent) => {
                crate::metrics::packet_sent(&sent);
                true
            }
            None => {
                crate::metrics::dropped("too_large");
                false
            }
        }
    }

    /// Whether `packet` (a CONNACK about to be sent) can be sent within the client's Maximum
    /// Packet Size, once what may be left out is.
    pub fn fits_control(&self, packet: Packet) -> bool {
        self.encode_within(&mut BytesMut::new(), packet).is_some()
    }

    /// Encodes `packet` into `out`, shrunk until it fits; returns it as written, or `None`
    /// (nothing written) when it cannot fit.
    fn encode_within(&self, out: &mut BytesMut, mut packet: Packet) -> Option<Packet> {
        if !self.problem_info && !matches!(packet, Packet::Disconnect(_) | Packet::ConnAck(_)) {
            strip_problem_info(&mut packet);
        }
        let start = out.len();
        let mut step = 0;
        loop {
            if let Err(e) = protocol::encode(&packet, self.version, out) {
                tracing::warn!(error = %e, "packet could not be encoded");
                out.truncate(start);
                return Some(packet);
            }
            let fits = self
                .max_packet_size
                .is_none_or(|max| out.len() - start <= max.get() as usize);
            if fits {
                return Some(packet);
            }
            out.truncate(start);
            if !shrink(&mut packet, step) {
                return None;
            }
            step += 1;
        }
    }
}

/// Leaves out the next optional part of `packet` (`step` 0 first); false when nothing is left
/// to leave out.
fn shrink(packet: &mut Packet, step: usize) -> bool {
    if step == 0 {
        strip_problem_info(packet);
        return true;
    }
    let Packet::ConnAck(c) = packet else {
        return false;
    };
    let p = &mut c.properties;
    match step {
        // Absent, these mean what Tern sends anyway: available.
        1 => {
            p.retain_available = None;
            p.wildcard_subscription_available = None;
            p.subscription_identifiers_available = None;
            p.shared_subscription_available = None;
        }
        // Absent: the client sends no aliases.
        2 => p.topic_alias_maximum = None,
        3 => p.maximum_packet_size = None,
        4 => p.receive_maximum = None,
        _ => return false,
    }
    true
}

fn strip_problem_info(packet: &mut Packet) {
    let props = match packet {
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            &mut a.properties
        }
        Packet::SubAck(s) => &mut s.properties,
        Packet::UnsubAck(u) => &mut u.properties,
        Packet::Disconnect(d) => {
            d.properties.reason_string = None;
            d.properties.user_properties.clear();
            return;
        }
        Packet::ConnAck(c) => {
            c.properties.reason_string = None;
            c.properties.user_properties.clear();
            return;
        }
        _ => return,
    };
    props.reason_string = None;
    props.user_properties.clear();
}
