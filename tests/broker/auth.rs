//! Authentication and authorization against a real broker, for MQTT 3.1.1 and 5: password
//! files, anonymous access per listener, certificate logins, ACLs on publish, subscribe,
//! delivery, retained messages and wills, slowed refusals, and reload (SIGHUP) with good and
//! broken files.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tern::auth::passwd::{Hash, PasswordFile};
use tern::config::{ExtraListener, ListenerKind};

use crate::child::ChildBroker;
use crate::harness::{TestBroker, WAIT};
use crate::rmq::V4;
use crate::support::collect_until;
use crate::wire::{self, Connect, RawClient, Will, V311, V5};

/// Users and passwords of the test's password file.
const USERS: [(&str, &str); 3] = [
    ("alice", "alice-pw"),
    ("bob", "bob-pw"),
    ("admin", "admin-pw"),
];

const ACL: &str = "\
# anonymous clients: only public news
topic read public/#

user alice
topic readwrite alice/#
topic deny alice/secret
topic read public/#

user bob
topic write public/#

user admin
topic readwrite #
topic readwrite $SYS/#

pattern readwrite devices/%c/#
";

/// Writes the password file (few iterations: tests need not be slow) and the ACL into `dir`.
fn write_files(dir: &Path) -> (PathBuf, PathBuf) {
    let mut pw = PasswordFile::default();
    for (u, p) in USERS {
        pw.set(u, Hash::new(p.as_bytes(), 100));
    }
    let (pw_path, acl_path) = (dir.join("passwd"), dir.join("acl"));
    pw.save(&pw_path).unwrap();
    std::fs::write(&acl_path, ACL).unwrap();
    (pw_path, acl_path)
}

async fn secured(dir: &Path, more: impl FnOnce(&mut tern::Config)) -> TestBroker {
    let (pw, acl) = write_files(dir);
    TestBroker::start_with(|c| {
        c.auth.password_file = Some(pw);
        c.auth.acl_file = Some(acl);
        more(c);
    })
    .await
}

fn login(level: u8, id: &str, user: Option<&str>, pw: Option<&str>) -> Connect {
    let mut c = Connect::new(level, id);
    if let Some(u) = user {
        c = c.username(u);
    }
    if let Some(p) = pw {
        c = c.password(p.as_bytes());
    }
    c
}

/// The CONNACK code for a login on `addr`.
async fn connack(addr: std::net::SocketAddr, level: u8, connect: &Connect) -> u8 {
    RawClient::try_handshake(addr, level, connect)
        .await
        .1
        .reason
}

/// A connected client logged in as `user` (its password from [`USERS`]).
async fn as_user(addr: std::net::SocketAddr, level: u8, id: &str, user: &str) -> RawClient {
    let pw = USERS.iter().find(|(u, _)| *u == user).unwrap().1;
    let (c, ack) = RawClient::handshake(addr, level, &login(level, id, Some(user), Some(pw))).await;
    assert_eq!(ack.reason, 0, "{user} logs in");
    c
}

/// Right and wrong passwords, unknown users and anonymous clients get the codes the issue
/// names: v3 0x04 / v5 0x86 for bad credentials, v3 0x05 / v5 0x87 for not authorized.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_file_logins_v3_and_v5() {
    let dir = tempfile::tempdir().unwrap();
    let b = secured(dir.path(), |_| {}).await;
    for (level, bad, unauthorized) in [(V311, 0x04, 0x05), (V5, 0x86, 0x87)] {
        let ok = login(level, "a1", Some("alice"), Some("alice-pw"));
        assert_eq!(connack(b.addr, level, &ok).await, 0);
        let wrong = login(level, "a2", Some("alice"), Some("nope"));
        assert_eq!(connack(b.addr, level, &wrong).await, bad);
        let unknown = login(level, "a3", Some("mallory"), Some("x"));
        assert_eq!(connack(b.addr, level, &unknown).await, bad);
        let no_password = login(level, "a4", Some("bob"), None);
        assert_eq!(connack(b.addr, level, &no_password).await, bad);
        let anonymous = login(level, "a5", None, None);
        assert_eq!(connack(b.addr, level, &anonymous).await, unauthorized);
    }
    // rumqttc sees the same.
    let mut opts = rumqttc::MqttOptions::new("rq", "127.0.0.1", b.port());
    opts.set_credentials("bob", "bob-pw");
    let _bob = V4::connect_with(opts).await;
    b.stop().await;
}

/// With a password file, anonymous access is off by default; a listener can turn it back on
/// for itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_access_per_listener() {
    let dir = tempfile::tempdir().unwrap();
    let b = secured(dir.path(), |c| {
        c.listeners.push(ExtraListener {
            bind: "127.0.0.1".parse().unwrap(),
            allow_anonymous: Some(true),
            ..ExtraListener::new(ListenerKind::Tcp, 0)
        });
    })
    .await;
    let anonymous = login(V5, "anon", None, None);
    assert_eq!(connack(b.addr, V5, &anonymous).await, 0x87);
    assert_eq!(connack(b.listener_addr(0), V5, &anonymous).await, 0);
    // Credentials are still checked there.
    let wrong = login(V5, "w", Some("alice"), Some("nope"));
    assert_eq!(connack(b.listener_addr(0), V5, &wrong).await, 0x86);
    b.stop().await;
}

/// Publishing where the ACL does not allow it: v5 PUBACK/PUBREC 0x87, v3 acknowledged and
/// dropped; nobody receives it. Allowed topics, and `%c` patterns, go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_publishes_are_refused_or_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let b = secured(dir.path(), |_| {}).await;
    let mut admin = as_user(b.addr, V5, "admin", "admin").await;
    admin.subscribe(V5, "#", 1).await;
    let mut a5 = as_user(b.addr, V5, "alice5", "alice").await;
    let mut a3 = as_user(b.addr, V311, "alice3", "alice").await;
    for (qos, ack) in [(1, wire::PUBACK), (2, wire::PUBREC)] {
        a5.send(&wire::publish(V5, "bob/x", qos, 7, b"no")).await;
        let (pkid, reason) = wire::parse_ack(&a5.recv_expect(ack).await);
        assert_eq!((pkid, reason), (7, 0x87), "v5 QoS {qos}");
        a3.send(&wire::publish(V311, "bob/x", qos, 8, b"no")).await;
        let (pkid, reason) = wire::parse_ack(&a3.recv_expect(ack).await);
        assert_eq!((pkid, reason), (8, 0), "v3 QoS {qos}");
        if qos == 2 {
            a3.send(&wire::packet(wire::PUBREL, &[0, 8])).await;
            a3.recv_expect(wire::PUBCOMP).await;
        }
    }
    a5.send(&wire::publish(V5, "alice/ok", 1, 9, b"yes")).await;
    assert_eq!(wire::parse_ack(&a5.recv_expect(wire::PUBACK).await).1, 0);
    a3.send(&wire::publish(V311, "devices/alice3/t", 0, 0, b"pattern"))
        .await;
    a3.send(&wire::publish(V311, "devices/other/t", 0, 0, b"not mine"))
        .await;
    a3.send(&wire::publish(V311, "alice/fence", 0, 0, b"fence")) // after a3 publishes
        .await;
    let got = collect_until(&mut admin, V5, b"fence").await;
    let topics: Vec<&str> = got.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(topics, ["alice/ok", "devices/alice3/t"]);
    b.stop().await;
}

/// A `#` subscriber gets only what it may read; a filter it may read nothing under is refused
/// (v5 0x87, v3 0x80); retained messages are filtered too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_receive_only_what_they_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let b = secured(dir.path(), |_| {}).await;
    let mut admin = as_user(b.addr, V5, "admin", "admin").await;
    for t in ["alice/keep", "alice/secret", "other/r"] {
        admin
            .send(
                &wire::Publish::new(V5, t, b"retained")
                    .qos(1, 1)
                    .retain(true)
                    .build(),
            )
            .await;
        admin.recv_expect(wire::PUBACK).await;
    }
    for level in [V5, V311] {
        let mut alice = as_user(b.addr, level, &format!("alice-{level}"), "alice").await;
        let codes = crate::support::sub_raw(
            &mut alice,
            level,
            &[
                ("#", 0),
                ("alice/secret", 0),
                ("other/#", 0),
                ("alice/+", 0),
            ],
            &[],
        )
        .await;
        let refused = if level == V5 { 0x87 } else { 0x80 };
        assert_eq!(codes, [0, refused, refused, 0], "v{level}");
        for t in [
            "alice/a",
            "alice/secret",
            "public/news",
            "other/x",
            "$SYS/x",
            "alice/fence",
        ] {
            admin.send(&wire::publish(V5, t, 0, 0, t.as_bytes())).await;
        }
        let got = collect_until(&mut alice, level, b"alice/fence").await;
        let mut topics: Vec<&str> = got.iter().map(|r| r.topic.as_str()).collect();
        topics.dedup();
        // Retained: alice/keep (once per matching filter at most); never alice/secret, other/r.
        assert!(topics.contains(&"alice/keep"), "{topics:?}");
        topics.retain(|t| *t != "alice/keep");
        assert_eq!(topics, ["alice/a", "public/news"], "v{level}");
    }
    // Anonymous clients are not allowed in here at all; the ACL's anonymous section is used
    // through a listener that lets them in.
    b.stop().await;
}

/// A will to a topic the client may not publish to is never published; one it may is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wills_to_forbidden_topics_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let b = secured(dir.path(), |_| {}).await;
    let mut admin = as_user(b.addr, V311, "admin", "admin").await;
    admin.subscribe(V311, "#", 0).await;
    for (topic, delivered) in [("bob/will", false), ("alice/will", true)] {
        let connect =
            login(V311, "willer", Some("alice"), Some("alice-pw")).will(Will::new(topic, b"gone"));
        let (c, ack) = RawClient::handshake(b.addr, V311, &connect).await;
        assert_eq!(ack.reason, 0);
        drop(c); // no DISCONNECT: the will is due
                 // Taking the client id over waits until the old connection is gone, will handled.
        let again = login(V311, "willer", Some("alice"), Some("alice-pw"));
        let (_c, ack) = RawClient::handshake(b.addr, V311, &again).await;
        assert_eq!(ack.reason, 0);
        admin
            .send(&wire::publish(V311, "alice/after", 0, 0, b"fence"))
            .await;
        let got = collect_until(&mut admin, V311, b"fence").await;
        let wills = got.iter().filter(|r| r.topic == topic).count();
        assert_eq!(wills, usize::from(delivered), "{topic}: {got:?}");
    }
    b.stop().await;
}

/// A mutual-TLS client whose certificate names it logs in without a password (its common name
/// is the user name the ACL sees); without a certificate there is no way in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_logins() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    tern::certs::generate(&certs, &[]).unwrap();
    std::fs::write(
        dir.path().join("acl2"),
        "user tern-client\ntopic readwrite devices/#\n",
    )
    .unwrap();
    let (pw, _) = write_files(dir.path());
    let c2 = certs.clone();
    let acl = dir.path().join("acl2");
    let b = TestBroker::start_with(move |c| {
        c.auth.password_file = Some(pw);
        c.auth.acl_file = Some(acl);
        c.listeners.push(ExtraListener {
            bind: "127.0.0.1".parse().unwrap(),
            cert: Some(c2.join("server.pem")),
            key: Some(c2.join("server.key")),
            client_ca: Some(c2.join("ca.pem")),
            require_client_cert: false,
            identity_as_username: tern::config::IdentitySource::Cn,
            ..ExtraListener::new(ListenerKind::Tls, 0)
        });
    })
    .await;
    let port = b.listener_addr(0).port();
    let read = |f: &str| std::fs::read(certs.join(f)).unwrap();
    let mut device = V4::connect_tls(
        port,
        "dev",
        read("ca.pem"),
        Some((read("client.pem"), read("client.key"))),
    )
    .await;
    device
        .subscribe("devices/#", rumqttc::QoS::AtLeastOnce)
        .await;
    device
        .client
        .publish("devices/1", rumqttc::QoS::AtLeastOnce, false, "hi")
        .await
        .unwrap();
    assert_eq!(&device.next_publish().await.payload[..], b"hi");
    // No certificate (optional on this listener): anonymous, which is off.
    let mut opts = rumqttc::MqttOptions::new("nocert", "127.0.0.1", port);
    opts.set_transport(rumqttc::Transport::tls(read("ca.pem"), None, None));
    let (_c, mut el) = rumqttc::AsyncClient::new(opts, 10);
    match tokio::time::timeout(WAIT, el.poll())
        .await
        .expect("answered")
    {
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, rumqttc::ConnectReturnCode::NotAuthorized)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    b.stop().await;
}

/// Failed logins from one address are answered later and later; a correct login from another
/// address is not held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_slowed_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let b = secured(dir.path(), |_| {}).await;
    let port = b.port();
    let attacker: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let wrong = login(V5, "brute", Some("alice"), Some("guess"));
    let mut last = Duration::ZERO;
    for _ in 0..5 {
        let start = Instant::now();
        assert_eq!(connack(attacker, V5, &wrong).await, 0x86);
        last = start.elapsed();
    }
    // 100 ms, doubled per failure: the fifth waits at least 1.6 s.
    assert!(last >= Duration::from_millis(1600), "{last:?}");
    // Another address (127.0.0.2 is loopback too) with the right password gets straight in.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(([127, 0, 0, 2], 0).into()).unwrap();
    let stream = socket.connect(attacker).await.unwrap();
    let mut other = RawClient::from_stream(stream);
    let start = Instant::now();
    other
        .send(&login(V5, "legit", Some("alice"), Some("alice-pw")).build())
        .await;
    let ack = wire::parse_connack(V5, &other.recv_expect(wire::CONNACK).await);
    assert_eq!(ack.reason, 0);
    assert!(
        start.elapsed() < Duration::from_millis(1600),
        "{:?}",
        start.elapsed()
    );
    b.stop().await;
}

/// Bad password and ACL files stop the start with the file and line; on SIGHUP, new files
/// apply to connected clients' next messages, and a broken file keeps the running rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_checked_at_start_and_reloaded_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (pw, acl) = write_files(dir.path());
    let extra = format!(
        "[auth]\npassword_file = \"{}\"\nacl_file = \"{}\"\n",
        pw.display(),
        acl.display()
    );
    // At start: a broken ACL line is an error naming the file and line.
    let broken = dir.path().join("broken-acl");
    std::fs::write(&broken, "user alice\ntopic read a/#/b\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["check-config"])
        .env("TERN_AUTH__ACL_FILE", format!("\"{}\"", broken.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("broken-acl") && err.contains("line 2"),
        "{err}"
    );
    let bad_pw = dir.path().join("broken-pw");
    std::fs::write(&bad_pw, "alice:plaintext\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["check-config"])
        .env(
            "TERN_AUTH__PASSWORD_FILE",
            format!("\"{}\"", bad_pw.display()),
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken-pw") && err.contains("line 1"), "{err}");
    // Starting the broker itself with it fails the same way, before listening.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["--port", "0", "--http-port", "0"])
        .env(
            "TERN_AUTH__PASSWORD_FILE",
            format!("\"{}\"", bad_pw.display()),
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("broken-pw") && err.contains("line 1"), "{err}");

    let b = ChildBroker::start_with(dir.path(), false, "fsync", &extra);
    let mut admin = as_user(b.addr, V5, "admin", "admin").await;
    admin.subscribe(V5, "#", 0).await;
    let mut alice = as_user(b.addr, V5, "alice", "alice").await;
    alice.subscribe(V5, "alice/#", 0).await;
    alice.send(&wire::publish(V5, "news/1", 1, 1, b"x")).await;
    assert_eq!(
        wire::parse_ack(&alice.recv_expect(wire::PUBACK).await).1,
        0x87
    );
    // Alice may now publish news and no longer read alice/private.
    std::fs::write(
        &acl,
        "user alice\ntopic readwrite alice/#\ntopic deny alice/private\ntopic write news/#\nuser admin\ntopic readwrite #\n",
    )
    .unwrap();
    b.hup();
    b.wait_log("password and ACL files reloaded", 1);
    alice.send(&wire::publish(V5, "news/1", 1, 2, b"x")).await;
    assert_eq!(wire::parse_ack(&alice.recv_expect(wire::PUBACK).await).1, 0);
    for t in ["alice/private", "alice/open"] {
        admin.send(&wire::publish(V5, t, 0, 0, b"m")).await;
    }
    let got = alice.recv_publish(V5).await;
    assert_eq!(got.topic, "alice/open");
    // A broken file on reload: logged with file and line, the rules above stay.
    std::fs::write(&acl, "user alice\ntopic readwrite alice/#\nbogus line\n").unwrap();
    b.hup();
    let logged = b.wait_log("not reloaded", 1);
    assert!(logged.contains("line 3"), "{logged}");
    alice.send(&wire::publish(V5, "news/2", 1, 3, b"x")).await;
    assert_eq!(wire::parse_ack(&alice.recv_expect(wire::PUBACK).await).1, 0);
    // New logins use the reloaded password file too.
    let mut pwf = PasswordFile::load(&pw).unwrap();
    pwf.set("carol", Hash::new(b"carol-pw", 100));
    pwf.save(&pw).unwrap();
    std::fs::write(&acl, ACL).unwrap();
    b.hup();
    b.wait_log("password and ACL files reloaded", 2);
    let carol = login(V5, "carol", Some("carol"), Some("carol-pw"));
    assert_eq!(connack(b.addr, V5, &carol).await, 0);
    b.terminate();
}

/// `tern passwd` creates, updates and deletes users like `mosquitto_passwd`, writing `$7$`
/// hashes the broker accepts.
#[test]
fn tern_passwd_edits_password_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    let f = file.to_str().unwrap();
    let tern = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
            .arg("passwd")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert_eq!(
        tern(&["-c", "-b", "-I", "1000", f, "dev1", "one"]).0,
        Some(0)
    );
    assert_eq!(tern(&["-b", "-I", "1000", f, "dev2", "two"]).0, Some(0));
    assert_eq!(tern(&["-b", "-I", "1000", f, "dev1", "uno"]).0, Some(0));
    let pw = PasswordFile::load(&file).unwrap();
    assert_eq!(pw.len(), 2);
    assert!(pw.get("dev1").unwrap().verify(b"uno"));
    assert!(pw.get("dev2").unwrap().verify(b"two"));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("dev1:$7$1000$"), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "only the owner may read it: {mode:o}");
    }
    assert_eq!(tern(&["-D", f, "dev1"]).0, Some(0));
    assert!(PasswordFile::load(&file).unwrap().get("dev1").is_none());
    let (code, err) = tern(&["-D", f, "nobody"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("nobody"), "{err}");
    let (code, err) = tern(&[f, "dev3", "pw"]);
    assert_eq!(
        code,
        Some(1),
        "a password on the command line needs -b: {err}"
    );
}

/// With anonymous access off, clients without valid credentials get nothing in or out, however
/// they order or mangle their bytes: PUBLISH and SUBSCRIBE before CONNECT, pipelined after a
/// refused CONNECT (anonymous, wrong password, user name only, MQTT 3.1), and random packets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_in_or_out_without_credentials() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let b = secured(dir.path(), |_| {}).await;
    let mut admin = as_user(b.addr, V5, "admin", "admin").await;
    admin
        .send(
            &wire::Publish::new(V5, "secret/retained", b"r")
                .qos(1, 1)
                .retain(true)
                .build(),
        )
        .await;
    admin.recv_expect(wire::PUBACK).await;
    admin.subscribe(V5, "#", 0).await;
    let attempts: Vec<(u8, Vec<u8>)> = vec![
        (V311, Vec::new()),
        (V311, login(V311, "x1", None, None).build()),
        (V5, login(V5, "x2", None, None).build()),
        (V5, login(V5, "x3", Some("alice"), Some("wrong")).build()),
        (V311, login(V311, "x4", Some("alice"), None).build()),
        (V311, login(wire::V31, "x5", None, None).build()),
        (
            V5,
            login(V5, "x6", Some("nobody"), Some("alice-pw")).build(),
        ),
    ];
    for (level, connect) in attempts {
        let mut c = RawClient::connect(b.addr).await;
        let bytes = [
            connect,
            wire::publish(level, "leak/in", 0, 0, b"leak"),
            wire::publish(level, "leak/in", 1, 5, b"leak"),
            wire::subscribe(level, 2, &[("#", 0), ("secret/#", 1)], &[]),
        ]
        .concat();
        let _ = c.try_send(&bytes).await;
        for (first, body) in c.expect_closed().await {
            assert!(
                first == wire::CONNACK && body.get(1).is_some_and(|r| *r != 0),
                "only a refusal may come back: {first:#04x} {body:02x?}"
            );
        }
    }
    // Random packets, seeded so a failure repeats.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7e51);
    for i in 0..100 {
        let mut c = RawClient::connect(b.addr).await;
        let mut bytes = Vec::new();
        for _ in 0..rng.random_range(1..6) {
            let body: Vec<u8> = (0..rng.random_range(0..40)).map(|_| rng.random()).collect();
            let first = match rng.random_range(0..4) {
                0 => wire::CONNECT,
                1 => wire::PUBLISH | (rng.random_range(0..3u8) << 1),
                2 => wire::SUBSCRIBE,
                _ => rng.random(),
            };
            bytes.extend(wire::packet(first, &body));
        }
        let _ = c.try_send(&bytes).await;
        for (first, body) in c.expect_closed().await {
            assert!(
                first == wire::CONNACK && body.get(1).is_some_and(|r| *r != 0),
                "attempt {i}: only a refusal may come back: {first:#04x} {body:02x?}"
            );
        }
    }
    // Nothing reached the subscriber: after the retained message its subscription brought, the
    // next thing it sees is its own fence.
    admin
        .send(&wire::publish(V5, "admin/fence", 0, 0, b"fence"))
        .await;
    let got = collect_until(&mut admin, V5, b"fence").await;
    let topics: Vec<&str> = got.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(topics, ["secret/retained"]);
    b.stop().await;
}

/// With nothing to authenticate with, the broker is open and says so at start; with a password
/// file it does not.
#[test]
fn an_open_broker_warns_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let open = ChildBroker::start(dir.path(), false, "fsync");
    open.wait_log("no authentication configured: any client may connect", 1);
    open.terminate();
    let dir = tempfile::tempdir().unwrap();
    let (pw, _) = write_files(dir.path());
    let extra = format!("[auth]\npassword_file = \"{}\"\n", pw.display());
    let closed = ChildBroker::start_with(dir.path(), false, "fsync", &extra);
    closed.wait_log("MQTT listener ready", 1);
    assert_eq!(closed.log_count("no authentication configured"), 0);
    closed.terminate();
}

/// A queue in the ACL: a subscription to `$queue/{name}` is checked as one to the queue's
/// filter (alice may read `alice/#`, bob may not: v5 0x87, 3.1.1 0x80), and each job is
/// checked as it is handed out: alice never gets `alice/secret`, which her ACL denies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_checked_by_their_filter() {
    let dir = tempfile::tempdir().unwrap();
    let b = secured(dir.path(), |c| {
        c.queues.push(tern::config::QueueConfig {
            name: "alice-jobs".into(),
            filter: "alice/#".into(),
            max_messages: 100,
            max_bytes: 1 << 20,
            overflow: tern::config::Overflow::Reject,
            strategy: None,
        });
    })
    .await;
    for level in [V5, V311] {
        let mut bob = as_user(b.addr, level, &format!("bob-{level}"), "bob").await;
        let codes =
            crate::support::sub_raw(&mut bob, level, &[("$queue/alice-jobs", 1)], &[]).await;
        let refused = if level == V5 { 0x87 } else { 0x80 };
        assert_eq!(codes, [refused], "v{level}");
        let mut alice = as_user(b.addr, level, &format!("alice-{level}"), "alice").await;
        let codes =
            crate::support::sub_raw(&mut alice, level, &[("$queue/alice-jobs", 1)], &[]).await;
        assert_eq!(codes, [1], "v{level}");
        let mut admin = as_user(b.addr, V5, &format!("admin-{level}"), "admin").await;
        for t in ["alice/1", "alice/secret", "alice/2"] {
            crate::support::pub_msg(&mut admin, V5, t, 1, t.as_bytes()).await;
        }
        for want in ["alice/1", "alice/2"] {
            let r = crate::support::recv_acked(&mut alice, level).await;
            assert_eq!(r.topic, want, "v{level}");
        }
        alice.send(&wire::disconnect()).await;
        admin.send(&wire::disconnect()).await;
    }
    b.stop().await;
}
