//! Mosquitto configuration files run by Tern: a translated file opens only the listeners it
//! names (its WebSocket listener on every path), and the settings Tern has for Mosquitto's
//! directives behave as Mosquitto's: capath (listeners and bridges), tls_version,
//! use_subject_as_username, max_queued_bytes, message_size_limit, persistent_client_expiration.

use std::path::Path;
use std::sync::Arc;

use rumqttc::QoS;
use tern::config::{Direction, ExtraListener, IdentitySource, ListenerKind, TlsVersion};

use crate::harness::{TestBroker, WAIT};
use crate::rmq::V4;
use crate::support::*;
use crate::wire::*;

/// A broker running `mosquitto_conf` as `tern --config` would, every port made 0.
async fn mosquitto_broker(mosquitto_conf: &str) -> TestBroker {
    let t = tern::config::mosquitto::translate_text(mosquitto_conf, "m.conf").unwrap();
    assert!(t.refusals(false).is_empty(), "{:?}", t.notes);
    let mut config = t.config;
    for l in &mut config.listeners {
        l.port = 0;
    }
    TestBroker::start_with(move |c| {
        config.http = c.http.clone();
        *c = config;
    })
    .await
}

/// A file with its own listeners: Tern's default listener stays closed, the first named
/// listener is the broker's address, and the WebSocket listener takes any path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_translated_file_opens_only_its_listeners() {
    let b = mosquitto_broker(
        "listener 1883 127.0.0.1\nallow_anonymous true\nlistener 9001 127.0.0.1\nprotocol websockets\n",
    )
    .await;
    assert_eq!(b.addr, b.listener_addr(0), "the first [[listeners]] entry");
    let mut sub = V4::connect(b.listener_addr(0).port(), "sub").await;
    sub.subscribe("m/#", QoS::AtLeastOnce).await;
    for (i, path) in ["/", "/mqtt", "/any/path"].into_iter().enumerate() {
        let mut ws = crate::ws::raw_ws(b.listener_addr(1).port(), path, Some("mqtt"))
            .await
            .unwrap();
        ws.frame(&Connect::new(V311, &format!("ws{i}")).build())
            .await;
        assert_eq!(ws.packet().await.0, CONNACK);
        ws.frame(&publish(V311, "m/x", 0, 0, path.as_bytes())).await;
        let p = sub.next_publish().await;
        assert_eq!(&p.payload[..], path.as_bytes());
    }
    b.stop().await;
}

/// A client certificate signed by a CA of its own, with subject `dn` (in this order): (CA PEM,
/// cert PEM, key PEM).
fn client_cert(dn: &[(rcgen::DnType, &str)]) -> (String, Vec<u8>, Vec<u8>) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    // Empty, so the subject holds `dn` in its order (the default holds a CN first).
    client.distinguished_name = rcgen::DistinguishedName::new();
    for (ty, v) in dn {
        client.distinguished_name.push(ty.clone(), *v);
    }
    let key = KeyPair::generate().unwrap();
    let cert = client.signed_by(&key, &ca).unwrap();
    (
        ca.pem(),
        cert.pem().into_bytes(),
        key.serialize_pem().into_bytes(),
    )
}

/// A broker with one TLS listener (certificates of `tern gen-certs` in `dir`), set by `tweak`.
async fn tls_listener(dir: &Path, tweak: impl FnOnce(&mut ExtraListener)) -> TestBroker {
    tls_broker(dir, tweak, |_| {}).await
}

/// [`tls_listener`], with the rest of the configuration set by `more`.
async fn tls_broker(
    dir: &Path,
    tweak: impl FnOnce(&mut ExtraListener),
    more: impl FnOnce(&mut tern::Config),
) -> TestBroker {
    tern::certs::generate(dir, &[]).unwrap();
    let mut l = ExtraListener {
        bind: "127.0.0.1".parse().unwrap(),
        cert: Some(dir.join("server.pem")),
        key: Some(dir.join("server.key")),
        ..ExtraListener::new(ListenerKind::Tls, 0)
    };
    tweak(&mut l);
    TestBroker::start_with(move |c| {
        c.listeners.push(l);
        more(c);
    })
    .await
}

/// `capath`: client certificates are verified against the CAs of a directory's files; files
/// without a certificate are skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ca_dir_verifies_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let cas = dir.path().join("cas");
    std::fs::create_dir(&cas).unwrap();
    std::fs::write(cas.join("README"), "not a certificate\n").unwrap();
    let (own_ca, cert, key) = client_cert(&[(rcgen::DnType::CommonName, "dev")]);
    std::fs::write(cas.join("own.pem"), own_ca).unwrap();
    let ca_dir = cas.clone();
    let b = tls_listener(dir.path(), move |l| l.client_ca_dir = Some(ca_dir)).await;
    let port = b.listener_addr(0).port();
    let server_ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    assert!(crate::tls::tls_connects(port, server_ca.clone(), Some((cert, key))).await);
    assert!(
        !crate::tls::tls_connects(port, server_ca, None).await,
        "no certificate"
    );
    b.stop().await;
}

/// Whether a raw TLS handshake speaking only `version` succeeds against `port`.
async fn handshake_with(
    port: u16,
    ca: &Path,
    version: &'static rustls::SupportedProtocolVersion,
) -> bool {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"mqtt".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("handshake answered")
        .is_ok()
}

/// `tls_version tlsv1.3`: a client speaking only TLS 1.2 is refused, TLS 1.3 gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_tls_version_refuses_older_clients() {
    let dir = tempfile::tempdir().unwrap();
    let b = tls_listener(dir.path(), |l| l.min_tls_version = TlsVersion::Tls13).await;
    let port = b.listener_addr(0).port();
    let ca = dir.path().join("ca.pem");
    assert!(!handshake_with(port, &ca, &rustls::version::TLS12).await);
    assert!(handshake_with(port, &ca, &rustls::version::TLS13).await);
    b.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let b = tls_listener(dir.path(), |_| {}).await;
    let port = b.listener_addr(0).port();
    let ca = dir.path().join("ca.pem");
    assert!(handshake_with(port, &ca, &rustls::version::TLS12).await);
    b.stop().await;
}

/// `use_subject_as_username`: the whole subject, in OpenSSL's RFC 2253 form (last RDN first,
/// `,` escaped), is the user name the ACL file sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_subject_is_the_user_name_for_the_acl() {
    let dir = tempfile::tempdir().unwrap();
    let (own_ca, cert, key) = client_cert(&[
        (rcgen::DnType::CountryName, "GB"),
        (rcgen::DnType::OrganizationName, "Acme"),
        (rcgen::DnType::CommonName, "dev,1"),
    ]);
    let ca_file = dir.path().join("clients.pem");
    std::fs::write(&ca_file, own_ca).unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "user CN=dev\\,1,O=Acme,C=GB\ntopic readwrite allowed/#\n",
    )
    .unwrap();
    let b = tls_broker(
        dir.path(),
        move |l| {
            l.client_ca = Some(ca_file);
            l.identity_as_username = IdentitySource::Subject;
        },
        move |c| c.auth.acl_file = Some(acl),
    )
    .await;
    let port = b.listener_addr(0).port();
    let server_ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let mut c = V4::connect_tls(port, "dev", server_ca, Some((cert, key))).await;
    c.subscribe("allowed/#", QoS::AtLeastOnce).await;
    c.subscribe("denied/#", QoS::AtLeastOnce).await;
    for topic in ["denied/x", "allowed/x"] {
        c.client
            .publish(topic, QoS::AtLeastOnce, false, topic.as_bytes().to_vec())
            .await
            .unwrap();
    }
    let p = c.next_publish().await;
    assert_eq!(
        p.topic, "allowed/x",
        "only what the ACL grants that subject"
    );
    b.stop().await;
}

/// `max_queued_bytes`: an offline session queues payload bytes up to the bound; beyond it new
/// messages are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_queued_bytes_bounds_an_offline_queue() {
    let b = TestBroker::start_with(|c| c.limits.max_queued_bytes = Some(250)).await;
    let (mut s, _) = connect_persistent(b.addr, V311, "q", false).await;
    sub_all(&mut s, V311, &["q/#"], 1).await;
    s.send(&disconnect()).await;
    s.expect_closed().await;
    let mut p = RawClient::connected(b.addr, V311, "p").await;
    for i in 1..=3u8 {
        pub_msg(&mut p, V311, "q/t", 1, &[b'0' + i; 100]).await;
    }
    let (mut s, present) = connect_persistent(b.addr, V311, "q", false).await;
    assert!(present);
    pub_msg(&mut p, V311, "q/t", 1, b"fence").await;
    let got = collect_until(&mut s, V311, b"fence").await;
    assert_eq!(
        got.len(),
        2,
        "two of 100 bytes fit in 250: {:?}",
        payloads(&got)
    );
    b.stop().await;
}

/// `message_size_limit`: a larger payload is acknowledged (v5: 0x83) and dropped, the
/// connection stays; smaller ones pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_payload_size_drops_larger_messages() {
    let b = TestBroker::start_with(|c| c.limits.max_payload_size = Some(1000)).await;
    let mut sub = RawClient::connected(b.addr, V311, "sub").await;
    sub_all(&mut sub, V311, &["big/#"], 1).await;
    for v in [V311, V5] {
        let mut p = RawClient::connected(b.addr, v, "p").await;
        p.send(&publish(v, "big/x", 1, 7, &[0u8; 1001])).await;
        let (pkid, reason) = parse_ack(&p.recv_expect(PUBACK).await);
        assert_eq!(pkid, 7);
        let expected = if v == V5 { 0x83 } else { 0 };
        assert_eq!(reason, expected, "{}", vname(v));
        p.ping().await;
        pub_msg(&mut p, v, "big/x", 1, &[1u8; 1000]).await;
        pub_msg(&mut p, v, "big/x", 1, b"fence").await;
        let got = collect_until(&mut sub, V311, b"fence").await;
        assert_eq!(got.len(), 1, "only the message within the limit");
        assert_eq!(got[0].payload.len(), 1000);
    }
    b.stop().await;
}

/// `persistent_client_expiration`: a session outlives its connection at most that long,
/// whatever the client asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_expiry_ends_sessions_the_client_wanted_longer() {
    let b = TestBroker::start_with(|c| {
        c.session.max_expiry_secs = Some(1);
        c.sys.interval_secs = 1;
    })
    .await;
    let mut watch = V4::connect(b.port(), "watch").await;
    watch
        .subscribe("$SYS/broker/clients/total", QoS::AtMostOnce)
        .await;
    let asks = Connect::new(V5, "long")
        .clean(true)
        .props(prop_u32(SESSION_EXPIRY, 3600));
    let (mut c, _) = RawClient::handshake(b.addr, V5, &asks).await;
    sub_all(&mut c, V5, &["l/#"], 1).await;
    // Sessions, connected or not: 2 while "long" is connected (it stays until this is seen),
    // then 1 only once its session has ended, however late a $SYS tick comes.
    while &watch.next_publish().await.payload[..] != b"2" {}
    c.send(&disconnect()).await;
    c.expect_closed().await;
    while &watch.next_publish().await.payload[..] != b"1" {}
    let again = Connect::new(V5, "long")
        .clean(false)
        .props(prop_u32(SESSION_EXPIRY, 3600));
    let (_c, ack) = RawClient::handshake(b.addr, V5, &again).await;
    assert!(!ack.session_present, "ended after 1 s, not 3600");
    b.stop().await;
}

/// `bridge_capath`: the bridge checks the remote's certificate against the CAs of a directory
/// and forwards over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_trusts_the_cas_of_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let remote = tls_listener(dir.path(), |_| {}).await;
    let remote_tls = remote.listener_addr(0).port();
    let cas = dir.path().join("cas");
    std::fs::create_dir(&cas).unwrap();
    std::fs::copy(dir.path().join("ca.pem"), cas.join("dev-ca.pem")).unwrap();
    let mut cfg = crate::bridge::bridge(
        "tls",
        remote_tls,
        vec![crate::bridge::rule("t/#", Direction::Out, 1, "", "")],
    );
    cfg.capath = Some(cas);
    let edge = TestBroker::start_with(move |c| c.bridge.push(cfg)).await;
    let mut cloud = V4::connect(remote.port(), "cloud").await;
    cloud.subscribe("t/#", QoS::AtLeastOnce).await;
    crate::bridge::wait_connected(edge.port(), "tls").await;
    let mut p = RawClient::connected(edge.addr, V311, "p").await;
    pub_msg(&mut p, V311, "t/x", 1, b"over tls").await;
    assert_eq!(&cloud.next_publish().await.payload[..], b"over tls");
    edge.stop().await;
    remote.stop().await;
}

/// `tern --config FILE.conf`: lines whose absence changes security or delivery refuse the file
/// with exit status 2, every one listed with its file and line; `--ignore-unsupported` lets it
/// through, still listing them; harmless lines are warnings either way.
#[test]
fn unsupported_lines_refuse_a_mosquitto_file_unless_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("m.conf");
    std::fs::write(
        &conf,
        "listener 1883 127.0.0.1\nallow_anonymous true\nauth_plugin /x.so\npid_file /run/m.pid\n\
         mount_point site/\n",
    )
    .unwrap();
    let tern = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            err,
        )
    };
    let path = conf.to_str().unwrap();
    let (code, _, err) = tern(&["--config", path, "check-config"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("{path} line 3: error: `auth_plugin /x.so`")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{path} line 5: error: `mount_point site/`")),
        "{err}"
    );
    assert!(err.contains("2 line(s)"), "{err}");
    let (code, _, err) = tern(&["--config", path, "--ignore-unsupported", "check-config"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("line 3: error") && err.contains("line 4: warning"),
        "{err}"
    );
    // import-mosquitto: the TOML on stdout (loadable), the notes on stderr, exit 2 likewise.
    let (code, toml, err) = tern(&["import-mosquitto", path]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("line 5: error"), "{err}");
    let c = tern::Config::from_toml(&toml, "imported").unwrap();
    assert!(!c.listener.enabled);
    assert_eq!(c.listeners[0].port, 1883);
    assert!(
        toml.contains(&format!("# {path} line 1: listener 1883 127.0.0.1\n")),
        "{toml}"
    );
    let (code, _, _) = tern(&["import-mosquitto", path, "--ignore-unsupported"]);
    assert_eq!(code, Some(0));
}
