//! Mosquitto bridges (`connection NAME` and the lines after it) as Tern `[[bridge]]` entries,
//! with Mosquitto's defaults where Tern's differ in a way that matters: MQTT 3.1.1 to the
//! remote, QoS 0 topics, the client id `HOSTNAME.NAME` (so the remote resumes the session
//! Mosquitto had there).

use super::parse::Line;
use super::render::{Source, Table};
use super::{Note, Severity};

/// The lines that set an option of the current bridge and that Tern translates.
pub(super) const OPTIONS: &[&str] = &[
    "address",
    "addresses",
    "topic",
    "bridge_cafile",
    "bridge_capath",
    "bridge_certfile",
    "bridge_keyfile",
    "bridge_protocol_version",
    "bridge_tls_version",
    "bridge_outgoing_retain",
    "cleansession",
    "clientid",
    "remote_clientid",
    "username",
    "remote_username",
    "password",
    "remote_password",
    "try_private",
    "keepalive_interval",
    "restart_timeout",
];

/// One `connection` block.
#[derive(Debug)]
pub(super) struct Bridge {
    /// The name as written in Mosquitto.
    pub name: String,
    pub table: Table,
    pub addresses: Option<Source>,
}

impl Bridge {
    /// A bridge opened by `connection NAME`; `taken` are the Tern names already used.
    pub fn open(line: &Line, name: &str, taken: &[String], notes: &mut Vec<Note>) -> Bridge {
        let mut tern_name: String = name
            .chars()
            .map(
                |c| match c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    true => c,
                    false => '_',
                },
            )
            .collect();
        while taken.contains(&tern_name) {
            tern_name.push('_');
        }
        let mut table = Table::array("bridge", Some(&line.source));
        table.set("name", tern_name.as_str(), &line.source);
        let mut message = format!(
            "link state: Tern publishes 1/0 (retained) on $SYS/broker/connection/{tern_name}/state \
             on this broker only; Mosquitto on $SYS/broker/connection/CLIENT_ID/state here and, as \
             its will, on the remote"
        );
        if tern_name != name {
            message = format!(
                "named {tern_name} in Tern (letters, digits, - and _; it names a topic level); {message}"
            );
        }
        notes.push(Note::new(line, Severity::Warning, &message));
        Bridge {
            name: name.to_string(),
            table,
            addresses: None,
        }
    }

    /// `address`/`addresses`: `host[:port]` words, port 1883 by default.
    pub fn addresses(&mut self, line: &Line, notes: &mut Vec<Note>) {
        if self.addresses.is_some() {
            notes.push(Note::new(
                line,
                Severity::Invalid,
                "a second address line in one bridge (Mosquitto refuses it)",
            ));
            return;
        }
        let mut out = Vec::new();
        for word in line.words() {
            if word.starts_with('#') {
                break;
            }
            // Mosquitto splits at the last colon: an IPv6 address needs its port.
            let (host, port) = match word.rsplit_once(':') {
                Some((h, p)) => match p.parse::<u16>() {
                    Ok(p) if p > 0 => (h.trim_matches(['[', ']']), p),
                    _ => {
                        notes.push(Note::new(
                            line,
                            Severity::Invalid,
                            &format!("invalid port in {word}"),
                        ));
                        return;
                    }
                },
                None => (word, 1883),
            };
            match host.contains(':') {
                true => out.push(format!("[{host}]:{port}")),
                false => out.push(format!("{host}:{port}")),
            }
        }
        if out.is_empty() {
            notes.push(Note::new(line, Severity::Invalid, "no address given"));
            return;
        }
        self.addresses = Some(line.source.clone());
        self.table.set("addresses", out, &line.source);
    }

    /// `topic PATTERN [DIRECTION [QOS [LOCAL_PREFIX REMOTE_PREFIX]]]`, `""` for an empty one.
    pub fn topic(&mut self, line: &Line, notes: &mut Vec<Note>) {
        let words = line.words();
        let invalid = |notes: &mut Vec<Note>, why: &str| {
            notes.push(Note::new(line, Severity::Invalid, why));
        };
        let empty = |w: &str| {
            if w == "\"\"" {
                String::new()
            } else {
                w.to_string()
            }
        };
        let Some(pattern) = words.first().map(|w| empty(w)) else {
            return invalid(notes, "no topic pattern");
        };
        let direction = match words.get(1).map(|d| d.to_ascii_lowercase()) {
            None => "out".to_string(),
            Some(d) if ["out", "in", "both"].contains(&d.as_str()) => d,
            Some(d) => return invalid(notes, &format!("direction {d}: out, in or both")),
        };
        let qos = match words.get(2) {
            None => 0,
            Some(q) => match q.parse::<u8>() {
                Ok(q) if q <= 2 => q,
                _ => return invalid(notes, &format!("QoS {q}: 0, 1 or 2")),
            },
        };
        // A word starting with # after the QoS is a comment, as Mosquitto reads it.
        let prefix = |i: usize| {
            words
                .get(i)
                .filter(|w| !w.starts_with('#'))
                .map(|w| empty(w))
                .unwrap_or_default()
        };
        let (local, remote) = (prefix(3), prefix(4));
        if pattern.is_empty() && (local.is_empty() || remote.is_empty()) {
            return invalid(
                notes,
                "an empty pattern (\"\") needs both a local and a remote prefix",
            );
        }
        if local.contains(['+', '#']) || remote.contains(['+', '#']) {
            return invalid(notes, "prefixes cannot hold wildcards");
        }
        for full in [format!("{local}{pattern}"), format!("{remote}{pattern}")] {
            if crate::topic::validate_topic_filter(&full, usize::MAX).is_err() {
                return invalid(notes, &format!("{full} is not a valid topic filter"));
            }
        }
        let mut t = Table::array("topics", Some(&line.source));
        t.set("pattern", pattern, &line.source);
        t.set("direction", direction, &line.source);
        t.set("qos", i64::from(qos), &line.source);
        if !local.is_empty() {
            t.set("local_prefix", local, &line.source);
        }
        if !remote.is_empty() {
            t.set("remote_prefix", remote, &line.source);
        }
        self.table.children.push(t);
    }

    /// An option of this bridge (one of [`OPTIONS`]).
    pub fn option(&mut self, line: &Line, notes: &mut Vec<Note>) {
        match line.name.as_str() {
            "address" | "addresses" => return self.addresses(line, notes),
            "topic" => return self.topic(line, notes),
            _ => {}
        }
        let src = line.source.clone();
        let t = &mut self.table;
        let first = line.words().first().copied().unwrap_or_default();
        let text = line.text().to_string();
        let boolean = |notes: &mut Vec<Note>| match first {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => {
                notes.push(Note::new(line, Severity::Invalid, "not true or false"));
                None
            }
        };
        match line.name.as_str() {
            "bridge_cafile" => t.set("cafile", text, &src),
            "bridge_capath" => t.set("capath", text, &src),
            "bridge_certfile" => t.set("certfile", text, &src),
            "bridge_keyfile" => t.set("keyfile", text, &src),
            "bridge_protocol_version" => match first {
                "mqttv50" => t.set("protocol", "5", &src),
                "mqttv311" => t.set("protocol", "3.1.1", &src),
                "mqttv31" => {
                    t.set("protocol", "3.1.1", &src);
                    notes.push(Note::new(line, Severity::Warning, "Tern's bridge speaks MQTT 3.1.1, not 3.1, to the remote"));
                }
                _ => notes.push(Note::new(line, Severity::Invalid, "mqttv50, mqttv311 or mqttv31")),
            },
            "bridge_tls_version" => match first {
                "tlsv1.2" => notes.push(Note::new(line, Severity::Info, "Tern's bridge offers TLS 1.2 and 1.3")),
                "tlsv1.3" => notes.push(Note::new(line, Severity::Warning, "Tern's bridge offers TLS 1.2 as well as 1.3: a remote offering only TLS 1.2 is accepted")),
                "tlsv1.1" => notes.push(Note::new(line, Severity::Error, "Tern's bridge speaks TLS 1.2 and 1.3 only: a TLS 1.1 remote cannot be reached")),
                _ => notes.push(Note::new(line, Severity::Invalid, "tlsv1.3, tlsv1.2 or tlsv1.1")),
            },
            "bridge_outgoing_retain" => match boolean(notes) {
                Some(true) => notes.push(Note::new(line, Severity::Info, "retain flags go out as they are (Mosquitto's default)")),
                Some(false) => notes.push(Note::new(line, Severity::Error, "Tern's bridge keeps the retain flag on what it sends: a remote without retained messages may refuse them")),
                None => {}
            },
            "cleansession" => {
                if let Some(v) = boolean(notes) {
                    t.set("clean_start", v, &src);
                }
            }
            "clientid" | "remote_clientid" => t.set("client_id", text, &src),
            "username" | "remote_username" => t.set("username", text, &src),
            "password" | "remote_password" => t.set("password", text, &src),
            "try_private" => {
                if let Some(v) = boolean(notes) {
                    t.set("try_private", v, &src);
                }
            }
            "keepalive_interval" => match first.parse::<i64>() {
                Ok(n) if n <= i64::from(u16::MAX) => t.set("keep_alive_secs", n.max(5), &src),
                _ => notes.push(Note::new(line, Severity::Invalid, "seconds, at most 65535")),
            },
            _ => {
                // restart_timeout BASE [CAP]: constant, or backoff from BASE up to CAP.
                let words = line.words();
                let nums: Vec<Option<i64>> = words.iter().take(2).map(|w| w.parse().ok()).collect();
                match nums.as_slice() {
                    [Some(base)] => {
                        let ms = base.max(&1) * 1000;
                        t.set("reconnect_min_ms", ms, &src);
                        t.set("reconnect_max_ms", ms, &src);
                    }
                    [Some(base), Some(cap)] if cap >= base => {
                        t.set("reconnect_min_ms", base.max(&1) * 1000, &src);
                        t.set("reconnect_max_ms", cap.max(&1) * 1000, &src);
                    }
                    _ => notes.push(Note::new(line, Severity::Invalid, "BASE or BASE CAP, in seconds, CAP ≥ BASE")),
                }
            }
        }
    }

    /// Mosquitto's defaults where Tern's differ, and what a bridge must have; `queued` are the
    /// global `max_queued_messages`/`max_queued_bytes` Mosquitto applies to a bridge too.
    pub fn finish(
        mut self,
        queued: &[(&'static str, toml::Value, Source)],
        notes: &mut Vec<Note>,
    ) -> Table {
        let opened = self.table.sources.first().cloned();
        if let Some(src) = &opened {
            if self.addresses.is_none() {
                notes.push(Note::at(
                    src,
                    Severity::Invalid,
                    "a bridge needs an address line (Mosquitto refuses it without)",
                ));
            }
            if self.table.children.is_empty() {
                notes.push(Note::at(
                    src,
                    Severity::Invalid,
                    "a bridge needs at least one topic line (Mosquitto refuses it without)",
                ));
            }
        }
        if !self.table.has("protocol") {
            self.table
                .set_default("protocol", "3.1.1", "Mosquitto's default: mqttv311");
        }
        if !self.table.has("client_id") {
            match host_name() {
                Some(host) => self.table.set_default(
                    "client_id",
                    format!("{host}.{}", self.name),
                    "Mosquitto's default remote_clientid HOSTNAME.NAME: the remote resumes \
                     the session Mosquitto had there",
                ),
                None => {
                    if let Some(src) = &opened {
                        notes.push(Note::at(
                            src,
                            Severity::Warning,
                            "this host's name is unknown, so the client id on the remote is \
                             tern-bridge-NAME, not Mosquitto's HOSTNAME.NAME: set remote_clientid \
                             for the remote to resume Mosquitto's session",
                        ));
                    }
                }
            }
        }
        for (key, value, src) in queued {
            self.table.set(key, value.clone(), src);
        }
        self.table
    }
}

/// This host's name, as `gethostname` gives it (Linux: the kernel's).
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}
