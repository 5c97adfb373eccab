//! What one connection sends: the per-subscriber parts of a PUBLISH (packet id, DUP, retain,
//! QoS, Subscription Identifiers, remaining expiry, outbound Topic Alias) and the client's
//! Maximum Packet Size, applied at encode time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use crate::protocol::{self, Packet, ProtocolVersion, Publish};
use crate::session::Delivery;

/// Encoding state of one connection.
pub struct Outbound {
    version: ProtocolVersion,
    max_packet_size: Option<u32>,
    alias_max: u16,
    aliases: HashMap<Arc<str>, u16>,
    problem_info: bool,
}

impl Outbound {
    /// For a client with these CONNECT properties.
    pub fn new(
        version: ProtocolVersion,
        max_packet_size: Option<u32>,
        alias_max: u16,
        problem_info: bool,
    ) -> Outbound {
        Outbound {
            version,
            max_packet_size,
            alias_max: if version.is_v5() { alias_max } else { 0 },
            aliases: HashMap::new(),
            problem_info,
        }
    }

    fn build(&self, d: &Delivery, pkid: u16, dup: bool, now: Instant) -> Publish {
        let mut p = d.msg.publish.clone();
        p.qos = d.qos;
        p.pkid = pkid;
        p.dup = dup;
        p.retain = d.retain;
        if self.version.is_v5() {
            p.properties.subscription_identifiers = d.sub_ids.clone();
            p.properties.message_expiry_interval = d.msg.remaining_expiry(now);
        }
        p
    }

    /// Whether the delivery fits the client's Maximum Packet Size [MQTT-3.1.2-24].
    pub fn fits(&self, d: &Delivery, now: Instant) -> bool {
        match self.max_packet_size {
            None => true,
            Some(max) => {
                let p = self.build(d, 1, false, now);
                protocol::publish_len(&p, self.version) <= max as usize
            }
        }
    }

    /// Appends the PUBLISH for `d` to `out`.
    pub fn publish(
        &mut self,
        out: &mut BytesMut,
        d: &Delivery,
        pkid: u16,
        dup: bool,
        now: Instant,
    ) {
        let mut p = self.build(d, pkid, dup, now);
        if self.alias_max > 0 {
            let topic: &str = &p.topic;
            if let Some(&alias) = self.aliases.get(topic) {
                p.properties.topic_alias = Some(alias);
                p.topic.clear();
            } else if self.aliases.len() < usize::from(self.alias_max) {
                let alias = self.aliases.len() as u16 + 1;
                self.aliases.insert(topic.into(), alias);
                p.properties.topic_alias = Some(alias);
            }
        }
        if let Err(e) = protocol::encode_publish(&p, self.version, out) {
            tracing::warn!(error = %e, "PUBLISH could not be encoded");
        }
    }

    /// Appends an ack or control packet. Without Request Problem Information, Reason String and
    /// User Properties are left out [MQTT-3.1.2-29].
    pub fn ack(&mut self, out: &mut BytesMut, mut packet: Packet) {
        if !self.problem_info {
            strip_problem_info(&mut packet);
        }
        if let Err(e) = protocol::encode(&packet, self.version, out) {
            tracing::warn!(error = %e, "packet could not be encoded");
        }
    }
}

fn strip_problem_info(packet: &mut Packet) {
    let props = match packet {
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            &mut a.properties
        }
        Packet::SubAck(s) => &mut s.properties,
        Packet::UnsubAck(u) => &mut u.properties,
        _ => return,
    };
    props.reason_string = None;
    props.user_properties.clear();
}
