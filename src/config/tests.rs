use super::*;

#[test]
fn defaults_are_valid() {
    Config::default().validate("<defaults>").expect("defaults");
}

/// `TERN_SECTION__KEY` overrides the file, typed as TOML; bad ones are errors naming the
/// variable.
#[test]
fn environment_overrides_keys() {
    let env = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    };
    let c = Config::from_toml_with_env(
        "[limits]\nmax_connections = 5\n",
        "t.toml",
        env(&[
            ("TERN_LIMITS__MAX_CONNECTIONS", "500"),
            ("TERN_LOG__LEVEL", "debug"),
            ("TERN_HTTP__ENABLED", "false"),
            ("TERN_LISTENER__BIND", "\"127.0.0.1\""),
            ("OTHER", "x"),
        ]),
    )
    .unwrap();
    assert_eq!(c.limits.max_connections, 500);
    assert_eq!(c.log.level, "debug");
    assert!(!c.http.enabled);
    assert_eq!(c.listener.bind.to_string(), "127.0.0.1");
    let err =
        Config::from_toml_with_env("", "t.toml", env(&[("TERN_LIMITS__MAX_CONECTIONS", "5")]))
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("TERN_LIMITS__MAX_CONECTIONS") && err.contains("max_conections"),
        "{err}"
    );
    let err =
        Config::from_toml_with_env("", "t.toml", env(&[("TERN_LIMITS__RECEIVE_MAXIMUM", "0")]))
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("TERN_LIMITS__RECEIVE_MAXIMUM") && err.contains("limits.receive_maximum"),
        "{err}"
    );
}

#[test]
fn unknown_key_is_named() {
    let err = Config::from_toml("[limits]\nmax_conections = 5\n", "t.toml").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("t.toml") && msg.contains("max_conections"),
        "{msg}"
    );
}

#[test]
fn bad_value_is_named() {
    let err = Config::from_toml("[limits]\nreceive_maximum = 0\n", "t.toml").unwrap_err();
    assert!(err.to_string().contains("limits.receive_maximum"));
    let err = Config::from_toml("[listener]\nport = 70000\n", "t.toml").unwrap_err();
    assert!(err.to_string().contains("port"), "{err}");
}

/// Durations so large that a deadline would overflow are refused up front, not met later as
/// a panic on the first connection.
#[test]
fn durations_are_bounded() {
    for (toml, key) in [
        (
            "[limits]\nconnect_timeout_secs = 18446744073709551615\n",
            "limits.connect_timeout_secs",
        ),
        (
            "[limits]\ndormant_after_ms = 18446744073709551615\n",
            "limits.dormant_after_ms",
        ),
    ] {
        let err = Config::from_toml(toml, "t.toml").unwrap_err().to_string();
        assert!(err.contains(key) && err.contains("t.toml"), "{err}");
    }
    let c = Config::from_toml("[limits]\ndormant_after_ms = 0\n", "t.toml").expect("parse");
    assert_eq!(c.dormant_after(), None);
}

/// config/tern.toml documents every key with its default: it must parse to the defaults.
#[test]
fn documented_file_matches_defaults() {
    let c = Config::from_toml(include_str!("../../config/tern.toml"), "config/tern.toml")
        .expect("documented config parses");
    assert_eq!(c, Config::default());
}

/// The admin API numbers listeners in 14 bits: more than 16,383 extra ones is a config error
/// naming the key, not a listener shown under another's name.
#[test]
fn at_most_16383_extra_listeners() {
    let many = |n: usize| "[[listeners]]\nkind = \"tcp\"\nport = 1\n".repeat(n);
    Config::from_toml(&many(16_383), "t.toml").expect("16,383 is allowed");
    let err = Config::from_toml(&many(16_384), "t.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`listeners`") && err.contains("t.toml"),
        "{err}"
    );
}

/// WebSocket listeners: path and per-listener limit parsed; files only for TLS kinds;
/// each mistake names the listener and key.
#[test]
fn websocket_listeners() {
    let c = Config::from_toml(
        "[[listeners]]\nkind = \"ws\"\nport = 8080\n[[listeners]]\nkind = \"wss\"\nport = 8443\ncert = \"c.pem\"\nkey = \"k.pem\"\npath = \"/\"\nmax_connections = 10\n",
        "t.toml",
    )
    .expect("parse");
    assert_eq!(c.listeners[0].path, "/mqtt");
    assert_eq!(c.listeners[0].max_connections, None);
    assert_eq!(c.listeners[1].path, "/");
    assert_eq!(c.listeners[1].max_connections, Some(10));
    for (toml, key) in [
        ("kind = \"wss\"\nport = 1\n", "cert"),
        ("kind = \"ws\"\nport = 1\ncert = \"c.pem\"\n", "cert"),
        ("kind = \"ws\"\nport = 1\npath = \"mqtt\"\n", "path"),
        (
            "kind = \"ws\"\nport = 1\nmax_connections = 0\n",
            "max_connections",
        ),
        (
            "kind = \"ws\"\nport = 1\nclient_ca = \"ca.pem\"\n",
            "client_ca",
        ),
    ] {
        let err = Config::from_toml(&format!("[[listeners]]\n{toml}"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains(key) && err.contains("t.toml"), "{toml}: {err}");
    }
}

/// The commented `[[bridge]]` example in config/tern.toml is a valid bridge.
#[test]
fn documented_bridge_example_parses() {
    let doc = include_str!("../../config/tern.toml");
    let start = doc.find("# [[bridge]]").expect("example");
    let end = doc[start..].find("\n\n[").expect("end") + start;
    let toml: String = doc[start..end]
        .lines()
        .map(|l| l.strip_prefix("# ").or(l.strip_prefix('#')).unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let c = Config::from_toml(&toml, "example").expect("parses and validates");
    assert_eq!(c.bridge.len(), 1);
    assert_eq!(c.bridge[0].topics[0].remote_prefix, "site7/");
    assert_eq!(c.bridge[0].addresses.len(), 2);
}

/// The commented `[[queues]]` example in config/tern.toml is a valid queue, with the
/// documented defaults.
#[test]
fn documented_queue_example_parses() {
    let doc = include_str!("../../config/tern.toml");
    let start = doc.find("# [[queues]]").expect("example");
    let end = doc[start..].find("\n\n").expect("end") + start;
    let toml: String = doc[start..end]
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let c = Config::from_toml(&toml, "example").expect("parses and validates");
    let defaults = Config::from_toml("[[queues]]\nname = \"jobs\"\nfilter = \"jobs/#\"\n", "d")
        .expect("defaults");
    // The example names the default strategy; leaving it out means [shared] strategy.
    let mut example = c.queues.clone();
    example[0].strategy = None;
    assert_eq!(example, defaults.queues);
    assert_eq!(c.queues[0].overflow, crate::config::Overflow::Reject);
}

/// Each kind of bad queue names `queues[N].key` and what is allowed.
#[test]
fn bad_queues_are_named() {
    let one = "[[queues]]\nname = \"jobs\"\nfilter = \"jobs/#\"\n";
    for (bad, key) in [
        (one.replace("\"jobs\"", "\"a b\""), "queues[0].name"),
        (
            one.replace("\"jobs/#\"", "\"jobs/#/x\""),
            "queues[0].filter",
        ),
        (
            one.replace("\"jobs/#\"", "\"$share/g/t\""),
            "queues[0].filter",
        ),
        (format!("{one}max_messages = 0\n"), "queues[0].max_messages"),
        (format!("{one}{one}"), "queues[1].name"),
    ] {
        let err = Config::from_toml(&bad, "t.toml").unwrap_err().to_string();
        assert!(err.contains(key) && err.contains("t.toml"), "{bad}: {err}");
    }
    let err = Config::from_toml(&format!("{one}overflow = \"spill\"\n"), "t.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("overflow") || err.contains("drop_oldest"),
        "{err}"
    );
}

/// Each kind of bad bridge names `bridge[N].key`.
#[test]
fn bad_bridges_are_named() {
    let one = "[[bridge]]\nname = \"a\"\naddresses = [\"h:1\"]\n[[bridge.topics]]\npattern = \"t/#\"\ndirection = \"out\"\n";
    assert!(Config::from_toml(one, "t.toml").is_ok());
    for (bad, key) in [
        (one.replace("\"a\"", "\"a b\""), "bridge[0].name"),
        (one.replace("\"h:1\"", "\"h\""), "bridge[0].addresses"),
        (
            one.replace("\"t/#\"", "\"t/#/x\""),
            "bridge[0].topics.pattern",
        ),
        (
            one.replace("direction = \"out\"\n", "direction = \"out\"\nqos = 3\n"),
            "bridge[0].topics.qos",
        ),
        (format!("{one}{one}"), "bridge[1].name"),
        (
            one.replace("name = \"a\"\n", "name = \"a\"\ncertfile = \"c.pem\"\n"),
            "bridge[0].certfile",
        ),
    ] {
        let err = Config::from_toml(&bad, "t.toml").unwrap_err().to_string();
        assert!(err.contains(key) && err.contains("t.toml"), "{key}: {err}");
    }
}

#[test]
fn partial_file_keeps_other_defaults() {
    let c = Config::from_toml("[listener]\nport = 1999\n", "t.toml").expect("parse");
    assert_eq!(c.listener.port, 1999);
    assert_eq!(c.limits, LimitsConfig::default());
}

/// `[cluster]` is off by default, with one local NATS server, three replicas, a five-second
/// timeout and a node id from the host name.
#[test]
fn cluster_defaults() {
    let c = Config::from_toml("[cluster]\n", "t.toml").expect("parse");
    assert_eq!(c.cluster, ClusterConfig::default());
    let d = &c.cluster;
    assert!(!d.enabled);
    assert_eq!(d.name, "tern");
    assert_eq!(d.node_id, None);
    assert_eq!(d.nats_urls, ["nats://127.0.0.1:4222"]);
    assert_eq!(d.replicas, 3);
    assert_eq!(d.unavailable_timeout(), Duration::from_secs(5));
    assert!(d.nats_creds.is_none() && d.nats_user.is_none() && d.nats_token.is_none());
    let id = d.node_id();
    assert!(
        !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "{id}"
    );
}

/// A host name becomes a node id: other characters turn into '-', at most 64 are kept.
#[test]
fn cluster_node_id_from_host_name() {
    assert_eq!(
        cluster::node_id_from_host("web-1.example.com\n").as_deref(),
        Some("web-1-example-com")
    );
    assert_eq!(
        cluster::node_id_from_host("nœud_2").as_deref(),
        Some("n-ud_2")
    );
    assert_eq!(
        cluster::node_id_from_host(&"a".repeat(100)).map(|s| s.len()),
        Some(64)
    );
    assert_eq!(cluster::node_id_from_host(" \n"), None);
    let c = Config::from_toml("[cluster]\nnode_id = \"n1\"\n", "t.toml").expect("parse");
    assert_eq!(c.cluster.node_id(), "n1");
}

/// Every key set, cluster on, files present: accepted as written.
#[test]
fn cluster_full_section_parses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = |name: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, "x").expect("write");
        p.display().to_string()
    };
    let (ca, cert, key) = (file("ca.pem"), file("c.pem"), file("k.pem"));
    let toml = format!(
        "[cluster]\nenabled = true\nname = \"prod_eu-1\"\nnode_id = \"n1\"\n\
         nats_urls = [\"nats://a:4222\", \"tls://b:4222\", \"c:4222\", \"[::1]:4222\"]\n\
         replicas = 5\nnats_user = \"u\"\nnats_password = \"p\"\n\
         nats_tls_ca = {ca:?}\nnats_tls_cert = {cert:?}\nnats_tls_key = {key:?}\n\
         unavailable_timeout_secs = 60\n"
    );
    let c = Config::from_toml(&toml, "t.toml").expect("parses and validates");
    let k = &c.cluster;
    assert!(k.enabled);
    assert_eq!(k.name, "prod_eu-1");
    assert_eq!(k.node_id(), "n1");
    assert_eq!(k.nats_urls.len(), 4);
    assert_eq!(k.replicas, 5);
    assert_eq!(
        (k.nats_user.as_deref(), k.nats_password.as_deref()),
        (Some("u"), Some("p"))
    );
    assert_eq!(k.nats_tls_cert.as_deref(), Some(Path::new(&cert)));
    assert_eq!(k.unavailable_timeout(), Duration::from_secs(60));
    // A credentials file alone, or a token alone, is one way to log in too.
    let creds = file("x.creds");
    for login in [
        format!("nats_creds = {creds:?}\n"),
        "nats_token = \"t\"\n".to_string(),
    ] {
        let toml = format!("[cluster]\nenabled = true\n{login}");
        Config::from_toml(&toml, "t.toml").unwrap_or_else(|e| panic!("{login}: {e}"));
    }
    // The password and token stay out of `check-config`'s printout.
    let c = Config::from_toml(
        "[cluster]\nnats_user = \"u\"\nnats_password = \"pw-secret\"\n",
        "t.toml",
    )
    .expect("parse");
    let shown = format!("{c:#?}");
    assert!(
        shown.contains("nats_password") && !shown.contains("pw-secret"),
        "{shown}"
    );
}

/// Each kind of bad `[cluster]` value names `cluster.key` and the file. The form of each key is
/// checked with the cluster off too; files and a server list only with it on.
#[test]
fn bad_cluster_values_are_named() {
    let missing = "/nonexistent/tern-test/missing.pem";
    let on = "enabled = true\n";
    for (body, key) in [
        ("name = \"a b\"\n".to_string(), "cluster.name"),
        ("name = \"\"\n".to_string(), "cluster.name"),
        (format!("name = \"{}\"\n", "a".repeat(33)), "cluster.name"),
        ("node_id = \"n.1\"\n".to_string(), "cluster.node_id"),
        ("node_id = \"\"\n".to_string(), "cluster.node_id"),
        (
            format!("node_id = \"{}\"\n", "a".repeat(65)),
            "cluster.node_id",
        ),
        ("replicas = 0\n".to_string(), "cluster.replicas"),
        ("replicas = 6\n".to_string(), "cluster.replicas"),
        ("nats_urls = [\"\"]\n".to_string(), "cluster.nats_urls"),
        (
            "nats_urls = [\"nats://a b:4222\"]\n".to_string(),
            "cluster.nats_urls",
        ),
        (
            "nats_urls = [\"http://a:4222\"]\n".to_string(),
            "cluster.nats_urls",
        ),
        ("nats_urls = [\"a\"]\n".to_string(), "cluster.nats_urls"),
        ("nats_urls = [\"a:b\"]\n".to_string(), "cluster.nats_urls"),
        (
            "unavailable_timeout_secs = 0\n".to_string(),
            "cluster.unavailable_timeout_secs",
        ),
        (
            "unavailable_timeout_secs = 61\n".to_string(),
            "cluster.unavailable_timeout_secs",
        ),
        ("nats_user = \"u\"\n".to_string(), "cluster.nats_password"),
        ("nats_password = \"p\"\n".to_string(), "cluster.nats_user"),
        ("nats_token = \"\"\n".to_string(), "cluster.nats_token"),
        (
            "nats_token = \"t\"\nnats_user = \"u\"\nnats_password = \"p\"\n".to_string(),
            "cluster.nats_token",
        ),
        (
            "nats_creds = \"x.creds\"\nnats_user = \"u\"\nnats_password = \"p\"\n".to_string(),
            "cluster.nats_user",
        ),
        (
            "nats_tls_cert = \"c.pem\"\n".to_string(),
            "cluster.nats_tls_key",
        ),
        (
            "nats_tls_key = \"k.pem\"\n".to_string(),
            "cluster.nats_tls_cert",
        ),
        (format!("{on}nats_urls = []\n"), "cluster.nats_urls"),
        (
            format!("{on}nats_creds = {missing:?}\n"),
            "cluster.nats_creds",
        ),
        (
            format!("{on}nats_tls_ca = {missing:?}\n"),
            "cluster.nats_tls_ca",
        ),
        (
            format!("{on}nats_tls_cert = {missing:?}\nnats_tls_key = {missing:?}\n"),
            "cluster.nats_tls_cert",
        ),
    ] {
        let err = Config::from_toml(&format!("[cluster]\n{body}"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("`{key}`")) && err.contains("t.toml"),
            "{body}: {err}"
        );
    }
    // Missing files and an empty server list are only looked at with the cluster on.
    let off = format!("[cluster]\nnats_urls = []\nnats_creds = {missing:?}\n");
    Config::from_toml(&off, "t.toml").expect("not checked while off");
    let err = Config::from_toml("[cluster]\nenabled = 1\n", "t.toml").unwrap_err();
    assert!(err.to_string().contains("enabled"), "{err}");
    let err = Config::from_toml("[cluster]\nnats_url = \"a:1\"\n", "t.toml").unwrap_err();
    assert!(err.to_string().contains("nats_url"), "{err}");
}

/// Cluster mode keeps its state in JetStream: with `[persistence]` on it is refused, and the
/// error says what to change.
#[test]
fn cluster_conflicts_with_persistence() {
    let both = "[persistence]\nenabled = true\n[cluster]\nenabled = true\n";
    let err = Config::from_toml(both, "t.toml").unwrap_err().to_string();
    assert!(
        err.contains("`cluster.enabled`")
            && err.contains("t.toml")
            && err.contains("[persistence] enabled = false"),
        "{err}"
    );
    Config::from_toml("[persistence]\nenabled = true\n[cluster]\n", "t.toml")
        .expect("persistence alone");
    Config::from_toml("[cluster]\nenabled = true\n", "t.toml").expect("cluster alone");
}

/// `[cluster]` keys come from the environment like any other, a server list as a TOML array.
#[test]
fn cluster_from_environment() {
    let env = [
        ("TERN_CLUSTER__NATS_URLS", "[\"nats://a:4222\", \"b:4222\"]"),
        ("TERN_CLUSTER__NODE_ID", "node-7"),
        ("TERN_CLUSTER__ENABLED", "true"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let c = Config::from_toml_with_env("", "t.toml", env.into_iter()).expect("parse");
    assert!(c.cluster.enabled);
    assert_eq!(c.cluster.nats_urls, ["nats://a:4222", "b:4222"]);
    assert_eq!(c.cluster.node_id(), "node-7");
}

/// Keys added for Mosquitto files: `[listener] enabled = false` needs another listener; a
/// WebSocket path is a path or "*"; client_ca_dir is for TLS listeners; 0 is not a bound.
#[test]
fn mosquitto_keys_are_checked() {
    let ok = |t: &str| Config::from_toml(t, "t.toml").unwrap();
    let bad = |t: &str| Config::from_toml(t, "t.toml").unwrap_err().to_string();
    assert!(bad("[listener]\nenabled = false\n").contains("listener.enabled"));
    let c = ok(
        "[listener]\nenabled = false\n[[listeners]]\nkind = \"ws\"\nport = 9001\npath = \"*\"\n",
    );
    assert!(!c.listener.enabled);
    assert_eq!(c.listeners[0].path, "*");
    assert!(bad("[[listeners]]\nkind = \"ws\"\nport = 9001\npath = \"mqtt\"\n").contains("path"));
    assert!(
        bad("[[listeners]]\nkind = \"tcp\"\nport = 1\nclient_ca_dir = \"d\"\n")
            .contains("client_ca_dir")
    );
    let c = ok("[[listeners]]\nkind = \"tls\"\nport = 1\ncert = \"c\"\nkey = \"k\"\n\
                client_ca_dir = \"d\"\nidentity_as_username = \"subject\"\nmin_tls_version = \"1.3\"\n");
    assert_eq!(c.listeners[0].identity_as_username, IdentitySource::Subject);
    assert_eq!(c.listeners[0].min_tls_version, TlsVersion::Tls13);
    assert!(bad("[[listeners]]\nkind = \"tls\"\nport = 1\ncert = \"c\"\nkey = \"k\"\nmin_tls_version = \"1.1\"\n")
        .contains("min_tls_version"));
    for (t, key) in [
        (
            "[limits]\nmax_queued_bytes = 0\n",
            "limits.max_queued_bytes",
        ),
        (
            "[limits]\nmax_payload_size = 0\n",
            "limits.max_payload_size",
        ),
        (
            "[session]\nmax_expiry_secs = 0\n",
            "session.max_expiry_secs",
        ),
    ] {
        assert!(bad(t).contains(key), "{t}");
    }
    let c = ok(
        "[limits]\nmax_queued_bytes = 10\nmax_payload_size = 5\n[session]\nmax_expiry_secs = 60\n",
    );
    assert_eq!(
        (
            c.limits.max_queued_bytes,
            c.limits.max_payload_size,
            c.session.max_expiry_secs
        ),
        (Some(10), Some(5), Some(60))
    );
}

/// PROXY protocol keys: off by default with a 5 s header timeout, on any listener kind; trusting
/// the balancer's certificate CN needs proxy_protocol and identity_as_username = "cn" (and then
/// no client_ca); timeouts are 1 to 3600 s. Errors name the file and the key.
#[test]
fn proxy_protocol_keys_are_checked() {
    let ok = |t: &str| Config::from_toml(t, "t.toml").unwrap();
    let bad = |t: &str| Config::from_toml(t, "t.toml").unwrap_err().to_string();
    let c = ok("[[listeners]]\nkind = \"ws\"\nport = 1\n");
    assert!(!c.listener.proxy_protocol && !c.listeners[0].proxy_protocol);
    assert!(!c.listeners[0].proxy_trust_tls_identity);
    assert_eq!(c.listener.proxy_header_timeout_secs, 5);
    assert_eq!(c.listeners[0].proxy_header_timeout_secs, 5);
    let c = ok(
        "[listener]\nproxy_protocol = true\nproxy_header_timeout_secs = 2\n\
                [[listeners]]\nkind = \"tcp\"\nport = 1\nproxy_protocol = true\n\
                proxy_trust_tls_identity = true\nidentity_as_username = \"cn\"\n",
    );
    assert!(c.listener.proxy_protocol && c.listeners[0].proxy_trust_tls_identity);
    assert_eq!(c.listener.proxy_header_timeout_secs, 2);
    for (t, key) in [
        (
            "[listener]\nproxy_header_timeout_secs = 0\n",
            "listener.proxy_header_timeout_secs",
        ),
        (
            "[[listeners]]\nkind = \"tcp\"\nport = 1\nproxy_protocol = true\nproxy_header_timeout_secs = 3601\n",
            "listeners[0].proxy_header_timeout_secs",
        ),
        (
            "[[listeners]]\nkind = \"tcp\"\nport = 1\nproxy_trust_tls_identity = true\nidentity_as_username = \"cn\"\n",
            "listeners[0].proxy_trust_tls_identity",
        ),
        (
            "[[listeners]]\nkind = \"tcp\"\nport = 1\nproxy_protocol = true\nproxy_trust_tls_identity = true\n",
            "listeners[0].proxy_trust_tls_identity",
        ),
        (
            "[[listeners]]\nkind = \"tcp\"\nport = 1\nproxy_protocol = true\nproxy_trust_tls_identity = true\nidentity_as_username = \"san\"\n",
            "listeners[0].proxy_trust_tls_identity",
        ),
        (
            "[[listeners]]\nkind = \"tcp\"\nport = 1\nproxy_protocol = true\nidentity_as_username = \"cn\"\n",
            "listeners[0].identity_as_username",
        ),
        (
            "[listener]\nproxy_trust_tls_identity = true\n",
            "proxy_trust_tls_identity",
        ),
    ] {
        let err = bad(t);
        assert!(err.contains(key) && err.contains("t.toml"), "{t}: {err}");
    }
}

/// `[limits]` connect rate and retained budgets: 0 is not a bound, a burst needs a rate, and
/// the watch interval of TLS files is bounded; each error names its key.
#[test]
fn admission_keys_are_checked() {
    let bad = |t: &str| Config::from_toml(t, "t.toml").unwrap_err().to_string();
    for (t, key) in [
        ("[limits]\nmax_connect_rate = 0\n", "limits.max_connect_rate"),
        ("[limits]\nconnect_burst = 5\n", "limits.connect_burst"),
        (
            "[limits]\nmax_connect_rate = 5\nconnect_burst = 0\n",
            "limits.connect_burst",
        ),
        ("[limits]\nmax_retained_messages = 0\n", "limits.max_retained_messages"),
        ("[limits]\nmax_retained_bytes = 0\n", "limits.max_retained_bytes"),
        ("[http]\ncert_watch_secs = 100000\n", "http.cert_watch_secs"),
        (
            "[[listeners]]\nkind = \"tls\"\nport = 1\ncert = \"c\"\nkey = \"k\"\ncert_watch_secs = 100000\n",
            "listeners[0].cert_watch_secs",
        ),
    ] {
        assert!(bad(t).contains(key), "{t}: {}", bad(t));
    }
    let c = Config::from_toml(
        "[limits]\nmax_connect_rate = 100\nmax_retained_messages = 10\nmax_retained_bytes = 1000\n",
        "t.toml",
    )
    .unwrap();
    assert_eq!(
        (
            c.limits.max_connect_rate,
            c.limits.connect_burst,
            c.limits.max_retained_messages,
            c.limits.max_retained_bytes
        ),
        (Some(100), None, Some(10), Some(1000))
    );
}

/// The commented `[auth]` chain, `[auth.jwt]` and `[auth.http]` examples in config/tern.toml
/// parse and validate; mistakes name the key.
#[test]
fn documented_auth_examples_parse() {
    let doc = include_str!("../../config/tern.toml");
    let grab = |from: &str, to: &str| -> String {
        let start = doc.find(from).expect("example");
        let end = doc[start..].find(to).expect("end") + start;
        doc[start..end]
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with('[') || l.contains(" = "))
            .map(|l| l.split(" # ").next().unwrap_or(l).trim_end().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let jwt = grab("# [auth.jwt]", "\n\n");
    let jwt_one_key: String = jwt
        .lines()
        .filter(|l| {
            !l.starts_with("secret_env")
                && !l.starts_with("public_key_file")
                && !l.starts_with("jwks_file")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let http = grab("# [auth.http]", "\n\n");
    let toml = format!("[auth]\nchain = [\"file\", \"jwt\", \"http\"]\n{jwt_one_key}\n{http}\n");
    let c = Config::from_toml(&toml, "example").expect("parses and validates");
    let j = c.auth.jwt.as_ref().expect("jwt");
    assert_eq!(j.clock_skew_secs, 30);
    assert_eq!(j.username_claim, "sub");
    assert_eq!(j.algorithms.as_deref(), Some(&["RS256".to_string()][..]));
    let h = c.auth.http.as_ref().expect("http");
    assert_eq!(h.timeout_ms, 2000);
    assert_eq!(h.acl_url.as_deref(), Some("http://127.0.0.1:8080/mqtt/acl"));
    // Two key sources at once is an error.
    assert!(Config::from_toml(&jwt, "t.toml")
        .unwrap_err()
        .to_string()
        .contains("auth.jwt.secret_file"));
    let bad = |t: &str| Config::from_toml(t, "t.toml").unwrap_err().to_string();
    for (t, key) in [
        ("[auth]\nchain = [\"jwt\"]\n", "auth.chain"),
        ("[auth]\nchain = [\"file\", \"file\"]\n", "auth.chain"),
        ("[auth]\nchain = [\"ldap\"]\n", "chain"),
        ("[auth.http]\nurl = \"https://x/\"\n", "auth.http.url"),
        (
            "[auth.http]\nurl = \"http://x/\"\ntimeout_ms = 0\n",
            "auth.http.timeout_ms",
        ),
        (
            "[auth.http]\nurl = \"http://x/\"\non_error = \"maybe\"\n",
            "on_error",
        ),
        (
            "[auth.jwt]\nsecret_env = \"X\"\ntoken_in = \"header\"\n",
            "token_in",
        ),
        (
            "[auth.jwt]\nsecret_env = \"X\"\nalgorithms = [\"none\"]\n",
            "auth.jwt.algorithms",
        ),
    ] {
        let e = bad(t);
        assert!(e.contains(key) && e.contains("t.toml"), "{t}: {e}");
    }
}
