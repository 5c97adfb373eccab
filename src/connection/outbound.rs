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
    /// Topic → alias, allocated once the first alias is given out; boxed so that clients
    /// without aliases keep the connection small.
    #[expect(
        clippy::box_collection,
        reason = "8 bytes instead of 48 for most connections"
    )]
    aliases: Option<Box<HashMap<Arc<str>, u16>>>,
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
            subscription_ids: if v5 { &d.sub_ids } else { &[] },
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
            let aliases = self.aliases.get_or_insert_with(Box::default);
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

    /// Appends an ack or control packet. Without Request Problem Information, Reason String and
    /// User Properties are left out [MQTT-3.1.2-29].
    pub fn ack(&mut self, out: &mut BytesMut, mut packet: Packet) {
        if !self.problem_info && !matches!(packet, Packet::Disconnect(_)) {
            strip_problem_info(&mut packet);
        }
        let start = out.len();
        if let Err(e) = protocol::encode(&packet, self.version, out) {
            tracing::warn!(error = %e, "packet could not be encoded");
            out.truncate(start);
            return;
        }
        crate::metrics::packet_sent(&packet);
        let too_big = self
            .max_packet_size
            .is_some_and(|max| out.len() - start > max.get() as usize);
        if too_big {
            // Leave out Reason String and User Properties rather than exceed what the client
            // accepts [MQTT-3.1.2-25].
            out.truncate(start);
            strip_problem_info(&mut packet);
            let _ = protocol::encode(&packet, self.version, out);
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
        Packet::Disconnect(d) => {
            d.properties.reason_string = None;
            d.properties.user_properties.clear();
            return;
        }
        _ => return,
    };
    props.reason_string = None;
    props.user_properties.clear();
}
