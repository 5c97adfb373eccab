//! What only the whole file decides, as Mosquitto 2.0 decides it once it has read everything:
//! which listeners open (none named: 1883 on this host only; options before any `listener`
//! line: the default listener too), whether anonymous clients get in (false by default once a
//! listener is named), per-listener security, the store, the log level and the bridges.

use std::path::Path;

use super::listeners::{Listener, Security};
use super::render::{Doc, Source, Table};
use super::translate::Translator;
use super::{Note, Severity};

/// MQTT's largest packet: Mosquitto's limit when `max_packet_size` is not given.
const MQTT_MAX_PACKET: i64 = 268_435_460;

impl Translator {
    /// The Tern document for everything read.
    pub(super) fn finish(&mut self) -> Doc {
        let mut doc = Doc::default();
        let mut listener = Table::new("listener");
        let mut auth = Table::new("auth");
        let listeners = std::mem::take(&mut self.listeners);
        let default = std::mem::take(&mut self.default);
        let default_opens = default.touched.is_some();
        if let (true, Some(s)) = (self.local_only, &default.touched) {
            self.notes.push(Note::at(
                s,
                Severity::Warning,
                "opens Mosquitto's default listener on port 1883 of every address, with anonymous \
                 access (no listener or port line: Mosquitto stays in local-only mode); Tern does \
                 the same: add a listener line to choose the address",
            ));
        }
        if self.local_only && !default_opens {
            listener.set_default(
                "bind",
                "127.0.0.1",
                "no listener or port line: Mosquitto 2.0 listens on port 1883 of this host only \
                 (Tern on 127.0.0.1, not ::1) and lets anonymous clients in",
            );
            listener.set_default("port", 1883, "Mosquitto's default port");
        } else {
            listener.set_default(
                "enabled",
                false,
                "the file names its listeners: Tern opens only those",
            );
        }
        let opened: Vec<&Listener> = listeners
            .iter()
            .chain(default_opens.then_some(&default))
            .filter(|l| l.left_out.is_none())
            .collect();
        self.access(&opened, &default, &mut auth, &mut listener, &mut doc);
        self.topic_aliases(&opened);
        doc.tables.insert(0, listener);
        doc.tables.push(auth);
        if !self.limits.has("max_packet_size") {
            self.limits.set_default(
                "max_packet_size",
                MQTT_MAX_PACKET,
                "Mosquitto's default: no limit but MQTT's own",
            );
        }
        let mut limits = std::mem::take(&mut self.limits);
        limits.name = "limits".into();
        doc.tables.push(limits);
        let mut session = std::mem::take(&mut self.session);
        session.name = "session".into();
        doc.tables.push(session);
        doc.tables.push(self.persistence_table());
        doc.tables.push(self.log_table());
        let mut sys = std::mem::take(&mut self.sys);
        sys.name = "sys".into();
        doc.tables.push(sys);
        let queued: Vec<(&'static str, toml::Value, Source)> = [
            self.max_queued_messages
                .as_ref()
                .map(|(n, s)| ("max_queued_messages", toml::Value::from(*n), s.clone())),
            self.max_queued_bytes
                .as_ref()
                .map(|(n, s)| ("max_queued_bytes", toml::Value::from(*n), s.clone())),
        ]
        .into_iter()
        .flatten()
        .collect();
        for bridge in std::mem::take(&mut self.bridges) {
            doc.tables.push(bridge.finish(&queued, &mut self.notes));
        }
        doc
    }

    /// `[auth]`, each listener's `allow_anonymous` and the `[[listeners]]` themselves.
    fn access(
        &mut self,
        opened: &[&Listener],
        default: &Listener,
        auth: &mut Table,
        listener: &mut Table,
        doc: &mut Doc,
    ) {
        let mut notes = Vec::new();
        if self.per_listener.is_none() {
            let anon = self.global.allow_anonymous.clone();
            match (&anon, self.local_only) {
                (Some((false, s)), true) => {
                    notes.push(Note::at(
                        s,
                        Severity::Warning,
                        "no effect without a listener or port line: Mosquitto 2.0's local-only \
                         listener lets anonymous clients in, and so does Tern",
                    ));
                    auth.set_default("allow_anonymous", true, "Mosquitto 2.0's local-only mode");
                }
                (Some((v, s)), _) => auth.set("allow_anonymous", *v, s),
                (None, true) => {
                    auth.set_default("allow_anonymous", true, "Mosquitto 2.0's local-only mode")
                }
                (None, false) => auth.set_default(
                    "allow_anonymous",
                    false,
                    "Mosquitto 2.0's default once the file names a listener",
                ),
            }
            let anonymous = self.local_only || matches!(anon, Some((true, _)));
            if let Some((f, s)) = &self.global.password_file {
                auth.set("password_file", f.as_str(), s);
            } else if !anonymous {
                loophole(anon.as_ref().map(|(_, s)| s), opened, &mut notes);
            }
            if let Some((f, s)) = &self.global.acl_file {
                auth.set("acl_file", f.as_str(), s);
            }
            for l in opened {
                doc.tables.push(l.table(None, &mut notes));
            }
        } else {
            if self.local_only && default.touched.is_none() {
                listener.set_default("allow_anonymous", true, "Mosquitto 2.0's local-only mode");
            }
            if default.touched.is_none() {
                let unopened = &default.security;
                for s in [
                    unopened.allow_anonymous.as_ref().map(|(_, s)| s),
                    unopened.acl_file.as_ref().map(|(_, s)| s),
                ]
                .into_iter()
                .flatten()
                {
                    notes.push(Note::at(
                        s,
                        Severity::Warning,
                        "no effect: with per_listener_settings true this belongs to the default \
                         listener, which the file does not open (as in Mosquitto): put it after \
                         a listener line",
                    ));
                }
            }
            shared_file(
                "password_file",
                opened,
                |s| &s.password_file,
                auth,
                &mut notes,
            );
            shared_file("acl_file", opened, |s| &s.acl_file, auth, &mut notes);
            for l in opened {
                let anon = match (&l.security.allow_anonymous, self.local_only) {
                    (_, true) => (true, Vec::new()),
                    (Some((v, s)), false) => (*v, vec![s.clone()]),
                    (None, false) => (false, Vec::new()),
                };
                if !anon.0 && l.security.password_file.is_none() {
                    loophole(
                        l.security.allow_anonymous.as_ref().map(|(_, s)| s),
                        &[l],
                        &mut notes,
                    );
                }
                doc.tables.push(l.table(Some(anon), &mut notes));
            }
        }
        self.notes.extend(notes);
    }

    /// `limits.topic_alias_maximum`: Tern has one for every listener (Mosquitto's default 10
    /// for those that do not say).
    fn topic_aliases(&mut self, opened: &[&Listener]) {
        let sources: Vec<Source> = opened
            .iter()
            .filter_map(|l| l.max_topic_alias.as_ref().map(|(_, s)| s.clone()))
            .collect();
        if sources.is_empty() {
            return;
        }
        let values: Vec<u16> = opened
            .iter()
            .map(|l| l.max_topic_alias.as_ref().map_or(10, |(n, _)| *n))
            .collect();
        let max = values.iter().copied().max().unwrap_or(10);
        if values.iter().any(|v| *v != max) {
            for s in &sources {
                self.notes.push(Note::at(
                    s,
                    Severity::Warning,
                    &format!(
                        "Tern has one topic alias maximum for every listener: {max}, the largest"
                    ),
                ));
            }
        }
        self.limits
            .set_from("topic_alias_maximum", i64::from(max), &sources);
    }

    fn persistence_table(&mut self) -> Table {
        let mut t = Table::new("persistence");
        match &self.persistence {
            Some((true, s)) => {
                t.set("enabled", true, s);
                self.notes.push(Note::at(
                    s,
                    Severity::Warning,
                    "Tern keeps its own store and does not read mosquitto.db: retained messages \
                     and sessions Mosquitto stored do not carry over",
                ));
                match &self.persistence_location {
                    Some((dir, ls)) => {
                        let path = Path::new(dir).join("tern").display().to_string();
                        t.set("path", path, ls);
                        self.notes.push(Note::at(
                            ls,
                            Severity::Info,
                            "Tern's store is a directory of its own: DIR/tern",
                        ));
                    }
                    None => t.set_default(
                        "path",
                        "./data",
                        "no persistence_location: a directory in the working directory",
                    ),
                }
            }
            Some((false, s)) => {
                self.notes.push(Note::at(
                    s,
                    Severity::Info,
                    "Mosquitto's default: nothing is stored",
                ));
                if let Some((_, ls)) = &self.persistence_location {
                    self.notes.push(Note::at(
                        ls,
                        Severity::Info,
                        "no effect: persistence is off",
                    ));
                }
            }
            None => {
                if let Some((_, ls)) = &self.persistence_location {
                    self.notes.push(Note::at(
                        ls,
                        Severity::Info,
                        "no effect: persistence is off",
                    ));
                }
            }
        }
        t
    }

    /// `log.level` from `log_type` (the most verbose type given) and `log_dest none`.
    fn log_table(&mut self) -> Table {
        let mut t = Table::new("log");
        let mut dests: Vec<&str> = Vec::new();
        for (d, s) in &self.log_dest {
            let (severity, why) = match d.as_str() {
                "none" => {
                    dests.clear();
                    continue;
                }
                "stderr" => (Severity::Info, "Tern logs to stderr"),
                "stdout" => (Severity::Warning, "Tern logs to stderr, not stdout"),
                "syslog" => (Severity::Warning, "Tern logs to stderr (journald or the container runtime collects it), not syslog"),
                "file" => (Severity::Warning, "Tern logs to stderr: redirect it to the file, or let journald keep it"),
                "topic" => (Severity::Warning, "Tern does not publish its log on $SYS/broker/log"),
                _ => (Severity::Warning, "Tern logs to stderr"),
            };
            dests.push(d);
            self.notes.push(Note::at(s, severity, why));
        }
        let dest_sources: Vec<Source> = self.log_dest.iter().map(|(_, s)| s.clone()).collect();
        if !self.log_dest.is_empty() && dests.is_empty() {
            t.set_from("level", "off", &dest_sources);
            return t;
        }
        if self.log_types.is_empty() {
            return t;
        }
        let mut types: Vec<&str> = Vec::new();
        for (ty, s) in &self.log_types {
            match ty.as_str() {
                "none" => types.clear(),
                "subscribe" | "unsubscribe" | "websockets" | "internal" => {
                    self.notes.push(Note::at(
                        s,
                        Severity::Info,
                        "no category of its own in Tern: such events are logged at debug level",
                    ));
                    types.push(ty);
                }
                _ => types.push(ty),
            }
        }
        let has = |t: &[&str]| types.iter().any(|x| t.contains(x));
        let level = if has(&["debug", "all"]) {
            "debug"
        } else if has(&[
            "information",
            "notice",
            "subscribe",
            "unsubscribe",
            "websockets",
            "internal",
        ]) {
            "info"
        } else if has(&["warning"]) {
            "warn"
        } else if has(&["error"]) {
            "error"
        } else {
            "off"
        };
        let sources: Vec<Source> = self.log_types.iter().map(|(_, s)| s.clone()).collect();
        t.set_from("level", level, &sources);
        t
    }
}

/// `[auth] password_file` or `acl_file` under `per_listener_settings true`: one file for every
/// listener, or an error for each listener that differs.
fn shared_file(
    key: &'static str,
    opened: &[&Listener],
    of: impl Fn(&Security) -> &Option<(String, Source)>,
    auth: &mut Table,
    notes: &mut Vec<Note>,
) {
    let files: Vec<Option<&String>> = opened
        .iter()
        .map(|l| of(&l.security).as_ref().map(|(f, _)| f))
        .collect();
    let Some(first) = files.iter().flatten().next() else {
        return;
    };
    let sources: Vec<Source> = opened
        .iter()
        .filter_map(|l| of(&l.security).as_ref().map(|(_, s)| s.clone()))
        .collect();
    if files.iter().all(|f| f == &Some(*first)) {
        auth.set_from(key, first.as_str(), &sources);
        return;
    }
    for l in opened {
        let (what, at) = match (of(&l.security), &l.opened_by) {
            (Some((f, s)), _) => (format!("{key} {f}"), s),
            (None, Some(s)) => (format!("no {key}"), s),
            (None, None) => continue,
        };
        notes.push(Note::at(
            at,
            Severity::Error,
            &format!(
                "per_listener_settings: this listener has {what}, another a different one; Tern \
                 has one {key} for all listeners (with --ignore-unsupported: {first}, for all)"
            ),
        ));
    }
    auth.set_from(key, first.as_str(), &sources);
}

/// Mosquitto 2.0 without a password file lets in any client that sends a user name, even with
/// `allow_anonymous false`; Tern lets in no one without a password file entry or certificate.
fn loophole(line: Option<&Source>, opened: &[&Listener], notes: &mut Vec<Note>) {
    let at = line.or_else(|| opened.iter().find_map(|l| l.opened_by.as_ref()));
    if let Some(s) = at {
        notes.push(Note::at(
            s,
            Severity::Warning,
            "anonymous clients are refused and there is no password_file: Mosquitto 2.0 then \
             lets in any client that sends a user name, Tern none (only certificate identities)",
        ));
    }
}
