//! The operations HTTP listener of the real binary: `/metrics` figures move by exactly what
//! clients did, `/health` and `/ready` answer.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::child::ChildBroker;
use crate::support::*;
use crate::wire::*;
use crate::ws::raw_ws;

/// `GET path` over a fresh connection: status code and body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: tern\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("HTTP response in time")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head and body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, body.to_string())
}

/// The scraped value of the series `name` whose labels include every one of `labels`
/// (`key="value"`), or 0 if there is none.
fn value(body: &str, name: &str, labels: &[&str]) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name && labels.iter().all(|want| rest.contains(want))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

pub struct Scrape(pub String);

impl Scrape {
    pub async fn take(b: &ChildBroker) -> Scrape {
        let (status, body) = get(b.http, "/metrics").await;
        assert_eq!(status, 200);
        Scrape(body)
    }

    pub fn get(&self, name: &str, labels: &[&str]) -> f64 {
        value(&self.0, name, labels)
    }
}

/// Scrapes until `name{labels}` equals `want` (a gauge that follows a connection's end, which
/// the client sees a moment before the broker books it).
pub async fn wait_for(b: &ChildBroker, name: &str, labels: &[&str], want: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = Scrape::take(b).await.get(name, labels);
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}{labels:?} = {got}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every figure moves by what the clients did: connections by protocol version, messages and
/// packets by QoS and type, bytes, sessions online and offline, subscriptions, queued and
/// inflight messages, retained messages and bytes, malformed packets, help text for each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_what_clients_do() {
    let dir = tempfile::tempdir().unwrap();
    // No $SYS: its retained messages would move the retained figures on their own.
    let b = ChildBroker::start_with(dir.path(), false, "fsync", "[sys]\ninterval_secs = 0\n");
    let before = Scrape::take(&b).await;
    for name in [
        "tern_connections",
        "tern_messages_received_total",
        "tern_sessions",
        "tern_delivery_latency_seconds",
    ] {
        assert!(
            before.0.contains(&format!("# HELP {name} ")),
            "no help for {name}"
        );
    }

    let (mut sub, _) = connect_persistent(b.addr, V5, "msub", false).await;
    sub_all(&mut sub, V5, &["m/#"], 1).await;
    let mut publ = RawClient::connected(b.addr, V311, "mpub").await;
    for i in 0..10u8 {
        pub_msg(&mut publ, V311, "m/x", 1, &[i]).await;
    }
    for i in 0..5u8 {
        pub_msg(&mut publ, V311, "m/y", 0, &[i]).await;
    }
    for _ in 0..15 {
        recv_acked(&mut sub, V5).await;
    }
    // A fence: the broker reads (and counts) the subscriber's PUBACKs before it writes the
    // PINGRESP, so the scrape cannot come before them.
    sub.ping().await;
    retain(&mut publ, "r/a", b"abc").await;
    let now = Scrape::take(&b).await;
    let delta = |name: &str, labels: &[&str]| now.get(name, labels) - before.get(name, labels);
    assert_eq!(delta("tern_connections_total", &["protocol=\"5\""]), 1.0);
    assert_eq!(
        delta("tern_connections_total", &["protocol=\"3.1.1\""]),
        1.0
    );
    assert_eq!(now.get("tern_connections", &["listener=\"tcp\""]), 2.0);
    // 10 + 1 retained at QoS 1, 5 at QoS 0.
    assert_eq!(delta("tern_messages_received_total", &["qos=\"1\""]), 11.0);
    assert_eq!(delta("tern_messages_received_total", &["qos=\"0\""]), 5.0);
    assert_eq!(delta("tern_messages_sent_total", &["qos=\"1\""]), 10.0);
    assert_eq!(delta("tern_messages_sent_total", &["qos=\"0\""]), 5.0);
    assert_eq!(
        delta("tern_packets_received_total", &["type=\"puback\""]),
        10.0
    );
    assert_eq!(delta("tern_packets_sent_total", &["type=\"puback\""]), 11.0);
    assert_eq!(
        delta("tern_packets_received_total", &["type=\"connect\""]),
        2.0
    );
    assert_eq!(delta("tern_packets_sent_total", &["type=\"connack\""]), 2.0);
    assert_eq!(delta("tern_packets_sent_total", &["type=\"suback\""]), 1.0);
    assert!(delta("tern_received_bytes_total", &[]) > 15.0 * 6.0);
    assert!(delta("tern_sent_bytes_total", &[]) > 15.0 * 6.0);
    assert_eq!(now.get("tern_sessions", &["state=\"online\""]), 2.0);
    assert_eq!(now.get("tern_subscriptions", &[]), 1.0);
    assert_eq!(now.get("tern_retained_messages", &[]), 1.0);
    assert_eq!(now.get("tern_retained_bytes", &[]), 3.0);
    assert_eq!(now.get("tern_inflight_messages", &[]), 0.0);
    assert!(now.get("tern_uptime_seconds", &[]) > 0.0);

    // Offline: its session is parked and what is published waits in its queue.
    sub.send(&disconnect()).await;
    wait_for(&b, "tern_sessions", &["state=\"offline\""], 1.0).await;
    for i in 0..3u8 {
        pub_msg(&mut publ, V311, "m/z", 1, &[i]).await;
    }
    let now = Scrape::take(&b).await;
    assert_eq!(now.get("tern_sessions", &["state=\"online\""]), 1.0);
    assert_eq!(now.get("tern_queued_messages", &[]), 3.0);

    // Back, it takes them but acknowledges none: three inflight.
    let (mut sub, present) = connect_persistent(b.addr, V5, "msub", false).await;
    assert!(present);
    for _ in 0..3 {
        sub.recv_publish(V5).await;
    }
    let now = Scrape::take(&b).await;
    assert_eq!(now.get("tern_inflight_messages", &[]), 3.0);
    assert_eq!(now.get("tern_queued_messages", &[]), 0.0);

    // Garbage: one malformed packet, that connection closed, the others unaffected.
    let mut bad = RawClient::connected(b.addr, V311, "mbad").await;
    bad.send(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]).await;
    bad.expect_closed().await;
    let after = Scrape::take(&b).await;
    assert_eq!(
        after.get("tern_malformed_packets_total", &[])
            - now.get("tern_malformed_packets_total", &[]),
        1.0
    );
    pub_msg(&mut publ, V311, "m/ok", 0, b"still").await;
    assert_eq!(sub.recv_publish(V5).await.payload, b"still");
    b.kill9();
}

async fn retain(c: &mut RawClient, topic: &str, payload: &[u8]) {
    send_flow(c, Publish::new(V311, topic, payload).qos(1, 0).retain(true)).await;
}

/// In-broker delivery latency is a Prometheus histogram, sampled one delivery in 64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_latency_is_a_histogram() {
    let dir = tempfile::tempdir().unwrap();
    let b = ChildBroker::start(dir.path(), false, "fsync");
    let mut sub = RawClient::connected(b.addr, V5, "lsub").await;
    sub.subscribe(V5, "l/#", 0).await;
    let mut publ = RawClient::connected(b.addr, V5, "lpub").await;
    for i in 0..256u32 {
        pub_msg(&mut publ, V5, "l/x", 0, &i.to_be_bytes()).await;
    }
    for _ in 0..256 {
        sub.recv_publish(V5).await;
    }
    let s = Scrape::take(&b).await;
    assert!(s
        .0
        .contains("# TYPE tern_delivery_latency_seconds histogram"));
    let count = s.get("tern_delivery_latency_seconds_count", &[]);
    assert!((1.0..=256.0).contains(&count), "samples: {count}");
    assert_eq!(
        s.get("tern_delivery_latency_seconds_bucket", &["le=\"+Inf\""]),
        count
    );
    b.kill9();
}

/// `/health` and `/ready` answer 200 on a running broker; other paths 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_ready() {
    let dir = tempfile::tempdir().unwrap();
    let b = ChildBroker::start(dir.path(), true, "fsync");
    assert_eq!(get(b.http, "/health").await, (200, "ok\n".to_string()));
    assert_eq!(get(b.http, "/ready").await, (200, "ready\n".to_string()));
    assert_eq!(get(b.http, "/nothing").await.0, 404);
    b.kill9();
}

/// Runs `tern` with `args` and extra environment; exit code, stdout, stderr.
fn tern(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Environment variables `TERN_SECTION__KEY` override the file; CLI flags override both.
#[test]
fn environment_and_flags_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.toml");
    std::fs::write(
        &file,
        "[limits]\nmax_connections = 5\n[log]\nlevel = \"warn\"\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (code, out, err) = tern(
        &["--config", f, "--log", "debug", "check-config"],
        &[
            ("TERN_LIMITS__MAX_CONNECTIONS", "7"),
            ("TERN_HTTP__PORT", "9999"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("max_connections: 7"), "{out}");
    assert!(out.contains("port: 9999"), "{out}");
    assert!(out.contains("level: \"debug\""), "{out}");
    // `tern check-config FILE` names the file directly.
    let (code, out, err) = tern(&["check-config", f], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("max_connections: 5"), "{out}");
}

/// Every kind of bad configuration is an error (exit status 2) naming where it came from, the
/// key, and what is allowed.
#[test]
fn bad_configuration_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    let f = file.to_str().unwrap().to_string();
    let cases: [(&str, &[&str]); 5] = [
        (
            "[limits]\nmax_conections = 5\n",
            &["bad.toml", "max_conections"],
        ),
        (
            "[limits]\nmax_connections = \"many\"\n",
            &["bad.toml", "max_connections"],
        ),
        (
            "[limits]\nreceive_maximum = 0\n",
            &["bad.toml", "limits.receive_maximum", "1 to 65535"],
        ),
        ("[log]\nformat = \"xml\"\n", &["bad.toml", "xml", "json"]),
        ("[listener\n", &["bad.toml"]),
    ];
    for (text, wanted) in cases {
        std::fs::write(&file, text).unwrap();
        let (code, _, err) = tern(&["--config", &f, "check-config"], &[]);
        assert_eq!(code, 2, "{text}: {err}");
        for w in wanted {
            assert!(err.contains(w), "{text}: {err:?} lacks {w}");
        }
    }
    let (code, _, err) = tern(&["--config", "/nonexistent/tern.toml", "check-config"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/tern.toml"), "{err}");
    let (code, _, err) = tern(&["check-config"], &[("TERN_LIMITS__MAX_PACKET_SIZE", "1")]);
    assert_eq!(code, 2);
    assert!(
        err.contains("TERN_LIMITS__MAX_PACKET_SIZE") && err.contains("limits.max_packet_size"),
        "{err}"
    );
}

/// `[log] format = "json"` writes one JSON object per line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["--bind", "127.0.0.1", "--port", "0", "--http-port", "0"])
        .env("TERN_LOG__FORMAT", "json")
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("listener ready"))
    })
    .await
    .unwrap()
    .expect("a ready line");
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.starts_with('{') && first.ends_with('}'), "{first}");
    assert!(first.contains("\"level\":\"INFO\""), "{first}");
}

/// `$SYS/broker/…` topics, Mosquitto's names, retained: a subscriber to `$SYS/#` gets the
/// version, uptime and client counts that match what is connected; `#` does not match them; a
/// client cannot publish there (v5: PUBACK 0x87 Not authorized, nothing delivered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_topics_describe_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let b = ChildBroker::start_with(dir.path(), false, "fsync", "[sys]\ninterval_secs = 1\n");
    let mut all = RawClient::connected(b.addr, V311, "sysall").await;
    all.subscribe(V311, "#", 0).await;
    let mut sys = RawClient::connected(b.addr, V311, "sysread").await;
    sys.subscribe(V311, "$SYS/#", 0).await;
    // Retained copies first, then fresh rounds each second; read until a round shows both
    // clients connected.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut seen = std::collections::HashMap::new();
    loop {
        let r = tokio::time::timeout_at(deadline, sys.recv_publish(V311))
            .await
            .expect("$SYS values in time");
        let value = String::from_utf8_lossy(&r.payload).into_owned();
        seen.insert(r.topic.clone(), value);
        if seen
            .get("$SYS/broker/clients/connected")
            .map(String::as_str)
            == Some("2")
            && seen.contains_key("$SYS/broker/uptime")
        {
            break;
        }
    }
    assert!(seen["$SYS/broker/version"].starts_with("tern version "));
    assert!(seen["$SYS/broker/uptime"].ends_with(" seconds"));
    // A client publishing under $SYS is refused and nothing reaches the readers.
    let mut bad = RawClient::connected(b.addr, V5, "sysbad").await;
    bad.send(
        &Publish::new(V5, "$SYS/broker/uptime", b"forever")
            .qos(1, 7)
            .build(),
    )
    .await;
    let (pkid, reason) = parse_ack(&bad.recv_expect(PUBACK).await);
    assert_eq!((pkid, reason), (7, 0x87));
    // `#` saw none of it: a fence is the first thing it gets.
    pub_msg(&mut bad, V5, "fence", 0, b"fence").await;
    assert_eq!(all.recv_publish(V311).await.payload, b"fence");
    // The next rounds never carry the client's value.
    let until = tokio::time::Instant::now() + Duration::from_millis(2500);
    while let Ok(r) = tokio::time::timeout_at(until, sys.recv_publish(V311)).await {
        assert_ne!(r.payload, b"forever");
    }
    b.kill9();
}

/// Names `tern_…` in `text` (a metric name is letters, digits and underscores).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("tern_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Connections are counted by the kind of listener they came through: a WebSocket client is
/// accepted, connected and open under `listener="ws"`, not `tcp`, until it goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_labelled_by_listener_kind() {
    let dir = tempfile::tempdir().unwrap();
    let b = ChildBroker::start_with(
        dir.path(),
        false,
        "fsync",
        "[sys]\ninterval_secs = 0\n\n[[listeners]]\nkind = \"ws\"\nbind = \"127.0.0.1\"\nport = 0\n",
    );
    let ready = b.wait_log("kind=Ws", 1);
    let ws_addr: SocketAddr = ready
        .split(" address=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .expect("the ws listener's address in its log line");
    let before = Scrape::take(&b).await;
    let mut ws = raw_ws(ws_addr.port(), "/mqtt", Some("mqtt")).await.unwrap();
    ws.frame(&Connect::new(V5, "over-ws").build()).await;
    assert_eq!(ws.packet().await.0, CONNACK);

    let now = Scrape::take(&b).await;
    let delta = |name: &str, labels: &[&str]| now.get(name, labels) - before.get(name, labels);
    assert_eq!(now.get("tern_connections", &["listener=\"ws\""]), 1.0);
    assert_eq!(now.get("tern_connections", &["listener=\"tcp\""]), 0.0);
    assert_eq!(
        delta("tern_connections_accepted_total", &["listener=\"ws\""]),
        1.0
    );
    assert_eq!(
        delta("tern_connections_accepted_total", &["listener=\"tcp\""]),
        0.0
    );
    assert_eq!(
        delta(
            "tern_connections_total",
            &["listener=\"ws\"", "protocol=\"5\""]
        ),
        1.0
    );
    drop(ws);
    wait_for(&b, "tern_connections", &["listener=\"ws\""], 0.0).await;
}

/// Every series the Grafana dashboard (deploy/) queries is one Tern declares.
#[test]
fn grafana_dashboard_uses_declared_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources: String = std::fs::read_dir(root.join("src/metrics"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let declared = metric_names(&sources);
    let dashboard = std::fs::read_to_string(root.join("deploy/grafana-dashboard.json")).unwrap();
    let used = metric_names(&dashboard);
    assert!(used.len() >= 10, "{used:?}");
    for name in used {
        let base = name.strip_suffix("_bucket").unwrap_or(&name).to_string();
        assert!(
            declared.contains(&base),
            "dashboard queries undeclared {name}"
        );
    }
}

/// SIGHUP reloads the file: a limit changes for the running broker, a listener change is
/// reported as needing a restart (and not applied), and a broken file changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let b = ChildBroker::start_with(
        dir.path(),
        false,
        "fsync",
        "[limits]\nmax_subscriptions_per_client = 1\n",
    );
    let two = |id: &'static str| async move {
        let mut c = RawClient::connected(b.addr, V5, id).await;
        let first = sub_raw(&mut c, V5, &[("a/1", 0)], &[]).await;
        let second = sub_raw(&mut c, V5, &[("a/2", 0)], &[]).await;
        (first[0], second[0])
    };
    assert_eq!(two("hup1").await, (0x00, 0x97));
    let file = dir.path().join("tern.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let reloaded = text
        .replace(
            "max_subscriptions_per_client = 1",
            "max_subscriptions_per_client = 10",
        )
        .replace(
            "bind = \"127.0.0.1\"\nport = 0\n\n[http]",
            "bind = \"0.0.0.0\"\nport = 0\n\n[http]",
        );
    assert_ne!(reloaded, text);
    std::fs::write(&file, &reloaded).unwrap();
    b.hup();
    b.wait_log("configuration reloaded", 1);
    let warning = b.wait_log("only a restart applies it", 1);
    assert!(warning.contains("listener"), "{warning}");
    assert_eq!(two("hup2").await, (0x00, 0x00));
    // Still on its first address: the listener change was not applied.
    RawClient::connected(b.addr, V311, "hup3").await;

    std::fs::write(&file, "[limits\n").unwrap();
    b.hup();
    let refused = b.wait_log("reload refused", 1);
    assert!(refused.contains("tern.toml"), "{refused}");
    assert_eq!(two("hup4").await, (0x00, 0x00));
    b.kill9();
}

/// SIGTERM: connected v5 clients get DISCONNECT 0x8B (Server shutting down), the process exits
/// 0, and connects and disconnects were logged at info with the client id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_says_goodbye_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let b = ChildBroker::start(dir.path(), false, "fsync");
    let mut c = RawClient::connected(b.addr, V5, "bye5").await;
    let line = b.wait_log("client connected", 1);
    assert!(line.contains("INFO") && line.contains("bye5"), "{line}");
    let addr = b.addr;
    let code = tokio::task::spawn_blocking(move || b.terminate())
        .await
        .unwrap();
    let (first, body) = c.recv_packet().await;
    assert_eq!(first, DISCONNECT);
    assert_eq!(body.first(), Some(&0x8B));
    assert_eq!(code, Some(0));
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// A full queue drops messages, counts each drop, and says so once at info (not once per
/// message) until the client has caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_overflow_is_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let b = ChildBroker::start_with(
        dir.path(),
        false,
        "fsync",
        "[limits]\nmax_queued_messages = 2\n[sys]\ninterval_secs = 0\n",
    );
    let (mut s, _) = connect_persistent(b.addr, V5, "slow", false).await;
    sub_all(&mut s, V5, &["q/#"], 1).await;
    s.send(&disconnect()).await;
    wait_for(&b, "tern_sessions", &["state=\"offline\""], 1.0).await;
    let mut publ = RawClient::connected(b.addr, V5, "fast").await;
    for i in 0..6u8 {
        pub_msg(&mut publ, V5, "q/x", 1, &[i]).await;
    }
    let line = b.wait_log("queue full", 1);
    assert!(line.contains("INFO") && line.contains("slow"), "{line}");
    let scrape = Scrape::take(&b).await;
    assert_eq!(
        scrape.get("tern_publishes_dropped_total", &["reason=\"queue_full\""]),
        4.0
    );
    // The log line for the publishes above came before their PUBACKs: all of it is in.
    assert_eq!(b.log_count("queue full"), 1);
    b.kill9();
}
