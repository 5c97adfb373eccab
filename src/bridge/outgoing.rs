//! What goes to the remote: a local delivery as the remote's PUBLISH (its topic by the `out`
//! rules, our id added to the path property), within what the remote said it takes in its
//! CONNACK. Sending beyond those limits is a protocol error: the remote would disconnect, and
//! the same message would come first again on every reconnect, so the bridge would never move
//! on. Such a message is refused here instead, and dropped by the caller.

use bytes::BytesMut;

use super::rules::{to_remote, Rule};
use crate::protocol::{self, ConnAck, Packet, ProtocolVersion, Publish, PublishProperties, QoS};
use crate::session::Delivery;

/// Turns deliveries into PUBLISHes for one connection to the remote.
pub(super) struct Shaper {
    version: ProtocolVersion,
    /// MQTT 5 Maximum QoS (3.1.1: 2).
    max_qos: QoS,
    /// MQTT 5 Retain Available (3.1.1: yes).
    retain: bool,
    /// MQTT 5 Maximum Packet Size (3.1.1: none).
    max_packet: usize,
    /// Scratch space to measure a PUBLISH against `max_packet`.
    sizer: BytesMut,
}

impl Shaper {
    /// For a connection speaking `version` whose CONNACK was `ack`.
    pub(super) fn new(version: ProtocolVersion, ack: &ConnAck) -> Shaper {
        let p = &ack.properties;
        Shaper {
            version,
            max_qos: p
                .maximum_qos
                .and_then(QoS::from_u8)
                .unwrap_or(QoS::ExactlyOnce),
            retain: p.retain_available != Some(0),
            max_packet: p.maximum_packet_size.map_or(usize::MAX, |n| n as usize),
            sizer: BytesMut::new(),
        }
    }

    /// The highest QoS the remote takes.
    pub(super) fn max_qos(&self) -> QoS {
        self.max_qos
    }

    /// The PUBLISH for delivery `d` (packet id 0, to be set), with our broker id `path_id`
    /// added to its path property (MQTT 5 links); why not, if it cannot go.
    pub(super) fn publish(
        &mut self,
        rules: &[Rule],
        path_id: Option<&str>,
        d: &Delivery,
        now: std::time::Instant,
    ) -> Result<Publish, &'static str> {
        if d.qos > self.max_qos {
            return Err("its QoS is above the remote's Maximum QoS");
        }
        let topic = to_remote(rules, d.msg.topic()).ok_or("no out rule for its topic any more")?;
        let mut properties = PublishProperties::clone(&d.msg.publish.properties);
        properties.message_expiry_interval = d.msg.remaining_expiry(now);
        properties.subscription_identifiers.clear();
        properties.topic_alias = None;
        if let Some(id) = path_id {
            super::add_to_path(&mut properties.user_properties, id);
        }
        let p = Publish {
            dup: false,
            qos: d.qos,
            retain: d.retain && self.retain,
            topic,
            pkid: 0,
            payload: d.msg.publish.payload.clone(),
            properties: properties.into(),
        };
        if self.max_packet < usize::MAX {
            self.sizer.clear();
            // Any non-zero packet id encodes to the same size.
            let probe = Packet::Publish(Publish {
                pkid: 1,
                ..p.clone()
            });
            let encoded = protocol::encode(&probe, self.version, &mut self.sizer);
            if encoded.is_err() || self.sizer.len() > self.max_packet {
                return Err("larger than the remote's Maximum Packet Size");
            }
        }
        Ok(p)
    }
}
