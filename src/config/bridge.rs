//! `[[bridge]]`: links to remote brokers (an edge gateway forwarding to the cloud), in
//! Mosquitto's terms: addresses tried in order, a client identity on the remote, and topic
//! rules `pattern direction qos local-prefix remote-prefix`.

use std::path::PathBuf;

use serde::Deserialize;

/// One bridge to a remote broker.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Name: in logs, metrics, `$SYS/broker/connection/NAME/state` and the local session id.
    pub name: String,
    /// `host:port` of the remote broker, tried in this order (failover).
    pub addresses: Vec<String>,
    /// MQTT version spoken to the remote: "5" (default; No Local keeps messages from echoing
    /// back) or "3.1.1".
    #[serde(default = "v5")]
    pub protocol: String,
    /// With "3.1.1": announce the bridge to the remote with the top bit of the protocol level,
    /// as Mosquitto's `try_private` (default true). Mosquitto, EMQX and Tern then treat its
    /// subscriptions as No Local, so nothing echoes back; a remote that refuses it gets a
    /// plain CONNECT at once, and the echo filter guards the link instead.
    #[serde(default = "yes")]
    pub try_private: bool,
    /// Client id on the remote; default `tern-bridge-NAME`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Clean start on the remote (default false: the remote keeps our subscriptions and
    /// queues messages for us while the link is down).
    #[serde(default)]
    pub clean_start: bool,
    /// v5 Session Expiry Interval asked of the remote, in seconds (default one day).
    #[serde(default = "one_day")]
    pub session_expiry_secs: u32,
    /// Keep-alive, in seconds (default 60).
    #[serde(default = "sixty")]
    pub keep_alive_secs: u16,
    /// User name on the remote.
    #[serde(default)]
    pub username: Option<String>,
    /// Password on the remote.
    #[serde(default)]
    pub password: Option<String>,
    /// TLS to the remote: the CA (PEM) its certificate must chain to. Without it (and
    /// without `capath`), plain TCP.
    #[serde(default)]
    pub cafile: Option<PathBuf>,
    /// TLS to the remote: a directory whose files hold more such CAs (PEM; files without a
    /// certificate are skipped), like Mosquitto's `bridge_capath`.
    #[serde(default)]
    pub capath: Option<PathBuf>,
    /// TLS: our client certificate chain (PEM), for remotes that ask for one.
    #[serde(default)]
    pub certfile: Option<PathBuf>,
    /// TLS: the key of `certfile` (PEM).
    #[serde(default)]
    pub keyfile: Option<PathBuf>,
    /// TLS: the name the remote's certificate must carry (default: the address's host).
    #[serde(default)]
    pub server_name: Option<String>,
    /// Messages waiting to go out while the link is down or behind; beyond it new QoS 0 then
    /// new QoS 1/2 messages are dropped and counted (`tern_bridge_dropped_total`).
    #[serde(default = "hundred_thousand")]
    pub max_queued_messages: usize,
    /// Payload bytes waiting to go out, at most (none by default); the same overflow policy.
    /// Mosquitto's `max_queued_bytes`, per bridge.
    #[serde(default)]
    pub max_queued_bytes: Option<u64>,
    /// Unacknowledged QoS 1/2 messages in flight to the remote (a v5 remote's Receive Maximum
    /// lowers it). Large, so a backlog drains at link speed over a long round trip; after a
    /// lost link at most this many QoS 1 messages may arrive twice.
    #[serde(default = "inflight")]
    pub max_inflight: u16,
    /// First wait before reconnecting, in milliseconds; doubled per failure up to
    /// `reconnect_max_ms`, with jitter.
    #[serde(default = "second")]
    pub reconnect_min_ms: u64,
    /// Longest wait before reconnecting, in milliseconds.
    #[serde(default = "minute")]
    pub reconnect_max_ms: u64,
    /// What goes where.
    pub topics: Vec<TopicRule>,
}

/// Which way a rule forwards.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Local → remote.
    Out,
    /// Remote → local.
    In,
    /// Both.
    Both,
}

impl Direction {
    /// Whether local messages go out.
    pub fn out(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }

    /// Whether remote messages come in.
    pub fn inbound(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
}

/// One topic rule: `pattern` (a filter) under `local_prefix` here and `remote_prefix` there.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopicRule {
    /// Topic filter, without the prefixes.
    pub pattern: String,
    /// `out`, `in` or `both`.
    pub direction: Direction,
    /// Highest QoS used on the link (default 1).
    #[serde(default = "one")]
    pub qos: u8,
    /// Prefix of the topics here.
    #[serde(default)]
    pub local_prefix: String,
    /// Prefix of the topics on the remote.
    #[serde(default)]
    pub remote_prefix: String,
}

impl BridgeConfig {
    /// Whether the link speaks MQTT 5.
    pub fn is_v5(&self) -> bool {
        self.protocol == "5"
    }

    /// Whether the link runs over TLS (a CA to check the remote against is configured).
    pub fn uses_tls(&self) -> bool {
        self.cafile.is_some() || self.capath.is_some()
    }

    /// The client id used on the remote.
    pub fn remote_client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("tern-bridge-{}", self.name))
    }

    /// What is wrong with it, as (key, what is allowed).
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Some(("name", "letters, digits, - and _ (it names a topic level)"));
        }
        if self.addresses.is_empty() || self.addresses.iter().any(|a| !a.contains(':')) {
            return Some(("addresses", "one or more \"host:port\""));
        }
        if self.protocol != "5" && self.protocol != "3.1.1" {
            return Some(("protocol", "\"5\" or \"3.1.1\""));
        }
        if self.certfile.is_some() != self.keyfile.is_some() {
            return Some(("certfile", "certfile and keyfile together"));
        }
        if self.certfile.is_some() && !self.uses_tls() {
            return Some((
                "cafile",
                "a CA file (or capath) whenever a client certificate is given",
            ));
        }
        if self.max_queued_messages == 0 {
            return Some(("max_queued_messages", "an integer ≥ 1"));
        }
        if self.max_queued_bytes == Some(0) {
            return Some((
                "max_queued_bytes",
                "an integer ≥ 1 (leave it out for no byte bound)",
            ));
        }
        if self.max_inflight == 0 {
            return Some(("max_inflight", "1 to 65535"));
        }
        if self.reconnect_min_ms == 0 || self.reconnect_max_ms < self.reconnect_min_ms {
            return Some((
                "reconnect_min_ms",
                "≥ 1, and reconnect_max_ms at least as large",
            ));
        }
        if self.topics.is_empty() {
            return Some(("topics", "at least one rule"));
        }
        for t in &self.topics {
            if t.qos > 2 {
                return Some(("topics.qos", "0, 1 or 2"));
            }
            let local = format!("{}{}", t.local_prefix, t.pattern);
            let remote = format!("{}{}", t.remote_prefix, t.pattern);
            if crate::topic::validate_topic_filter(&local, usize::MAX).is_err()
                || crate::topic::validate_topic_filter(&remote, usize::MAX).is_err()
                || local.starts_with("$share/")
            {
                return Some((
                    "topics.pattern",
                    "a topic filter that stays valid under both prefixes",
                ));
            }
            if t.local_prefix.contains(['+', '#']) || t.remote_prefix.contains(['+', '#']) {
                return Some(("topics.local_prefix", "prefixes without wildcards"));
            }
        }
        None
    }
}

fn v5() -> String {
    "5".into()
}
fn one_day() -> u32 {
    86_400
}
fn sixty() -> u16 {
    60
}
fn yes() -> bool {
    true
}
fn hundred_thousand() -> usize {
    100_000
}
fn inflight() -> u16 {
    1000
}
fn second() -> u64 {
    1_000
}
fn minute() -> u64 {
    60_000
}
fn one() -> u8 {
    1
}
