//! What a connected client sends: one handler per packet type, driving the session's QoS flows
//! and the broker. Each returns `Err(End)` when the packet ends the connection, with the reason
//! code the spec gives.

use crate::logged::clip;
use std::sync::Arc;

use tracing::{debug, info};

use super::{Connection, End};
use crate::auth::Access;
use crate::broker::{Published, SubscribeResult};
use crate::metrics;
use crate::protocol::{
    Ack, AckProperties, Disconnect, Packet, Publish, QoS, ReasonCode, SubAck, Subscribe, UnsubAck,
    Unsubscribe,
};
use crate::session::{Message, PubRecOutcome, Unexpected};
use crate::topic;

impl Connection {
    pub(super) fn handle_packet(&mut self, packet: Packet) -> Result<(), End> {
        match packet {
            Packet::Publish(p) => self.on_publish(p),
            Packet::PubAck(a) => match self.client.session.puback(a.pkid) {
                Ok(seq) => {
                    self.state.store_acked(&self.client.session, a.pkid, seq);
                    Ok(())
                }
                Err(e) => self.unexpected_ack("PUBACK", a.pkid, e),
            },
            Packet::PubRec(a) => {
                match self.client.session.pubrec(a.pkid, a.reason) {
                    PubRecOutcome::SendPubRel { seq } => {
                        // After PUBREL the PUBLISH must never be sent again: the stored flow
                        // moves to PUBREL first.
                        let durable = if seq == 0 {
                            None
                        } else {
                            self.state.store_released(&self.client.session, a.pkid, seq)
                        };
                        let rel = Packet::PubRel(Ack {
                            pkid: a.pkid,
                            ..Ack::default()
                        });
                        self.ack_in_order(durable, rel, Vec::new());
                    }
                    PubRecOutcome::Ended { seq } => {
                        self.state.store_acked(&self.client.session, a.pkid, seq);
                    }
                    PubRecOutcome::Unexpected(Unexpected::Unknown) if a.reason.is_error() => {
                        // Refusing a message we do not know of: nothing to release.
                        metrics::unexpected_ack("PUBREC", "unknown");
                    }
                    PubRecOutcome::Unexpected(Unexpected::Unknown) => {
                        // The client must be able to end its flow: PUBREL, in v5 saying the id
                        // is not known [MQTT-4.3.3-4]; 3.1.1 has no reason code.
                        metrics::unexpected_ack("PUBREC", "unknown");
                        debug!(client_id = %clip(&self.client_id), pkid = a.pkid, "PUBREC for an unknown packet identifier");
                        let rel = Packet::PubRel(Ack {
                            pkid: a.pkid,
                            reason: ReasonCode::PacketIdentifierNotFound,
                            ..Ack::default()
                        });
                        self.ack_in_order(None, rel, Vec::new());
                    }
                    PubRecOutcome::Unexpected(e) => {
                        return self.unexpected_ack("PUBREC", a.pkid, e)
                    }
                }
                Ok(())
            }
            Packet::PubRel(a) => {
                let reason = if self.client.session.inbound_qos2_release(a.pkid) {
                    self.state
                        .store_inbound_released(&self.client.session, a.pkid);
                    ReasonCode::Success
                } else {
                    metrics::unexpected_ack("PUBREL", "unknown");
                    ReasonCode::PacketIdentifierNotFound
                };
                self.ack(Packet::PubComp(Ack {
                    pkid: a.pkid,
                    reason,
                    ..Ack::default()
                }));
                Ok(())
            }
            Packet::PubComp(a) => match self.client.session.pubcomp(a.pkid) {
                Ok(()) => {
                    self.state.store_completed(&self.client.session, a.pkid);
                    Ok(())
                }
                Err(e) => self.unexpected_ack("PUBCOMP", a.pkid, e),
            },
            Packet::Subscribe(s) => self.on_subscribe(s),
            Packet::Unsubscribe(u) => {
                self.on_unsubscribe(u);
                Ok(())
            }
            Packet::PingReq => {
                self.ack(Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(d) => Err(self.on_disconnect(d)),
            Packet::Auth(_) => Err(End::violation(
                ReasonCode::ProtocolError,
                "[MQTT-4.12.0-1] AUTH without an authentication method",
            )),
            other => Err(End::violation(
                ReasonCode::ProtocolError,
                format!("unexpected packet from client: {other:?}"),
            )),
        }
    }

    /// An acknowledgement no flow waits for. An unknown packet id (acknowledged twice, or
    /// after the flow was dropped) is counted and ignored, as Mosquitto does; one of the wrong
    /// flow (PUBACK for QoS 2, PUBREC for QoS 1, PUBCOMP before PUBREL) breaks the QoS
    /// protocol: v5 Protocol Error [MQTT-4.3.2-1] [MQTT-4.3.3-1], 3.1.1 close [MQTT-4.8.0-1].
    fn unexpected_ack(
        &mut self,
        packet: &'static str,
        pkid: u16,
        e: Unexpected,
    ) -> Result<(), End> {
        match e {
            Unexpected::Unknown => {
                metrics::unexpected_ack(packet, "unknown");
                debug!(client_id = %clip(&self.client_id), pkid, packet, "acknowledgement for an unknown packet identifier");
                Ok(())
            }
            Unexpected::WrongFlow => {
                metrics::unexpected_ack(packet, "wrong_flow");
                Err(End::violation(
                    ReasonCode::ProtocolError,
                    format!("{packet} for packet identifier {pkid}, which is in another QoS flow [MQTT-4.3.2-1] [MQTT-4.3.3-1]"),
                ))
            }
        }
    }

    pub(super) fn ack(&mut self, packet: Packet) {
        if !self.client.out.ack(&mut self.io.outbuf, packet) {
            self.unsendable = true;
        }
    }

    fn on_publish(&mut self, mut p: Publish) -> Result<(), End> {
        self.resolve_alias(&mut p)?;
        let limits = &self.state.config().limits;
        let reject = if let Err(e) = topic::validate_topic_name(&p.topic, limits.max_topic_levels) {
            metrics::limit_hit("max_topic_levels");
            debug!(client_id = %clip(&self.client_id), topic = %clip(&p.topic), error = %e, "PUBLISH refused");
            Some(ReasonCode::TopicNameInvalid)
        } else if p.topic == "$SYS" || p.topic.starts_with("$SYS/") {
            Some(ReasonCode::NotAuthorized)
        } else if !self.may(&p.topic, Access::Write) {
            metrics::acl_denied("publish");
            if log_now() {
                info!(client_id = %clip(&self.client_id), topic = %clip(&p.topic), "PUBLISH refused by the ACL (logged at most once a second)");
            }
            // v3.1.1 has no way to say so: acknowledged and dropped, as the spec requires.
            if !self.client.version.is_v5() {
                if p.qos == QoS::ExactlyOnce && !self.client.session.inbound_qos2_pending(p.pkid) {
                    // PUBREL will find it, and PUBCOMP ends the flow as usual.
                    self.client.session.inbound_qos2_begin(p.pkid);
                }
                self.ack_publish(&p, ReasonCode::Success);
                return Ok(());
            }
            Some(ReasonCode::NotAuthorized)
        } else {
            None
        };
        if let Some(reason) = reject {
            if !self.client.version.is_v5() && reason == ReasonCode::TopicNameInvalid {
                return Err(End::violation(reason, "topic name refused"));
            }
            self.ack_publish(&p, reason);
            return Ok(());
        }
        if crate::bridge::visited(&p.properties.user_properties, self.state.id()) {
            // Left this broker through a bridge before: a loop between bridged brokers.
            // Acknowledged (it was delivered here already) and dropped.
            metrics::dropped("bridge_loop");
            self.ack_publish(&p, ReasonCode::Success);
            return Ok(());
        }
        if p.qos == QoS::ExactlyOnce {
            if self.client.session.inbound_qos2_pending(p.pkid) {
                // A resend before PUBREL: acknowledge again, forward nothing [MQTT-4.3.3-10].
                self.ack_publish(&p, ReasonCode::Success);
                return Ok(());
            }
            if self.client.version.is_v5()
                && self.client.session.inbound_qos2_len() >= usize::from(limits.receive_maximum)
            {
                return Err(End::violation(
                    ReasonCode::ReceiveMaximumExceeded,
                    "[MQTT-3.3.4-7] more unacknowledged QoS 2 messages than Receive Maximum",
                ));
            }
            self.client.session.inbound_qos2_begin(p.pkid);
        }
        let pkid = p.pkid;
        let qos = p.qos;
        let msg = Arc::new(Message::new(
            p,
            Some(Arc::clone(&self.client_id)),
            std::time::Instant::now(),
        ));
        let inbound_qos2 = (qos == QoS::ExactlyOnce && self.client.session.stored)
            .then_some((&*self.client_id, pkid));
        let Published { outcome, durable } = self.state.publish(msg, inbound_qos2);
        let reason = if outcome.delivered == 0 && outcome.dropped_queue_full == 0 {
            ReasonCode::NoMatchingSubscribers
        } else {
            ReasonCode::Success
        };
        let ack = Ack {
            pkid,
            reason,
            ..Ack::default()
        };
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.ack_in_order(durable, Packet::PubAck(ack), Vec::new()),
            QoS::ExactlyOnce => self.ack_in_order(durable, Packet::PubRec(ack), Vec::new()),
        }
        Ok(())
    }

    /// Whether the ACL in force lets this client read or write `topic`.
    fn may(&self, topic: &str, access: Access) -> bool {
        match self.state.auth().authorizer() {
            None => true,
            Some(a) => a.allows(&self.state.identity(&self.client_id), topic, access),
        }
    }

    fn ack_publish(&mut self, p: &Publish, reason: ReasonCode) {
        let ack = Ack {
            pkid: p.pkid,
            reason,
            properties: AckProperties::default(),
        };
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.ack_in_order(None, Packet::PubAck(ack), Vec::new()),
            QoS::ExactlyOnce => {
                // A refused QoS 2 message ends its flow at PUBREC [MQTT-4.3.3-9]; an accepted
                // resend keeps its packet id until PUBREL.
                self.ack_in_order(None, Packet::PubRec(ack), Vec::new());
            }
        }
    }

    /// Replaces a v5 Topic Alias by its topic, recording new aliases [MQTT-3.3.2-12].
    fn resolve_alias(&mut self, p: &mut Publish) -> Result<(), End> {
        let Some(alias) = p.properties.topic_alias.take() else {
            return Ok(());
        };
        if alias == 0 || alias > self.state.config().limits.topic_alias_maximum {
            return Err(End::violation(
                ReasonCode::TopicAliasInvalid,
                "[MQTT-3.3.2-9] topic alias out of range",
            ));
        }
        if p.topic.is_empty() {
            match self
                .client
                .inbound_aliases
                .get(usize::from(alias - 1))
                .and_then(Option::as_ref)
            {
                Some(t) => p.topic = t.clone(),
                None => {
                    return Err(End::violation(
                        ReasonCode::ProtocolError,
                        "MQTT 5 §3.3.2.3.4: unknown topic alias",
                    ))
                }
            }
        } else {
            let i = usize::from(alias - 1);
            if self.client.inbound_aliases.len() <= i {
                // Grows once per new highest alias, at most to our Topic Alias Maximum.
                let mut v = std::mem::take(&mut self.client.inbound_aliases).into_vec();
                v.resize(i + 1, None);
                self.client.inbound_aliases = v.into_boxed_slice();
            }
            self.client.inbound_aliases[i] = Some(p.topic.clone());
        }
        Ok(())
    }

    fn on_subscribe(&mut self, s: Subscribe) -> Result<(), End> {
        let v5 = self.client.version.is_v5();
        let mut reasons = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        let authorizer = self.state.auth().authorizer();
        let identity = authorizer
            .as_ref()
            .map(|_| self.state.identity(&self.client_id));
        for f in &s.filters {
            let mut options = f.options;
            // No Local is not allowed on shared subscriptions [MQTT-3.8.3-4].
            if self.client.bridge && !f.filter.starts_with("$share/") {
                options.no_local = true;
                options.retain_as_published = true;
            }
            if let (Some(a), Some(who)) = (&authorizer, &identity) {
                // A filter nothing under which may be read is refused; wider ones are granted
                // and filtered per message.
                let bare = topic::parse_subscription(&f.filter, usize::MAX)
                    .map(|(_, bare)| bare)
                    .unwrap_or_else(|_| f.filter.clone());
                if !a.may_subscribe(who, &bare) {
                    metrics::acl_denied("subscribe");
                    info!(client_id = %clip(&self.client_id), filter = %clip(&f.filter), "SUBSCRIBE refused by the ACL");
                    reasons.push(ReasonCode::NotAuthorized);
                    continue;
                }
            }
            match self.state.subscribe(
                &mut self.client.session,
                &self.client.mailbox,
                &f.filter,
                options,
                s.subscription_identifier,
                v5,
            ) {
                SubscribeResult::Granted(code, stream) => {
                    reasons.push(code);
                    // Each retained message is checked against the ACL as it is sent.
                    retained.extend(stream);
                }
                SubscribeResult::Refused(code) => reasons.push(code),
                SubscribeResult::ProtocolError => {
                    return Err(End::violation(
                        ReasonCode::ProtocolError,
                        "[MQTT-3.8.3-4] No Local on a shared subscription",
                    ))
                }
            }
        }
        let filters: Vec<&str> = s.filters.iter().map(|f| f.filter.as_str()).collect();
        let durable = self
            .state
            .persist_subscriptions(&self.client.session, &filters);
        let ack = Packet::SubAck(SubAck {
            pkid: s.pkid,
            reasons,
            properties: AckProperties::default(),
        });
        // Retained messages follow the SUBACK, which follows the stored subscription; they are
        // walked as the mailbox drains, in its order.
        self.ack_in_order(durable, ack, retained);
        Ok(())
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let reasons = u
            .filters
            .iter()
            // Malformed filters never get here: the decoder closes the connection for them.
            .map(|f| {
                if self.state.unsubscribe(&mut self.client.session, f) {
                    ReasonCode::Success
                } else {
                    ReasonCode::NoSubscriptionExisted
                }
            })
            .collect();
        let filters: Vec<&str> = u.filters.iter().map(String::as_str).collect();
        let durable = self
            .state
            .persist_subscriptions(&self.client.session, &filters);
        let ack = Packet::UnsubAck(UnsubAck {
            pkid: u.pkid,
            reasons,
            properties: AckProperties::default(),
        });
        self.ack_in_order(durable, ack, Vec::new());
    }

    fn on_disconnect(&mut self, d: Disconnect) -> End {
        if let Some(expiry) = d.properties.session_expiry_interval {
            if self.client.connect_expiry_zero && expiry != 0 {
                return End::violation(
                    ReasonCode::ProtocolError,
                    "[MQTT-3.14.2-2] session expiry raised from 0 at DISCONNECT",
                );
            }
            self.client.session.expiry_interval = expiry;
        }
        End::Disconnect {
            will: d.reason == ReasonCode::DisconnectWithWill,
        }
    }
}

/// True at most once a second, broker-wide: a client publishing where it may not would
/// otherwise flood the log (every refusal is counted in `tern_acl_denied_total` anyway).
fn log_now() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    LAST.swap(now, Ordering::Relaxed) != now
}
