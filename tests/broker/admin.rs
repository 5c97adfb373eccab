//! The admin API of the real binary (`/api/v1/`): access by bearer token, every endpoint,
//! paging, disconnects with and without the session, retained deletes, publishing; HTTPS.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::child::ChildBroker;
use crate::harness::WAIT;
use crate::support::*;
use crate::wire::*;

const TOKEN: &str = "s3cret-token";

/// A broker with the admin API on (token file written with surrounding whitespace, which is
/// trimmed), `http` more `[http]` keys, `extra` more sections.
fn start(dir: &Path, http: &str, extra: &str) -> ChildBroker {
    let token = dir.join("token");
    std::fs::write(&token, format!("  {TOKEN}\n\n")).unwrap();
    let config = dir.join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "[listener]\nbind = \"127.0.0.1\"\nport = 0\n\n[http]\nport = 0\nadmin_token_file = {token:?}\n{http}\n\n{extra}"
        ),
    )
    .unwrap();
    ChildBroker::spawn(&config, Duration::from_secs(30))
        .unwrap_or_else(|log| panic!("tern did not start:\n{}", log.join("\n")))
}

/// One HTTP/1.1 exchange over `stream`: status and body parsed as JSON (`Value::Null` when it
/// is not JSON).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: tern\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut raw))
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
    // Bodies may come chunked: take the JSON between the first `{` and the last `}`.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if a < b => serde_json::from_str(&body[a..=b]).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    (status, json)
}

async fn call(
    http: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let s = tokio::net::TcpStream::connect(http).await.unwrap();
    exchange(s, method, path, token, body).await
}

/// `GET path` with the right token; asserts 200.
async fn get_ok(http: SocketAddr, path: &str) -> Value {
    let (status, body) = call(http, "GET", path, Some(TOKEN), None).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// The client ids of a `/clients` or `/sessions` page.
fn ids(page: &Value, list: &str) -> Vec<String> {
    page[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap().to_string())
        .collect()
}

fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

async fn scrape(http: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn requests_without_the_token_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path(), "", "");
    let (status, body) = call(b.http, "GET", "/api/v1/stats", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "missing or wrong bearer token");
    let (status, _) = call(b.http, "GET", "/api/v1/clients", Some("wrong"), None).await;
    assert_eq!(status, 401);
    let (status, _) = call(b.http, "DELETE", "/api/v1/clients/x", Some(""), None).await;
    assert_eq!(status, 401);
    // The token as the file holds it, whitespace trimmed.
    let stats = get_ok(b.http, "/api/v1/stats").await;
    assert_eq!(stats["connected_clients"], 0);
    let (status, body) = call(b.http, "GET", "/api/v1/nothing", Some(TOKEN), None).await;
    assert_eq!((status, body["error"].is_string()), (404, true));
    // What was open stays open.
    let metrics = scrape(b.http).await;
    assert_eq!(metric(&metrics, "tern_http_admin_unauthorized_total"), 3.0);
    let (status, _) = call(b.http, "GET", "/health", None, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn without_a_token_the_api_is_off_and_the_page_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let b = ChildBroker::start(dir.path(), false, "fsync");
    let (status, body) = call(b.http, "GET", "/api/v1/clients", Some(TOKEN), None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "admin API is disabled");
    let mut s = tokio::net::TcpStream::connect(b.http).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).await.unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page:.200}");
    assert!(page.contains("text/html"));
    assert!(page.contains("admin API is disabled"));
}

#[tokio::test]
async fn clients_are_listed_with_their_figures_filtered_and_paged() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path(), "", "");
    let mut clients = Vec::new();
    for i in 0..5 {
        let level = if i % 2 == 0 { V5 } else { V311 };
        let mut connect = Connect::new(level, &format!("c{i}")).keepalive(30 + i);
        if i == 3 {
            connect = connect.username("dora");
        }
        let (c, _) = RawClient::handshake(b.addr, level, &connect).await;
        clients.push(c);
    }
    // An id that needs percent-encoding in a path.
    let odd = RawClient::connected(b.addr, V5, "dev/7 x%").await;
    clients[1].subscribe(V311, "t/#", 1).await;
    pub_msg(&mut clients[0], V5, "t/a", 1, b"one").await;
    pub_msg(&mut clients[0], V5, "t/b", 1, b"two").await;
    recv_acked(&mut clients[1], V311).await;
    recv_acked(&mut clients[1], V311).await;

    let all = get_ok(b.http, "/api/v1/clients").await;
    assert_eq!(
        ids(&all, "clients"),
        ["c0", "c1", "c2", "c3", "c4", "dev/7 x%"]
    );
    assert_eq!(all["next"], Value::Null);
    let c0 = &all["clients"][0];
    assert_eq!(c0["protocol_version"], "5.0");
    assert_eq!(c0["keepalive_secs"], 30);
    assert_eq!(c0["messages_in"], 2);
    assert_eq!(c0["listener"], format!("tcp:{}", b.addr.port()));
    assert!(c0["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(c0["connected_at"].as_u64().unwrap()) < 60);
    let c1 = &all["clients"][1];
    assert_eq!(c1["protocol_version"], "3.1.1");
    assert_eq!(c1["subscriptions"], 1);
    assert_eq!(c1["messages_out"], 2);
    // Its PUBACKs may still be on their way: inflight falls to 0 once they are read.
    let deadline = tokio::time::Instant::now() + WAIT;
    while get_ok(b.http, "/api/v1/clients/c1").await["inflight"] != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "c1's messages stay in flight"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(all["clients"][3]["username"], "dora");

    let p1 = get_ok(b.http, "/api/v1/clients?limit=2").await;
    assert_eq!(ids(&p1, "clients"), ["c0", "c1"]);
    assert_eq!(p1["next"], "c1");
    let p2 = get_ok(b.http, "/api/v1/clients?limit=2&after=c1").await;
    assert_eq!(ids(&p2, "clients"), ["c2", "c3"]);
    let p3 = get_ok(b.http, "/api/v1/clients?limit=2&after=c3").await;
    assert_eq!(ids(&p3, "clients"), ["c4", "dev/7 x%"]);
    assert_eq!(p3["next"], Value::Null);
    let dev = get_ok(b.http, "/api/v1/clients?prefix=dev%2F").await;
    assert_eq!(ids(&dev, "clients"), ["dev/7 x%"]);
    let dora = get_ok(b.http, "/api/v1/clients?username=dora").await;
    assert_eq!(ids(&dora, "clients"), ["c3"]);
    let port = b.addr.port();
    let tcp = get_ok(b.http, &format!("/api/v1/clients?listener=tcp:{port}")).await;
    assert_eq!(tcp["clients"].as_array().unwrap().len(), 6);

    let one = get_ok(b.http, "/api/v1/clients/c1").await;
    assert_eq!(one["client_id"], "c1");
    assert_eq!(one["subscription_list"][0]["filter"], "t/#");
    assert_eq!(one["subscription_list"][0]["qos"], 1);
    let odd_one = get_ok(b.http, "/api/v1/clients/dev%2F7%20x%25").await;
    assert_eq!(odd_one["client_id"], "dev/7 x%");

    for (path, field) in [
        ("/api/v1/clients?limit=0", "limit"),
        ("/api/v1/clients?limit=1001", "limit"),
        ("/api/v1/clients?limit=ten", "limit"),
        ("/api/v1/clients?colour=red", "query"),
    ] {
        let (status, body) = call(b.http, "GET", path, Some(TOKEN), None).await;
        assert_eq!(
            (status, body["field"].as_str()),
            (400, Some(field)),
            "{path}"
        );
    }
    let (status, body) = call(b.http, "GET", "/api/v1/clients/%FF", Some(TOKEN), None).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("id")));
    let (status, body) = call(b.http, "GET", "/api/v1/clients/nobody", Some(TOKEN), None).await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("nobody"));
    drop(odd);
}

#[tokio::test]
async fn a_disconnect_keeps_or_discards_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path(), "", "");
    let (mut watcher, _) = connect_persistent(b.addr, V5, "watcher", true).await;
    watcher.subscribe(V5, "wills/#", 1).await;
    let will = Connect::new(V5, "keep")
        .clean(true)
        .props(prop_u32(SESSION_EXPIRY, 3600))
        .will(Will::new("wills/keep", b"gone"));
    let (mut keep, _) = RawClient::handshake(b.addr, V5, &will).await;
    keep.subscribe(V5, "k/#", 1).await;
    let (mut drop_, _) = connect_persistent(b.addr, V5, "drop", true).await;
    drop_.subscribe(V5, "d/#", 1).await;
    let mut old = RawClient::connected(b.addr, V311, "old").await;

    // Kept: the client hears 0x98, its will goes out, its session waits for it.
    let (status, body) = call(b.http, "DELETE", "/api/v1/clients/keep", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"], "kept");
    assert_eq!(body["disconnected"], true);
    keep.expect_disconnect(0x98).await;
    let w = recv_acked(&mut watcher, V5).await;
    assert_eq!(w.payload, b"gone");
    let (status, _) = call(b.http, "GET", "/api/v1/clients/keep", Some(TOKEN), None).await;
    assert_eq!(status, 404, "a disconnected client is not listed");
    let session = get_ok(b.http, "/api/v1/sessions/keep").await;
    assert_eq!(session["connected"], false);
    assert_eq!(session["subscriptions"], 1);
    assert_eq!(session["expiry_interval_secs"], 3600);
    let left = session["expires_in_secs"].as_u64().unwrap();
    assert!((3500..=3600).contains(&left), "{left}");
    pub_msg(&mut watcher, V5, "k/1", 1, b"for keep").await;
    let queued = get_ok(b.http, "/api/v1/sessions/keep").await;
    assert_eq!(queued["queued_messages"], 1);

    // Discarded: 0x98, and nothing left of it.
    let (status, body) = call(
        b.http,
        "DELETE",
        "/api/v1/clients/drop?session=discard",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!((status, body["session"].as_str()), (200, Some("discarded")));
    drop_.expect_disconnect(0x98).await;
    let (status, _) = call(b.http, "GET", "/api/v1/sessions/drop", Some(TOKEN), None).await;
    assert_eq!(status, 404);
    let (_, present) = connect_persistent(b.addr, V5, "drop", false).await;
    assert!(!present, "the discarded session is gone");

    // 3.1.1 has no DISCONNECT from the server: the connection just closes.
    let (status, _) = call(b.http, "DELETE", "/api/v1/clients/old", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    assert!(old.expect_closed().await.is_empty());

    wait_parked(b.http, "drop").await;
    let sessions = get_ok(b.http, "/api/v1/sessions?connected=false").await;
    assert_eq!(ids(&sessions, "sessions"), ["drop", "keep"]);
    let all = get_ok(b.http, "/api/v1/sessions").await;
    assert_eq!(ids(&all, "sessions"), ["drop", "keep", "watcher"]);
    let watcher_session = &all["sessions"][2];
    assert_eq!(watcher_session["connected"], true);
    assert_eq!(watcher_session["expires_in_secs"], PERSIST_SECS);

    // The kept session resumes, with what was queued for it.
    let (mut back, present) = connect_persistent(b.addr, V5, "keep", false).await;
    assert!(present);
    assert_eq!(recv_acked(&mut back, V5).await.payload, b"for keep");
    drop(back);
    // An offline session ended by DELETE /sessions: gone, and a second delete is 404.
    let (status, _) = call(
        b.http,
        "DELETE",
        "/api/v1/clients/nobody",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 404);
    wait_parked(b.http, "keep").await;
    let (status, body) = call(b.http, "DELETE", "/api/v1/sessions/keep", Some(TOKEN), None).await;
    assert_eq!(
        (status, body["ended"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    let (status, _) = call(b.http, "DELETE", "/api/v1/sessions/keep", Some(TOKEN), None).await;
    assert_eq!(status, 404);
    let (_, present) = connect_persistent(b.addr, V5, "keep", false).await;
    assert!(!present);
    // DELETE /sessions of a connected client disconnects it and ends its session.
    let (status, body) = call(
        b.http,
        "DELETE",
        "/api/v1/sessions/watcher",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!((status, body["was_connected"].as_bool()), (200, Some(true)));
    watcher.expect_disconnect(0x98).await;
    let (_, present) = connect_persistent(b.addr, V5, "watcher", false).await;
    assert!(!present);
}

/// Waits until the session of `id` is listed as not connected.
async fn wait_parked(http: SocketAddr, id: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = get_ok(http, &format!("/api/v1/sessions/{id}")).await;
        if s["connected"] == false {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} still connected"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn retained_messages_are_listed_paged_and_deleted_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path(), "", "");
    let mut p = RawClient::connected(b.addr, V5, "p").await;
    for (topic, payload) in [
        ("a/1", &b"one"[..]),
        ("a/2", b"two"),
        ("b/1", &[0xff, 0x00]),
    ] {
        send_flow(
            &mut p,
            Publish::new(V5, topic, payload)
                .qos(1, next_pkid())
                .retain(true),
        )
        .await;
    }
    let mut watcher = RawClient::connected(b.addr, V5, "w").await;
    watcher.subscribe(V5, "a/#", 1).await;
    recv_acked(&mut watcher, V5).await;
    recv_acked(&mut watcher, V5).await;

    let all = get_ok(b.http, "/api/v1/retained").await;
    let topics: Vec<&str> = all["retained"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["a/1", "a/2", "b/1"]);
    assert_eq!(all["retained"][0]["payload"], "one");
    assert_eq!(all["retained"][2]["payload_encoding"], "base64");
    assert_eq!(all["retained"][2]["payload"], "/wA=");
    let p1 = get_ok(b.http, "/api/v1/retained?filter=a%2F%23&limit=1").await;
    assert_eq!(p1["retained"][0]["topic"], "a/1");
    assert_eq!(p1["next"], "a/1");
    let p2 = get_ok(
        b.http,
        "/api/v1/retained?filter=a%2F%23&limit=1&after=a%2F1",
    )
    .await;
    assert_eq!(p2["retained"][0]["topic"], "a/2");
    assert_eq!(p2["next"], Value::Null);
    let (status, body) = call(
        b.http,
        "GET",
        "/api/v1/retained?filter=a%2B",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!((status, body["field"].as_str()), (400, Some("filter")));

    let (status, body) = call(
        b.http,
        "DELETE",
        "/api/v1/retained/a%2F1",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = call(b.http, "DELETE", "/api/v1/retained/a/1", Some(TOKEN), None).await;
    assert_eq!(status, 404, "already deleted");
    let (status, _) = call(b.http, "GET", "/api/v1/retained/a/1", Some(TOKEN), None).await;
    assert_eq!(status, 404);
    assert_eq!(
        get_ok(b.http, "/api/v1/retained/a/2").await["payload"],
        "two"
    );
    // Subscribers were not sent an empty message for it; a new one gets only a/2.
    watcher.expect_silence(Duration::from_millis(300)).await;
    let mut fresh = RawClient::connected(b.addr, V5, "f").await;
    fresh.subscribe(V5, "a/#", 1).await;
    assert_eq!(recv_acked(&mut fresh, V5).await.topic, "a/2");
    fresh.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn messages_published_through_the_api_reach_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path(), "", "");
    let mut sub = RawClient::connected(b.addr, V5, "s").await;
    sub.subscribe(V5, "t/#", 2).await;
    let body = json!({
        "topic": "t/1", "payload": "hello", "qos": 1,
        "properties": {
            "content_type": "text/plain",
            "user_properties": {"site": "north"},
            "message_expiry_interval": 60
        }
    })
    .to_string();
    let (status, answer) = call(b.http, "POST", "/api/v1/publish", Some(TOKEN), Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["delivered"], 1);
    let got = recv_acked(&mut sub, V5).await;
    assert_eq!(
        (got.topic.as_str(), got.qos, &got.payload[..]),
        ("t/1", 1, &b"hello"[..])
    );
    assert_eq!(prop(&got.props, CONTENT_TYPE).unwrap().str(), "text/plain");

    let body = r#"{"topic": "t/r", "payload": "/wA=", "payload_encoding": "base64", "qos": 2, "retain": true}"#;
    let (status, _) = call(b.http, "POST", "/api/v1/publish", Some(TOKEN), Some(body)).await;
    assert_eq!(status, 200);
    let got = recv_acked(&mut sub, V5).await;
    assert_eq!((got.qos, &got.payload[..]), (2, &[0xffu8, 0][..]));
    let kept = get_ok(b.http, "/api/v1/retained/t/r").await;
    assert_eq!(kept["payload"], "/wA=");
    assert_eq!(kept["payload_encoding"], "base64");

    for (body, field) in [
        (r#"{"payload": "x"}"#, "topic"),
        (r#"{"topic": "t/+"}"#, "topic"),
        (r#"{"topic": "$SYS/x"}"#, "topic"),
        (r#"{"topic": "t", "qos": 3}"#, "qos"),
        (r#"{"topic": "t", "retain": "yes"}"#, "retain"),
        (
            r#"{"topic": "t", "payload": "!", "payload_encoding": "base64"}"#,
            "payload",
        ),
        (r#"{"topic": "t", "colour": 1}"#, "body"),
        (
            r#"{"topic": "t", "properties": {"user_properties": 7}}"#,
            "properties.user_properties",
        ),
        ("not json", "body"),
    ] {
        let (status, answer) =
            call(b.http, "POST", "/api/v1/publish", Some(TOKEN), Some(body)).await;
        assert_eq!(
            (status, answer["field"].as_str()),
            (400, Some(field)),
            "{body}: {answer}"
        );
    }
    sub.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn subscriptions_queues_listeners_and_stats_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    gen_certs(&certs);
    let extra = format!(
        "[[listeners]]\nkind = \"tls\"\nbind = \"127.0.0.1\"\nport = 0\ncert = {:?}\nkey = {:?}\n\n[[queues]]\nname = \"jobs\"\nfilter = \"jobs/#\"\n",
        certs.join("server.pem"),
        certs.join("server.key"),
    );
    let b = start(dir.path(), "", &extra);
    let mut a = RawClient::connected(b.addr, V5, "a").await;
    a.subscribe(V5, "x/+", 0).await;
    a.subscribe(V5, "$share/g/y/#", 1).await;
    let mut c = RawClient::connected(b.addr, V311, "c").await;
    c.subscribe(V311, "x/+", 1).await;
    for i in 0..3 {
        pub_msg(&mut c, V311, &format!("jobs/{i}"), 1, b"work").await;
    }

    let subs = get_ok(b.http, "/api/v1/subscriptions").await;
    let pairs: Vec<(String, String)> = subs["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["client_id"].as_str().unwrap().into(),
                s["filter"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expect = [("a", "$share/g/y/#"), ("a", "x/+"), ("c", "x/+")];
    assert_eq!(pairs, expect.map(|(a, b)| (a.to_string(), b.to_string())));
    let by_filter = get_ok(b.http, "/api/v1/subscriptions?filter=x%2F%2B").await;
    assert_eq!(by_filter["subscriptions"].as_array().unwrap().len(), 2);
    let by_client = get_ok(b.http, "/api/v1/subscriptions?client=c&limit=1").await;
    assert_eq!(by_client["subscriptions"][0]["qos"], 1);
    assert_eq!(by_client["next"], Value::Null);
    let first = get_ok(b.http, "/api/v1/subscriptions?limit=1").await;
    let cursor = first["next"].as_str().unwrap().to_string();
    let after: String = form_urlencoded::byte_serialize(cursor.as_bytes()).collect();
    let second = get_ok(
        b.http,
        &format!("/api/v1/subscriptions?limit=1&after={after}"),
    )
    .await;
    assert_eq!(second["subscriptions"][0]["filter"], "x/+");
    assert_eq!(second["subscriptions"][0]["client_id"], "a");

    let queues = get_ok(b.http, "/api/v1/queues").await;
    let jobs = &queues["queues"][0];
    assert_eq!(
        (jobs["name"].as_str(), jobs["kind"].as_str()),
        (Some("jobs"), Some("queue"))
    );
    assert_eq!(jobs["backlog"], 3);
    assert_eq!(jobs["filter"], "jobs/#");
    assert_eq!(jobs["produced"], 3);
    let group = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["kind"] == "group")
        .expect("the shared group is listed");
    assert_eq!(
        (group["name"].as_str(), group["filter"].as_str()),
        (Some("g"), Some("y/#"))
    );

    let listeners = get_ok(b.http, "/api/v1/listeners").await;
    let l = listeners["listeners"].as_array().unwrap();
    assert_eq!(l.len(), 2);
    assert_eq!(l[0]["kind"], "tcp");
    assert_eq!(l[0]["connections"], 2);
    assert_eq!(l[1]["kind"], "tls");
    assert!(l[0]["tls"].is_null());
    let not_after = l[1]["tls"]["not_after"]
        .as_u64()
        .expect("certificate expiry");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        not_after > now + 86_400,
        "the development certificate is valid for a while"
    );
    assert!(l[1]["tls"]["subject"].as_str().unwrap().contains("CN="));

    let stats = get_ok(b.http, "/api/v1/stats").await;
    assert_eq!(stats["connected_clients"], 2);
    assert_eq!(stats["messages_received"], 3);
    assert_eq!(stats["dropped"]["queue_full"], 0);
    assert!(stats["dropped"]["expired"].is_u64());
    let cluster = get_ok(b.http, "/api/v1/cluster").await;
    assert_eq!(cluster["enabled"], false);
}

fn gen_certs(dir: &Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .arg("gen-certs")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_api_is_served_over_https_and_never_in_clear_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    gen_certs(&certs);
    let http = format!(
        "bind = \"127.0.0.1\"\ncert = {:?}\nkey = {:?}",
        certs.join("server.pem"),
        certs.join("server.key")
    );
    let b = start(dir.path(), &http, "");
    let tcp = tokio::net::TcpStream::connect(b.http).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tls_connector(&certs.join("ca.pem"))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the HTTP listener");
    let (status, stats) = exchange(tls, "GET", "/api/v1/stats", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    assert_eq!(stats["connected_clients"], 0);
    drop(b);

    // The token would cross the network in clear text: refused, naming the key.
    let open = tempfile::tempdir().unwrap();
    let token = open.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let config = open.path().join("tern.toml");
    std::fs::write(
        &config,
        format!("[listener]\nport = 0\n\n[http]\nbind = \"0.0.0.0\"\nport = 0\nadmin_token_file = {token:?}\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("http.bind") && err.contains("allow_plaintext_admin"),
        "{err}"
    );
    // Asked for explicitly: it starts, and says what it costs.
    std::fs::write(
        &config,
        format!("[listener]\nport = 0\n\n[http]\nbind = \"0.0.0.0\"\nport = 0\nallow_plaintext_admin = true\nadmin_token_file = {token:?}\n"),
    )
    .unwrap();
    let b = ChildBroker::spawn(&config, Duration::from_secs(30))
        .unwrap_or_else(|log| panic!("tern did not start:\n{}", log.join("\n")));
    b.wait_log("clear text", 1);
    // An unreadable token file stops the start, naming the key and the file.
    std::fs::remove_file(&token).unwrap();
    let err = ChildBroker::spawn(&config, Duration::from_secs(10))
        .err()
        .expect("no start without the token file")
        .join("\n");
    assert!(
        err.contains("admin_token_file") && err.contains("token"),
        "{err}"
    );
}

#[tokio::test]
async fn a_dormant_client_is_listed_and_can_be_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path(), "", "[limits]\ndormant_after_ms = 20\n");
    let mut sleepy = RawClient::connected(b.addr, V5, "sleepy").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while metric(&scrape(b.http).await, "tern_connections_dormant") != 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client never went dormant"
        );
        tokio::task::yield_now().await;
    }
    let all = get_ok(b.http, "/api/v1/clients").await;
    assert_eq!(ids(&all, "clients"), ["sleepy"]);
    let (status, body) = call(
        b.http,
        "DELETE",
        "/api/v1/clients/sleepy",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(
        (status, body["disconnected"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    sleepy.expect_disconnect(0x98).await;
    // A topic with an empty first level keeps its slashes in the path.
    let mut p = RawClient::connected(b.addr, V5, "p").await;
    send_flow(
        &mut p,
        Publish::new(V5, "/lead", b"x")
            .qos(1, next_pkid())
            .retain(true),
    )
    .await;
    assert_eq!(
        get_ok(b.http, "/api/v1/retained/%2Flead").await["topic"],
        "/lead"
    );
    let (status, _) = call(
        b.http,
        "DELETE",
        "/api/v1/retained/%2Flead",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);
}
