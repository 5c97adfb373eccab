//! Mosquitto listeners as Tern `[[listeners]]`: the options a `listener` line's block (or, before
//! any, the default listener) collects, and the `[[listeners]]` entry they make. Which listeners
//! exist at all, and their security options, are decided by the translator once the whole file
//! is read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};

use super::render::{Source, Table};
use super::{Note, Severity};

/// A setting with the line that made it.
pub(super) type Set<T> = Option<(T, Source)>;

/// `allow_anonymous`, `password_file` and `acl_file`: global, or one listener's with
/// `per_listener_settings true`.
#[derive(Debug, Default, Clone)]
pub(super) struct Security {
    pub allow_anonymous: Set<bool>,
    pub password_file: Set<String>,
    pub acl_file: Set<String>,
}

/// Mosquitto's `socket_domain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Domain {
    V4,
    V6,
}

/// One Mosquitto listener's options.
#[derive(Debug, Default)]
pub(super) struct Listener {
    /// The `listener` line; `None` for the default listener.
    pub opened_by: Option<Source>,
    /// The `port` line (default listener), or the `listener` line's port.
    pub port: Set<u16>,
    /// The `listener` line's address, or `bind_address` (default listener).
    pub host: Set<String>,
    pub websockets: Option<Source>,
    pub socket_domain: Set<Domain>,
    /// -1: no limit.
    pub max_connections: Set<i64>,
    pub cafile: Set<String>,
    pub capath: Set<String>,
    pub certfile: Set<String>,
    pub keyfile: Set<String>,
    pub require_certificate: Set<bool>,
    pub use_identity_as_username: Set<bool>,
    pub use_subject_as_username: Set<bool>,
    pub tls_version: Set<&'static str>,
    pub max_topic_alias: Set<u16>,
    /// Mosquitto 2.1's `enable_proxy_protocol` (1 or 2; Tern accepts both versions alike).
    pub enable_proxy_protocol: Set<u8>,
    pub security: Security,
    /// The default listener: the first line that makes Mosquitto open it.
    pub touched: Option<Source>,
    /// A line that Tern cannot honour in a way that must not open this listener at all (a
    /// PSK or Unix socket listener would otherwise be plain TCP): left out even with
    /// `--ignore-unsupported`.
    pub left_out: Option<Source>,
}

impl Listener {
    /// Notes that `source` set an option that makes Mosquitto open the default listener.
    pub fn touch(&mut self, source: &Source) {
        if self.touched.is_none() {
            self.touched = Some(source.clone());
        }
    }

    /// Whether clients' TLS is on: Mosquitto needs both `certfile` and `keyfile`.
    fn is_tls(&self) -> bool {
        self.certfile.is_some() && self.keyfile.is_some()
    }

    /// The `[[listeners]]` entry, with notes for what does not carry over. `anonymous` is
    /// this listener's `allow_anonymous` when it has its own (`per_listener_settings`).
    pub fn table(&self, anonymous: Option<(bool, Vec<Source>)>, notes: &mut Vec<Note>) -> Table {
        let mut t = Table::array("listeners", self.opened_by.as_ref());
        if self.opened_by.is_none() {
            t.remark = Some(
                "Mosquitto's default listener, opened because `port`, `bind_address` or a \
                 listener option comes before any `listener` line"
                    .into(),
            );
        }
        let kind = match (self.websockets.is_some(), self.is_tls()) {
            (false, false) => "tcp",
            (false, true) => "tls",
            (true, false) => "ws",
            (true, true) => "wss",
        };
        let mut kind_sources: Vec<Source> = self.websockets.iter().cloned().collect();
        if self.is_tls() {
            kind_sources.extend(self.certfile.iter().map(|(_, s)| s.clone()));
        }
        match kind_sources.is_empty() {
            true => t.set_default("kind", kind, "no certfile/keyfile: plain MQTT over TCP"),
            false => t.set_from("kind", kind, &kind_sources),
        }
        self.bind(&mut t, notes);
        match &self.port {
            Some((port, s)) => t.set("port", i64::from(*port), s),
            None => t.set_default("port", 1883, "Mosquitto's default port"),
        }
        if let Some(ws) = &self.websockets {
            t.set("path", "*", ws);
        }
        if let Some((n, s)) = &self.max_connections {
            if *n > 0 {
                t.set("max_connections", *n, s);
            }
        }
        if let Some((_, s)) = &self.enable_proxy_protocol {
            t.set("proxy_protocol", true, s);
        }
        if let Some((anon, sources)) = anonymous {
            match sources.is_empty() {
                true => t.set_default(
                    "allow_anonymous",
                    anon,
                    "per_listener_settings: Mosquitto 2.0's default for a listener",
                ),
                false => t.set_from("allow_anonymous", anon, &sources),
            }
        }
        self.tls(&mut t, notes);
        t
    }

    /// `bind`: the address given (a name resolved now, as Mosquitto resolves it at start), or
    /// every IPv4 address (`::` with `socket_domain ipv6`).
    fn bind(&self, t: &mut Table, notes: &mut Vec<Note>) {
        let want_v6 = matches!(self.socket_domain, Some((Domain::V6, _)));
        let Some((host, s)) = &self.host else {
            let any = match want_v6 {
                true => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                false => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            };
            match &self.socket_domain {
                Some((_, s)) => t.set("bind", any.to_string(), s),
                None => t.set_default(
                    "bind",
                    any.to_string(),
                    "no address: every IPv4 address (socket_domain ipv6 for IPv6)",
                ),
            }
            return;
        };
        let found = match host.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => match (host.as_str(), 0).to_socket_addrs() {
                Ok(addrs) => {
                    let addrs: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                    let pick = addrs
                        .iter()
                        .find(|a| a.is_ipv6() == want_v6)
                        .or(addrs.first())
                        .copied();
                    if let Some(ip) = pick {
                        if addrs.len() > 1 {
                            notes.push(Note::at(
                                s,
                                Severity::Warning,
                                &format!(
                                    "{host} has several addresses ({}); Tern listens on {ip} only",
                                    addrs
                                        .iter()
                                        .map(IpAddr::to_string)
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            ));
                        }
                    }
                    pick
                }
                Err(_) => None,
            },
        };
        match found {
            Some(ip) => t.set("bind", ip.to_string(), s),
            None => notes.push(Note::at(
                s,
                Severity::Invalid,
                &format!("cannot resolve {host} to an address to listen on"),
            )),
        }
    }

    /// Certificate, key, client certificates and the TLS version.
    fn tls(&self, t: &mut Table, notes: &mut Vec<Note>) {
        let tls_only = [
            &self.cafile,
            &self.capath,
            &self
                .tls_version
                .as_ref()
                .map(|(v, s)| (v.to_string(), s.clone())),
        ];
        if !self.is_tls() {
            match (&self.certfile, &self.keyfile) {
                (Some((_, s)), None) | (None, Some((_, s))) => notes.push(Note::at(
                    s,
                    Severity::Invalid,
                    "certfile and keyfile go together (Mosquitto refuses one without the other)",
                )),
                _ => {}
            }
            for (_, s) in tls_only.into_iter().flatten() {
                notes.push(Note::at(
                    s,
                    Severity::Info,
                    "no effect: this listener has no certfile and keyfile (no TLS), in Mosquitto too",
                ));
            }
            for (_, s) in [
                &self.require_certificate,
                &self.use_identity_as_username,
                &self.use_subject_as_username,
            ]
            .into_iter()
            .flatten()
            {
                notes.push(Note::at(
                    s,
                    Severity::Info,
                    "no effect: this listener has no certfile and keyfile (no TLS), in Mosquitto too",
                ));
            }
            return;
        }
        if let (Some((cert, cs)), Some((key, ks))) = (&self.certfile, &self.keyfile) {
            t.set("cert", cert.as_str(), cs);
            t.set("key", key.as_str(), ks);
        }
        if let Some((v, s)) = &self.tls_version {
            match *v {
                "tlsv1.3" => t.set("min_tls_version", "1.3", s),
                "tlsv1.2" => t.set("min_tls_version", "1.2", s),
                "tlsv1.1" => notes.push(Note::at(
                    s,
                    Severity::Error,
                    "Tern speaks TLS 1.2 and 1.3 only: clients limited to TLS 1.1 cannot connect",
                )),
                other => notes.push(Note::at(
                    s,
                    Severity::Invalid,
                    &format!("unknown TLS version {other} (tlsv1.3, tlsv1.2 or tlsv1.1)"),
                )),
            }
        }
        let required = matches!(self.require_certificate, Some((true, _)));
        let ca_lines = [&self.cafile, &self.capath];
        if !required {
            for (_, s) in ca_lines.into_iter().flatten() {
                notes.push(Note::at(
                    s,
                    Severity::Info,
                    "no effect without require_certificate true: clients are not asked for a \
                     certificate, in Mosquitto too",
                ));
            }
            for (on, s) in [
                &self.use_identity_as_username,
                &self.use_subject_as_username,
            ]
            .into_iter()
            .flatten()
            {
                if *on {
                    notes.push(Note::at(
                        s,
                        Severity::Error,
                        "needs require_certificate true: without a client certificate Mosquitto \
                         refuses every client of this listener, which Tern cannot express",
                    ));
                }
            }
            return;
        }
        let Some((_, req)) = &self.require_certificate else {
            return;
        };
        if self.cafile.is_none() && self.capath.is_none() {
            notes.push(Note::at(
                req,
                Severity::Invalid,
                "require_certificate true needs cafile or capath to check client certificates against",
            ));
            return;
        }
        if let Some((ca, s)) = &self.cafile {
            t.set("client_ca", ca.as_str(), s);
        }
        if let Some((dir, s)) = &self.capath {
            t.set("client_ca_dir", dir.as_str(), s);
        }
        t.set("require_client_cert", true, req);
        // Mosquitto: use_identity_as_username takes priority over use_subject_as_username.
        match (
            &self.use_identity_as_username,
            &self.use_subject_as_username,
        ) {
            (Some((true, s)), _) => t.set("identity_as_username", "cn", s),
            (_, Some((true, s))) => t.set("identity_as_username", "subject", s),
            _ => {}
        }
    }
}
