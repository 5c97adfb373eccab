use std::net::IpAddr;

use super::*;
use crate::config::{Direction, IdentitySource, ListenerKind, TlsVersion};

fn tr(text: &str) -> Translation {
    translate_text(text, "m.conf").unwrap()
}

/// The severity of the worst note on line `n` of m.conf.
fn sev(t: &Translation, n: usize) -> Option<Severity> {
    t.notes
        .iter()
        .filter(|x| x.file == "m.conf" && x.line == n)
        .map(|x| x.severity)
        .max()
}

/// The messages of the notes on line `n`.
fn msg(t: &Translation, n: usize) -> String {
    t.notes
        .iter()
        .filter(|x| x.line == n)
        .map(|x| x.message.clone())
        .collect::<Vec<_>>()
        .join(" | ")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The rendered TOML reads back as the same configuration.
fn round_trips(t: &Translation) {
    let again = Config::from_toml(&t.toml, "rendered").unwrap();
    assert_eq!(again, t.config, "{}", t.toml);
}

/// Mosquitto 2.0 with no `listener` or `port`: 1883 on this host only, anonymous clients in.
#[test]
fn no_listener_means_local_only_1883_with_anonymous_access() {
    for text in ["", "# only comments\n", "sys_interval 5\n"] {
        let t = tr(text);
        let c = &t.config;
        assert!(c.listener.enabled);
        assert_eq!(c.listener.bind, ip("127.0.0.1"));
        assert_eq!(c.listener.port, 1883);
        assert!(c.listeners.is_empty());
        assert_eq!(c.auth.allow_anonymous, Some(true));
        round_trips(&t);
    }
    let t = tr("allow_anonymous false\n");
    assert_eq!(t.config.auth.allow_anonymous, Some(true));
    assert_eq!(sev(&t, 1), Some(Severity::Warning), "{}", msg(&t, 1));
}

/// [MQTT broker default] Once the file names a listener, only the listeners it names open and
/// anonymous access is off unless the file turns it on.
#[test]
fn listeners_replace_the_default_and_turn_anonymous_off() {
    let t = tr("listener 1883\nlistener 1884 127.0.0.1\n");
    let c = &t.config;
    assert!(!c.listener.enabled, "Tern's own [listener] stays closed");
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.listeners[0].kind, ListenerKind::Tcp);
    assert_eq!(c.listeners[0].bind, ip("0.0.0.0"));
    assert_eq!(c.listeners[0].port, 1883);
    assert_eq!(c.listeners[1].bind, ip("127.0.0.1"));
    assert_eq!(c.listeners[1].port, 1884);
    assert_eq!(c.auth.allow_anonymous, Some(false));
    // No password file: Mosquitto lets any user name in, Tern no one; said on the listener line.
    assert_eq!(sev(&t, 1), Some(Severity::Warning), "{}", msg(&t, 1));
    round_trips(&t);
    let t = tr("listener 1883\nallow_anonymous true\n");
    assert_eq!(t.config.auth.allow_anonymous, Some(true));
    assert_eq!(sev(&t, 1), None);
}

/// `port`, `bind_address` and listener options before any `listener` line make Mosquitto's
/// default listener, beside the named ones.
#[test]
fn port_bind_address_and_early_options_make_the_default_listener() {
    let t = tr("port 1885\nbind_address 127.0.0.1\n");
    let c = &t.config;
    assert!(!c.listener.enabled);
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(
        (c.listeners[0].bind, c.listeners[0].port),
        (ip("127.0.0.1"), 1885)
    );
    assert_eq!(c.auth.allow_anonymous, Some(false));
    let t = tr("max_connections 10\nlistener 1886\n");
    let c = &t.config;
    assert_eq!(c.listeners.len(), 2, "the named one, then the default one");
    assert_eq!(c.listeners[0].port, 1886);
    assert_eq!(c.listeners[0].max_connections, None);
    assert_eq!(
        (c.listeners[1].port, c.listeners[1].max_connections),
        (1883, Some(10))
    );
    let t = tr("port 1883\nport 1887\n");
    assert_eq!(t.config.listeners[0].port, 1887, "the last port counts");
    round_trips(&t);
    let t = tr("bind_address localhost\n");
    assert_eq!(t.config.listeners[0].bind, ip("127.0.0.1"));
    // A listener option alone: Mosquitto opens its default listener on every address and
    // stays in local-only mode (anonymous clients in); said on that line.
    let t = tr("max_connections 10\n");
    let l = &t.config.listeners[0];
    assert_eq!((l.bind, l.port), (ip("0.0.0.0"), 1883));
    assert_eq!(t.config.auth.allow_anonymous, Some(true));
    assert_eq!(sev(&t, 1), Some(Severity::Warning), "{}", msg(&t, 1));
}

/// Listener options: TLS files, client certificates, identities, TLS version, limits.
#[test]
fn tls_listener_options() {
    let t = tr("listener 8883\n\
                cafile ca.pem\n\
                capath cas/\n\
                certfile server.pem\n\
                keyfile server.key\n\
                require_certificate true\n\
                use_identity_as_username true\n\
                use_subject_as_username true\n\
                tls_version tlsv1.3\n\
                max_connections 500\n");
    let l = &t.config.listeners[0];
    assert_eq!(l.kind, ListenerKind::Tls);
    assert_eq!(l.cert.as_deref(), Some(Path::new("server.pem")));
    assert_eq!(l.key.as_deref(), Some(Path::new("server.key")));
    assert_eq!(l.client_ca.as_deref(), Some(Path::new("ca.pem")));
    assert_eq!(l.client_ca_dir.as_deref(), Some(Path::new("cas/")));
    assert!(l.require_client_cert);
    assert_eq!(
        l.identity_as_username,
        IdentitySource::Cn,
        "identity wins over subject"
    );
    assert_eq!(l.min_tls_version, TlsVersion::Tls13);
    assert_eq!(l.max_connections, Some(500));
    round_trips(&t);
    let t = tr(
        "listener 8883\ncafile ca.pem\ncertfile s.pem\nkeyfile s.key\n\
                require_certificate true\nuse_subject_as_username true\ntls_version tlsv1.2\n",
    );
    let l = &t.config.listeners[0];
    assert_eq!(l.identity_as_username, IdentitySource::Subject);
    assert_eq!(l.min_tls_version, TlsVersion::Tls12);
    // Without require_certificate clients are not asked for a certificate, as in Mosquitto.
    let t = tr("listener 8883\ncafile ca.pem\ncertfile s.pem\nkeyfile s.key\n");
    assert_eq!(t.config.listeners[0].client_ca, None);
    assert_eq!(sev(&t, 2), Some(Severity::Info));
    let t = tr("listener 8883\ncertfile s.pem\nkeyfile s.key\nuse_identity_as_username true\n");
    assert_eq!(
        sev(&t, 4),
        Some(Severity::Error),
        "no client certificate: Mosquitto refuses everyone"
    );
    let t = tr("listener 8883\ncertfile s.pem\nkeyfile s.key\nrequire_certificate true\n");
    assert_eq!(
        sev(&t, 4),
        Some(Severity::Invalid),
        "nothing to verify against"
    );
    let t = tr("listener 8883\ncertfile s.pem\n");
    assert_eq!(sev(&t, 2), Some(Severity::Invalid));
    assert_eq!(t.config.listeners[0].kind, ListenerKind::Tcp);
    let t = tr("listener 8883\ncertfile s.pem\nkeyfile s.key\ntls_version tlsv1.1\n");
    assert_eq!(sev(&t, 4), Some(Severity::Error));
    let t = tr("listener 1883\ncafile ca.pem\nrequire_certificate true\n");
    assert_eq!(sev(&t, 2), Some(Severity::Info), "no TLS: no effect");
    assert_eq!(sev(&t, 3), Some(Severity::Info));
}

/// `protocol websockets` serves every path, as Mosquitto; with certfile and keyfile, wss.
#[test]
fn websockets_listeners_serve_every_path() {
    let t = tr(
        "listener 9001\nprotocol websockets\nlistener 9002\nprotocol websockets\n\
                certfile s.pem\nkeyfile s.key\nlistener 1883\nprotocol mqtt\n",
    );
    let ls = &t.config.listeners;
    assert_eq!((ls[0].kind, ls[0].path.as_str()), (ListenerKind::Ws, "*"));
    assert_eq!((ls[1].kind, ls[1].path.as_str()), (ListenerKind::Wss, "*"));
    assert_eq!(ls[2].kind, ListenerKind::Tcp);
    assert_eq!(sev(&t, 8), Some(Severity::Info));
    round_trips(&t);
}

#[test]
fn socket_domain_picks_the_address_family() {
    let t = tr("listener 1883\nsocket_domain ipv6\nlistener 1884\nsocket_domain ipv4\n");
    assert_eq!(t.config.listeners[0].bind, ip("::"));
    assert_eq!(t.config.listeners[1].bind, ip("0.0.0.0"));
    let t = tr("listener 1883\nsocket_domain ipx\n");
    assert_eq!(sev(&t, 2), Some(Severity::Invalid));
}

/// Mosquitto 2.1's `enable_proxy_protocol 1|2` turns the PROXY protocol on for its listener.
#[test]
fn enable_proxy_protocol_carries_over() {
    let t = tr("listener 1883\nenable_proxy_protocol 2\nlistener 1884\nlistener 1885\nenable_proxy_protocol 1\n");
    let on: Vec<bool> = t
        .config
        .listeners
        .iter()
        .map(|l| l.proxy_protocol)
        .collect();
    assert_eq!(on, [true, false, true]);
    assert_eq!(sev(&t, 2), Some(Severity::Info));
    let t = tr("listener 1883\nenable_proxy_protocol 3\n");
    assert_eq!(sev(&t, 2), Some(Severity::Invalid));
}

/// `max_connections` -1 and 0 both mean no limit in Mosquitto.
#[test]
fn max_connections_without_limit() {
    for n in ["-1", "0"] {
        let t = tr(&format!("listener 1883\nmax_connections {n}\n"));
        assert_eq!(t.config.listeners[0].max_connections, None);
    }
}

/// Without per_listener_settings the security settings are global, wherever they are.
#[test]
fn security_settings_are_global_by_default() {
    let t = tr(
        "listener 1883\nallow_anonymous true\npassword_file pw\nacl_file acl\n\
                listener 1884\n",
    );
    let c = &t.config;
    assert_eq!(c.auth.allow_anonymous, Some(true));
    assert_eq!(c.auth.password_file.as_deref(), Some(Path::new("pw")));
    assert_eq!(c.auth.acl_file.as_deref(), Some(Path::new("acl")));
    assert!(c.listeners.iter().all(|l| l.allow_anonymous.is_none()));
    let t = tr("password_file a\npassword_file b\nlistener 1883\n");
    assert_eq!(
        sev(&t, 2),
        Some(Severity::Invalid),
        "Mosquitto refuses a second one"
    );
}

/// per_listener_settings: allow_anonymous per listener (false by default); one password and
/// ACL file for all, or an error on every listener that differs.
#[test]
fn per_listener_settings() {
    let t = tr("per_listener_settings true\n\
                listener 1883 127.0.0.1\nallow_anonymous true\npassword_file pw\n\
                listener 8883\npassword_file pw\nacl_file acl\n");
    let ls = &t.config.listeners;
    assert_eq!(ls[0].allow_anonymous, Some(true));
    assert_eq!(ls[1].allow_anonymous, Some(false));
    assert_eq!(
        t.config.auth.password_file.as_deref(),
        Some(Path::new("pw"))
    );
    // The ACL file on one listener only: the other has none, Tern one for both.
    assert_eq!(sev(&t, 2), Some(Severity::Error), "{}", msg(&t, 2));
    assert_eq!(sev(&t, 7), Some(Severity::Error), "{}", msg(&t, 7));
    assert_eq!(t.config.auth.acl_file.as_deref(), Some(Path::new("acl")));
    round_trips(&t);
    let t = tr(
        "per_listener_settings true\nlistener 1883\npassword_file a\n\
                listener 1884\npassword_file b\n",
    );
    assert_eq!(sev(&t, 3), Some(Severity::Error));
    assert_eq!(sev(&t, 5), Some(Severity::Error));
    assert!(
        msg(&t, 3).contains("--ignore-unsupported: a"),
        "{}",
        msg(&t, 3)
    );
    assert_eq!(t.refusals(true).len(), 0);
    assert_eq!(t.refusals(false).len(), 2);
    // Before any listener, it belongs to the default listener, which does not open.
    let t = tr("per_listener_settings true\nallow_anonymous true\nlistener 1883\n");
    assert_eq!(sev(&t, 2), Some(Severity::Warning), "{}", msg(&t, 2));
    assert_eq!(t.config.listeners[0].allow_anonymous, Some(false));
    let t = tr("allow_anonymous true\nper_listener_settings true\nlistener 1883\n");
    assert_eq!(sev(&t, 2), Some(Severity::Invalid), "too late");
}

/// Broker-wide limits, with Mosquitto's meanings of 0.
#[test]
fn limits() {
    let t = tr(
        "max_inflight_messages 10\nmax_queued_messages 200\nmax_queued_bytes 4096\n\
                message_size_limit 1000\nmax_packet_size 2000\nmax_keepalive 120\n\
                queue_qos0_messages true\npersistent_client_expiration 14d\nsys_interval 30\n\
                global_max_connections 50\n",
    );
    let c = &t.config;
    assert_eq!(c.limits.max_inflight_messages, 10);
    assert_eq!(c.limits.max_queued_messages, 200);
    assert_eq!(c.limits.max_queued_bytes, Some(4096));
    assert_eq!(c.limits.max_payload_size, Some(1000));
    assert_eq!(c.limits.max_packet_size, 2000);
    assert_eq!(c.limits.max_keepalive, 120);
    assert!(c.session.queue_qos0_offline);
    assert_eq!(c.session.max_expiry_secs, Some(14 * 86_400));
    assert_eq!(c.sys.interval_secs, 30);
    assert_eq!(c.limits.max_connections, 50);
    round_trips(&t);
    let t = tr(
        "max_inflight_messages 0\nmax_queued_messages 0\nmax_queued_bytes 0\n\
                message_size_limit 0\n",
    );
    let c = &t.config;
    assert_eq!(c.limits.max_inflight_messages, 65535);
    assert_eq!(c.limits.max_queued_messages, u32::MAX as usize);
    assert_eq!(c.limits.max_queued_bytes, None);
    assert_eq!(c.limits.max_payload_size, None);
    assert_eq!(
        c.limits.max_packet_size, 268_435_460,
        "Mosquitto's default: no limit"
    );
    let t = tr(
        "max_packet_size 10\nmax_packet_size 30\npersistent_client_expiration 3x\n\
                persistent_client_expiration 2m\nmax_keepalive 70000\nsys_interval x\n",
    );
    assert_eq!(sev(&t, 1), Some(Severity::Invalid));
    assert_eq!(sev(&t, 2), Some(Severity::Warning));
    assert_eq!(t.config.limits.max_packet_size, 64);
    assert_eq!(sev(&t, 3), Some(Severity::Invalid));
    assert_eq!(t.config.session.max_expiry_secs, Some(60 * 86_400));
    assert_eq!(sev(&t, 5), Some(Severity::Invalid));
    assert_eq!(sev(&t, 6), Some(Severity::Invalid));
    for (s, secs) in [("2h", 7_200), ("1w", 604_800), ("1y", 31_536_000)] {
        let t = tr(&format!("persistent_client_expiration {s}\n"));
        assert_eq!(t.config.session.max_expiry_secs, Some(secs));
    }
}

/// `max_topic_alias` is per listener in Mosquitto, one value in Tern.
#[test]
fn topic_alias_maximum() {
    let t = tr("listener 1883\nmax_topic_alias 5\nlistener 1884\nmax_topic_alias 5\n");
    assert_eq!(t.config.limits.topic_alias_maximum, 5);
    assert_eq!(sev(&t, 2), None);
    let t = tr("listener 1883\nmax_topic_alias 20\nlistener 1884\n");
    assert_eq!(t.config.limits.topic_alias_maximum, 20);
    assert_eq!(sev(&t, 2), Some(Severity::Warning));
}

#[test]
fn persistence() {
    let t = tr(
        "persistence true\npersistence_location /var/lib/mosquitto/\n\
                autosave_interval 1800\npersistence_file m.db\n",
    );
    let p = &t.config.persistence;
    assert!(p.enabled);
    assert_eq!(p.path, Path::new("/var/lib/mosquitto/tern"));
    assert_eq!(
        sev(&t, 1),
        Some(Severity::Warning),
        "mosquitto.db is not read"
    );
    assert_eq!(sev(&t, 3), Some(Severity::Info), "autosave is unnecessary");
    assert_eq!(sev(&t, 4), Some(Severity::Warning));
    let t = tr("persistence true\n");
    assert_eq!(t.config.persistence.path, Path::new("./data"));
    let t = tr("persistence false\npersistence_location /x\n");
    assert!(!t.config.persistence.enabled);
    assert_eq!(sev(&t, 2), Some(Severity::Info));
    round_trips(&t);
}

/// `log_type` lines make `log.level` (the most verbose one); `log_dest none` silences it.
#[test]
fn logging() {
    let level = |text: &str| tr(text).config.log.level;
    assert_eq!(level(""), "info");
    assert_eq!(level("log_type error\n"), "error");
    assert_eq!(level("log_type error\nlog_type warning\n"), "warn");
    assert_eq!(level("log_type notice\n"), "info");
    assert_eq!(level("log_type all\n"), "debug");
    assert_eq!(
        level("log_type debug\nlog_type none\nlog_type error\n"),
        "error"
    );
    assert_eq!(level("log_dest none\n"), "off");
    assert_eq!(level("log_dest none\nlog_dest stderr\n"), "info");
    let t = tr(
        "log_dest syslog\nlog_dest stdout\nlog_dest file /var/log/m.log\nlog_dest topic\n\
                log_dest stderr\nlog_type subscribe\nlog_timestamp false\n",
    );
    for line in 1..=4 {
        assert_eq!(sev(&t, line), Some(Severity::Warning), "line {line}");
    }
    assert_eq!(sev(&t, 5), Some(Severity::Info));
    assert_eq!(sev(&t, 6), Some(Severity::Info));
    assert_eq!(sev(&t, 7), Some(Severity::Warning));
    let t = tr("log_dest file\n");
    assert_eq!(sev(&t, 1), Some(Severity::Invalid));
}

/// A bridge with Mosquitto's defaults where Tern's differ: MQTT 3.1.1, QoS 0, direction out,
/// port 1883, client id HOSTNAME.NAME.
#[test]
fn bridge_with_mosquittos_defaults() {
    let t = tr("connection edge.cloud\naddress broker.example.com\ntopic sensors/#\n");
    let b = &t.config.bridge[0];
    assert_eq!(
        b.name, "edge_cloud",
        "Tern's names are letters, digits, - and _"
    );
    assert_eq!(b.addresses, ["broker.example.com:1883"]);
    assert_eq!(b.protocol, "3.1.1");
    assert!(b.try_private);
    assert!(!b.clean_start);
    assert!(
        b.client_id
            .as_deref()
            .is_some_and(|id| id.ends_with(".edge.cloud")),
        "{:?}",
        b.client_id
    );
    assert_eq!(b.topics.len(), 1);
    assert_eq!(b.topics[0].direction, Direction::Out);
    assert_eq!(b.topics[0].qos, 0);
    assert_eq!(
        sev(&t, 1),
        Some(Severity::Warning),
        "the $SYS state topic differs"
    );
    round_trips(&t);
}

#[test]
fn bridge_options() {
    let t = tr("max_queued_messages 300\n\
                connection cloud\n\
                addresses 10.0.0.1:8883 [::1]:8884 ::2:8885\n\
                bridge_cafile ca.pem\nbridge_capath cas\nbridge_certfile c.pem\nbridge_keyfile c.key\n\
                remote_username gw\nremote_password pw\nremote_clientid gw-7\ncleansession true\n\
                try_private false\nbridge_protocol_version mqttv50\nkeepalive_interval 2\n\
                restart_timeout 10 30\n\
                topic # both 2 local/ remote/\n\
                topic \"\" in 1 here/x there/y\n\
                topic a/+ out 1 \"\" r/\n\
                notifications false\nstart_type lazy\n");
    let b = &t.config.bridge[0];
    assert_eq!(b.addresses, ["10.0.0.1:8883", "[::1]:8884", "[::2]:8885"]);
    assert_eq!(b.cafile.as_deref(), Some(Path::new("ca.pem")));
    assert_eq!(b.capath.as_deref(), Some(Path::new("cas")));
    assert_eq!(b.certfile.as_deref(), Some(Path::new("c.pem")));
    assert_eq!(b.keyfile.as_deref(), Some(Path::new("c.key")));
    assert_eq!(b.username.as_deref(), Some("gw"));
    assert_eq!(b.password.as_deref(), Some("pw"));
    assert_eq!(b.client_id.as_deref(), Some("gw-7"));
    assert!(b.clean_start);
    assert!(!b.try_private);
    assert_eq!(b.protocol, "5");
    assert_eq!(b.keep_alive_secs, 5, "Mosquitto's minimum");
    assert_eq!((b.reconnect_min_ms, b.reconnect_max_ms), (10_000, 30_000));
    assert_eq!(
        b.max_queued_messages, 300,
        "the global limit applies to bridges"
    );
    let r = &b.topics;
    assert_eq!(
        (r[0].pattern.as_str(), r[0].direction, r[0].qos),
        ("#", Direction::Both, 2)
    );
    assert_eq!(
        (r[0].local_prefix.as_str(), r[0].remote_prefix.as_str()),
        ("local/", "remote/")
    );
    assert_eq!(
        (
            r[1].pattern.as_str(),
            r[1].local_prefix.as_str(),
            r[1].remote_prefix.as_str()
        ),
        ("", "here/x", "there/y")
    );
    assert_eq!(
        (r[2].local_prefix.as_str(), r[2].remote_prefix.as_str()),
        ("", "r/")
    );
    assert_eq!(sev(&t, 19), Some(Severity::Warning));
    assert_eq!(sev(&t, 20), Some(Severity::Warning));
    round_trips(&t);
    let t = tr("connection c\naddress h\ntopic x restart_timeout\n");
    assert_eq!(sev(&t, 3), Some(Severity::Invalid));
    let t = tr("restart_timeout 5\nconnection c\naddress h\ntopic x\ntopic \"\" out 0 a \"\"\n\
                topic x in 3\ntopic x out 0 a/+ b\nbridge_insecure true\nbridge_tls_version tlsv1.3\n");
    assert_eq!(sev(&t, 1), Some(Severity::Invalid), "before any connection");
    assert_eq!(
        sev(&t, 5),
        Some(Severity::Invalid),
        "empty pattern needs both prefixes"
    );
    assert_eq!(sev(&t, 6), Some(Severity::Invalid));
    assert_eq!(sev(&t, 7), Some(Severity::Invalid));
    assert_eq!(sev(&t, 8), Some(Severity::Error));
    assert_eq!(sev(&t, 9), Some(Severity::Warning));
    let t = tr("connection c\nconnection c\n");
    assert_eq!(sev(&t, 1), Some(Severity::Invalid), "no address, no topic");
    assert_eq!(sev(&t, 2), Some(Severity::Invalid), "duplicate name");
}

/// Lines Tern does without: warnings when harmless, errors when their absence changes who may
/// connect or what is delivered, invalid when Mosquitto refuses them too; at Mosquitto's
/// default value, where Tern behaves alike, only a note.
#[test]
fn unsupported_and_harmless_lines() {
    let t = tr("listener 1883\nuse_username_as_clientid false\nmax_qos 2\nmax_qos 1\n");
    assert_eq!(sev(&t, 2), Some(Severity::Info));
    assert_eq!(sev(&t, 3), Some(Severity::Info));
    assert_eq!(sev(&t, 4), Some(Severity::Warning));
    let t = tr("round_robin false\n");
    assert_eq!(
        sev(&t, 1),
        Some(Severity::Invalid),
        "a bridge option outside a bridge"
    );
    let t = tr("pid_file /run/m.pid\nuser mosquitto\nauth_plugin /x.so\nauth_opt_a b\n\
                listener 1883\nmount_point m/\nuse_username_as_clientid true\n\
                listener 8883\npsk_hint h\npsk_file f\nfrobnicate 1\nretain_available false\n\
                upgrade_outgoing_qos true\nallow_zero_length_clientid false\nclientid_prefixes x\n\
                crlfile c.pem\nlistener 0 /tmp/m.sock\nset_tcp_nodelay true\ncheck_retain_source true\n");
    let expect = [
        (1, Severity::Warning),
        (2, Severity::Warning),
        (3, Severity::Error),
        (4, Severity::Warning),
        (6, Severity::Error),
        (7, Severity::Error),
        (9, Severity::Error),
        (10, Severity::Error),
        (11, Severity::Error),
        (12, Severity::Error),
        (13, Severity::Error),
        (14, Severity::Error),
        (15, Severity::Error),
        (16, Severity::Error),
        (17, Severity::Error),
        (18, Severity::Info),
        (19, Severity::Warning),
    ];
    for (line, s) in expect {
        assert_eq!(sev(&t, line), Some(s), "line {line}: {}", msg(&t, line));
    }
    // The PSK and Unix socket listeners are left out, never opened as plain TCP.
    assert_eq!(t.config.listeners.len(), 1);
    assert_eq!(t.config.listeners[0].port, 1883);
    assert!(t.refusals(true).is_empty());
    assert_eq!(t.refusals(false).len(), 12);
    round_trips(&t);
}

/// Every note names the file and line and quotes the directive.
#[test]
fn notes_name_file_line_and_directive() {
    let t = tr("\n# c\npid_file /run/m.pid\n");
    assert_eq!(
        t.notes[0].to_string(),
        "m.conf line 3: warning: `pid_file /run/m.pid`: not translated, harmless: Tern writes \
         no pid file (systemd and containers track the process)"
    );
    assert!(t
        .toml
        .contains("# m.conf line 3: pid_file /run/m.pid\n#   warning: "));
}

/// Bad values are refused as Mosquitto refuses them.
#[test]
fn invalid_values() {
    let t = tr(
        "listener x\nlistener 70000\nallow_anonymous yes\nport 0\nprotocol http\n\
                max_inflight_messages 70000\nlisten\n",
    );
    for line in 1..=6 {
        assert_eq!(sev(&t, line), Some(Severity::Invalid), "line {line}");
    }
    assert_eq!(sev(&t, 7), Some(Severity::Error), "unknown");
}

/// include_dir reads the directory's *.conf files in Mosquitto's order, in place; an
/// include_dir in an included file is ignored, as Mosquitto does.
#[test]
fn include_dir_in_mosquittos_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("b.conf"), "listener 1902\n").unwrap();
    std::fs::write(d.join("B.conf"), "listener 1901\ninclude_dir /nowhere\n").unwrap();
    std::fs::write(d.join("a.conf"), "listener 1900\n").unwrap();
    std::fs::write(d.join("notes.txt"), "listener 1999\n").unwrap();
    let main = d.join("mosquitto.conf");
    let inc = d.join("inc");
    std::fs::create_dir(&inc).unwrap();
    for f in ["a.conf", "b.conf", "B.conf", "notes.txt"] {
        std::fs::rename(d.join(f), inc.join(f)).unwrap();
    }
    std::fs::write(
        &main,
        format!(
            "listener 1899\ninclude_dir {}\nlistener 1903\n",
            inc.display()
        ),
    )
    .unwrap();
    let t = translate_file(&main).unwrap();
    let ports: Vec<u16> = t.config.listeners.iter().map(|l| l.port).collect();
    assert_eq!(ports, [1899, 1900, 1901, 1902, 1903]);
    let b = inc.join("B.conf").display().to_string();
    let ignored = t.notes.iter().find(|n| n.file == b && n.line == 2).unwrap();
    assert_eq!(ignored.severity, Severity::Warning);
    assert!(t.toml.contains(&format!("# {b} line 1: listener 1901")));
    let t = tr("include_dir /no/such/dir\n");
    assert_eq!(sev(&t, 1), Some(Severity::Invalid));
}

#[test]
fn recognises_mosquitto_files() {
    assert!(is_mosquitto(Path::new("a.conf"), "[listener]\n"));
    assert!(!is_mosquitto(Path::new("a.toml"), "listener 1883\n"));
    assert!(is_mosquitto(Path::new("cfg"), "# x\nlistener 1883\n"));
    assert!(!is_mosquitto(Path::new("cfg"), "[listener]\nport = 1883\n"));
    assert!(!is_mosquitto(Path::new("cfg"), "nonsense here\n"));
}

/// The active lines of Debian's /etc/mosquitto/mosquitto.conf: a pid file, persistence, a log
/// file, include_dir /etc/mosquitto/conf.d (here an empty directory).
#[test]
fn debian_default_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "# Place your local configuration in /etc/mosquitto/conf.d/\n\
         pid_file /run/mosquitto/mosquitto.pid\n\n\
         persistence true\npersistence_location /var/lib/mosquitto/\n\n\
         log_dest file /var/log/mosquitto/mosquitto.log\n\n\
         include_dir {}\n",
        dir.path().display()
    );
    let t = tr(&text);
    let c = &t.config;
    assert_eq!(
        (c.listener.enabled, c.listener.bind, c.listener.port),
        (true, ip("127.0.0.1"), 1883)
    );
    assert_eq!(c.auth.allow_anonymous, Some(true));
    assert!(c.persistence.enabled);
    assert!(t.refusals(false).is_empty(), "{:?}", t.notes);
    assert_eq!(t.warnings().count(), 3, "pid file, mosquitto.db, log file");
    round_trips(&t);
}

/// Debian's annotated example (every directive commented out) runs as Mosquitto's defaults.
#[test]
fn debian_example_file() {
    let path = Path::new("/usr/share/doc/mosquitto/examples/mosquitto.conf");
    if !path.exists() {
        println!(
            "skipped: {} is absent (Debian's mosquitto package)",
            path.display()
        );
        return;
    }
    let t = translate_file(path).unwrap();
    assert!(t.refusals(false).is_empty(), "{:?}", t.notes);
    assert_eq!(t.config.listener.bind, ip("127.0.0.1"));
    assert_eq!(t.config.auth.allow_anonymous, Some(true));
    round_trips(&t);
}

/// Debian's example with every directive line uncommented as it stands (placeholders and
/// all): nothing is lost (every line is quoted in the TOML, with a note or as the source of a
/// key), and directives given at Mosquitto's default are not reported as differences.
#[test]
fn debian_example_uncommented() {
    let path = Path::new("/usr/share/doc/mosquitto/examples/mosquitto.conf");
    let Ok(example) = std::fs::read_to_string(path) else {
        println!(
            "skipped: {} is absent (Debian's mosquitto package)",
            path.display()
        );
        return;
    };
    let lines: Vec<&str> = example
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(directives::is_directive)
        })
        .collect();
    assert!(lines.len() > 80, "{} directive lines", lines.len());
    let text = lines.join("\n");
    let t = tr(&text);
    for (i, l) in lines.iter().enumerate() {
        let quoted = format!("# m.conf line {}: {}\n", i + 1, l.trim());
        assert!(t.toml.contains(&quoted), "line {} not quoted: {l}", i + 1);
    }
    let of = |directive: &str| {
        let n = lines.iter().position(|l| l.trim() == directive).unwrap() + 1;
        sev(&t, n)
    };
    assert_eq!(of("use_username_as_clientid"), Some(Severity::Error));
    assert_eq!(of("bridge_insecure false"), Some(Severity::Info));
    assert_eq!(of("max_qos 2"), Some(Severity::Info));
    assert_eq!(of("check_retain_source true"), Some(Severity::Warning));
    assert_eq!(of("auth_plugin"), Some(Severity::Error));
}

/// Configurations in the shapes Mosquitto's own test suite writes (test/broker/*.py).
#[test]
fn mosquitto_test_suite_shapes() {
    // 01-connect-*: a listener and anonymous access.
    let t = tr("listener 1888\nallow_anonymous true\n");
    assert_eq!(t.config.listeners[0].port, 1888);
    assert!(t.refusals(false).is_empty());
    // 08-ssl-connect-cert-auth: mutual TLS.
    let t = tr(
        "listener 1888\ncafile ../ssl/all-ca.crt\ncertfile ../ssl/server.crt\n\
                keyfile ../ssl/server.key\nrequire_certificate true\nallow_anonymous true\n",
    );
    let l = &t.config.listeners[0];
    assert!(l.kind == ListenerKind::Tls && l.require_client_cert && l.client_ca.is_some());
    // 08-ssl-connect-identity: the certificate names the user.
    let t = tr("listener 1888\ncafile ../ssl/all-ca.crt\ncertfile ../ssl/server.crt\n\
                keyfile ../ssl/server.key\nrequire_certificate true\nuse_identity_as_username true\n");
    assert_eq!(
        t.config.listeners[0].identity_as_username,
        IdentitySource::Cn
    );
    // 09-acl-*: an ACL file.
    let t = tr("listener 1888\nallow_anonymous true\nacl_file 09-acl.acl\n");
    assert_eq!(
        t.config.auth.acl_file.as_deref(),
        Some(Path::new("09-acl.acl"))
    );
    // 09-pwfile-*: a password file.
    let t = tr("listener 1888\nallow_anonymous false\npassword_file 09-pwfile.pwfile\n");
    assert_eq!(t.config.auth.allow_anonymous, Some(false));
    assert!(t.notes.is_empty(), "{:?}", t.notes);
    // 06-bridge-*: a bridge back to a test broker.
    let t = tr(
        "listener 1888\nallow_anonymous true\n\nconnection bridge_sample\n\
                address 127.0.0.1:1889\ntopic bridge/# both 1\nnotifications false\n\
                restart_timeout 5\ncleansession true\nbridge_protocol_version mqttv311\n",
    );
    let b = &t.config.bridge[0];
    assert_eq!(
        (b.name.as_str(), b.protocol.as_str()),
        ("bridge_sample", "3.1.1")
    );
    assert!(t.refusals(false).is_empty());
    // 04-retain-*, 07-will-*: persistence with its file name.
    let t = tr("listener 1888\nallow_anonymous true\npersistence true\n\
                persistence_file mosquitto-1888.db\n");
    assert!(t.config.persistence.enabled);
    // 02-subpub-*: limits.
    let t = tr(
        "listener 1888\nallow_anonymous true\nmax_inflight_messages 1\n\
                max_queued_messages 5\nmax_packet_size 100\nmax_keepalive 60\n",
    );
    assert_eq!(t.config.limits.max_inflight_messages, 1);
    // 12-websockets: a websockets listener beside a plain one.
    let t = tr("listener 1888\nallow_anonymous true\nlistener 1889\nprotocol websockets\n");
    assert_eq!(t.config.listeners[1].kind, ListenerKind::Ws);
    // 09-plugin-*: per-listener settings with different sources per listener.
    let t = tr(
        "per_listener_settings true\nlistener 1888\nallow_anonymous true\n\
                listener 1889\nauth_plugin c/auth_plugin.so\nallow_anonymous false\n",
    );
    assert_eq!(sev(&t, 5), Some(Severity::Error));
    round_trips(&t);
}
