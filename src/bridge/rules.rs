//! A bridge's topic rules with their prefixes applied: which local topics go out under which
//! remote topic, and the reverse (Mosquitto's `topic PATTERN DIRECTION QOS LOCAL REMOTE`).

use tracing::warn;

use crate::config::BridgeConfig;
use crate::protocol::QoS;
use crate::topic::{self, TopicFilter};

/// A rule with its prefixes applied.
pub(super) struct Rule {
    pub(super) local_filter: TopicFilter,
    pub(super) remote_filter: TopicFilter,
    pub(super) local_prefix: String,
    pub(super) remote_prefix: String,
    pub(super) qos: QoS,
    pub(super) out: bool,
    pub(super) inbound: bool,
}

/// The rules of bridge `cfg` (checked when the configuration was read; a filter that still
/// does not parse, e.g. a bare `$share/group`, is left out and logged).
pub(super) fn rules(cfg: &BridgeConfig) -> Vec<Rule> {
    cfg.topics
        .iter()
        .filter_map(|t| {
            let parse = |prefix: &str| TopicFilter::parse(&format!("{prefix}{}", t.pattern));
            match (parse(&t.local_prefix), parse(&t.remote_prefix)) {
                (Ok(local_filter), Ok(remote_filter)) => Some(Rule {
                    local_filter,
                    remote_filter,
                    local_prefix: t.local_prefix.clone(),
                    remote_prefix: t.remote_prefix.clone(),
                    qos: QoS::from_u8(t.qos).unwrap_or(QoS::AtLeastOnce),
                    out: t.direction.out(),
                    inbound: t.direction.inbound(),
                }),
                (Err(e), _) | (_, Err(e)) => {
                    warn!(bridge = %cfg.name, pattern = %t.pattern, error = %e, "bridge topic rule left out");
                    None
                }
            }
        })
        .collect()
}

/// The remote topic for local topic `t`, by the first `out` rule that matches it.
pub(super) fn to_remote(rules: &[Rule], t: &str) -> Option<String> {
    rules
        .iter()
        .filter(|r| r.out && topic::matches(r.local_filter.as_str(), t))
        .find_map(|r| {
            t.strip_prefix(r.local_prefix.as_str())
                .map(|rest| format!("{}{rest}", r.remote_prefix))
        })
}

/// The local topic and QoS for remote topic `t`, by the first `in` rule that matches it.
pub(super) fn to_local(rules: &[Rule], t: &str) -> Option<(String, QoS)> {
    rules
        .iter()
        .filter(|r| r.inbound && topic::matches(r.remote_filter.as_str(), t))
        .find_map(|r| {
            t.strip_prefix(r.remote_prefix.as_str())
                .map(|rest| (format!("{}{rest}", r.local_prefix), r.qos))
        })
}
