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
