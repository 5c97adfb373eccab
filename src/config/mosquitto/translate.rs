//! Mosquitto's directives, one by one, as Mosquitto 2.0 reads them (conf.c): global settings
//! straight into Tern's tables, listener and bridge options into the current block, and at the
//! end what only the whole file decides: which listeners Mosquitto opens (the local-only
//! default, the default listener), anonymous access, per-listener security.

use super::bridges::Bridge;
use super::directives::{BRIDGE_HARMLESS, DEFAULTS, HARMLESS, UNSUPPORTED};
use super::listeners::{Domain, Listener, Security, Set};
use super::parse::Line;
use super::render::{self, Source, Table};
use super::{MosquittoError, Note, Severity, Translation};
use crate::config::Config;

/// Translates `lines` (notes from reading them in `notes`) from the file `origin`.
pub(super) fn translate(
    lines: Vec<Line>,
    notes: Vec<Note>,
    origin: &str,
) -> Result<Translation, MosquittoError> {
    let mut t = Translator {
        notes,
        local_only: true,
        ..Translator::default()
    };
    for line in &lines {
        t.directive(line);
    }
    let every_line: Vec<Source> = lines.iter().map(|l| l.source.clone()).collect();
    let doc = t.finish();
    let mut notes = t.notes;
    // In file order, for people reading them.
    let order = |n: &Note| {
        every_line
            .iter()
            .position(|s| s.file == n.file && s.line == n.line)
            .unwrap_or(usize::MAX)
    };
    notes.sort_by_key(order);
    let toml = render::render(&doc, &notes, &every_line, origin);
    let config = match Config::from_toml(&toml, &format!("{origin} (translated)")) {
        Ok(c) => c,
        // An invalid line may leave the rest incomplete (a bridge without its address); the
        // invalid line refuses the file in any case, so these settings never run.
        Err(_) if notes.iter().any(|n| n.severity == Severity::Invalid) => Config::default(),
        Err(source) => {
            return Err(MosquittoError::Translated {
                path: origin.to_string(),
                source,
            })
        }
    };
    Ok(Translation {
        config,
        notes,
        toml,
    })
}

#[derive(Debug, Default)]
pub(super) struct Translator {
    pub(super) notes: Vec<Note>,
    pub(super) limits: Table,
    pub(super) session: Table,
    pub(super) sys: Table,
    /// `per_listener_settings true`.
    pub(super) per_listener: Option<Source>,
    /// A security option was set (per_listener_settings must come before any).
    pub(super) security_seen: bool,
    pub(super) global: Security,
    pub(super) default: Listener,
    pub(super) listeners: Vec<Listener>,
    /// Index into `listeners` of the block being read; `None`: the default listener.
    pub(super) current: Option<usize>,
    pub(super) bridges: Vec<Bridge>,
    /// `true` until `listener`, `port` or `bind_address`: Mosquitto 2's local-only mode.
    pub(super) local_only: bool,
    pub(super) persistence: Set<bool>,
    pub(super) persistence_location: Set<String>,
    pub(super) log_dest: Vec<(String, Source)>,
    pub(super) log_types: Vec<(String, Source)>,
    pub(super) max_queued_messages: Set<i64>,
    pub(super) max_queued_bytes: Set<i64>,
}

impl Default for Table {
    fn default() -> Table {
        Table::new("")
    }
}

impl Translator {
    fn note(&mut self, line: &Line, severity: Severity, message: &str) {
        self.notes.push(Note::new(line, severity, message));
    }

    fn listener(&mut self) -> &mut Listener {
        match self.current {
            Some(i) => &mut self.listeners[i],
            None => &mut self.default,
        }
    }

    /// The security options lines apply to: the current listener's with
    /// `per_listener_settings true`, else the global ones.
    fn security(&mut self) -> &mut Security {
        self.security_seen = true;
        match self.per_listener.is_some() {
            true => &mut self.listener().security,
            false => &mut self.global,
        }
    }

    fn int(&mut self, line: &Line) -> Option<i64> {
        match line.words().first().map(|w| w.parse::<i64>()) {
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                self.note(line, Severity::Invalid, "not an integer");
                None
            }
            None => {
                self.note(line, Severity::Invalid, "no value given");
                None
            }
        }
    }

    fn boolean(&mut self, line: &Line) -> Option<bool> {
        match line.words().first().copied() {
            Some("true" | "1") => Some(true),
            Some("false" | "0") => Some(false),
            _ => {
                self.note(line, Severity::Invalid, "not true or false");
                None
            }
        }
    }

    /// A string value (the rest of the line); a second one for the same setting is refused,
    /// as Mosquitto does.
    fn string(&mut self, line: &Line, already: bool) -> Option<String> {
        if already {
            self.note(
                line,
                Severity::Invalid,
                "given twice (Mosquitto refuses a second value)",
            );
            return None;
        }
        match line.text() {
            "" => {
                self.note(line, Severity::Invalid, "no value given");
                None
            }
            v => Some(v.to_string()),
        }
    }

    fn directive(&mut self, line: &Line) {
        let src = line.source.clone();
        let name = line.name.as_str();
        let first = line.words().first().copied();
        if DEFAULTS
            .iter()
            .any(|(n, v)| *n == name && Some(*v) == first)
        {
            let in_bridge = BRIDGE_HARMLESS
                .iter()
                .chain(UNSUPPORTED)
                .any(|(n, _)| *n == name)
                && name.starts_with("bridge_")
                || BRIDGE_HARMLESS.iter().any(|(n, _)| *n == name);
            if in_bridge && self.bridges.is_empty() {
                return self.note(
                    line,
                    Severity::Invalid,
                    "a bridge option before any connection line",
                );
            }
            return self.note(
                line,
                Severity::Info,
                "Mosquitto's default, and Tern behaves alike: nothing to set",
            );
        }
        if let Some((_, why)) = HARMLESS.iter().find(|(n, _)| *n == name) {
            let why = format!("not translated, harmless: {why}");
            return self.note(line, Severity::Warning, &why);
        }
        if let Some((_, why)) = UNSUPPORTED.iter().find(|(n, _)| *n == name) {
            if name == "psk_hint" {
                self.listener().left_out = Some(src);
            }
            return self.note(line, Severity::Error, why);
        }
        if let Some((_, why)) = BRIDGE_HARMLESS.iter().find(|(n, _)| *n == name) {
            if self.bridges.is_empty() {
                return self.note(
                    line,
                    Severity::Invalid,
                    "a bridge option before any connection line",
                );
            }
            let why = format!("not translated: {why}");
            return self.note(line, Severity::Warning, &why);
        }
        if name.starts_with("auth_opt_") || name.starts_with("plugin_opt_") {
            return self.note(
                line,
                Severity::Warning,
                "an option of the plugin above, which Tern does not load",
            );
        }
        match name {
            "per_listener_settings" => self.per_listener_settings(line),
            "allow_anonymous" => {
                if let Some(v) = self.boolean(line) {
                    self.security().allow_anonymous = Some((v, src));
                }
            }
            "password_file" => {
                let already = self.security().password_file.is_some();
                if let Some(v) = self.string(line, already) {
                    self.security().password_file = Some((v, src));
                }
            }
            "acl_file" => {
                let already = self.security().acl_file.is_some();
                if let Some(v) = self.string(line, already) {
                    self.security().acl_file = Some((v, src));
                }
            }
            "allow_zero_length_clientid" => match self.boolean(line) {
                Some(true) => self.note(
                    line,
                    Severity::Info,
                    "Tern assigns an id to a client that sends none (Mosquitto's default)",
                ),
                Some(false) => self.note(
                    line,
                    Severity::Error,
                    "Tern always assigns an id to a client that sends none",
                ),
                None => {}
            },
            "auth_plugin_deny_special_chars" => self.note(
                line,
                Severity::Warning,
                "an option of the plugin above, which Tern does not load",
            ),
            "listener" => self.listener_line(line),
            "port" => self.port(line),
            "bind_address" => {
                self.local_only = false;
                let already = self.default.host.is_some();
                if let Some(v) = self.string(line, already) {
                    self.default.touch(&src);
                    self.default.host = Some((v, src));
                }
            }
            "protocol" => match line.words().first().copied() {
                Some("mqtt") => self.note(
                    line,
                    Severity::Info,
                    "MQTT over TCP (or TLS): Mosquitto's default",
                ),
                Some("websockets") => {
                    let l = self.listener();
                    l.touch(&src);
                    l.websockets = Some(src);
                }
                _ => self.note(line, Severity::Invalid, "protocol mqtt or websockets"),
            },
            "socket_domain" => match line.words().first().copied() {
                Some(d @ ("ipv4" | "ipv6")) => {
                    let domain = if d == "ipv4" { Domain::V4 } else { Domain::V6 };
                    let l = self.listener();
                    l.touch(&src);
                    l.socket_domain = Some((domain, src));
                }
                _ => self.note(line, Severity::Invalid, "socket_domain ipv4 or ipv6"),
            },
            "max_connections" => {
                if let Some(n) = self.int(line) {
                    let l = self.listener();
                    if n >= 0 {
                        l.touch(&src);
                    }
                    l.max_connections = Some((n.max(-1), src));
                    if n <= 0 {
                        self.note(
                            line,
                            Severity::Info,
                            "no limit on this listener (Mosquitto takes 0 and -1 alike)",
                        );
                    }
                }
            }
            "enable_proxy_protocol" => match self.int(line) {
                Some(v @ (1 | 2)) => {
                    let l = self.listener();
                    l.touch(&src);
                    l.enable_proxy_protocol = Some((if v == 1 { 1 } else { 2 }, src));
                    self.note(
                        line,
                        Severity::Info,
                        "proxy_protocol = true: Tern takes v1 and v2 headers alike",
                    );
                }
                Some(_) => self.note(line, Severity::Invalid, "enable_proxy_protocol 1 or 2"),
                None => {}
            },
            "max_topic_alias" => {
                if let Some(n) = self.int(line) {
                    match u16::try_from(n) {
                        Ok(n) => {
                            let l = self.listener();
                            l.touch(&src);
                            l.max_topic_alias = Some((n, src));
                        }
                        Err(_) => self.note(line, Severity::Invalid, "0 to 65535"),
                    }
                }
            }
            "cafile" | "capath" | "certfile" | "keyfile" => self.tls_file(line),
            "require_certificate" | "use_identity_as_username" | "use_subject_as_username" => {
                if let Some(v) = self.boolean(line) {
                    let l = self.listener();
                    if v {
                        l.touch(&src);
                    }
                    let slot = match name {
                        "require_certificate" => &mut l.require_certificate,
                        "use_identity_as_username" => &mut l.use_identity_as_username,
                        _ => &mut l.use_subject_as_username,
                    };
                    *slot = Some((v, src));
                }
            }
            "tls_version" => match line.words().first().copied() {
                Some(v @ ("tlsv1.3" | "tlsv1.2" | "tlsv1.1")) => {
                    let v: &'static str = match v {
                        "tlsv1.3" => "tlsv1.3",
                        "tlsv1.2" => "tlsv1.2",
                        _ => "tlsv1.1",
                    };
                    let l = self.listener();
                    l.touch(&src);
                    l.tls_version = Some((v, src));
                }
                _ => self.note(line, Severity::Invalid, "tlsv1.3, tlsv1.2 or tlsv1.1"),
            },
            "tls_keyform" => match line.words().first().copied() {
                Some("pem") => self.note(line, Severity::Info, "PEM key files: Tern's only form"),
                _ => self.note(line, Severity::Error, "Tern reads keys from PEM files only"),
            },
            "connection" => self.connection(line),
            "include_dir" => {
                if !self
                    .notes
                    .iter()
                    .any(|n| n.file == src.file && n.line == src.line)
                {
                    self.note(
                        line,
                        Severity::Info,
                        "read in place: the *.conf files of the directory, in Mosquitto's order",
                    );
                }
            }
            n if super::bridges::OPTIONS.contains(&n) => match self.bridges.last_mut() {
                Some(b) => b.option(line, &mut self.notes),
                None => self.note(
                    line,
                    Severity::Invalid,
                    "a bridge option before any connection line",
                ),
            },
            _ => self.global(line),
        }
    }

    fn per_listener_settings(&mut self, line: &Line) {
        let Some(on) = self.boolean(line) else {
            return;
        };
        if self.per_listener.is_some() {
            // Mosquitto: once set, it stays set.
            return self.note(line, Severity::Info, "already on; Mosquitto keeps it on");
        }
        if on && self.security_seen {
            return self.note(
                line,
                Severity::Invalid,
                "must come before any other security setting (Mosquitto refuses it after one)",
            );
        }
        match on {
            true => {
                self.per_listener = Some(line.source.clone());
                self.note(
                    line,
                    Severity::Info,
                    "allow_anonymous applies per listener; password_file and acl_file must be the same for every listener (Tern has one of each)",
                );
            }
            false => self.note(
                line,
                Severity::Info,
                "Mosquitto's default: security settings are global",
            ),
        }
    }

    fn listener_line(&mut self, line: &Line) {
        self.local_only = false;
        let words = line.words();
        let Some(port) = words.first() else {
            return self.note(line, Severity::Invalid, "no port given");
        };
        let port = match port.parse::<u16>() {
            Ok(p) => p,
            Err(_) => return self.note(line, Severity::Invalid, "a port from 1 to 65535"),
        };
        let host = words.get(1).filter(|w| !w.starts_with('#'));
        let mut l = Listener {
            opened_by: Some(line.source.clone()),
            port: Some((port, line.source.clone())),
            host: host.map(|h| (h.to_string(), line.source.clone())),
            ..Listener::default()
        };
        if port == 0 {
            match host {
                Some(_) => {
                    l.left_out = Some(line.source.clone());
                    self.note(
                        line,
                        Severity::Error,
                        "Tern has no Unix socket listeners: this listener is left out",
                    );
                }
                None => {
                    return self.note(line, Severity::Invalid, "port 0 needs a Unix socket path")
                }
            }
        }
        self.listeners.push(l);
        self.current = Some(self.listeners.len() - 1);
    }

    fn port(&mut self, line: &Line) {
        self.local_only = false;
        let Some(n) = self.int(line) else {
            return;
        };
        match u16::try_from(n) {
            Ok(p) if p > 0 => {
                if self.default.port.is_some() {
                    self.note(
                        line,
                        Severity::Info,
                        "port given again: the last one counts, as in Mosquitto",
                    );
                }
                self.default.touch(&line.source);
                self.default.port = Some((p, line.source.clone()));
            }
            _ => self.note(line, Severity::Invalid, "a port from 1 to 65535"),
        }
    }

    fn tls_file(&mut self, line: &Line) {
        let l = match self.current {
            Some(i) => &self.listeners[i],
            None => &self.default,
        };
        let already = match line.name.as_str() {
            "cafile" => l.cafile.is_some(),
            "capath" => l.capath.is_some(),
            "certfile" => l.certfile.is_some(),
            _ => l.keyfile.is_some(),
        };
        let Some(v) = self.string(line, already) else {
            return;
        };
        let src = line.source.clone();
        let l = self.listener();
        l.touch(&src);
        match line.name.as_str() {
            "cafile" => l.cafile = Some((v, src)),
            "capath" => l.capath = Some((v, src)),
            "certfile" => l.certfile = Some((v, src)),
            _ => l.keyfile = Some((v, src)),
        }
    }

    fn connection(&mut self, line: &Line) {
        let Some(name) = line.words().first().map(|w| w.to_string()) else {
            return self.note(line, Severity::Invalid, "no bridge name given");
        };
        if self.bridges.iter().any(|b| b.name == name) {
            return self.note(
                line,
                Severity::Invalid,
                "a second bridge of this name (Mosquitto refuses it)",
            );
        }
        let taken: Vec<String> = self
            .bridges
            .iter()
            .filter_map(|b| {
                b.table
                    .entries
                    .first()
                    .and_then(|e| e.value.as_str().map(str::to_string))
            })
            .collect();
        let bridge = Bridge::open(line, &name, &taken, &mut self.notes);
        self.bridges.push(bridge);
    }

    /// Broker-wide settings.
    fn global(&mut self, line: &Line) {
        let src = line.source.clone();
        match line.name.as_str() {
            "max_inflight_messages" => {
                if let Some(n) = self.int(line) {
                    match n {
                        n if n <= 0 || n == 65535 => {
                            self.limits.set("max_inflight_messages", 65535, &src);
                            self.note(line, Severity::Info, "no maximum in Mosquitto: Tern's largest, 65535");
                        }
                        n if n < 65535 => self.limits.set("max_inflight_messages", n, &src),
                        _ => self.note(line, Severity::Invalid, "at most 65535"),
                    }
                }
            }
            "max_queued_messages" => {
                if let Some(n) = self.int(line) {
                    let v = match n {
                        n if n <= 0 => {
                            self.note(line, Severity::Info, "no maximum in Mosquitto: Tern's largest, 4294967295");
                            i64::from(u32::MAX)
                        }
                        n => n.min(i64::from(u32::MAX)),
                    };
                    self.limits.set("max_queued_messages", v, &src);
                    self.max_queued_messages = Some((v, src));
                }
            }
            "max_queued_bytes" => {
                if let Some(n) = self.int(line) {
                    match n > 0 {
                        true => {
                            self.limits.set("max_queued_bytes", n, &src);
                            self.max_queued_bytes = Some((n, src));
                        }
                        false => {
                            self.limits.entries.retain(|e| e.key != "max_queued_bytes");
                            self.max_queued_bytes = None;
                            self.note(line, Severity::Info, "no byte bound: Tern's default");
                        }
                    }
                }
            }
            "max_packet_size" => {
                if let Some(n) = self.int(line) {
                    match n {
                        n if n < 20 => self.note(line, Severity::Invalid, "at least 20 (Mosquitto refuses less)"),
                        n if n < 64 => {
                            self.limits.set("max_packet_size", 64, &src);
                            self.note(line, Severity::Warning, "Tern's smallest packet limit is 64 bytes");
                        }
                        n => self.limits.set("max_packet_size", n.min(268_435_460), &src),
                    }
                }
            }
            "message_size_limit" => {
                if let Some(n) = self.int(line) {
                    match n {
                        n if !(0..=268_435_455).contains(&n) => self.note(line, Severity::Invalid, "0 to 268435455"),
                        0 => self.note(line, Severity::Info, "no limit: Tern's default"),
                        n => self.limits.set("max_payload_size", n, &src),
                    }
                }
            }
            "max_keepalive" => {
                if let Some(n) = self.int(line) {
                    match u16::try_from(n) {
                        Ok(_) => self.limits.set("max_keepalive", n, &src),
                        Err(_) => self.note(line, Severity::Invalid, "0 to 65535"),
                    }
                }
            }
            "global_max_connections" | "global_max_clients" => {
                if let Some(n) = self.int(line) {
                    match n > 0 {
                        true => self.limits.set("max_connections", n, &src),
                        false => self.note(line, Severity::Info, "no limit but Tern's limits.max_connections (100000)"),
                    }
                }
            }
            "queue_qos0_messages" => {
                if let Some(v) = self.boolean(line) {
                    self.session.set("queue_qos0_offline", v, &src);
                }
            }
            "persistent_client_expiration" => self.expiration(line),
            "persistence" | "retained_persistence" => {
                if let Some(v) = self.boolean(line) {
                    self.persistence = Some((v, src));
                }
            }
            "persistence_location" => {
                let already = self.persistence_location.is_some();
                if let Some(v) = self.string(line, already) {
                    self.persistence_location = Some((v, src));
                }
            }
            "persistence_file" => self.note(line, Severity::Warning, "not translated, harmless: Tern's store is a directory (persistence.path)"),
            "autosave_interval" | "autosave_on_changes" => self.note(
                line,
                Severity::Info,
                "unnecessary: Tern's store takes every change as it happens (persistence.durability)",
            ),
            "sys_interval" => {
                if let Some(n) = self.int(line) {
                    match (0..=65535).contains(&n) {
                        true => self.sys.set("interval_secs", n, &src),
                        false => self.note(line, Severity::Invalid, "0 to 65535"),
                    }
                }
            }
            "log_dest" => match line.words().first().copied() {
                Some(d @ ("none" | "stderr" | "stdout" | "syslog" | "topic" | "file" | "dlt")) => {
                    if d == "file" && line.words().len() < 2 {
                        return self.note(line, Severity::Invalid, "log_dest file needs a file");
                    }
                    self.log_dest.push((d.to_string(), src));
                }
                _ => self.note(line, Severity::Invalid, "none, stderr, stdout, syslog, topic, file FILE or dlt"),
            },
            "log_type" => match line.words().first().copied() {
                Some(
                    t @ ("none" | "information" | "notice" | "warning" | "error" | "debug"
                    | "subscribe" | "unsubscribe" | "websockets" | "internal" | "all"),
                ) => self.log_types.push((t.to_string(), src)),
                _ => self.note(line, Severity::Invalid, "an unknown log type"),
            },
            "set_tcp_nodelay" => self.note(line, Severity::Info, "Tern always sets TCP_NODELAY"),
            "upgrade_outgoing_qos" => match self.boolean(line) {
                Some(false) => self.note(line, Severity::Info, "Mosquitto's default: Tern does not upgrade either"),
                Some(true) => self.note(line, Severity::Error, "Tern never upgrades a message's QoS to the subscription's"),
                None => {}
            },
            "retain_available" => match self.boolean(line) {
                Some(true) => self.note(line, Severity::Info, "Mosquitto's default: Tern keeps retained messages"),
                Some(false) => self.note(line, Severity::Error, "Tern always keeps retained messages: subscribers would get messages Mosquitto refuses"),
                None => {}
            },
            _ => self.note(line, Severity::Error, "unknown to Tern (and to Mosquitto 2.0)"),
        }
    }

    /// `persistent_client_expiration N{h,d,w,m,y}`.
    fn expiration(&mut self, line: &Line) {
        let word = line.words().first().copied().unwrap_or_default();
        let unit = match word.chars().last() {
            Some('h') => 3_600,
            Some('d') => 86_400,
            Some('w') => 7 * 86_400,
            Some('m') => 30 * 86_400,
            Some('y') => 365 * 86_400,
            _ => {
                return self.note(
                    line,
                    Severity::Invalid,
                    "a number and h, d, w, m or y (14d)",
                )
            }
        };
        match word[..word.len() - 1].parse::<i64>() {
            Ok(n) if n > 0 => {
                let secs = n.saturating_mul(unit).min(i64::from(u32::MAX));
                self.session.set("max_expiry_secs", secs, &line.source);
            }
            _ => self.note(
                line,
                Severity::Invalid,
                "a positive number and h, d, w, m or y (14d)",
            ),
        }
    }
}
