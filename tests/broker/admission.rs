//! Admission and resource limits: the CONNECT rate per listener (`limits.max_connect_rate`,
//! `connect_burst`), the retained-message budget (`max_retained_messages`,
//! `max_retained_bytes`), the open file limit raised at start, and TLS files reloaded when they
//! change on disk.

use std::time::{Duration, Instant};

use tern::config::{ExtraListener, ListenerKind};

use crate::harness::{TestBroker, WAIT};
use crate::support::collect_until;
use crate::wire::*;

/// Sends a CONNECT at `level` and returns the CONNACK's code, and the client if it got in.
async fn try_connect(addr: std::net::SocketAddr, level: u8, id: &str) -> (u8, Option<RawClient>) {
    let (c, ack) = RawClient::try_handshake(addr, level, &Connect::new(level, id)).await;
    match ack.reason {
        0 => (0, Some(c)),
        code => (code, None),
    }
}

/// Connects at `level` until one is refused; returns how many got in first (kept open) and
/// the refusal's code. Bounded: a rate that never refuses fails the test.
async fn connect_until_refused(
    addr: std::net::SocketAddr,
    level: u8,
    kept: &mut Vec<RawClient>,
) -> (usize, u8) {
    for n in 0..1_000 {
        match try_connect(addr, level, &format!("storm-{level}-{n}-{}", rand_suffix())).await {
            (0, Some(c)) => kept.push(c),
            (code, _) => return (n, code),
        }
    }
    panic!("1,000 CONNECTs in a row were let through");
}

/// Retries a CONNECT until it is accepted, within [`WAIT`] (tokens come back at the rate).
async fn connect_once_refilled(addr: std::net::SocketAddr, level: u8, id: &str) -> RawClient {
    let deadline = Instant::now() + WAIT;
    loop {
        match try_connect(addr, level, id).await {
            (0, Some(c)) => return c,
            (code, _) => {
                assert!(
                    Instant::now() < deadline,
                    "still refused ({code:#04x}) after {WAIT:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Over `max_connect_rate` a v5 client gets CONNACK 0x9F Connection rate exceeded and a v3.1.1
/// client 0x03 Server unavailable, both closed; a burst of `connect_burst` gets in at once;
/// tokens come back at the rate; clients already connected are not touched; each listener has
/// its own bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_rate_refuses_over_the_burst_and_recovers() {
    let broker = TestBroker::start_with(|c| {
        c.limits.max_connect_rate = Some(1);
        c.limits.connect_burst = Some(5);
        c.listeners.push(ExtraListener {
            bind: "127.0.0.1".parse().unwrap(),
            ..ExtraListener::new(ListenerKind::Tcp, 0)
        });
    })
    .await;
    let started = Instant::now();
    let mut kept = Vec::new();
    let (admitted, code) = connect_until_refused(broker.addr, V5, &mut kept).await;
    assert_eq!(code, 0x9F, "v5 refusal");
    // The burst, plus what refilled meanwhile (1 a second).
    let refilled = started.elapsed().as_secs() as usize + 1;
    assert!(
        (5..=5 + refilled).contains(&admitted),
        "{admitted} let through with a burst of 5"
    );
    // v3.1.1 cannot say 0x9F: Server unavailable; the connection is closed after it.
    let mut v3 = RawClient::connect(broker.addr).await;
    let mut v3_code = None;
    for n in 0..20 {
        v3.send(&connect(V311, &format!("v3-{n}"))).await;
        let body = v3.recv_expect(CONNACK).await;
        let ack = parse_connack(V311, &body);
        if ack.reason != 0 {
            v3_code = Some(ack.reason);
            let after = v3.expect_closed().await;
            assert!(after.is_empty(), "{after:02x?}");
            break;
        }
        // A refilled token let this one in: try again on a new connection.
        kept.push(std::mem::replace(
            &mut v3,
            RawClient::connect(broker.addr).await,
        ));
    }
    assert_eq!(v3_code, Some(0x03), "v3.1.1 refusal");
    // The other listener's bucket is its own: still full.
    let other = broker.listener_addr(0);
    for n in 0..5 {
        let (code, c) = try_connect(other, V5, &format!("other-{n}")).await;
        assert_eq!(code, 0, "other listener, CONNECT {n}");
        kept.extend(c);
    }
    // Connected clients are not touched by refusals.
    for c in &mut kept {
        c.ping().await;
    }
    // A token comes back within a second: a retry gets in, v5 and v3.1.1 alike.
    connect_once_refilled(broker.addr, V5, "later-v5")
        .await
        .ping()
        .await;
    connect_once_refilled(broker.addr, V311, "later-v3")
        .await
        .ping()
        .await;
    broker.stop().await;
}

/// Publishes a retained message at QoS 1 and returns the PUBACK's reason (v3.1.1: 0).
async fn retain_qos1(c: &mut RawClient, level: u8, topic: &str, payload: &[u8]) -> u8 {
    let pkid = crate::support::next_pkid();
    c.send(
        &Publish::new(level, topic, payload)
            .qos(1, pkid)
            .retain(true)
            .build(),
    )
    .await;
    let body = c.recv_expect(PUBACK).await;
    let (got, reason) = parse_ack(&body);
    assert_eq!(got, pkid);
    reason
}

/// The retained messages a new subscriber to `{level}/#` gets, as (topic, payload), in
/// order; a fence message (not retained) published there after the subscription ends the list.
async fn retained_now(addr: std::net::SocketAddr, level: &str) -> Vec<(String, String)> {
    let mut sub = RawClient::connected(addr, V5, &format!("look-{}", rand_suffix())).await;
    sub.subscribe(V5, &format!("{level}/#"), 0).await;
    let mut publ = RawClient::connected(addr, V5, &format!("fence-{}", rand_suffix())).await;
    let fence = format!("{level}/fence");
    publ.send(&publish(V5, &fence, 0, 0, b"fence")).await;
    let got = collect_until(&mut sub, V5, b"fence").await;
    got.into_iter()
        .map(|r| {
            assert!(r.retain, "{r:?}");
            (r.topic, String::from_utf8_lossy(&r.payload).into_owned())
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(t, p)| (t.to_string(), p.to_string()))
        .collect()
}

/// `max_retained_messages` = 2, `$SYS` not counted: a third retained topic is refused with
/// PUBACK 0x97 (v5, not delivered) or delivered and not retained (v3.1.1, and v5 QoS 0);
/// replacing one at the limit works; deleting one makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_count_budget() {
    let broker = TestBroker::start_with(|c| {
        c.limits.max_retained_messages = Some(2);
        c.sys.interval_secs = 1;
    })
    .await;
    // $SYS messages are retained first, and take none of the budget.
    let mut sys = RawClient::connected(broker.addr, V5, "sys").await;
    sys.subscribe(V5, "$SYS/broker/version", 0).await;
    sys.recv_publish(V5).await;

    let mut live = RawClient::connected(broker.addr, V5, "live").await;
    live.subscribe(V5, "b/#", 0).await;
    let mut v5 = RawClient::connected(broker.addr, V5, "p5").await;
    let mut v3 = RawClient::connected(broker.addr, V311, "p3").await;
    assert!(retain_qos1(&mut v5, V5, "b/1", b"one").await < 0x80);
    assert!(retain_qos1(&mut v5, V5, "b/2", b"two").await < 0x80);
    assert_eq!(live.recv_publish(V5).await.payload, b"one");
    assert_eq!(live.recv_publish(V5).await.payload, b"two");
    // Full: a new topic at QoS 1 from v5 is refused and goes nowhere.
    assert_eq!(retain_qos1(&mut v5, V5, "b/3", b"three").await, 0x97);
    // QoS 2: PUBREC 0x97, and the flow ends there.
    let pkid = crate::support::next_pkid();
    v5.send(
        &Publish::new(V5, "b/3", b"three")
            .qos(2, pkid)
            .retain(true)
            .build(),
    )
    .await;
    assert_eq!(parse_ack(&v5.recv_expect(PUBREC).await), (pkid, 0x97));
    // v3.1.1 and v5 QoS 0: delivered, not retained.
    assert_eq!(retain_qos1(&mut v3, V311, "b/4", b"four").await, 0);
    v5.send(&Publish::new(V5, "b/5", b"five").retain(true).build())
        .await;
    let r = live.recv_publish(V5).await;
    assert_eq!((r.topic.as_str(), &r.payload[..]), ("b/4", &b"four"[..]));
    let r = live.recv_publish(V5).await;
    assert_eq!((r.topic.as_str(), &r.payload[..]), ("b/5", &b"five"[..]));
    // Replacing at the limit works.
    assert!(retain_qos1(&mut v5, V5, "b/1", b"uno").await < 0x80);
    assert_eq!(
        retained_now(broker.addr, "b").await,
        pairs(&[("b/1", "uno"), ("b/2", "two")])
    );
    // Deleting makes room for another topic.
    assert!(retain_qos1(&mut v5, V5, "b/2", b"").await < 0x80);
    assert!(retain_qos1(&mut v5, V5, "b/6", b"six").await < 0x80);
    assert_eq!(
        retained_now(broker.addr, "b").await,
        pairs(&[("b/1", "uno"), ("b/6", "six")])
    );
    // $SYS topics are still retained, outside the budget.
    let mut late = RawClient::connected(broker.addr, V5, "late-sys").await;
    late.subscribe(V5, "$SYS/broker/version", 0).await;
    assert!(late.recv_publish(V5).await.retain);
    broker.stop().await;
}

/// `max_retained_bytes` = 10 (payload bytes): a new topic that would pass it is refused; a
/// replacement that does not grow the total is fine, one that grows it past is refused;
/// deleting frees the bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_bytes_budget() {
    let broker = TestBroker::start_with(|c| c.limits.max_retained_bytes = Some(10)).await;
    let mut v5 = RawClient::connected(broker.addr, V5, "p5").await;
    assert!(retain_qos1(&mut v5, V5, "c/1", b"123456").await < 0x80);
    assert_eq!(retain_qos1(&mut v5, V5, "c/2", b"12345").await, 0x97);
    assert!(retain_qos1(&mut v5, V5, "c/2", b"1234").await < 0x80);
    // At 10 of 10: a replacement of the same size, or smaller, still works.
    assert!(retain_qos1(&mut v5, V5, "c/1", b"abcdef").await < 0x80);
    assert_eq!(retain_qos1(&mut v5, V5, "c/1", b"abcdefg").await, 0x97);
    assert!(retain_qos1(&mut v5, V5, "c/1", b"ab").await < 0x80);
    // 6 of 10: room for 4 more.
    assert!(retain_qos1(&mut v5, V5, "c/3", b"wxyz").await < 0x80);
    assert_eq!(retain_qos1(&mut v5, V5, "c/4", b"z").await, 0x97);
    assert!(retain_qos1(&mut v5, V5, "c/2", b"").await < 0x80);
    assert!(retain_qos1(&mut v5, V5, "c/4", b"z").await < 0x80);
    assert_eq!(
        retained_now(broker.addr, "c").await,
        pairs(&[("c/1", "ab"), ("c/3", "wxyz"), ("c/4", "z")])
    );
    broker.stop().await;
}

/// Retained messages read back from the store at start are all kept, even past a budget
/// lowered meanwhile; only new topics are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_budget_keeps_what_the_store_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let with_store = |c: &mut tern::Config| {
        c.persistence.enabled = true;
        c.persistence.path = store.clone();
    };
    let broker = TestBroker::start_with(with_store).await;
    let mut v5 = RawClient::connected(broker.addr, V5, "p5").await;
    for t in ["d/1", "d/2", "d/3"] {
        assert!(retain_qos1(&mut v5, V5, t, t.as_bytes()).await < 0x80);
    }
    drop(v5);
    broker.stop().await;

    let broker = TestBroker::start_with(|c| {
        with_store(c);
        c.limits.max_retained_messages = Some(2);
    })
    .await;
    assert_eq!(
        retained_now(broker.addr, "d").await,
        pairs(&[("d/1", "d/1"), ("d/2", "d/2"), ("d/3", "d/3")])
    );
    let mut v5 = RawClient::connected(broker.addr, V5, "p5").await;
    assert_eq!(retain_qos1(&mut v5, V5, "d/4", b"new").await, 0x97);
    assert!(retain_qos1(&mut v5, V5, "d/1", b"replaced").await < 0x80);
    broker.stop().await;
}

/// The binary raises its open file limit to the hard limit at start and logs both; connect
/// rate refusals and retained budget refusals are counted in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_and_the_file_limit_logged() {
    use crate::ops::Scrape;
    let dir = tempfile::tempdir().unwrap();
    let b = crate::child::ChildBroker::start_with(
        dir.path(),
        false,
        "fsync",
        "[limits]\nmax_connect_rate = 1\nmax_retained_messages = 1\n",
    );
    let line = b.wait_log("open file limit (RLIMIT_NOFILE) raised", 1);
    assert!(line.contains("soft=") && line.contains("hard="), "{line}");
    let mut kept = Vec::new();
    let (_, code) = connect_until_refused(b.addr, V5, &mut kept).await;
    assert_eq!(code, 0x9F);
    let mut p = connect_once_refilled(b.addr, V5, "p").await;
    assert!(retain_qos1(&mut p, V5, "e/1", b"x").await < 0x80);
    assert_eq!(retain_qos1(&mut p, V5, "e/2", b"x").await, 0x97);
    let m = Scrape::take(&b).await;
    assert!(m.get("tern_connections_refused_total", &["reason_code=\"0x9F\""]) >= 1.0);
    assert!(m.get("tern_limit_hits_total", &["limit=\"max_connect_rate\""]) >= 1.0);
    assert_eq!(
        m.get(
            "tern_limit_hits_total",
            &["limit=\"max_retained_messages\""]
        ),
        1.0
    );
    b.wait_log("retained message not kept", 1);
    b.kill9();
}

/// The certificate a TLS handshake with the listener on `port` presents (DER), trusting the
/// CAs in the PEM file `cas`.
async fn presented_certificate(port: u16, cas: &std::path::Path) -> Option<Vec<u8>> {
    let connector = crate::support::tls_connector(cas);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.ok()?;
    let certs = tls.get_ref().1.peer_certificates()?;
    Some(certs.first()?.to_vec())
}

/// The DER of the first certificate in a PEM file.
fn der_of(pem: &std::path::Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_file(pem)
        .unwrap()
        .to_vec()
}

/// Waits (bounded) until a handshake presents `want`.
async fn wait_presented(port: u16, cas: &std::path::Path, want: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if presented_certificate(port, cas).await.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never presented"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A certificate and key renewed on disk the way certbot and cert-manager do it (new files
/// renamed over the old ones) are presented by the next handshakes without SIGHUP; a bad file
/// renamed in keeps the running certificate, logged, and a good one after it is taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_replaced_on_disk_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    tern::certs::generate(&live, &[]).unwrap();
    let (cert, key) = (live.join("server.pem"), live.join("server.key"));
    let extra = format!(
        "[[listeners]]\nkind = \"tls\"\nbind = \"127.0.0.1\"\nport = 0\ncert = {cert:?}\nkey = {key:?}\ncert_watch_secs = 1\n",
    );
    let b = crate::child::ChildBroker::start_with(dir.path(), false, "fsync", &extra);
    let port = b
        .wait_log("kind=Tls", 1)
        .split("address=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .unwrap()
        .port();
    // The client trusts the old and the renewed CA, so it sees which one is presented.
    let renewal = dir.path().join("renewal");
    tern::certs::generate(&renewal, &[]).unwrap();
    let cas = dir.path().join("cas.pem");
    let mut both = std::fs::read(live.join("ca.pem")).unwrap();
    both.extend(std::fs::read(renewal.join("ca.pem")).unwrap());
    std::fs::write(&cas, both).unwrap();
    let old = der_of(&cert);
    assert_eq!(presented_certificate(port, &cas).await, Some(old));
    let mut before = RawClient::connected(b.addr, V5, "before").await;

    // Renewal: new files written beside the old ones, renamed over them.
    let new = der_of(&renewal.join("server.pem"));
    std::fs::rename(renewal.join("server.key"), &key).unwrap();
    std::fs::rename(renewal.join("server.pem"), &cert).unwrap();
    wait_presented(port, &cas, &new).await;
    b.wait_log("TLS certificate and key changed on disk: reloaded", 1);

    // A broken certificate file: the running one stays, and says why.
    let broken = dir.path().join("broken.pem");
    std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    std::fs::rename(&broken, &cert).unwrap();
    let warning = b.wait_log("TLS files changed on disk but cannot be used", 1);
    assert!(warning.contains("server.pem"), "{warning}");
    assert_eq!(presented_certificate(port, &cas).await, Some(new.clone()));
    let tls_ca = std::fs::read(renewal.join("ca.pem")).unwrap();
    assert!(crate::tls::tls_connects(port, tls_ca, None).await);

    // The next good file is taken again.
    let third = dir.path().join("third");
    tern::certs::generate(&third, &[]).unwrap();
    let mut all = std::fs::read(&cas).unwrap();
    all.extend(std::fs::read(third.join("ca.pem")).unwrap());
    std::fs::write(&cas, all).unwrap();
    let newest = der_of(&third.join("server.pem"));
    std::fs::rename(third.join("server.key"), &key).unwrap();
    std::fs::rename(third.join("server.pem"), &cert).unwrap();
    wait_presented(port, &cas, &newest).await;
    before.ping().await;
    b.kill9();
}

/// The HTTPS operations listener (`[http] cert`/`key`) takes renewed files too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_certificate_replaced_on_disk_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    tern::certs::generate(&live, &[]).unwrap();
    let (cert, key) = (live.join("server.pem"), live.join("server.key"));
    let config = dir.path().join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "[listener]\nbind = \"127.0.0.1\"\nport = 0\n[http]\nport = 0\ncert = {cert:?}\nkey = {key:?}\ncert_watch_secs = 1\n"
        ),
    )
    .unwrap();
    let b = crate::child::ChildBroker::spawn(&config, Duration::from_secs(30))
        .unwrap_or_else(|log| panic!("tern did not start:\n{}", log.join("\n")));
    let renewal = dir.path().join("renewal");
    tern::certs::generate(&renewal, &[]).unwrap();
    let cas = dir.path().join("cas.pem");
    let mut both = std::fs::read(live.join("ca.pem")).unwrap();
    both.extend(std::fs::read(renewal.join("ca.pem")).unwrap());
    std::fs::write(&cas, both).unwrap();
    assert_eq!(
        presented_certificate(b.http.port(), &cas).await,
        Some(der_of(&cert))
    );
    let new = der_of(&renewal.join("server.pem"));
    std::fs::rename(renewal.join("server.key"), &key).unwrap();
    std::fs::rename(renewal.join("server.pem"), &cert).unwrap();
    wait_presented(b.http.port(), &cas, &new).await;
    b.kill9();
}

/// The rate is checked before authentication: once the bucket is empty, a CONNECT with a
/// wrong password gets 0x9F (not 0x86: its password is never looked at), and a right one
/// waits for a token like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_rate_is_checked_before_the_password() {
    use tern::auth::passwd::{Hash, PasswordFile};
    let dir = tempfile::tempdir().unwrap();
    let mut pw = PasswordFile::default();
    pw.set("dev", Hash::new(b"secret", 100));
    let path = dir.path().join("passwd");
    pw.save(&path).unwrap();
    let broker = TestBroker::start_with(|c| {
        c.auth.password_file = Some(path);
        c.limits.max_connect_rate = Some(1);
        c.limits.connect_burst = Some(1);
    })
    .await;
    let wrong = |id: &str| Connect::new(V5, id).username("dev").password(b"wrong");
    let deadline = Instant::now() + WAIT;
    // The first wrong password takes the token and is refused for itself (0x86); the next,
    // at once, meets the empty bucket. A token refilled in between (a slow machine) just
    // means another round.
    loop {
        let (_, first) = RawClient::try_handshake(broker.addr, V5, &wrong("w1")).await;
        let (_, second) = RawClient::try_handshake(broker.addr, V5, &wrong("w2")).await;
        if (first.reason, second.reason) == (0x86, 0x9F) {
            break;
        }
        assert!(Instant::now() < deadline, "{first:?} then {second:?}");
    }
    let right = Connect::new(V5, "ok").username("dev").password(b"secret");
    let deadline = Instant::now() + WAIT;
    loop {
        let (mut c, ack) = RawClient::try_handshake(broker.addr, V5, &right).await;
        match ack.reason {
            0 => {
                c.ping().await;
                break;
            }
            0x9F => assert!(Instant::now() < deadline, "never let in"),
            other => panic!("refused {other:#04x}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker.stop().await;
}
