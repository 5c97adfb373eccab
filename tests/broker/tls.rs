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
    tern::certs::generate(dir, &[]).unwrap();
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    TestBroker::start_with(move |c| {
        c.listeners.push(ExtraListener {
            kind: ListenerKind::Tls,
            bind: "127.0.0.1".parse().unwrap(),
            port: 0,
            cert: Some(cert),
            key: Some(key),
            handshake_timeout_secs: 10,
        });
    })
    .await
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
