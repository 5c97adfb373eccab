//! The Mosquitto 2.x directives Tern does not translate, each with why, sorted by what their
//! absence means: harmless ([`HARMLESS`], [`BRIDGE_HARMLESS`]: a warning) or a change in who may
//! connect or what is delivered ([`UNSUPPORTED`]: an error).

/// Directives Mosquitto 2.x knows that Tern ignores harmlessly, with why.
pub(super) const HARMLESS: &[(&str, &str)] = &[
    (
        "pid_file",
        "Tern writes no pid file (systemd and containers track the process)",
    ),
    (
        "user",
        "Tern does not change user: start it as the user it should run as",
    ),
    (
        "log_facility",
        "Tern logs to stderr (journald, docker logs), not syslog",
    ),
    ("log_timestamp", "Tern's log lines always carry a timestamp"),
    (
        "log_timestamp_format",
        "Tern's log lines carry RFC 3339 timestamps",
    ),
    (
        "connection_messages",
        "Tern logs connections and disconnections at debug level",
    ),
    ("websockets_log_level", "no libwebsockets in Tern"),
    (
        "websockets_headers_size",
        "Tern's WebSocket upgrade takes headers of any usual size",
    ),
    (
        "memory_limit",
        "Tern bounds memory by its queue and packet limits, not a heap cap",
    ),
    (
        "max_inflight_bytes",
        "Tern bounds in-flight messages by count (max_inflight_messages) only",
    ),
    ("retry_interval", "obsolete in Mosquitto 2.0 too"),
    ("allow_duplicate_messages", "deprecated in Mosquitto 2.0"),
    (
        "http_dir",
        "Tern's WebSocket listeners serve MQTT only, no static files",
    ),
    (
        "dhparamfile",
        "Tern's TLS uses ephemeral elliptic-curve key exchange, no DH parameters",
    ),
    (
        "ciphers",
        "Tern's TLS offers its own fixed set of modern cipher suites",
    ),
    (
        "ciphers_tls1.3",
        "Tern's TLS offers its own fixed set of modern cipher suites",
    ),
    (
        "max_qos",
        "Tern accepts every QoS (clients publishing above it are not disconnected)",
    ),
    (
        "maximum_qos",
        "Tern accepts every QoS (clients publishing above it are not disconnected)",
    ),
    ("max_topic_alias_broker", "Tern sends no topic aliases"),
    ("enable_control_api", "Tern has no $CONTROL API"),
    (
        "auto_id_prefix",
        "Tern's assigned client ids start with auto-",
    ),
    (
        "check_retain_source",
        "Tern does not check a retained message's publisher again when it is delivered later",
    ),
];

/// Directives whose absence changes who may connect or what is delivered, with why.
pub(super) const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "auth_plugin",
        "Tern loads no Mosquitto plugins: the checks it makes are not made",
    ),
    (
        "plugin",
        "Tern loads no Mosquitto plugins: the checks it makes are not made",
    ),
    (
        "global_plugin",
        "Tern loads no Mosquitto plugins: the checks it makes are not made",
    ),
    ("psk_hint", "Tern has no TLS-PSK: this listener is left out"),
    ("psk_file", "Tern has no TLS-PSK"),
    (
        "mount_point",
        "Tern has no mount points: clients of this listener would share the whole topic tree",
    ),
    (
        "use_username_as_clientid",
        "Tern keeps the client's own id: one user could take over another's session",
    ),
    (
        "bind_interface",
        "Tern binds addresses, not interfaces: give the listener the interface's address",
    ),
    (
        "crlfile",
        "Tern has no certificate revocation lists: revoked client certificates would be accepted",
    ),
    ("tls_engine", "Tern reads keys from PEM files only"),
    (
        "tls_engine_kpass_sha1",
        "Tern reads keys from PEM files only",
    ),
    (
        "clientid_prefixes",
        "Tern does not restrict client ids by prefix",
    ),
    (
        "websockets_origin",
        "Tern does not check the WebSocket Origin header",
    ),
    (
        "accept_protocol_versions",
        "Tern accepts MQTT 3.1, 3.1.1 and 5 on every listener",
    ),
    (
        "disable_client_cert_date_checks",
        "Tern always checks client certificates' dates",
    ),
    ("bridge_identity", "Tern's bridges have no TLS-PSK"),
    ("bridge_psk", "Tern's bridges have no TLS-PSK"),
    ("bridge_require_ocsp", "Tern's bridges do not check OCSP"),
    (
        "bridge_alpn",
        "Tern's bridges offer no ALPN: a remote that needs one refuses the link",
    ),
    (
        "bridge_insecure",
        "Tern's bridges always check the remote's certificate name",
    ),
];

/// Bridge options Tern has no use for, harmless.
pub(super) const BRIDGE_HARMLESS: &[(&str, &str)] = &[
    (
        "bridge_attempt_unsubscribe",
        "Tern's bridge subscribes on the remote only to what comes in",
    ),
    (
        "bridge_bind_address",
        "Tern's bridge connects from the address the system picks",
    ),
    (
        "bridge_max_packet_size",
        "Tern's bridge sends what limits.max_packet_size allows",
    ),
    (
        "bridge_receive_maximum",
        "Tern's bridge uses its max_inflight",
    ),
    (
        "bridge_session_expiry_interval",
        "Tern's bridge asks for session_expiry_secs (default one day)",
    ),
    (
        "bridge_tcp_keepalive",
        "no TCP keep-alive settings in Tern's bridges",
    ),
    (
        "bridge_tcp_user_timeout",
        "no TCP user timeout in Tern's bridges",
    ),
    (
        "bridge_max_topic_alias",
        "Tern's bridge uses no topic aliases",
    ),
    (
        "bridge_reload_type",
        "Tern applies a bridge's changes on reload",
    ),
    (
        "round_robin",
        "Tern tries the addresses in the order given after every failure",
    ),
    (
        "start_type",
        "Tern keeps every bridge connected (start_type automatic)",
    ),
    (
        "idle_timeout",
        "only for start_type lazy, which Tern does not have",
    ),
    (
        "threshold",
        "only for start_type lazy, which Tern does not have",
    ),
    (
        "notifications",
        "Tern always publishes the link state on $SYS/broker/connection/NAME/state",
    ),
    (
        "notifications_local_only",
        "Tern publishes the link state on this broker only",
    ),
    (
        "notification_topic",
        "Tern publishes the link state on $SYS/broker/connection/NAME/state",
    ),
    (
        "local_clientid",
        "Tern's bridge keeps its local session as $bridge/NAME",
    ),
    (
        "local_username",
        "Tern's bridge is inside the broker: the ACL file does not apply to it",
    ),
    (
        "local_password",
        "Tern's bridge is inside the broker: no local login",
    ),
    (
        "local_cleansession",
        "Tern's bridge keeps its local session (and queue) across restarts",
    ),
    (
        "bridge_ciphers",
        "Tern's bridges offer a fixed set of modern cipher suites",
    ),
    (
        "bridge_ciphers_tls1.3",
        "Tern's bridges offer a fixed set of modern cipher suites",
    ),
];

/// Directives given at Mosquitto's default value, where Tern behaves alike: nothing to set,
/// whatever [`HARMLESS`] or [`UNSUPPORTED`] say of other values.
pub(super) const DEFAULTS: &[(&str, &str)] = &[
    ("max_qos", "2"),
    ("maximum_qos", "2"),
    ("auto_id_prefix", "auto-"),
    ("max_inflight_bytes", "0"),
    ("memory_limit", "0"),
    ("connection_messages", "true"),
    ("log_timestamp", "true"),
    ("websockets_log_level", "0"),
    ("websockets_headers_size", "0"),
    ("allow_duplicate_messages", "true"),
    ("use_username_as_clientid", "false"),
    ("disable_client_cert_date_checks", "false"),
    ("enable_control_api", "false"),
    ("bridge_insecure", "false"),
    ("bridge_require_ocsp", "false"),
    ("bridge_attempt_unsubscribe", "true"),
    ("bridge_max_packet_size", "0"),
    ("round_robin", "false"),
    ("start_type", "automatic"),
    ("notifications", "true"),
    ("idle_timeout", "60"),
    ("threshold", "10"),
];

/// Whether `name` is a directive Mosquitto 2.x reads (to recognise a Mosquitto file).
pub(super) fn is_directive(name: &str) -> bool {
    const OTHERS: &[&str] = &[
        "acl_file",
        "address",
        "addresses",
        "allow_anonymous",
        "allow_zero_length_clientid",
        "autosave_interval",
        "autosave_on_changes",
        "bind_address",
        "bridge_cafile",
        "bridge_capath",
        "bridge_certfile",
        "bridge_keyfile",
        "bridge_outgoing_retain",
        "bridge_protocol_version",
        "bridge_tls_version",
        "cafile",
        "capath",
        "certfile",
        "cleansession",
        "clientid",
        "connection",
        "enable_proxy_protocol",
        "include_dir",
        "keepalive_interval",
        "keyfile",
        "listener",
        "log_dest",
        "log_type",
        "max_connections",
        "max_inflight_messages",
        "max_keepalive",
        "max_packet_size",
        "max_queued_bytes",
        "max_queued_messages",
        "max_topic_alias",
        "message_size_limit",
        "password",
        "password_file",
        "per_listener_settings",
        "persistence",
        "persistence_file",
        "persistence_location",
        "persistent_client_expiration",
        "port",
        "protocol",
        "queue_qos0_messages",
        "remote_clientid",
        "remote_password",
        "remote_username",
        "require_certificate",
        "restart_timeout",
        "retain_available",
        "retained_persistence",
        "set_tcp_nodelay",
        "socket_domain",
        "sys_interval",
        "tls_keyform",
        "tls_version",
        "topic",
        "try_private",
        "upgrade_outgoing_qos",
        "use_identity_as_username",
        "use_subject_as_username",
        "username",
        "global_max_connections",
        "global_max_clients",
    ];
    OTHERS.contains(&name)
        || name.starts_with("auth_opt_")
        || name.starts_with("plugin_opt_")
        || [HARMLESS, UNSUPPORTED, BRIDGE_HARMLESS]
            .iter()
            .any(|list| list.iter().any(|(n, _)| *n == name))
}
