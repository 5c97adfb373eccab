//! Settings: built-in defaults, overlaid by a TOML file, overlaid by command-line flags.
//! Unknown keys and out-of-range values are refused with an error that names the file and the key,
//! so a typo never silently falls back to a default.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::store::Durability;

mod auth;
mod bridge;
mod cluster;
mod listener;
pub mod mosquitto;
mod queues;
mod shared;
pub use auth::{
    valid_hook_url, AuthMethod, HttpHookConfig, JwtConfig, OnError, TokenIn, JWT_ALGORITHMS,
};
pub use bridge::{BridgeConfig, Direction, TopicRule};
pub use cluster::ClusterConfig;
pub use listener::{ExtraListener, IdentitySource, ListenerConfig, ListenerKind, TlsVersion};
pub use queues::{valid_queue_name, MetricsConfig, Overflow, QueueConfig};
pub use shared::{GroupConfig, SharedConfig, Strategy, WEIGHTS};

/// Everything Tern can be told. Field names are the TOML keys; `config/tern.toml` documents each.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The MQTT listener.
    pub listener: ListenerConfig,
    /// More listeners (`[[listeners]]`), e.g. TLS; the one above stays.
    pub listeners: Vec<ExtraListener>,
    /// Protocol limits, each counted when hit.
    pub limits: LimitsConfig,
    /// Session behaviour.
    pub session: SessionConfig,
    /// The durable store.
    pub persistence: PersistenceConfig,
    /// Logging.
    pub log: LogConfig,
    /// `[http]`.
    pub http: HttpConfig,
    /// `[sys]`.
    pub sys: SysConfig,
    /// `[shutdown]`.
    pub shutdown: ShutdownConfig,
    /// `[auth]`: who may connect and what they may do.
    pub auth: AuthConfig,
    /// `[[bridge]]`: links to remote brokers.
    pub bridge: Vec<BridgeConfig>,
    /// `[shared]`: how shared-subscription groups pick their members.
    pub shared: SharedConfig,
    /// `[[queues]]`: declared point-to-point queues.
    pub queues: Vec<QueueConfig>,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
    /// `[cluster]`: several nodes sharing state through NATS JetStream.
    pub cluster: ClusterConfig,
}

/// `[auth]`: Mosquitto-compatible password and ACL files.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `user:hash` lines as `mosquitto_passwd` or `tern passwd` write them.
    pub password_file: Option<PathBuf>,
    /// Mosquitto ACL file (`user`, `topic`, `pattern` lines); none: every client may publish
    /// and subscribe to everything.
    pub acl_file: Option<PathBuf>,
    /// Whether clients without credentials get in, for listeners that do not say. Default:
    /// yes when nothing to authenticate with is configured (no password file, no listener
    /// with `identity_as_username`), otherwise no.
    pub allow_anonymous: Option<bool>,
    /// A user name from a verified client certificate (`identity_as_username`) is a login by
    /// itself, without a password.
    pub certificate_login: bool,
    /// The order the methods are asked in; the first decisive answer wins. Default: the
    /// configured ones in the order file, jwt, http.
    pub chain: Option<Vec<AuthMethod>>,
    /// `[auth.jwt]`: JSON Web Tokens.
    pub jwt: Option<JwtConfig>,
    /// `[auth.http]`: the HTTP authentication (and ACL) hook.
    pub http: Option<HttpHookConfig>,
}

impl AuthConfig {
    /// The methods asked, in order.
    pub fn methods(&self) -> Vec<AuthMethod> {
        match &self.chain {
            Some(c) => c.clone(),
            None => [
                (AuthMethod::File, true),
                (AuthMethod::Jwt, self.jwt.is_some()),
                (AuthMethod::Http, self.http.is_some()),
            ]
            .into_iter()
            .filter_map(|(m, on)| on.then_some(m))
            .collect(),
        }
    }

    /// The first key with a value it does not allow, and what is allowed.
    fn problem(&self) -> Option<(&'static str, &'static str)> {
        if let Some(p) = self.jwt.as_ref().and_then(JwtConfig::problem) {
            return Some(p);
        }
        if let Some(p) = self.http.as_ref().and_then(HttpHookConfig::problem) {
            return Some(p);
        }
        if let Some(chain) = &self.chain {
            let mut seen = Vec::new();
            for m in chain {
                if seen.contains(m) {
                    return Some((
                        "auth.chain",
                        "each of \"file\", \"jwt\", \"http\" at most once",
                    ));
                }
                seen.push(*m);
            }
            if chain.contains(&AuthMethod::Jwt) != self.jwt.is_some() {
                return Some((
                    "auth.chain",
                    "\"jwt\" listed exactly when [auth.jwt] is configured",
                ));
            }
            if chain.contains(&AuthMethod::Http) != self.http.is_some() {
                return Some((
                    "auth.chain",
                    "\"http\" listed exactly when [auth.http] is configured",
                ));
            }
            if !chain.contains(&AuthMethod::File) && self.password_file.is_some() {
                return Some(("auth.chain", "\"file\" listed when password_file is set"));
            }
        }
        None
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            password_file: None,
            acl_file: None,
            allow_anonymous: None,
            certificate_login: true,
            chain: None,
            jwt: None,
            http: None,
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Connections open at once; further ones are refused (v5: CONNACK 0x97... see docs).
    pub max_connections: usize,
    /// Largest packet accepted or sent, in bytes, fixed header included (MQTT 5 Maximum Packet Size).
    pub max_packet_size: u32,
    /// Unacknowledged QoS 1/2 messages sent at once to an MQTT 3.1.1 client, which cannot say
    /// how many it can hold (Mosquitto's `max_inflight_messages`, which also applies to 3.1.1
    /// clients only there).
    pub max_inflight_messages: u16,
    /// The most unacknowledged QoS 1/2 messages sent at once to an MQTT 5 client: below it the
    /// client's Receive Maximum (65,535 when it sends none) is its window.
    pub max_inflight_messages_v5: u16,
    /// Receive Maximum advertised to v5 clients: QoS 2 messages a client may leave awaiting PUBREL.
    pub receive_maximum: u16,
    /// Messages waiting for one client beyond its inflight window, online or offline.
    pub max_queued_messages: usize,
    /// Payload bytes waiting for one client, at most (Mosquitto's `max_queued_bytes`); `None`:
    /// no byte bound. The same policy as `max_queued_messages` when reached.
    pub max_queued_bytes: Option<u64>,
    /// Largest PUBLISH payload accepted from a client, in bytes (Mosquitto's
    /// `message_size_limit`): a larger one is acknowledged (v5: reason 0x83 Implementation
    /// specific error, as Mosquitto) and dropped; the connection stays. `None`: only
    /// `max_packet_size` bounds it.
    pub max_payload_size: Option<u32>,
    /// Levels allowed in a topic name or filter (Mosquitto allows 201: 200 separators).
    pub max_topic_levels: usize,
    /// Subscriptions one client may hold; 0 for no limit (Mosquitto has none).
    pub max_subscriptions_per_client: usize,
    /// Topic Alias Maximum advertised to v5 clients (0 disables inbound aliases).
    pub topic_alias_maximum: u16,
    /// Largest keep-alive accepted, in seconds; 0 means no maximum. v5 clients asking for more (or
    /// for 0) are told this value through Server Keep Alive; v3 clients asking for more are refused.
    pub max_keepalive: u16,
    /// Seconds a new connection has to complete CONNECT, counted from accept.
    pub connect_timeout_secs: u64,
    /// Milliseconds a connection must have nothing to do before it goes dormant (gives up its
    /// task, buffers and timer until the client or a delivery wakes it); 0 = never.
    pub dormant_after_ms: u64,
    /// CONNECTs per second each listener lets through to authentication (a token bucket);
    /// more are refused with CONNACK 0x9F (v5) / 0x03 (v3.1.1). `None`: no rate limit.
    pub max_connect_rate: Option<u32>,
    /// CONNECTs a listener lets through at once after a quiet spell (the bucket's size);
    /// `None`: `max_connect_rate`.
    pub connect_burst: Option<u32>,
    /// Retained messages kept at most, `$SYS` ones not counted; a new retained topic past it is
    /// not retained (v5 QoS 1/2: refused with 0x97). `None`: no bound.
    pub max_retained_messages: Option<usize>,
    /// Payload bytes of retained messages kept at most, `$SYS` ones not counted; the same
    /// policy. `None`: no bound.
    pub max_retained_bytes: Option<u64>,
}

/// `[session]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Queue QoS 0 messages for offline persistent sessions too (Mosquitto's `queue_qos0_messages`).
    pub queue_qos0_offline: bool,
    /// Seconds a client's session outlives its connection at most, whatever the client asked
    /// for (Mosquitto's `persistent_client_expiration`); `None`: as the client asked (a 3.1.1
    /// persistent session: for ever). Bridges' own sessions are not bounded.
    pub max_expiry_secs: Option<u32>,
}

/// `[persistence]`: what survives a restart or `kill -9` (see README, durability).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PersistenceConfig {
    /// Keep retained messages, persistent sessions and their messages in a store on disk.
    pub enabled: bool,
    /// The store's directory, created if missing.
    pub path: PathBuf,
    /// `fsync`: an acknowledged message survives power loss; `process`: it survives `kill -9`
    /// of Tern but not power loss, and acknowledgements come sooner.
    pub durability: Durability,
    /// Most operations committed together with one sync.
    pub batch_max_operations: usize,
    /// Microseconds the store waits for more writes before committing a batch (0: commit at
    /// once; batches still form while the previous one syncs).
    pub batch_wait_us: u64,
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        PersistenceConfig {
            enabled: false,
            path: PathBuf::from("./data"),
            durability: Durability::Fsync,
            batch_max_operations: 10_000,
            batch_wait_us: 0,
        }
    }
}

/// `[http]`: the operations listener (`/metrics` for Prometheus, `/health`, `/ready`, and,
/// when a token is configured, the admin API under `/api/v1/` and the status page at `/`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Serve it at all (off: no Prometheus recorder either, so metrics cost nothing).
    pub enabled: bool,
    /// Address to listen on; loopback by default, as metrics tell a lot about a fleet.
    pub bind: IpAddr,
    /// Port (0: any free one, logged).
    pub port: u16,
    /// A file holding the admin API's bearer token (surrounding whitespace trimmed). Without
    /// it (or `admin_token_env`) the admin API is off.
    pub admin_token_file: Option<PathBuf>,
    /// An environment variable holding the admin API's bearer token (instead of a file).
    pub admin_token_env: Option<String>,
    /// TLS for this listener: PEM certificate chain (with `key`).
    pub cert: Option<PathBuf>,
    /// TLS for this listener: PEM private key (with `cert`).
    pub key: Option<PathBuf>,
    /// TLS: seconds between two looks at `cert` and `key`; a change loads them for new
    /// handshakes. 0: never (a restart loads them).
    pub cert_watch_secs: u64,
    /// Serve the admin API over plain HTTP on an address other than loopback (the token
    /// then crosses the network in clear text; a warning is logged).
    pub allow_plaintext_admin: bool,
}

impl HttpConfig {
    /// Whether a token is configured, i.e. the admin API is on.
    pub fn admin_enabled(&self) -> bool {
        self.admin_token_file.is_some() || self.admin_token_env.is_some()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 9883,
            admin_token_file: None,
            admin_token_env: None,
            cert: None,
            key: None,
            cert_watch_secs: listener::five_seconds(),
            allow_plaintext_admin: false,
        }
    }
}

/// `[sys]`: the `$SYS/broker/…` topics.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SysConfig {
    /// Seconds between two publications (Mosquitto's `sys_interval`); 0 = none.
    pub interval_secs: u64,
}

impl Default for SysConfig {
    fn default() -> Self {
        SysConfig { interval_secs: 10 }
    }
}

/// `[shutdown]`: what SIGTERM/SIGINT do.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Seconds clients get to receive their DISCONNECT and the store to be flushed before Tern
    /// exits anyway.
    pub grace_secs: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { grace_secs: 5 }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: `error`, `warn`, `info`, `debug`, `trace`, or directives like `tern=debug`.
    pub level: String,
    /// `text` (one readable line per event) or `json` (one JSON object per line, for log
    /// collectors).
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 100_000,
            max_packet_size: 1024 * 1024,
            // Measured: config/tern.toml gives the figures behind each of these three.
            max_inflight_messages: 200,
            max_inflight_messages_v5: 65535,
            receive_maximum: 65535,
            max_queued_messages: 1000,
            max_queued_bytes: None,
            max_payload_size: None,
            max_topic_levels: 256,
            max_subscriptions_per_client: 0,
            topic_alias_maximum: 10,
            max_keepalive: 0,
            connect_timeout_secs: 10,
            dormant_after_ms: 1000,
            max_connect_rate: None,
            connect_burst: None,
            max_retained_messages: None,
            max_retained_bytes: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

/// A configuration that cannot be used, with the file and key to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// toml's message, which names the key and its line.
        message: String,
    },
    /// A value of the right type but outside what is allowed.
    #[error("config file {path}: key `{key}`: {allowed}")]
    Invalid {
        /// The file (or `<defaults>`/`<command line>`).
        path: String,
        /// Dotted key, e.g. `limits.receive_maximum`.
        key: &'static str,
        /// What is allowed.
        allowed: &'static str,
    },
    /// A `[[bridge]]` entry is not usable.
    #[error("config file {path}: key `bridge[{index}].{key}`: {allowed}")]
    InvalidBridge {
        /// The file.
        path: String,
        /// Position in `[[bridge]]`, from 0.
        index: usize,
        /// Key within the entry.
        key: &'static str,
        /// What is allowed.
        allowed: &'static str,
    },
    /// A `[[queues]]` entry is not usable.
    #[error("config file {path}: key `queues[{index}].{key}`: {allowed}")]
    InvalidQueue {
        /// The file.
        path: String,
        /// Position in `[[queues]]`, from 0.
        index: usize,
        /// Key within the entry.
        key: &'static str,
        /// What is allowed.
        allowed: &'static str,
    },
    /// A value of one `[[listeners]]` entry outside what is allowed.
    #[error("config file {path}: key `listeners[{index}].{key}`: {allowed}")]
    InvalidListener {
        /// The file.
        path: String,
        /// Position in `[[listeners]]`, from 0.
        index: usize,
        /// Key within the entry.
        key: &'static str,
        /// What is allowed.
        allowed: &'static str,
    },
}

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "TERN_";

impl Config {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Config::from_toml(&text, &shown)
    }

    /// Parses and validates TOML text; `origin` names the source in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, origin, std::iter::empty())
    }

    /// Like [`Config::from_toml`], with environment overrides applied on top: a variable
    /// `TERN_SECTION__KEY` sets `key` of `[section]` (`TERN_LIMITS__MAX_CONNECTIONS=500`). The
    /// value is read as a TOML literal (number, boolean, quoted string) or else as a plain
    /// string. Errors name the variable.
    pub fn from_toml_with_env(
        text: &str,
        origin: &str,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let parse_error = |path: &str, e: &dyn std::fmt::Display| ConfigError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        };
        let overrides: Vec<(String, String)> = env
            .filter(|(name, _)| {
                name.strip_prefix(ENV_PREFIX)
                    .is_some_and(|rest| rest.contains("__"))
            })
            .collect();
        if overrides.is_empty() {
            // Straight from the text: serde then sees the full range of each field's type.
            let config: Config = toml::from_str(text).map_err(|e| parse_error(origin, &e))?;
            config.validate(origin)?;
            return Ok(config);
        }
        let mut table: toml::Table = toml::from_str(text).map_err(|e| parse_error(origin, &e))?;
        let mut overridden = Vec::new();
        for (name, raw) in overrides {
            let Some((section, key)) = name
                .strip_prefix(ENV_PREFIX)
                .and_then(|rest| rest.split_once("__"))
            else {
                continue;
            };
            let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(raw.clone()));
            let section = table
                .entry(section.to_lowercase())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match section {
                toml::Value::Table(t) => {
                    t.insert(key.to_lowercase(), value);
                }
                _ => return Err(parse_error(&name, &"not a section")),
            }
            overridden.push(name);
        }
        let origin = match overridden.is_empty() {
            true => origin.to_string(),
            false => format!("{origin} with environment {}", overridden.join(", ")),
        };
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e| parse_error(&origin, &e))?;
        config.validate(&origin)?;
        Ok(config)
    }

    /// `[http]`: TLS files in pairs, one token source, and no admin token in clear text over
    /// the network unless asked for.
    fn validate_http(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key, allowed| ConfigError::Invalid {
            path: origin.to_string(),
            key,
            allowed,
        };
        let http = &self.http;
        if http.admin_token_file.is_some() && http.admin_token_env.is_some() {
            return Err(invalid(
                "http.admin_token_env",
                "only one of admin_token_file and admin_token_env",
            ));
        }
        if http.admin_token_env.as_deref() == Some("") {
            return Err(invalid(
                "http.admin_token_env",
                "the name of an environment variable",
            ));
        }
        match (&http.cert, &http.key) {
            (Some(_), None) => {
                return Err(invalid("http.key", "a PEM private key file (with cert)"))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "http.cert",
                    "a PEM certificate chain file (with key)",
                ))
            }
            _ => {}
        }
        if http.cert_watch_secs > 86_400 {
            return Err(invalid("http.cert_watch_secs", "0 (off) to 86400 seconds"));
        }
        if http.enabled
            && http.admin_enabled()
            && !http.bind.is_loopback()
            && http.cert.is_none()
            && !http.allow_plaintext_admin
        {
            return Err(invalid(
                "http.bind",
                "a loopback address while the admin API is on without TLS: set http.cert and \
                 http.key, or allow_plaintext_admin = true (the token then crosses the network \
                 in clear text)",
            ));
        }
        Ok(())
    }

    /// `[limits]` connect rate and retained budgets: each ≥ 1 when set, a burst only with a
    /// rate.
    fn validate_admission(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key, allowed| ConfigError::Invalid {
            path: origin.to_string(),
            key,
            allowed,
        };
        let l = &self.limits;
        if l.max_connect_rate == Some(0) {
            return Err(invalid(
                "limits.max_connect_rate",
                "an integer ≥ 1 (CONNECTs per second per listener; leave it out for no limit)",
            ));
        }
        match (l.max_connect_rate, l.connect_burst) {
            (_, Some(0)) => {
                return Err(invalid(
                    "limits.connect_burst",
                    "an integer ≥ 1 (leave it out for the same as max_connect_rate)",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "limits.connect_burst",
                    "only with limits.max_connect_rate",
                ))
            }
            _ => {}
        }
        if l.max_retained_messages == Some(0) {
            return Err(invalid(
                "limits.max_retained_messages",
                "an integer ≥ 1 (leave it out for no bound)",
            ));
        }
        if l.max_retained_bytes == Some(0) {
            return Err(invalid(
                "limits.max_retained_bytes",
                "an integer ≥ 1 (leave it out for no bound)",
            ));
        }
        Ok(())
    }

    /// Checks ranges that the types alone do not express.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key, allowed| ConfigError::Invalid {
            path: origin.to_string(),
            key,
            allowed,
        };
        self.validate_http(origin)?;
        for (index, l) in self.listeners.iter().enumerate() {
            let bad = |key, allowed| ConfigError::InvalidListener {
                path: origin.to_string(),
                index,
                key,
                allowed,
            };
            if l.kind.is_tls() {
                if l.cert.is_none() {
                    return Err(bad(
                        "cert",
                        "a PEM certificate chain file (required for kind = \"tls\" and \"wss\")",
                    ));
                }
                if l.key.is_none() {
                    return Err(bad(
                        "key",
                        "a PEM private key file (required for kind = \"tls\" and \"wss\")",
                    ));
                }
            } else if l.cert.is_some() || l.key.is_some() {
                let key = if l.cert.is_some() { "cert" } else { "key" };
                return Err(bad(key, "only for kind = \"tls\" or \"wss\""));
            }
            if l.kind.is_ws() && !l.path.starts_with('/') && l.path != "*" {
                return Err(bad(
                    "path",
                    "a URL path starting with / (default \"/mqtt\"), or \"*\" for every path",
                ));
            }
            if l.max_connections == Some(0) {
                return Err(bad("max_connections", "an integer ≥ 1 (or leave it out)"));
            }
            let verifies = l.client_ca.is_some() || l.client_ca_dir.is_some();
            if l.identity_as_username != IdentitySource::None
                && !verifies
                && !l.proxy_trust_tls_identity
            {
                return Err(bad(
                    "identity_as_username",
                    "\"none\" unless client_ca or client_ca_dir is set, or proxy_trust_tls_identity (only verified certificates name a user)",
                ));
            }
            if !l.kind.is_tls() && verifies {
                let key = if l.client_ca.is_some() {
                    "client_ca"
                } else {
                    "client_ca_dir"
                };
                return Err(bad(key, "only for kind = \"tls\" or \"wss\""));
            }
            if !(1..=3_600).contains(&l.handshake_timeout_secs) {
                return Err(bad("handshake_timeout_secs", "1 to 3600 seconds"));
            }
            if !(1..=3_600).contains(&l.proxy_header_timeout_secs) {
                return Err(bad("proxy_header_timeout_secs", "1 to 3600 seconds"));
            }
            if l.proxy_trust_tls_identity && !l.proxy_protocol {
                return Err(bad(
                    "proxy_trust_tls_identity",
                    "false unless proxy_protocol = true (the identity comes in the PROXY header)",
                ));
            }
            if l.proxy_trust_tls_identity && l.identity_as_username != IdentitySource::Cn {
                return Err(bad(
                    "proxy_trust_tls_identity",
                    "false unless identity_as_username = \"cn\" (the PROXY header carries the certificate's common name only)",
                ));
            }
            if l.cert_watch_secs > 86_400 {
                return Err(bad("cert_watch_secs", "0 (off) to 86400 seconds"));
            }
        }
        if !(1..=3_600).contains(&self.listener.proxy_header_timeout_secs) {
            return Err(invalid(
                "listener.proxy_header_timeout_secs",
                "1 to 3600 seconds",
            ));
        }
        if self.listeners.len() >= crate::broker::MAX_LISTENERS {
            return Err(invalid(
                "listeners",
                "at most 16,383 [[listeners]] entries (the admin API numbers them in 14 bits)",
            ));
        }
        if !self.listener.enabled && self.listeners.is_empty() {
            return Err(invalid(
                "listener.enabled",
                "true, unless [[listeners]] has at least one entry (Tern needs a listener)",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (index, b) in self.bridge.iter().enumerate() {
            let problem = b.problem().or_else(|| {
                (!names.insert(b.name.as_str())).then_some(("name", "unique among [[bridge]]"))
            });
            if let Some((key, allowed)) = problem {
                return Err(ConfigError::InvalidBridge {
                    path: origin.to_string(),
                    index,
                    key,
                    allowed,
                });
            }
        }
        if let Some((key, allowed)) = self.auth.problem() {
            return Err(invalid(key, allowed));
        }
        if let Some((key, allowed)) = self.shared.problem() {
            return Err(invalid(key, allowed));
        }
        let mut names = std::collections::HashSet::new();
        for (index, q) in self.queues.iter().enumerate() {
            let problem = q.problem().or_else(|| {
                (!names.insert(q.name.as_str())).then_some(("name", "unique among [[queues]]"))
            });
            if let Some((key, allowed)) = problem {
                return Err(ConfigError::InvalidQueue {
                    path: origin.to_string(),
                    index,
                    key,
                    allowed,
                });
            }
        }
        if let Some((key, allowed)) = self.cluster.problem(self.persistence.enabled) {
            return Err(invalid(key, allowed));
        }
        if !(1..=3_600).contains(&self.shutdown.grace_secs) {
            return Err(invalid("shutdown.grace_secs", "1 to 3600 seconds"));
        }
        if self.sys.interval_secs > 86_400 {
            return Err(invalid("sys.interval_secs", "0 (off) to 86400 seconds"));
        }
        let l = &self.limits;
        if l.max_connections == 0 {
            return Err(invalid("limits.max_connections", "an integer ≥ 1"));
        }
        if !(64..=268_435_460).contains(&l.max_packet_size) {
            return Err(invalid(
                "limits.max_packet_size",
                "an integer from 64 to 268435460 (bytes)",
            ));
        }
        if l.max_inflight_messages == 0 {
            return Err(invalid("limits.max_inflight_messages", "1 to 65535"));
        }
        if l.max_inflight_messages_v5 == 0 {
            return Err(invalid("limits.max_inflight_messages_v5", "1 to 65535"));
        }
        if l.receive_maximum == 0 {
            return Err(invalid("limits.receive_maximum", "1 to 65535"));
        }
        if l.max_queued_messages == 0 {
            return Err(invalid("limits.max_queued_messages", "an integer ≥ 1"));
        }
        if l.max_queued_bytes == Some(0) {
            return Err(invalid(
                "limits.max_queued_bytes",
                "an integer ≥ 1 (leave it out for no byte bound)",
            ));
        }
        if l.max_payload_size == Some(0) {
            return Err(invalid(
                "limits.max_payload_size",
                "an integer ≥ 1 (leave it out for no bound but max_packet_size)",
            ));
        }
        if self.session.max_expiry_secs == Some(0) {
            return Err(invalid(
                "session.max_expiry_secs",
                "an integer ≥ 1 (leave it out to keep what clients ask for)",
            ));
        }
        if l.max_topic_levels == 0 {
            return Err(invalid("limits.max_topic_levels", "an integer ≥ 1"));
        }
        let p = &self.persistence;
        if p.batch_max_operations == 0 {
            return Err(invalid(
                "persistence.batch_max_operations",
                "an integer ≥ 1",
            ));
        }
        if p.batch_wait_us > 1_000_000 {
            return Err(invalid(
                "persistence.batch_wait_us",
                "an integer from 0 to 1000000 (microseconds)",
            ));
        }
        if p.enabled && p.path.as_os_str().is_empty() {
            return Err(invalid("persistence.path", "a directory path"));
        }
        if l.dormant_after_ms > 86_400_000 {
            return Err(invalid(
                "limits.dormant_after_ms",
                "an integer from 0 (never) to 86400000 (milliseconds)",
            ));
        }
        if l.connect_timeout_secs == 0 || l.connect_timeout_secs > 86_400 {
            return Err(invalid(
                "limits.connect_timeout_secs",
                "an integer from 1 to 86400 (seconds)",
            ));
        }
        self.validate_admission(origin)?;
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                "error, warn, info, debug, trace, or tracing directives such as `tern=debug`",
            ));
        }
        Ok(())
    }

    /// The socket address of the MQTT listener.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.listener.bind, self.listener.port)
    }

    /// How long a connection must be quiet before it goes dormant; `None` = never.
    pub fn dormant_after(&self) -> Option<Duration> {
        (self.limits.dormant_after_ms > 0)
            .then(|| Duration::from_millis(self.limits.dormant_after_ms))
    }

    /// How long a connection has to send CONNECT.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.limits.connect_timeout_secs)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
