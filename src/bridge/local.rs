//! A bridge's local side: its session's subscriptions to the `out` rules, its link state in
//! `$SYS` (as Mosquitto publishes it), and its queue's metrics.

use std::sync::Arc;

use tracing::warn;

use super::rules::Rule;
use crate::broker::{After, BrokerState, Mailbox, SubscribeResult};
use crate::config::BridgeConfig;
use crate::metrics;
use crate::protocol::{Publish, QoS, RetainHandling, SubscriptionOptions};
use crate::session::{Message, Session};
use crate::topic::TopicFilter;

/// Updates the bridge's queue gauges and counts what its queue dropped since the last call.
pub(super) fn report_queue(name: &str, mailbox: &Mailbox) {
    let dropped = mailbox.take_dropped();
    if dropped > 0 {
        metrics::bridge_dropped(name, u64::from(dropped));
    }
    metrics::bridge_queued(name, mailbox.len(), mailbox.queued_bytes());
}

/// Subscribes the local session to the `out` rules (No Local: what the bridge brought in does
/// not go back; retained messages already held are not forwarded, only what is published from
/// now on) and drops subscriptions no rule asks for any more; stored before the bridge goes on.
pub(super) async fn subscribe_locally(
    cfg: &BridgeConfig,
    rules: &[Rule],
    state: &Arc<BrokerState>,
    session: &mut Session,
    mailbox: &Arc<Mailbox>,
) {
    let wanted: Vec<&Rule> = rules.iter().filter(|r| r.out).collect();
    let stale: Vec<TopicFilter> = session
        .subscriptions()
        .keys()
        .filter(|f| !wanted.iter().any(|r| &r.local_filter == *f))
        .cloned()
        .collect();
    for f in &stale {
        state.unsubscribe(session, f.as_str());
    }
    for r in &wanted {
        let options = SubscriptionOptions {
            qos: r.qos,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::SendIfNew,
        };
        let wanted = crate::broker::Wanted {
            filter: &r.local_filter,
            options,
            id: None,
            weight: None,
        };
        match state.subscribe(session, mailbox, wanted, true) {
            SubscribeResult::Refused(code) => {
                warn!(bridge = %cfg.name, filter = %r.local_filter.as_str(), ?code, "bridge cannot subscribe locally");
            }
            // A bridge consuming from a queue: no SUBACK to wait for here.
            SubscribeResult::Granted(_, Some(After::Queue(q))) => {
                state.queue_ready(q, session.client_id());
            }
            _ => {}
        }
    }
    let mut filters: Vec<&str> = wanted.iter().map(|r| r.local_filter.as_str()).collect();
    filters.extend(stale.iter().map(TopicFilter::as_str));
    if let Some(t) = state.persist_subscriptions(session, mailbox, &filters) {
        if let Err(e) = t.wait().await {
            warn!(bridge = %cfg.name, error = %e, "bridge subscriptions not stored");
        }
    }
}

/// `$SYS/broker/connection/NAME/state`, 1 or 0, retained, as Mosquitto publishes it.
pub(super) fn connection_state(state: &BrokerState, name: &str, up: bool) {
    let publish = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: true,
        topic: format!("$SYS/broker/connection/{name}/state"),
        pkid: 0,
        payload: if up { "1" } else { "0" }.into(),
        properties: Default::default(),
    };
    state.publish_volatile(Arc::new(Message::new(
        publish,
        None,
        std::time::Instant::now(),
    )));
}
