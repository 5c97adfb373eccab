//! TLS listeners: rumqttc over TLS (trusting the development CA from `tern gen-certs`) talks to
//! plain TCP clients through the same broker; a plaintext client on the TLS port and a client
//! that never finishes its handshake cost only themselves.

use std::time::Duration;

use tern::config::{ExtraListener, ListenerKind};

use crate::harness::TestBroker;
use crate::rmq::V4;
use crate::wire::*;

/// A broker with a TLS listener on a free port, certificates from `tern gen-certs`.
async fn tls_broker(dir: &std::path::Path) -> TestBroker {
    mtls_broker(dir, None, true).await
}

/// Like [`tls_broker`], verifying client certificates against `client_ca` (required or not).
async fn mtls_broker(
    dir: &std::path::Path,
    client_ca: Option<std::path::PathBuf>,
    required: bool,
) -> TestBroker {
    tern::certs::generate(dir, &[]).unwrap();
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    TestBroker::start_with(move |c| {
        c.listeners.push(ExtraListener {
            bind: "127.0.0.1".parse().unwrap(),
            cert: Some(cert),
            key: Some(key),
            client_ca,
            require_client_cert: required,
            ..ExtraListener::new(ListenerKind::Tls, 0)
        });
    })
    .await
}

/// Whether a TLS client (trusting `ca`, presenting `client_auth`) gets a CONNACK.
pub async fn tls_connects(port: u16, ca: Vec<u8>, client_auth: Option<(Vec<u8>, Vec<u8>)>) -> bool {
    let mut opts = rumqttc::MqttOptions::new("probe", "127.0.0.1", port);
    opts.set_transport(rumqttc::Transport::tls(
        ca,
        client_auth,
        Some(vec![b"mqtt".to_vec()]),
    ));
    let (_client, mut el) = rumqttc::AsyncClient::new(opts, 10);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, el.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))) => return true,
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return false,
            Err(_) => panic!("no answer in time"),
        }
    }
}

/// A client certificate signed by a CA of its own, expired or not: (CA PEM, cert PEM, key PEM).
fn own_client_cert(expired: bool) -> (String, Vec<u8>, Vec<u8>) {
    use rcgen::{
        date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    client
        .distinguished_name
        .push(rcgen::DnType::CommonName, "device-7");
    if expired {
        client.not_before = date_time_ymd(2000, 1, 1);
        client.not_after = date_time_ymd(2001, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = client.signed_by(&key, &ca).unwrap();
    (
        ca.pem(),
        cert.pem().into_bytes(),
        key.serialize_pem().into_bytes(),
    )
}

/// Mutual TLS: with `require_client_cert`, a client certificate from the configured CA gets in;
/// none, one from another CA, or an expired one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_verifies_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (own_ca, expired_cert, expired_key) = own_client_cert(true);
    // Client certificates from `gen-certs`' CA and from the test's own CA (for the expired one).
    let cas = dir.path().join("client-cas.pem");
    let certs = tempfile::tempdir().unwrap();
    tern::certs::generate(certs.path(), &[]).unwrap();
    let gen_ca = std::fs::read_to_string(certs.path().join("ca.pem")).unwrap();
    std::fs::write(&cas, format!("{gen_ca}{own_ca}")).unwrap();
    let b = mtls_broker(dir.path(), Some(cas), true).await;
    let port = b.listener_addr(0).port();
    let server_ca = ca(dir.path());
    let read = |f: &str| std::fs::read(certs.path().join(f)).unwrap();
    assert!(
        tls_connects(
            port,
            server_ca.clone(),
            Some((read("client.pem"), read("client.key")))
        )
        .await
    );
    assert!(
        !tls_connects(port, server_ca.clone(), None).await,
        "no certificate"
    );
    let other = tempfile::tempdir().unwrap();
    tern::certs::generate(other.path(), &[]).unwrap();
    let other_read = |f: &str| std::fs::read(other.path().join(f)).unwrap();
    assert!(
        !tls_connects(
            port,
            server_ca.clone(),
            Some((other_read("client.pem"), other_read("client.key")))
        )
        .await,
        "certificate from an unknown CA"
    );
    assert!(
        !tls_connects(port, server_ca.clone(), Some((expired_cert, expired_key))).await,
        "expired certificate"
    );
    // The broker carries on.
    assert!(
        tls_connects(
            port,
            server_ca,
            Some((read("client.pem"), read("client.key")))
        )
        .await
    );
    b.stop().await;
}

/// With `require_client_cert = false`, a client without a certificate gets in too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    tern::certs::generate(certs.path(), &[]).unwrap();
    let b = mtls_broker(dir.path(), Some(certs.path().join("ca.pem")), false).await;
    let port = b.listener_addr(0).port();
    let read = |f: &str| std::fs::read(certs.path().join(f)).unwrap();
    assert!(tls_connects(port, ca(dir.path()), None).await);
    assert!(
        tls_connects(
            port,
            ca(dir.path()),
            Some((read("client.pem"), read("client.key")))
        )
        .await
    );
    b.stop().await;
}

/// The port of a child broker's TLS listener, from its log.
fn tls_port(b: &crate::child::ChildBroker) -> u16 {
    b.wait_log("kind=Tls", 1)
        .split("address=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .expect("TLS listener address")
        .port()
}

fn ca(dir: &std::path::Path) -> Vec<u8> {
    std::fs::read(dir.join("ca.pem")).unwrap()
}

/// A TLS client and a TCP client exchange messages both ways through one broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_tcp_clients_talk() {
    let dir = tempfile::tempdir().unwrap();
    let b = tls_broker(dir.path()).await;
    let tls_port = b.listener_addr(0).port();
    let mut secure = V4::connect_tls(tls_port, "secure", ca(dir.path()), None).await;
    let mut plain = V4::connect(b.port(), "plain").await;
    secure
        .subscribe("to/secure", rumqttc::QoS::AtLeastOnce)
        .await;
    plain.subscribe("to/plain", rumqttc::QoS::AtLeastOnce).await;
    plain
        .client
        .publish(
            "to/secure",
            rumqttc::QoS::AtLeastOnce,
            false,
            b"over tls".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(&secure.next_publish().await.payload[..], b"over tls");
    secure
        .client
        .publish(
            "to/plain",
            rumqttc::QoS::AtLeastOnce,
            false,
            b"from tls".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(&plain.next_publish().await.payload[..], b"from tls");
    b.stop().await;
}

/// Plain MQTT on the TLS port is dropped; a TLS client on the same port keeps working, and so
/// does one connected before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_on_the_tls_port_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let b = tls_broker(dir.path()).await;
    let addr = b.listener_addr(0);
    let mut before = V4::connect_tls(addr.port(), "before", ca(dir.path()), None).await;
    before.subscribe("t", rumqttc::QoS::AtMostOnce).await;
    let mut raw = RawClient::connect(addr).await;
    raw.send(&connect(V311, "plaintext")).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), raw.expect_closed()).await;
    assert!(closed.is_ok(), "plaintext client not dropped");
    let after = V4::connect_tls(addr.port(), "after", ca(dir.path()), None).await;
    after
        .client
        .publish("t", rumqttc::QoS::AtMostOnce, false, b"still".to_vec())
        .await
        .unwrap();
    assert_eq!(&before.next_publish().await.payload[..], b"still");
    b.stop().await;
}

/// A client that connects to the TLS port and sends nothing does not delay the next one (the
/// handshake runs in the connection's own task).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_does_not_delay_others() {
    let dir = tempfile::tempdir().unwrap();
    let b = tls_broker(dir.path()).await;
    let addr = b.listener_addr(0);
    let _stalled: Vec<tokio::net::TcpStream> = {
        let mut v = Vec::new();
        for _ in 0..8 {
            v.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        v
    };
    // Well inside the 10 s handshake timeout the stalled ones still have.
    let started = tokio::time::Instant::now();
    let _ok = tokio::time::timeout(
        Duration::from_secs(5),
        V4::connect_tls(addr.port(), "prompt", ca(dir.path()), None),
    )
    .await
    .expect("a TLS client got through while others stall");
    assert!(started.elapsed() < Duration::from_secs(5));
    b.stop().await;
}

/// A client that does not trust the broker's CA cannot connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = tls_broker(dir.path()).await;
    let other = tempfile::tempdir().unwrap();
    tern::certs::generate(other.path(), &[]).unwrap();
    let mut opts = rumqttc::MqttOptions::new("distrust", "127.0.0.1", b.listener_addr(0).port());
    opts.set_transport(rumqttc::Transport::tls(
        std::fs::read(other.path().join("ca.pem")).unwrap(),
        None,
        None,
    ));
    let (_client, mut el) = rumqttc::AsyncClient::new(opts, 10);
    let first = tokio::time::timeout(Duration::from_secs(10), el.poll())
        .await
        .expect("an answer in time");
    assert!(
        first.is_err(),
        "connected without trusting the CA: {first:?}"
    );
    b.stop().await;
}

/// `identity_as_username = "cn"`: the verified certificate's common name becomes the client's
/// user name, whatever its CONNECT says (seen in the broker's connect log line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_identity_becomes_the_username() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    tern::certs::generate(&certs, &[]).unwrap();
    let extra = format!(
        "[[listeners]]\nkind = \"tls\"\nbind = \"127.0.0.1\"\nport = 0\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\nidentity_as_username = \"cn\"\n",
        certs.join("server.pem"),
        certs.join("server.key"),
        certs.join("ca.pem"),
    );
    let b = crate::child::ChildBroker::start_with(dir.path(), false, "fsync", &extra);
    let port = tls_port(&b);
    let read = |f: &str| std::fs::read(certs.join(f)).unwrap();
    let mut opts = rumqttc::MqttOptions::new("device", "127.0.0.1", port);
    opts.set_credentials("claimed-name", "pw");
    opts.set_transport(rumqttc::Transport::tls(
        read("ca.pem"),
        Some((read("client.pem"), read("client.key"))),
        Some(vec![b"mqtt".to_vec()]),
    ));
    let c = V4::connect_with(opts).await;
    let connected = b.wait_log("client_id=device", 1);
    assert!(
        connected.contains("username=\"tern-client\""),
        "{connected}"
    );
    drop(c);
    b.kill9();
}

/// SIGHUP reads the certificate and key files again: new handshakes use the new ones, a
/// connection made before keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_certificates_without_dropping_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    tern::certs::generate(&certs, &[]).unwrap();
    let extra = format!(
        "[[listeners]]\nkind = \"tls\"\nbind = \"127.0.0.1\"\nport = 0\ncert = {:?}\nkey = {:?}\n",
        certs.join("server.pem"),
        certs.join("server.key"),
    );
    let b = crate::child::ChildBroker::start_with(dir.path(), false, "fsync", &extra);
    let port = tls_port(&b);
    let old_ca = std::fs::read(certs.join("ca.pem")).unwrap();
    let mut before = V4::connect_tls(port, "before", old_ca.clone(), None).await;
    before.subscribe("r", rumqttc::QoS::AtMostOnce).await;

    // A new CA, server certificate and key in the same files.
    tern::certs::generate(&certs, &[]).unwrap();
    let new_ca = std::fs::read(certs.join("ca.pem")).unwrap();
    assert_ne!(old_ca, new_ca);
    b.hup();
    b.wait_log("TLS certificate and key reloaded", 1);
    assert!(
        tls_connects(port, new_ca.clone(), None).await,
        "new certificate not in use"
    );
    assert!(
        !tls_connects(port, old_ca, None).await,
        "old certificate still in use"
    );
    let after = V4::connect_tls(port, "after", new_ca, None).await;
    after
        .client
        .publish("r", rumqttc::QoS::AtMostOnce, false, b"alive".to_vec())
        .await
        .unwrap();
    assert_eq!(&before.next_publish().await.payload[..], b"alive");
    b.kill9();
}
