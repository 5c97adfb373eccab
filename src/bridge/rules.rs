//! A bridge's topic rules with their prefixes applied: which local topics go out under which
//! remote topic, and the reverse (Mosquitto's `topic PATTERN DIRECTION QOS LOCAL REMOTE`).

use crate::config::BridgeConfig;
use crate::protocol::QoS;
use crate::topic;

/// A rule with its prefixes applied.
pub(super) struct Rule {
    pub(super) local_filter: String,
    pub(super) remote_filter: String,
    pub(super) local_prefix: String,
    pub(super) remote_prefix: String,
    pub(super) qos: QoS,
    pub(super) out: bool,
    pub(super) inbound: bool,
}

pub(super) fn rules(cfg: &BridgeConfig) -> Vec<Rule> {
    cfg.topics
        .iter()
        .map(|t| Rule {
            local_filter: format!("{}{}", t.local_prefix, t.pattern),
            remote_filter: format!("{}{}", t.remote_prefix, t.pattern),
            local_prefix: t.local_prefix.clone(),
            remote_prefix: t.remote_prefix.clone(),
            qos: QoS::from_u8(t.qos).unwrap_or(QoS::AtLeastOnce),
            out: t.direction.out(),
            inbound: t.direction.inbound(),
        })
        .collect()
}

/// The remote topic for local topic `t`, by the first `out` rule that matches it.
pub(super) fn to_remote(rules: &[Rule], t: &str) -> Option<String> {
    rules
        .iter()
        .filter(|r| r.out && topic::matches(&r.local_filter, t))
        .find_map(|r| {
            t.strip_prefix(r.local_prefix.as_str())
                .map(|rest| format!("{}{rest}", r.remote_prefix))
        })
}

/// The local topic and QoS for remote topic `t`, by the first `in` rule that matches it.
pub(super) fn to_local(rules: &[Rule], t: &str) -> Option<(String, QoS)> {
    rules
        .iter()
        .filter(|r| r.inbound && topic::matches(&r.remote_filter, t))
        .find_map(|r| {
            t.strip_prefix(r.remote_prefix.as_str())
                .map(|rest| (format!("{}{rest}", r.local_prefix), r.qos))
        })
}
