//! What a connected client sends: one handler per packet type. The QoS flows are the session's
//! (its effects carried out by the connection's carrier); the rest is the broker's. Each
//! handler returns `Err(End)` when the packet ends the connection.

use crate::logged::clip;
use std::sync::Arc;

use tracing::{debug, info};

use super::{Connection, Deferred, End, Violation};
use crate::auth::hook::Action;
use crate::auth::Access;
use crate::broker::{queue_name, Published, SubscribeResult, Unfit, Waiting, Wanted};
use crate::metrics;
use crate::protocol::{
    AckProperties, Disconnect, Packet, PacketId, Publish, QoS, ReasonCode, SubAck, Subscribe,
    TopicFilter, UnsubAck, Unsubscribe,
};
use crate::session::{AckOutcome, Message, Qos2In};
use crate::topic;

impl Connection {
    pub(super) fn handle_packet(&mut self, packet: Packet) -> Result<(), End> {
        let session = &mut self.client.session;
        let effects = &mut self.effects;
        let (packet_name, pkid, outcome) = match packet {
            Packet::Publish(p) => return self.on_publish(p),
            Packet::PubAck(a) => {
                let pkid = flow_id(a.pkid)?;
                ("PUBACK", pkid, session.on_puback(pkid, effects))
            }
            Packet::PubRec(a) => {
                let pkid = flow_id(a.pkid)?;
                ("PUBREC", pkid, session.on_pubrec(pkid, a.reason, effects))
            }
            Packet::PubRel(a) => {
                let pkid = flow_id(a.pkid)?;
                ("PUBREL", pkid, session.on_pubrel(pkid, effects))
            }
            Packet::PubComp(a) => {
                let pkid = flow_id(a.pkid)?;
                ("PUBCOMP", pkid, session.on_pubcomp(pkid, effects))
            }
            Packet::Subscribe(s) => {
                if let Some(wait) = self.state.remote().and_then(|r| r.retained_synced()) {
                    self.deferred = Some(Box::new(Deferred {
                        packet: Packet::Subscribe(s),
                        wait,
                        synced: true,
                    }));
                    return Ok(());
                }
                return self.on_subscribe(s);
            }
            Packet::Unsubscribe(u) => {
                self.on_unsubscribe(u);
                return Ok(());
            }
            Packet::PingReq => {
                self.ack(Packet::PingResp);
                return Ok(());
            }
            Packet::Disconnect(d) => return Err(self.on_disconnect(d)),
            Packet::Auth(_) => return Err(Violation::AuthWithoutMethod.into()),
            // The decoder lets through only what a client may send.
            other => {
                return Err(Violation::Decode(crate::protocol::DecodeError::Protocol(
                    match other {
                        Packet::Connect(_) => "[MQTT-3.1.0-2] second CONNECT",
                        _ => "a server-to-client packet sent by a client",
                    },
                ))
                .into())
            }
        };
        self.carry(None);
        match outcome {
            AckOutcome::Done => Ok(()),
            // Answered where MQTT asks for an answer (PUBREL, PUBCOMP with 0x92), otherwise
            // ignored, as Mosquitto does.
            AckOutcome::Unknown => {
                metrics::unexpected_ack(packet_name, "unknown");
                debug!(client_id = %clip(self.client_id()), pkid = pkid.get(), packet = packet_name, "acknowledgement for an unknown packet identifier");
                Ok(())
            }
            AckOutcome::WrongFlow => {
                metrics::unexpected_ack(packet_name, "wrong_flow");
                Err(Violation::WrongFlow {
                    packet: packet_name,
                    pkid: pkid.get(),
                }
                .into())
            }
        }
    }

    /// With an ACL hook: what a PUBLISH or SUBSCRIBE asks that the hook's cache cannot answer
    /// is asked first, the packet (and everything after it) held until the answers are in
    /// (`None`); the synchronous checks then read the cache. A superuser is not asked about.
    pub(super) fn ask_acl_first(&mut self, mut packet: Packet) -> Result<Option<Packet>, End> {
        if !matches!(packet, Packet::Publish(_) | Packet::Subscribe(_)) {
            return Ok(Some(packet));
        }
        let Some(hook) = self.state.auth().acl_hook() else {
            return Ok(Some(packet));
        };
        let who = self.state.identity(self.client_id());
        if who.rights.as_ref().is_some_and(|r| r.superuser) {
            return Ok(Some(packet));
        }
        let mut questions = Vec::new();
        match &mut packet {
            Packet::Publish(p) => {
                // The topic an alias stands for is what is asked about (resolved once: the
                // alias is taken out of the packet).
                self.resolve_alias(p)?;
                if hook.cached(&who, Action::Publish, &p.topic).is_none() {
                    questions.push((Action::Publish, p.topic.clone()));
                }
            }
            Packet::Subscribe(s) => {
                for f in &s.filters {
                    let filter = self.state.acl_filter(&f.filter);
                    if hook.cached(&who, Action::Subscribe, filter).is_none() {
                        questions.push((Action::Subscribe, filter.to_string()));
                    }
                }
            }
            _ => {}
        }
        if questions.is_empty() {
            return Ok(Some(packet));
        }
        let wait: Waiting<()> = Box::pin(async move { hook.ask_acl(&who, &questions).await });
        self.deferred = Some(Box::new(Deferred {
            packet,
            wait,
            synced: false,
        }));
        Ok(None)
    }

    pub(super) fn ack(&mut self, packet: Packet) {
        if !self.client.out.ack(&mut self.io.outbuf, packet) {
            self.unsendable = true;
        }
    }

    fn on_publish(&mut self, mut p: Publish) -> Result<(), End> {
        self.resolve_alias(&mut p)?;
        let pkid = PacketId::new(p.pkid);
        if p.qos != QoS::AtMostOnce && pkid.is_none() {
            // Not reached: the decoder refuses packet id 0 on QoS 1/2.
            return Err(Violation::Decode(crate::protocol::DecodeError::Malformed(
                "[MQTT-2.2.1-3] packet identifier 0 on a QoS 1/2 PUBLISH",
            ))
            .into());
        }
        let limits = &self.state.config().limits;
        // The decoder has checked the rest of the name (an alias's topic when it was learned).
        let reject = if let Err(e) = topic::check_topic_levels(&p.topic, limits.max_topic_levels) {
            metrics::limit_hit("max_topic_levels");
            debug!(client_id = %clip(self.client_id()), topic = %clip(&p.topic), error = %e, "PUBLISH refused");
            if !self.client.version().is_v5() {
                return Err(Violation::TopicNameRefused(e).into());
            }
            Some(ReasonCode::TopicNameInvalid)
        } else if queue_name(&p.topic).is_some() {
            // `$queue/{name}` is what consumers subscribe to, never a topic to publish to.
            return Err(Violation::TopicNameRefused(topic::TopicError::QueueTopic).into());
        } else if p.topic == "$SYS" || p.topic.starts_with("$SYS/") {
            Some(ReasonCode::NotAuthorized)
        } else if limits
            .max_payload_size
            .is_some_and(|max| p.payload.len() > max as usize)
        {
            // Mosquitto's message_size_limit: the flow completes, the message goes nowhere;
            // v3.1.1 cannot be told.
            metrics::limit_hit("max_payload_size");
            debug!(client_id = %clip(self.client_id()), topic = %clip(&p.topic), bytes = p.payload.len(), "PUBLISH dropped: payload over limits.max_payload_size");
            (self.client.version().is_v5()).then_some(ReasonCode::ImplementationSpecificError)
        } else if !self.may(&p.topic, Access::Write) {
            metrics::acl_denied("publish");
            // At most once a second: a client publishing where it may not would otherwise
            // flood the log (every refusal is counted in `tern_acl_denied_total` anyway).
            static LOG: crate::logged::Throttle = crate::logged::Throttle::per(1);
            if LOG.allow() {
                info!(client_id = %clip(self.client_id()), topic = %clip(&p.topic), "PUBLISH refused by the ACL (logged at most once a second)");
            }
            // v3.1.1 has no way to say so: acknowledged and dropped, as the spec requires
            // (a QoS 2 flow still runs to PUBCOMP).
            (self.client.version().is_v5()).then_some(ReasonCode::NotAuthorized)
        } else if let Some(unfit) = self
            .state
            .remote()
            .and_then(|r| r.fits(&p.topic, p.payload.len()).err())
        {
            debug!(client_id = %clip(self.client_id()), topic = %clip(&p.topic), ?unfit, "PUBLISH refused: it does not fit a NATS message");
            match unfit {
                Unfit::PayloadTooLarge => {
                    metrics::limit_hit("cluster_max_payload");
                    return Err(Violation::ClusterPayloadTooLarge(p.payload.len()).into());
                }
                Unfit::TopicTooLong => {
                    metrics::limit_hit("cluster_subject_length");
                    if !self.client.version().is_v5() {
                        return Err(Violation::TopicNameRefused(
                            topic::TopicError::TooLongForCluster,
                        )
                        .into());
                    }
                    Some(ReasonCode::TopicNameInvalid)
                }
            }
        } else if p.retain
            && !p.payload.is_empty()
            && p.qos != QoS::AtMostOnce
            && self.client.version().is_v5()
            && self.state.retained_room(&p.topic, p.payload.len()).is_err()
        {
            // The retained budget is full and this would be a new retained topic: a v5
            // publisher can be told (the message goes nowhere); others are delivered and not
            // retained (`BrokerState::publish`).
            Some(ReasonCode::QuotaExceeded)
        } else if self.state.crossed_here(&p.properties.user_properties) {
            // Left this broker through a bridge before: a loop between bridged brokers.
            // Acknowledged (it was delivered here already) and dropped.
            metrics::dropped("bridge_loop");
            None
        } else {
            return self.forward(p, pkid);
        };
        match reject {
            Some(reason) => self
                .client
                .session
                .acknowledge(p.qos, pkid, reason, &mut self.effects),
            None => self.accept_unrouted(p.qos, pkid)?,
        }
        self.carry(None);
        Ok(())
    }

    /// Acknowledges a message accepted and not routed (v3.1.1 ACL refusal, bridge loop): a
    /// QoS 2 flow runs to PUBCOMP as for any other.
    fn accept_unrouted(&mut self, qos: QoS, pkid: Option<PacketId>) -> Result<(), End> {
        let session = &mut self.client.session;
        if let (QoS::ExactlyOnce, Some(id)) = (qos, pkid) {
            if session.on_publish_qos2(id, usize::MAX, &mut self.effects) == Qos2In::Duplicate {
                return Ok(());
            }
        }
        session.acknowledge(qos, pkid, ReasonCode::Success, &mut self.effects);
        Ok(())
    }

    /// Publishes an accepted message into the broker and acknowledges it once it is as safe as
    /// its QoS promises (stored, with persistence on; in the cluster's stream, in cluster
    /// mode). A QoS 2 message sent again before PUBREL is acknowledged, not forwarded again.
    fn forward(&mut self, p: Publish, pkid: Option<PacketId>) -> Result<(), End> {
        let qos = p.qos;
        let mut stored_qos2 = None;
        if let (QoS::ExactlyOnce, Some(id)) = (qos, pkid) {
            // v3.1.1 has no Receive Maximum: only memory bounds it.
            let max = if self.client.version().is_v5() {
                usize::from(self.state.config().limits.receive_maximum)
            } else {
                usize::MAX
            };
            match self
                .client
                .session
                .on_publish_qos2(id, max, &mut self.effects)
            {
                Qos2In::New => {}
                Qos2In::Duplicate => {
                    // Cluster mode: it goes to the stream again under the same id, which
                    // stores it once; should the first write have failed, this one counts.
                    // The PUBREC (already queued) waits for it.
                    let durable = self.state.remote().and_then(|r| {
                        let serial = self.client.session.inbound_qos2_serial(id)?;
                        let msg = Arc::new(Message::new(
                            p,
                            Some(Arc::clone(self.client_id())),
                            self.last_activity.into_std(),
                        ));
                        r.forward(&msg, false, Some(serial))
                    });
                    self.carry(durable);
                    return Ok(());
                }
                Qos2In::OverLimit => return Err(Violation::ReceiveMaximumExceeded.into()),
            }
            stored_qos2 = self
                .client
                .mailbox
                .is_stored()
                .then_some((&**self.client.session.client_id(), id));
        }
        // Its age counts from the read that brought it in.
        let msg = Arc::new(Message::new(
            p,
            Some(Arc::clone(self.client_id())),
            self.last_activity.into_std(),
        ));
        let serial = pkid.and_then(|id| self.client.session.inbound_qos2_serial(id));
        // Cluster mode: a persistent session keeps the QoS 2 message's number before PUBREC.
        let kept = pkid.filter(|_| serial.is_some()).and_then(|id| {
            self.state
                .keep_inbound_qos2(&self.client.session, &self.client.mailbox, id)
        });
        let Published { outcome, durable } = self.state.publish_from(msg, stored_qos2, serial);
        let durable = crate::broker::both(durable, kept);
        let reason = if outcome.refused > 0 && self.client.version().is_v5() {
            // A declared queue is full (`overflow = "reject"`); 3.1.1 has no way to say so.
            ReasonCode::QuotaExceeded
        } else if outcome.delivered == 0
            && !outcome.forwarded
            && outcome.dropped_queue_full == 0
            && outcome.queued == 0
            && outcome.refused == 0
        {
            ReasonCode::NoMatchingSubscribers
        } else {
            ReasonCode::Success
        };
        self.client
            .session
            .acknowledge(qos, pkid, reason, &mut self.effects);
        self.carry(durable);
        Ok(())
    }

    /// Whether the ACL in force lets this client read or write `topic`.
    fn may(&self, topic: &str, access: Access) -> bool {
        match self.state.auth().authorizer() {
            None => true,
            Some(a) => a.allows(&self.state.identity(self.client_id()), topic, access),
        }
    }

    /// Replaces a v5 Topic Alias by its topic, recording new aliases [MQTT-3.3.2-12].
    fn resolve_alias(&mut self, p: &mut Publish) -> Result<(), End> {
        let Some(alias) = p.properties.get_mut().and_then(|p| p.topic_alias.take()) else {
            return Ok(());
        };
        if alias == 0 || alias > self.state.config().limits.topic_alias_maximum {
            return Err(Violation::TopicAliasOutOfRange(alias).into());
        }
        if p.topic.is_empty() {
            match self.client.out.inbound_topic(alias) {
                Some(t) => p.topic = t.clone(),
                None => return Err(Violation::UnknownTopicAlias(alias).into()),
            }
        } else {
            self.client.out.learn_inbound(alias, &p.topic);
        }
        Ok(())
    }

    pub(super) fn on_subscribe(&mut self, s: Subscribe) -> Result<(), End> {
        let v5 = self.client.version().is_v5();
        let mut reasons = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        let mut reason_string = None;
        // A member's weight in a `weighted` group: the SUBSCRIBE's User Property `weight`.
        let weight = match s.user_properties.iter().find(|(k, _)| k == "weight") {
            None => Ok(None),
            Some((_, v)) => v
                .parse::<u32>()
                .ok()
                .filter(|w| crate::config::WEIGHTS.contains(w))
                .map(Some)
                .ok_or(()),
        };
        let authorizer = self.state.auth().authorizer();
        let identity = authorizer
            .as_ref()
            .map(|_| self.state.identity(self.client_id()));
        for f in &s.filters {
            let grouped = f.filter.share().is_some() || queue_name(f.filter.as_str()).is_some();
            if grouped && weight.is_err() {
                reasons.push(ReasonCode::ImplementationSpecificError);
                reason_string = Some("weight must be an integer from 1 to 1000".to_string());
                continue;
            }
            let mut options = f.options;
            // No Local is not allowed on shared subscriptions [MQTT-3.8.3-4].
            if self.client.bridge && f.filter.share().is_none() {
                options.no_local = true;
                options.retain_as_published = true;
            }
            if let (Some(a), Some(who)) = (&authorizer, &identity) {
                // A filter nothing under which may be read is refused; wider ones are granted
                // and filtered per message.
                if !a.may_subscribe(who, self.state.acl_filter(&f.filter)) {
                    metrics::acl_denied("subscribe");
                    info!(client_id = %clip(self.client_id()), filter = %clip(f.filter.as_str()), "SUBSCRIBE refused by the ACL");
                    reasons.push(ReasonCode::NotAuthorized);
                    continue;
                }
            }
            let wanted = Wanted {
                filter: &f.filter,
                options,
                id: s.subscription_identifier,
                weight: weight.unwrap_or(None),
            };
            match self
                .state
                .subscribe(&mut self.client.session, &self.client.mailbox, wanted, v5)
            {
                SubscribeResult::Granted(code, stream) => {
                    reasons.push(code);
                    // Each retained message is checked against the ACL as it is sent.
                    retained.extend(stream);
                }
                SubscribeResult::Refused(code) => reasons.push(code),
                SubscribeResult::ProtocolError => return Err(Violation::NoLocalOnShared.into()),
            }
        }
        let filters: Vec<&str> = s.filters.iter().map(|f| f.filter.as_str()).collect();
        let durable = crate::broker::both(
            self.state
                .persist_subscriptions(&self.client.session, &self.client.mailbox, &filters),
            // Cluster mode: the SUBACK waits until every peer routes what it matches here.
            self.state.remote().and_then(|r| r.interest_settled()),
        );
        let ack = Packet::SubAck(SubAck {
            pkid: s.pkid,
            reasons,
            properties: AckProperties {
                reason_string,
                ..AckProperties::default()
            },
        });
        // Retained messages follow the SUBACK, which follows the stored subscription; they are
        // walked as the mailbox drains, in its order.
        self.control(ack, retained, durable);
        Ok(())
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let reasons = u
            .filters
            .iter()
            // Malformed filters never get here: the decoder closes the connection for them.
            .map(|f| {
                if self.state.unsubscribe(&mut self.client.session, f.as_str()) {
                    ReasonCode::Success
                } else {
                    ReasonCode::NoSubscriptionExisted
                }
            })
            .collect();
        let filters: Vec<&str> = u.filters.iter().map(TopicFilter::as_str).collect();
        let durable =
            self.state
                .persist_subscriptions(&self.client.session, &self.client.mailbox, &filters);
        let ack = Packet::UnsubAck(UnsubAck {
            pkid: u.pkid,
            reasons,
            properties: AckProperties::default(),
        });
        self.control(ack, Vec::new(), durable);
    }

    fn on_disconnect(&mut self, d: Disconnect) -> End {
        if let Some(expiry) = d.properties.session_expiry_interval {
            if self.client.connect_expiry_zero && expiry != 0 {
                return Violation::ExpiryRaised.into();
            }
            self.client.session.expiry_interval = expiry;
        }
        End::Disconnect {
            will: d.reason == ReasonCode::DisconnectWithWill,
        }
    }
}

/// The packet id of a QoS flow's acknowledgement (never 0: the decoder refuses it).
fn flow_id(pkid: u16) -> Result<PacketId, End> {
    PacketId::new(pkid).ok_or_else(|| {
        Violation::Decode(crate::protocol::DecodeError::Malformed(
            "[MQTT-2.2.1-3] packet identifier 0",
        ))
        .into()
    })
}
