//! Wills, and the timers of a parked session. A will goes out when its connection ends without
//! DISCONNECT, after its Will Delay or when its session ends, whichever comes first (MQTT 5
//! §3.1.3.2.2); a session with an expiry interval ends when it runs out (§3.1.2.11.2). Each
//! timer is one tokio task that finds nothing to do if the client came back meanwhile (the
//! registry's generation has moved on). The ACL is checked when a will is published, not when
//! it was set.

use std::sync::Arc;
use std::time::Duration;

use super::BrokerState;
use crate::logged::clip;
use crate::metrics;
use crate::session::{Message, NEVER_EXPIRES};

/// When a parked session's will is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WillDue {
    /// Now: its delay is over.
    Now,
    /// After this many seconds, before the session ends.
    After(u32),
    /// When the session ends (its expiry timer publishes it).
    AtSessionEnd,
}

/// When a will with `will_left` seconds of delay to go is due, for a session with
/// `expiry_interval` ([`NEVER_EXPIRES`]: none) of which `expiry_left` seconds remain.
fn will_due(will_left: u32, expiry_interval: u32, expiry_left: u32) -> WillDue {
    match will_left {
        0 => WillDue::Now,
        left if expiry_interval == NEVER_EXPIRES || left < expiry_left => WillDue::After(left),
        _ => WillDue::AtSessionEnd,
    }
}

/// A will and its Will Delay in seconds.
pub(super) type DelayedWill = (Arc<Message>, u32);

/// Splits a will at disconnection into the part published now and the part that waits: it
/// waits only with a Will Delay and a session to outlive the connection.
pub(super) fn at_disconnect(
    will: Option<DelayedWill>,
    expiry_interval: u32,
) -> (Option<Arc<Message>>, Option<DelayedWill>) {
    match will {
        Some((msg, delay)) if delay > 0 && expiry_interval > 0 => (None, Some((msg, delay))),
        Some((msg, _)) => (Some(msg), None),
        None => (None, None),
    }
}

impl BrokerState {
    /// Starts the timers of a session just parked (`generation`): its expiry after
    /// `expiry_left` seconds unless it never expires, and its will (`will_left`: seconds of
    /// delay to go) if that comes before. Returns whether the will is due at once; the caller
    /// publishes it ([`BrokerState::publish_will`]) when the moment suits it.
    pub(super) fn start_timers(
        self: &Arc<Self>,
        client_id: &Arc<str>,
        generation: u32,
        expiry_interval: u32,
        expiry_left: u32,
        will_left: Option<u32>,
    ) -> bool {
        if expiry_interval != NEVER_EXPIRES {
            self.schedule_expiry(client_id, generation, expiry_left);
        }
        match will_left.map(|left| will_due(left, expiry_interval, expiry_left)) {
            Some(WillDue::Now) => true,
            Some(WillDue::After(delay)) => {
                self.schedule_will(client_id, generation, delay);
                false
            }
            Some(WillDue::AtSessionEnd) | None => false,
        }
    }

    fn schedule_will(self: &Arc<Self>, client_id: &Arc<str>, generation: u32, delay: u32) {
        let state = Arc::clone(self);
        let id = Arc::clone(client_id);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
            state.publish_will(&id, generation);
        });
    }

    fn schedule_expiry(self: &Arc<Self>, client_id: &Arc<str>, generation: u32, expiry: u32) {
        let at = std::time::SystemTime::now() + Duration::from_secs(u64::from(expiry));
        self.registry.set_expiry(client_id, generation, at);
        let state = Arc::clone(self);
        let id = Arc::clone(client_id);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(expiry))).await;
            if let Some((session, will, mailbox)) = state.registry.expire(&id, generation) {
                tracing::debug!(client_id = %clip(&id), "session expired");
                let stored = mailbox.is_stored();
                state.end_session(&session, stored, will, mailbox.take_all());
            }
        });
    }

    /// Publishes the pending will of a parked session now, and stores it as published.
    pub(super) fn publish_will(&self, client_id: &Arc<str>, generation: u32) {
        if let Some((will, expiry, stored)) = self.registry.take_will(client_id, generation) {
            let disconnected = will.disconnected;
            self.publish_will_message(will.msg);
            self.will_settled(client_id, will.claim);
            if let Some(d) = self.durable.as_ref().filter(|_| stored) {
                d.session_disconnected(client_id, expiry, disconnected, None);
            }
        }
    }

    /// Publishes a will, if its client may still publish to its topic.
    pub(super) fn publish_will_message(&self, msg: Arc<Message>) {
        if let (Some(a), Some(client_id)) = (self.auth.authorizer(), msg.publisher.as_ref()) {
            if !a.allows_will(&self.identity(client_id), msg.topic()) {
                metrics::acl_denied("will");
                tracing::info!(client_id = %clip(client_id), topic = %clip(msg.topic()), "will not published: the ACL forbids its topic");
                return;
            }
        }
        metrics::will_published();
        self.publish(msg, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MQTT 5 §3.1.3.2.2: a will goes after its delay or at session end, whichever comes
    /// first; a session that never expires never cuts the delay short.
    #[test]
    fn a_will_is_due_after_its_delay_or_at_session_end() {
        assert_eq!(will_due(0, 60, 60), WillDue::Now);
        assert_eq!(will_due(10, 60, 60), WillDue::After(10));
        assert_eq!(will_due(10, 60, 5), WillDue::AtSessionEnd);
        assert_eq!(will_due(60, 60, 60), WillDue::AtSessionEnd);
        assert_eq!(
            will_due(u32::MAX - 1, NEVER_EXPIRES, NEVER_EXPIRES),
            WillDue::After(u32::MAX - 1)
        );
    }

    /// A will waits only with a delay and a session that outlives the connection.
    #[test]
    fn a_will_waits_only_with_a_delay_and_a_session() {
        let publish = crate::protocol::Publish {
            dup: false,
            qos: crate::protocol::QoS::AtLeastOnce,
            retain: false,
            topic: "will".into(),
            pkid: 0,
            payload: bytes::Bytes::from_static(b"gone"),
            properties: crate::protocol::PublishProperties::default().into(),
        };
        let msg = Arc::new(Message::new(publish, None, std::time::Instant::now()));
        let split = |delay, expiry| {
            let (now, later) = at_disconnect(Some((Arc::clone(&msg), delay)), expiry);
            (now.is_some(), later.map(|(_, d)| d))
        };
        assert_eq!(split(0, 60), (true, None));
        assert_eq!(split(10, 0), (true, None));
        assert_eq!(split(10, 60), (false, Some(10)));
        assert!(matches!(at_disconnect(None, 60), (None, None)));
    }
}
