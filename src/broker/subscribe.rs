//! SUBSCRIBE and UNSUBSCRIBE on the broker's side, and what a mailbox reads through as it
//! drains ([`Feed`]): stored messages, and the retained messages a subscription brought,
//! walked lazily in the mailbox's order with the ACL's read check per message.

use crate::logged::clip;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use super::mailbox::{Source, Streamed};
use super::queues::Joining;
use super::retained::{RetainedStream, Step};
use super::router::Subscriber;
use super::{BrokerState, Mailbox};
use crate::auth::Access;
use crate::metrics;
use crate::protocol::{QoS, ReasonCode, RetainHandling, SubscriptionOptions};
use crate::session::{Delivery, Session, Subscription};
use crate::topic::TopicFilter;

/// One filter of a SUBSCRIBE, as the broker is asked to record it.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// The filter.
    pub filter: &'a TopicFilter,
    /// Its options.
    pub options: SubscriptionOptions,
    /// The SUBSCRIBE's Subscription Identifier (v5).
    pub id: Option<u32>,
    /// The member's weight in a shared group (v5 User Property `weight`), if given.
    pub weight: Option<u32>,
}

/// What a granted subscription starts once its SUBACK is written: nothing it brings goes out
/// before the SUBACK.
#[derive(Debug)]
pub enum After {
    /// Its retained messages, queued as a marker ([`super::Mailbox::push_retained`]).
    Retained(RetainedStream),
    /// Messages from declared queue number `u32`, of which the client is now a consumer
    /// ([`BrokerState::queue_ready`]).
    Queue(u32),
}

/// Result of one filter of a SUBSCRIBE.
#[derive(Debug)]
pub enum SubscribeResult {
    /// Granted at this QoS, with what follows the SUBACK: retained messages, if any match, or
    /// a queue's messages.
    Granted(ReasonCode, Option<After>),
    /// Refused with this reason.
    Refused(ReasonCode),
    /// No Local on a shared subscription [MQTT-3.8.3-4]: a protocol error for the connection.
    ProtocolError,
}

impl BrokerState {
    /// Records, for a persistent session (its mailbox says so), the current state of
    /// `filters` (subscribed or not); `None` when nothing is stored for it. SUBACK and UNSUBACK
    /// wait for the ticket.
    pub fn persist_subscriptions(
        &self,
        session: &Session,
        mailbox: &Mailbox,
        filters: &[&str],
    ) -> Option<crate::store::Ticket> {
        if self.remote.get().is_some() {
            return self.keep_subscriptions(session, mailbox);
        }
        let durable = self.durable.as_ref().filter(|_| mailbox.is_stored())?;
        let changes: Vec<(&str, Option<&Subscription>)> = filters
            .iter()
            .map(|f| (*f, session.subscriptions().get(*f)))
            .collect();
        Some(durable.subscriptions(session.client_id(), &changes))
    }

    /// Validates and records one filter of a SUBSCRIBE for `session`. The retained messages
    /// it brings are not collected: a granted result carries a stream over them, begun once
    /// the subscription is in the router (so nothing published from then on is missed or
    /// sent twice).
    pub fn subscribe(
        &self,
        session: &mut Session,
        mailbox: &Arc<Mailbox>,
        wanted: Wanted<'_>,
        v5: bool,
    ) -> SubscribeResult {
        let Wanted {
            filter,
            options,
            id,
            weight,
        } = wanted;
        let config = self.config();
        let limits = &config.limits;
        let refused = |code| {
            SubscribeResult::Refused(if v5 {
                code
            } else {
                ReasonCode::UnspecifiedError
            })
        };
        if filter.levels() > limits.max_topic_levels {
            metrics::limit_hit("max_topic_levels");
            tracing::debug!(client_id = %clip(session.client_id()), filter = %clip(filter.as_str()), levels = filter.levels(), "topic filter with more levels than allowed");
            return refused(ReasonCode::TopicFilterInvalid);
        }
        let (share, plain) = (filter.share(), filter.filter());
        if share.is_some() && options.no_local {
            return SubscribeResult::ProtocolError;
        }
        let exists = session.subscriptions().contains_key(filter.as_str());
        let max = limits.max_subscriptions_per_client;
        if !exists && max > 0 && session.subscriptions().len() >= max {
            metrics::limit_hit("max_subscriptions_per_client");
            return refused(ReasonCode::QuotaExceeded);
        }
        let sub = Subscriber {
            client_id: Arc::clone(session.client_id()),
            mailbox: Arc::clone(mailbox),
            options,
            id,
        };
        if share.is_some() || super::queue_name(filter.as_str()).is_some() {
            let joining = Joining {
                weight: self.share_weight(session.client_id(), weight),
                window: session.window(),
            };
            let Some((slot, _)) = self.join_queue(filter, sub, joining) else {
                tracing::debug!(client_id = %clip(session.client_id()), filter = %clip(filter.as_str()), "SUBSCRIBE to a queue not declared in [[queues]]");
                return refused(ReasonCode::TopicFilterInvalid);
            };
            session.subscribe(filter.clone(), Subscription { options, id });
            return SubscribeResult::Granted(granted(options.qos), Some(After::Queue(slot)));
        }
        session.subscribe(filter.clone(), Subscription { options, id });
        self.router.subscribe(plain, sub);
        let send_retained = share.is_none()
            && match options.retain_handling {
                RetainHandling::SendAtSubscribe => true,
                RetainHandling::SendIfNew => !exists,
                RetainHandling::DoNotSend => false,
            };
        let retained = if send_retained {
            self.retained.stream(plain, options.qos, id)
        } else {
            None
        };
        SubscribeResult::Granted(granted(options.qos), retained.map(After::Retained))
    }

    /// A member's weight: from its SUBSCRIBE, else `[shared.weights]`, else 1.
    pub(super) fn share_weight(&self, client_id: &str, weight: Option<u32>) -> u32 {
        weight
            .or_else(|| self.config().shared.weight_of(client_id))
            .unwrap_or(1)
    }

    /// Removes one subscription of `session`; false if it did not exist.
    pub fn unsubscribe(&self, session: &mut Session, filter: &str) -> bool {
        let Some(removed) = session.unsubscribe(filter) else {
            return false;
        };
        if !self.leave_queue(&removed, session.client_id()) {
            self.router
                .unsubscribe(removed.filter(), session.client_id());
        }
        true
    }

    /// What `session`'s mailbox reads through while it drains.
    pub fn feed<'a>(&'a self, session: &'a Session) -> Feed<'a> {
        Feed {
            state: self,
            session,
        }
    }
}

/// SUBACK's reason code for a subscription granted at `qos`.
fn granted(qos: QoS) -> ReasonCode {
    match qos {
        QoS::AtMostOnce => ReasonCode::Success,
        QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
        QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
    }
}

/// The broker as one client's mailbox sees it while draining ([`Mailbox::drain_into`]).
pub struct Feed<'a> {
    state: &'a BrokerState,
    session: &'a Session,
}

impl Source for Feed<'_> {
    fn load(&mut self, seq: u64) -> Option<Delivery> {
        self.state.load_stored(self.session.client_id(), seq)
    }

    /// Retained messages as deliveries at min(their QoS, the granted QoS), RETAIN set, with
    /// the subscription's identifier; those the ACL does not let the client read are passed
    /// over and counted.
    fn stream_retained(
        &mut self,
        stream: &mut RetainedStream,
        out: &mut Vec<Delivery>,
        mut room: usize,
        mut window: usize,
    ) -> Streamed {
        let client_id = self.session.client_id();
        // A bridge forwards what its rules say; the remote enforces its own ACL.
        let authorizer = self
            .state
            .auth
            .authorizer()
            .filter(|_| !super::bridged::is_bridge_session(client_id));
        let who = authorizer.as_ref().map(|_| self.state.identity(client_id));
        let (granted, sub_id) = (stream.qos, stream.sub_id);
        let mut blocked = false;
        let step = self
            .state
            .retained
            .step(stream, Instant::now(), &mut |msg| {
                let qos = msg.qos().min(granted);
                if room == 0 {
                    return ControlFlow::Break(());
                }
                if qos != QoS::AtMostOnce && window == 0 {
                    blocked = true;
                    return ControlFlow::Break(());
                }
                if let (Some(a), Some(who)) = (&authorizer, &who) {
                    if !a.allows(who, msg.topic(), Access::Read) {
                        metrics::acl_denied("retained");
                        return ControlFlow::Continue(());
                    }
                }
                room -= 1;
                if qos != QoS::AtMostOnce {
                    window -= 1;
                }
                out.push(Delivery::new(Arc::clone(msg), qos, true).with_sub_ids(sub_id));
                ControlFlow::Continue(())
            });
        match step {
            Step::Done => Streamed::Done,
            Step::Stopped if blocked => Streamed::Blocked,
            Step::Stopped | Step::Paused => Streamed::More,
        }
    }
}
