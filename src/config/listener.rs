//! Listener settings: `[listener]` (plain MQTT over TCP) and `[[listeners]]` (TCP, TLS,
//! WebSockets, each with its own limits and client-certificate rules).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use serde::Deserialize;

/// `[listener]`: where plain MQTT over TCP is served.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Whether it is opened at all (default true). false leaves only the `[[listeners]]`, as a
    /// translated Mosquitto file with its own `listener` lines does.
    pub enabled: bool,
    /// Address to bind, like `mosquitto`'s `listener 1883 ADDR`.
    pub bind: IpAddr,
    /// TCP port; 0 picks a free one.
    pub port: u16,
    /// Overrides `auth.allow_anonymous` for this listener.
    pub allow_anonymous: Option<bool>,
    /// Every connection starts with a PROXY protocol header (v1 or v2) naming the real client
    /// (behind HAProxy, a cloud load balancer); one without is closed.
    pub proxy_protocol: bool,
    /// Seconds a connection has to send its whole PROXY header (with `proxy_protocol`).
    pub proxy_header_timeout_secs: u64,
}

/// One more MQTT listener (`[[listeners]]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExtraListener {
    /// `tcp`, `tls`, `ws` or `wss`.
    pub kind: ListenerKind,
    /// Address to listen on.
    #[serde(default = "any_address")]
    pub bind: IpAddr,
    /// Port (0: any free one, logged).
    pub port: u16,
    /// TLS: PEM certificate chain (server certificate first).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// TLS: PEM private key (PKCS#8, PKCS#1 or SEC1; RSA or ECDSA).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// TLS: seconds between two looks at the certificate and key files (modification time,
    /// size, inode); a change loads them for new handshakes, as certbot and cert-manager
    /// renewals expect. 0: only SIGHUP reloads them.
    #[serde(default = "five_seconds")]
    pub cert_watch_secs: u64,
    /// TLS and WebSockets: seconds a client has to complete the TLS handshake and WebSocket
    /// upgrade.
    #[serde(default = "ten_seconds")]
    pub handshake_timeout_secs: u64,
    /// WebSockets: the URL path MQTT is served on (other paths get 404); `"*"` serves every
    /// path, as Mosquitto does.
    #[serde(default = "mqtt_path")]
    pub path: String,
    /// Connections open at once on this listener (within `limits.max_connections`); `None`:
    /// only the broker-wide limit.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Overrides `auth.allow_anonymous` for this listener.
    #[serde(default)]
    pub allow_anonymous: Option<bool>,
    /// Mutual TLS: PEM file of the CA(s) client certificates are verified against (chain and
    /// expiry). Without it, clients are not asked for a certificate.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Mutual TLS: a directory whose files hold more such CAs (PEM; files without a
    /// certificate are skipped), like Mosquitto's `capath`. With or without `client_ca`.
    #[serde(default)]
    pub client_ca_dir: Option<PathBuf>,
    /// Mutual TLS: refuse clients without a valid certificate (with `client_ca`; default true).
    /// false: a certificate is asked for and verified if given, but not required.
    #[serde(default = "yes")]
    pub require_client_cert: bool,
    /// Mutual TLS: put the verified client certificate's identity into the connection's user
    /// name (for authentication and ACLs): its subject common name (`cn`), its first DNS,
    /// e-mail or URI subject alternative name (`san`), or not (`none`).
    #[serde(default)]
    pub identity_as_username: IdentitySource,
    /// TLS: the oldest protocol version accepted, "1.2" (default) or "1.3" (Mosquitto's
    /// `tls_version`).
    #[serde(default)]
    pub min_tls_version: TlsVersion,
    /// Every connection starts with a PROXY protocol header (v1 or v2) naming the real client;
    /// one without is closed. The header comes before TLS and the WebSocket upgrade.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// With `proxy_protocol`: the client-certificate common name a v2 header carries (from a
    /// load balancer that terminated TLS and verified the certificate) counts as a verified
    /// certificate's identity (`identity_as_username = "cn"`). Trusts the balancer fully.
    #[serde(default)]
    pub proxy_trust_tls_identity: bool,
    /// Seconds a connection has to send its whole PROXY header (with `proxy_protocol`).
    #[serde(default = "five_seconds")]
    pub proxy_header_timeout_secs: u64,
}

impl ExtraListener {
    /// A listener of `kind` on `port` (any address) with every other key at its default.
    pub fn new(kind: ListenerKind, port: u16) -> ExtraListener {
        ExtraListener {
            kind,
            bind: any_address(),
            port,
            cert: None,
            key: None,
            cert_watch_secs: five_seconds(),
            handshake_timeout_secs: ten_seconds(),
            path: mqtt_path(),
            max_connections: None,
            allow_anonymous: None,
            client_ca: None,
            client_ca_dir: None,
            require_client_cert: yes(),
            identity_as_username: IdentitySource::None,
            min_tls_version: TlsVersion::default(),
            proxy_protocol: false,
            proxy_trust_tls_identity: false,
            proxy_header_timeout_secs: five_seconds(),
        }
    }
}

/// Where a client certificate's identity comes from.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum IdentitySource {
    /// Not used.
    #[default]
    None,
    /// Subject common name.
    Cn,
    /// First DNS, e-mail or URI subject alternative name.
    San,
    /// The whole subject in OpenSSL's RFC 2253 form (`CN=dev,O=Acme,C=GB`), as Mosquitto's
    /// `use_subject_as_username` gives it.
    Subject,
}

/// A TLS protocol version, as the oldest one a listener accepts.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 (and 1.3).
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    Tls13,
}

fn yes() -> bool {
    true
}

fn any_address() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}

fn ten_seconds() -> u64 {
    10
}

/// How often TLS files are looked at, by default: a renewal is in force within seconds, for
/// three `stat` calls per listener.
pub(super) fn five_seconds() -> u64 {
    5
}

fn mqtt_path() -> String {
    "/mqtt".into()
}

/// What a listener speaks below MQTT.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// WebSocket over TCP.
    Ws,
    /// WebSocket over TLS.
    Wss,
}

impl ListenerKind {
    /// Whether it needs a certificate and key.
    pub fn is_tls(self) -> bool {
        matches!(self, ListenerKind::Tls | ListenerKind::Wss)
    }

    /// Whether MQTT travels in WebSocket frames.
    pub fn is_ws(self) -> bool {
        matches!(self, ListenerKind::Ws | ListenerKind::Wss)
    }

    /// Its name, as in the configuration file (`tcp`, `tls`, `ws`, `wss`) and in the
    /// `listener` label of the connection metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Tcp => "tcp",
            ListenerKind::Tls => "tls",
            ListenerKind::Ws => "ws",
            ListenerKind::Wss => "wss",
        }
    }
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            enabled: true,
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 1883,
            allow_anonymous: None,
            proxy_protocol: false,
            proxy_header_timeout_secs: five_seconds(),
        }
    }
}
