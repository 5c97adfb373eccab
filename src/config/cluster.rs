//! `[cluster]`: several Tern nodes as one broker, messages and retained messages shared through
//! NATS JetStream. Off by default, and then no NATS code runs; the keys are still checked, so
//! `check-config` finds mistakes before the section is turned on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Longest `name`: it prefixes every subject, stream and bucket.
const CLUSTER_NAME_MAX: usize = 32;

/// Longest `node_id`.
const NODE_ID_MAX: usize = 64;

/// `[cluster]`.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Run as a node of a cluster (off: no NATS code runs).
    pub enabled: bool,
    /// Prefix of the cluster's subjects, streams and buckets, so several clusters can share
    /// one NATS: `[A-Za-z0-9_-]+`, at most 32 characters.
    pub name: String,
    /// This node's id, unique in the cluster: `[A-Za-z0-9_-]+`, at most 64 characters.
    /// Default: the host name (see [`ClusterConfig::node_id`]).
    pub node_id: Option<String>,
    /// NATS servers: `nats://host:port`, `tls://host:port` or `host:port`.
    pub nats_urls: Vec<String>,
    /// Replicas of each JetStream stream and KV bucket: 1 to 5.
    pub replicas: usize,
    /// A NATS credentials file (JWT and NKey seed).
    pub nats_creds: Option<PathBuf>,
    /// NATS user name; with `nats_password`.
    pub nats_user: Option<String>,
    /// NATS password; with `nats_user`.
    pub nats_password: Option<String>,
    /// NATS token.
    pub nats_token: Option<String>,
    /// TLS: the CA (PEM) the NATS servers' certificates must chain to.
    pub nats_tls_ca: Option<PathBuf>,
    /// TLS: our client certificate chain (PEM); with `nats_tls_key`.
    pub nats_tls_cert: Option<PathBuf>,
    /// TLS: the key of `nats_tls_cert` (PEM); with `nats_tls_cert`.
    pub nats_tls_key: Option<PathBuf>,
    /// Seconds a JetStream write may take before the client is told the cluster is
    /// unavailable: 1 to 60.
    pub unavailable_timeout_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            name: "tern".to_string(),
            node_id: None,
            nats_urls: vec!["nats://127.0.0.1:4222".to_string()],
            replicas: 3,
            nats_creds: None,
            nats_user: None,
            nats_password: None,
            nats_token: None,
            nats_tls_ca: None,
            nats_tls_cert: None,
            nats_tls_key: None,
            unavailable_timeout_secs: 5,
        }
    }
}

/// Like the derived one, but without the password and token (`check-config` prints it).
impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "<hidden>");
        f.debug_struct("ClusterConfig")
            .field("enabled", &self.enabled)
            .field("name", &self.name)
            .field("node_id", &self.node_id)
            .field("nats_urls", &self.nats_urls)
            .field("replicas", &self.replicas)
            .field("nats_creds", &self.nats_creds)
            .field("nats_user", &self.nats_user)
            .field("nats_password", &hidden(&self.nats_password))
            .field("nats_token", &hidden(&self.nats_token))
            .field("nats_tls_ca", &self.nats_tls_ca)
            .field("nats_tls_cert", &self.nats_tls_cert)
            .field("nats_tls_key", &self.nats_tls_key)
            .field("unavailable_timeout_secs", &self.unavailable_timeout_secs)
            .finish()
    }
}

/// Whether `s` is `[A-Za-z0-9_-]+` of at most `max` characters.
fn valid_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `url` is one NATS server address: `nats://…`, `tls://…` or `host:port`.
fn valid_nats_url(url: &str) -> bool {
    if url.is_empty() || url.contains(|c: char| c.is_whitespace() || c == ',') {
        return false;
    }
    match url.split_once("://") {
        Some((scheme, rest)) => (scheme == "nats" || scheme == "tls") && !rest.is_empty(),
        None => url
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()),
    }
}

/// `raw` made into a node id: characters outside `[A-Za-z0-9_-]` become `-`, cut to
/// [`NODE_ID_MAX`]; `None` if nothing is left.
pub(super) fn node_id_from_host(raw: &str) -> Option<String> {
    let id: String = raw
        .trim()
        .chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '_' | '-' => c,
            _ => '-',
        })
        .take(NODE_ID_MAX)
        .collect();
    (!id.is_empty()).then_some(id)
}

/// The host name: from the kernel, `/etc/hostname` or `$HOSTNAME`, whichever answers first.
fn host_name() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .chain(std::env::var("HOSTNAME").ok())
        .find_map(|raw| node_id_from_host(&raw))
}

impl ClusterConfig {
    /// This node's id: `node_id` if configured, else the host name with characters outside
    /// `[A-Za-z0-9_-]` replaced by `-` (cut to 64 characters), else `tern`. The host name is
    /// looked up on every call: call it once and keep the result.
    pub fn node_id(&self) -> String {
        self.node_id
            .clone()
            .or_else(host_name)
            .unwrap_or_else(|| "tern".to_string())
    }

    /// How long a JetStream write may take before the client is told the cluster is
    /// unavailable.
    pub fn unavailable_timeout(&self) -> Duration {
        Duration::from_secs(self.unavailable_timeout_secs)
    }

    /// The first key with a value it does not allow, and what is allowed. The form of every
    /// key is checked even when the cluster is off; with it on, also that `[persistence]` is
    /// off, that there is a NATS server, and that the files named exist.
    pub(super) fn problem(
        &self,
        persistence_enabled: bool,
    ) -> Option<(&'static str, &'static str)> {
        if !valid_token(&self.name, CLUSTER_NAME_MAX) {
            return Some((
                "cluster.name",
                "letters, digits, '_' and '-' (1 to 32 characters)",
            ));
        }
        if let Some(id) = &self.node_id {
            if !valid_token(id, NODE_ID_MAX) {
                return Some((
                    "cluster.node_id",
                    "letters, digits, '_' and '-' (1 to 64 characters), unique per node; \
                     leave it out for the host name",
                ));
            }
        }
        if !self.nats_urls.iter().all(|u| valid_nats_url(u)) {
            return Some((
                "cluster.nats_urls",
                "server addresses \"nats://host:port\", \"tls://host:port\" or \"host:port\", \
                 one per entry, without spaces",
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Some(("cluster.replicas", "an integer from 1 to 5"));
        }
        if !(1..=60).contains(&self.unavailable_timeout_secs) {
            return Some(("cluster.unavailable_timeout_secs", "1 to 60 seconds"));
        }
        if self.nats_user.is_some() != self.nats_password.is_some() {
            let key = match self.nats_user {
                Some(_) => "cluster.nats_password",
                None => "cluster.nats_user",
            };
            return Some((key, "nats_user and nats_password together (or neither)"));
        }
        if self.nats_user.as_deref() == Some("") {
            return Some(("cluster.nats_user", "a user name, not empty"));
        }
        if self.nats_token.as_deref() == Some("") {
            return Some(("cluster.nats_token", "a token, not empty (or leave it out)"));
        }
        let methods = [
            ("cluster.nats_creds", self.nats_creds.is_some()),
            ("cluster.nats_user", self.nats_user.is_some()),
            ("cluster.nats_token", self.nats_token.is_some()),
        ];
        if let Some(key) = methods
            .iter()
            .filter(|(_, set)| *set)
            .map(|(key, _)| *key)
            .nth(1)
        {
            return Some((
                key,
                "one way to log in to NATS: nats_creds, nats_user with nats_password, or \
                 nats_token",
            ));
        }
        if self.nats_tls_cert.is_some() != self.nats_tls_key.is_some() {
            let key = match self.nats_tls_cert {
                Some(_) => "cluster.nats_tls_key",
                None => "cluster.nats_tls_cert",
            };
            return Some((key, "nats_tls_cert and nats_tls_key together (or neither)"));
        }
        if !self.enabled {
            return None;
        }
        if persistence_enabled {
            return Some((
                "cluster.enabled",
                "cluster mode keeps retained and QoS 1/2 messages in NATS JetStream, not on \
                 local disk: set [persistence] enabled = false",
            ));
        }
        if self.nats_urls.is_empty() {
            return Some(("cluster.nats_urls", "at least one NATS server address"));
        }
        let files = [
            ("cluster.nats_creds", &self.nats_creds),
            ("cluster.nats_tls_ca", &self.nats_tls_ca),
            ("cluster.nats_tls_cert", &self.nats_tls_cert),
            ("cluster.nats_tls_key", &self.nats_tls_key),
        ];
        for (key, path) in files {
            if path.as_deref().is_some_and(|p| !Path::is_file(p)) {
                return Some((
                    key,
                    "an existing file (a relative path is from the working directory)",
                ));
            }
        }
        None
    }
}
