//! The HTTP authentication and ACL hook (`[auth.http]`) against a real HTTP server started in
//! the test (axum on a loopback port): allow, deny, ignore, superuser and per-client lists,
//! odd answers, timeouts, a hook that is down (deny or unavailable), answers cached per
//! (client, action, topic), other clients not held up by a slow answer, and the chain order
//! with a password file.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tern::auth::passwd::{Hash, PasswordFile};
use tern::config::{AuthMethod, HttpHookConfig, OnError};
use tokio::sync::Notify;

use crate::harness::TestBroker;
use crate::support::sub_raw;
use crate::wire::{self, Connect, RawClient, V311, V5};

/// What the test's hook server saw, and the gate a `"held"` login waits at.
#[derive(Default)]
struct Seen {
    auth: Mutex<Vec<Value>>,
    acl: Mutex<HashMap<(String, String, String), usize>>,
    /// Notified when a `"held"` login arrives.
    held_arrived: Notify,
    /// The `"held"` login is answered once this is notified.
    release: Notify,
}

/// The hook: decides by user name (see each arm); ACL: allows topics under `ok/`.
async fn auth(State(seen): State<Arc<Seen>>, body: Bytes) -> (StatusCode, String) {
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    seen.auth.lock().push(req.clone());
    let user = req["username"].as_str().unwrap_or("").to_string();
    let allow = json!({"result": "allow"}).to_string();
    match user.as_str() {
        "good" if req["password"] == "pw" => (StatusCode::OK, allow),
        "super" => (
            StatusCode::OK,
            json!({"result": "allow", "is_superuser": true}).to_string(),
        ),
        "limited" => (
            StatusCode::OK,
            json!({
                "result": "allow",
                "publish": ["devices/%c/up"],
                "subscribe": ["devices/%c/down/#"],
            })
            .to_string(),
        ),
        "ignore" | "alice" => (StatusCode::OK, json!({"result": "ignore"}).to_string()),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            (StatusCode::OK, allow)
        }
        "held" => {
            let released = seen.release.notified();
            seen.held_arrived.notify_one();
            released.await;
            (StatusCode::OK, allow)
        }
        "teapot" => (StatusCode::IM_A_TEAPOT, allow),
        "broken" => (StatusCode::OK, "{not json".to_string()),
        "oops" => (StatusCode::INTERNAL_SERVER_ERROR, allow),
        _ => (StatusCode::OK, json!({"result": "deny"}).to_string()),
    }
}

async fn acl(State(seen): State<Arc<Seen>>, body: Bytes) -> (StatusCode, String) {
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let s = |k: &str| req[k].as_str().unwrap_or("").to_string();
    *seen
        .acl
        .lock()
        .entry((s("clientid"), s("action"), s("topic")))
        .or_default() += 1;
    let result = if s("topic").starts_with("ok/") {
        "allow"
    } else {
        "deny"
    };
    (StatusCode::OK, json!({"result": result}).to_string())
}

/// Starts the hook server; its address and what it sees.
async fn hook_server() -> (SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = axum::Router::new()
        .route("/mqtt/auth", post(auth))
        .route("/mqtt/acl", post(acl))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, seen)
}

fn hook(addr: SocketAddr, tweak: impl FnOnce(&mut HttpHookConfig)) -> HttpHookConfig {
    let mut h = HttpHookConfig {
        url: format!("http://{addr}/mqtt/auth"),
        ..HttpHookConfig::default()
    };
    tweak(&mut h);
    h
}

fn login(level: u8, id: &str, user: &str, pw: &str) -> Connect {
    Connect::new(level, id)
        .username(user)
        .password(pw.as_bytes())
}

/// The CONNACK code for `c`, each attempt from its own loopback address: refusals slow down
/// the next ones from the same address, which is not what these tests are about.
async fn connack(addr: SocketAddr, level: u8, c: &Connect) -> u8 {
    use std::sync::atomic::{AtomicU8, Ordering};
    static NEXT: AtomicU8 = AtomicU8::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 250 + 2;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from(([127, 0, 0, n], 0))).unwrap();
    let mut client = RawClient::from_stream(socket.connect(addr).await.unwrap());
    client.send(&c.build()).await;
    wire::parse_connack(level, &client.recv_expect(wire::CONNACK).await).reason
}

/// Allow, deny, ignore (nothing else to ask: refused), odd statuses and bodies, for v5 and
/// v3.1.1; the request carries exactly the documented fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_allows_and_refuses() {
    let (server, seen) = hook_server().await;
    let b = TestBroker::start_with(|c| c.auth.http = Some(hook(server, |_| {}))).await;
    for (level, bad, unauthorized) in [(V5, 0x86, 0x87), (V311, 0x04, 0x05)] {
        let cases = [
            ("good", "pw", 0),
            ("good", "wrong", unauthorized),
            ("mallory", "x", unauthorized),
            ("ignore", "x", bad),
            ("teapot", "x", unauthorized),
            ("broken", "x", unauthorized),
            ("oops", "x", unauthorized),
        ];
        for (user, pw, want) in cases {
            let c = login(level, &format!("{user}-{level}"), user, pw);
            assert_eq!(connack(b.addr, level, &c).await, want, "{user} v{level}");
        }
    }
    let first = seen.auth.lock()[0].clone();
    let mut keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "cert_identity",
            "clientid",
            "listener",
            "password",
            "peer",
            "protocol_version",
            "username"
        ]
    );
    assert_eq!(first["clientid"], "good-5");
    assert_eq!(first["password"], "pw");
    assert_eq!(first["protocol_version"], 5);
    assert_eq!(first["cert_identity"], Value::Null);
    assert_eq!(first["listener"], format!("tcp:{}", b.port()));
    assert!(first["peer"].as_str().unwrap().starts_with("127.0.0."));
    b.stop().await;
}

/// A hook that does not answer in time, or is not there at all, fails closed: 0x87 / 0x05 by
/// default, 0x88 / 0x03 with `on_error = "unavailable"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_a_hook_that_is_down() {
    let (server, _seen) = hook_server().await;
    // A port nothing listens on.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for (on_error, v5, v3) in [
        (OnError::Deny, 0x87, 0x05),
        (OnError::Unavailable, 0x88, 0x03),
    ] {
        let b = TestBroker::start_with(|c| {
            c.auth.http = Some(hook(server, |h| {
                h.timeout_ms = 300;
                h.on_error = on_error;
            }))
        })
        .await;
        assert_eq!(connack(b.addr, V5, &login(V5, "s5", "slow", "x")).await, v5);
        assert_eq!(
            connack(b.addr, V311, &login(V311, "s3", "slow", "x")).await,
            v3
        );
        // 5xx is the hook failing too.
        assert_eq!(connack(b.addr, V5, &login(V5, "o", "oops", "x")).await, v5);
        // An answer that refuses is a refusal, whatever on_error says.
        assert_eq!(
            connack(b.addr, V5, &login(V5, "t", "teapot", "x")).await,
            0x87
        );
        b.stop().await;
        let b = TestBroker::start_with(|c| {
            c.auth.http = Some(hook(down, |h| h.on_error = on_error));
        })
        .await;
        assert_eq!(
            connack(b.addr, V5, &login(V5, "d5", "good", "pw")).await,
            v5
        );
        assert_eq!(
            connack(b.addr, V311, &login(V311, "d3", "good", "pw")).await,
            v3
        );
        b.stop().await;
    }
}

/// A login waiting on the hook holds up nobody else: another client logs in meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_holds_up_no_other_client() {
    let (server, seen) = hook_server().await;
    let b = TestBroker::start_with(|c| {
        c.auth.http = Some(hook(server, |h| h.timeout_ms = 20_000));
    })
    .await;
    let arrived = seen.held_arrived.notified();
    let addr = b.addr;
    let held = tokio::spawn(async move { connack(addr, V5, &login(V5, "h", "held", "x")).await });
    arrived.await;
    assert_eq!(connack(b.addr, V5, &login(V5, "g", "good", "pw")).await, 0);
    assert!(
        !held.is_finished(),
        "the held login was answered before its hook did"
    );
    seen.release.notify_one();
    assert_eq!(held.await.unwrap(), 0);
    b.stop().await;
}

/// The ACL hook is asked once per (client, action, topic) within `cache_ttl_secs`: PUBLISH
/// (v5 0x87 when denied) and SUBSCRIBE (0x87 / v3 0x80); a superuser is never asked; the
/// hook's per-client lists apply too; after the TTL the hook is asked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_hook_answers_are_cached() {
    let (server, seen) = hook_server().await;
    let b = TestBroker::start_with(|c| {
        c.auth.http = Some(hook(server, |h| {
            h.acl_url = Some(format!("http://{server}/mqtt/acl"));
            h.cache_ttl_secs = 1;
        }))
    })
    .await;
    let count = |client: &str, action: &str, topic: &str| {
        seen.acl
            .lock()
            .get(&(client.to_string(), action.to_string(), topic.to_string()))
            .copied()
            .unwrap_or(0)
    };
    let (mut sup, ack) = RawClient::handshake(b.addr, V5, &login(V5, "sup", "super", "x")).await;
    assert_eq!(ack.reason, 0);
    sup.subscribe(V5, "#", 1).await;
    let (mut g, ack) = RawClient::handshake(b.addr, V5, &login(V5, "g", "good", "pw")).await;
    assert_eq!(ack.reason, 0);
    for pkid in 1..=3 {
        g.send(&wire::publish(V5, "ok/a", 1, pkid, b"x")).await;
        assert_eq!(
            wire::parse_ack(&g.recv_expect(wire::PUBACK).await),
            (pkid, 0)
        );
        g.send(&wire::publish(V5, "no/a", 1, 10 + pkid, b"x")).await;
        assert_eq!(
            wire::parse_ack(&g.recv_expect(wire::PUBACK).await),
            (10 + pkid, 0x87)
        );
    }
    assert_eq!(count("g", "publish", "ok/a"), 1);
    assert_eq!(count("g", "publish", "no/a"), 1);
    assert_eq!(
        count("sup", "subscribe", "#"),
        0,
        "a superuser is not asked"
    );
    let codes = sub_raw(&mut g, V5, &[("ok/#", 1), ("no/#", 1), ("ok/#", 0)], &[]).await;
    assert_eq!(codes, [1, 0x87, 0]);
    assert_eq!(count("g", "subscribe", "ok/#"), 1);
    let (mut g3, ack) = RawClient::handshake(b.addr, V311, &login(V311, "g3", "good", "pw")).await;
    assert_eq!(ack.reason, 0);
    assert_eq!(sub_raw(&mut g3, V311, &[("no/#", 0)], &[]).await, [0x80]);
    // The hook's per-client lists: within them, the ACL hook still decides.
    let (mut l, ack) = RawClient::handshake(b.addr, V5, &login(V5, "l1", "limited", "x")).await;
    assert_eq!(ack.reason, 0);
    l.send(&wire::publish(V5, "devices/l1/up", 1, 1, b"x"))
        .await;
    assert_eq!(
        wire::parse_ack(&l.recv_expect(wire::PUBACK).await),
        (1, 0x87)
    );
    l.send(&wire::publish(V5, "ok/l", 1, 2, b"x")).await;
    assert_eq!(
        wire::parse_ack(&l.recv_expect(wire::PUBACK).await),
        (2, 0x87)
    );
    // After the TTL: asked again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    g.send(&wire::publish(V5, "ok/a", 1, 30, b"x")).await;
    assert_eq!(wire::parse_ack(&g.recv_expect(wire::PUBACK).await), (30, 0));
    assert_eq!(count("g", "publish", "ok/a"), 2);
    // A will's topic is asked about at CONNECT; an allowed will is published when its client
    // goes, a refused one is dropped then and there.
    for (id, topic) in [("w-no", "no/will"), ("w-ok", "ok/will")] {
        let c = login(V5, id, "good", "pw").will(wire::Will::new(topic, topic.as_bytes()));
        let (mut w, ack) = RawClient::handshake(b.addr, V5, &c).await;
        assert_eq!(ack.reason, 0);
        assert_eq!(count(id, "publish", topic), 1, "{topic} asked at CONNECT");
        w.send(&wire::disconnect_v5(0x04, &[])).await;
        w.expect_closed().await;
    }
    let got = crate::support::collect_until(&mut sup, V5, b"ok/will").await;
    assert!(got.iter().all(|r| r.topic != "no/will"), "{got:?}");
    // A later login under the same client id as another user does not read the first one's
    // cached answers: the hook is asked again.
    let (mut g2, ack) = RawClient::handshake(b.addr, V5, &login(V5, "g", "limited", "x")).await;
    assert_eq!(ack.reason, 0);
    g2.send(&wire::publish(V5, "ok/a", 1, 40, b"x")).await;
    assert_eq!(
        wire::parse_ack(&g2.recv_expect(wire::PUBACK).await),
        (40, 0x87)
    );
    assert_eq!(count("g", "publish", "ok/a"), 3);
    b.stop().await;
}

/// The chain with a password file: by default the file first, then the hook; with
/// `chain = ["http", "file"]` the hook first (its "ignore" hands over to the file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_order_with_the_hook() {
    let (server, seen) = hook_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut pw = PasswordFile::default();
    pw.set("alice", Hash::new(b"alice-pw", 100));
    pw.set("good", Hash::new(b"file-pw", 100));
    let pw_path = dir.path().join("passwd");
    pw.save(&pw_path).unwrap();
    for (chain, good_by_hook) in [
        (None, 0x86),
        (Some(vec![AuthMethod::Http, AuthMethod::File]), 0),
    ] {
        let pw_path = pw_path.clone();
        let b = TestBroker::start_with(|c| {
            c.auth.password_file = Some(pw_path);
            c.auth.http = Some(hook(server, |_| {}));
            c.auth.chain = chain.clone();
        })
        .await;
        let asked = seen.auth.lock().len();
        // The file knows alice: with the file first, the hook is not asked.
        assert_eq!(
            connack(b.addr, V5, &login(V5, "a", "alice", "alice-pw")).await,
            0
        );
        let hook_asked = seen.auth.lock().len() - asked;
        assert_eq!(hook_asked, usize::from(chain.is_some()), "{chain:?}");
        // "good" with the hook's password: the file (first) says wrong password.
        assert_eq!(
            connack(b.addr, V5, &login(V5, "g", "good", "pw")).await,
            good_by_hook,
            "{chain:?}"
        );
        // Unknown to the file: the hook decides.
        assert_eq!(
            connack(b.addr, V5, &login(V5, "m", "mallory", "x")).await,
            0x87
        );
        b.stop().await;
    }
}
