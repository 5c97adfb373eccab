//! Flow helpers on top of `wire` shared by the messaging tests: complete QoS 1/2 exchanges as
//! sender or receiver, persistent-session connects for both versions, and "fence" collection.
//! A fence is a last message from the same publisher: once it arrives, anything that should have
//! arrived before it has, so negative checks do not depend on a sleep.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use crate::wire::*;

/// How long a negative check ("nothing arrives") listens when no fence is possible.
pub const SILENCE: Duration = Duration::from_millis(800);

/// Both protocol versions every behavioural test runs for.
pub const VERSIONS: [u8; 2] = [V311, V5];

/// Session Expiry Interval used for v5 "persistent" sessions.
pub const PERSIST_SECS: u32 = 300;

/// A fresh non-zero packet identifier (flows here are completed before the next publish).
pub fn next_pkid() -> u16 {
    static N: AtomicU16 = AtomicU16::new(1);
    loop {
        let id = N.fetch_add(1, Ordering::Relaxed);
        if id != 0 {
            return id;
        }
    }
}

/// Version name for assertion messages.
pub fn vname(level: u8) -> &'static str {
    if level == V5 {
        "v5"
    } else {
        "v3.1.1"
    }
}

/// CONNECT for a session that outlives the connection: v3 Clean Session = `clean` (pass false to
/// keep the session); v5 Clean Start = `clean` with Session Expiry [`PERSIST_SECS`].
pub fn persistent_connect(level: u8, id: &str, clean: bool) -> Connect {
    let c = Connect::new(level, id).clean(clean);
    if level == V5 {
        c.props(prop_u32(SESSION_EXPIRY, PERSIST_SECS))
    } else {
        c
    }
}

/// Connects with [`persistent_connect`]; returns the client and Session Present.
pub async fn connect_persistent(
    addr: SocketAddr,
    level: u8,
    id: &str,
    clean: bool,
) -> (RawClient, bool) {
    let (c, ack) = RawClient::handshake(addr, level, &persistent_connect(level, id, clean)).await;
    (c, ack.session_present)
}

/// Sends SUBSCRIBE (`pkid`) and returns the SUBACK reason codes.
pub async fn sub_raw(
    c: &mut RawClient,
    level: u8,
    filters: &[(&str, u8)],
    props: &[u8],
) -> Vec<u8> {
    let pkid = next_pkid();
    c.send(&subscribe(level, pkid, filters, props)).await;
    let (got, reasons) = parse_suback(level, &c.recv_expect(SUBACK).await);
    assert_eq!(got, pkid, "SUBACK packet id");
    assert_eq!(reasons.len(), filters.len(), "one SUBACK code per filter");
    reasons
}

/// Subscribes to every filter at `qos` (one SUBSCRIBE each), asserting each is granted.
pub async fn sub_all(c: &mut RawClient, level: u8, filters: &[&str], qos: u8) {
    for f in filters {
        let r = sub_raw(c, level, &[(f, qos)], &[]).await;
        assert!(r[0] < 0x80, "subscription to {f} refused: {r:02x?}");
    }
}

/// Sends `p` and completes the sender side of its QoS flow (PUBACK, or PUBREC/PUBREL/PUBCOMP),
/// asserting success reason codes. `p.pkid` is replaced by a fresh one when QoS > 0 and it is 0.
pub async fn send_flow(c: &mut RawClient, mut p: Publish) {
    if p.qos > 0 && p.pkid == 0 {
        p.pkid = next_pkid();
    }
    c.send(&p.build()).await;
    match p.qos {
        0 => {}
        1 => {
            let (pkid, reason) = parse_ack(&c.recv_expect(PUBACK).await);
            assert_eq!(pkid, p.pkid, "PUBACK packet id");
            assert!(reason < 0x80, "PUBACK reason {reason:#04x}");
        }
        _ => {
            let (pkid, reason) = parse_ack(&c.recv_expect(PUBREC).await);
            assert_eq!(pkid, p.pkid, "PUBREC packet id");
            assert!(reason < 0x80, "PUBREC reason {reason:#04x}");
            c.send(&pubrel(p.pkid)).await;
            let (pkid, reason) = parse_ack(&c.recv_expect(PUBCOMP).await);
            assert_eq!(pkid, p.pkid, "PUBCOMP packet id");
            assert_eq!(reason, 0, "PUBCOMP reason");
        }
    }
}

/// Publishes `payload` on `topic` at `qos` and completes the flow.
pub async fn pub_msg(c: &mut RawClient, level: u8, topic: &str, qos: u8, payload: &[u8]) {
    send_flow(c, Publish::new(level, topic, payload).qos(qos, 0)).await;
}

/// Completes the receiver side for a PUBLISH already read: PUBACK, or PUBREC → PUBREL → PUBCOMP.
pub async fn ack_received(c: &mut RawClient, r: &Received) {
    match r.qos {
        0 => {}
        1 => c.send(&puback(r.pkid)).await,
        _ => {
            c.send(&pubrec(r.pkid)).await;
            let (pkid, _) = parse_ack(&c.recv_expect(PUBREL).await);
            assert_eq!(pkid, r.pkid, "PUBREL packet id");
            c.send(&pubcomp(r.pkid)).await;
        }
    }
}

/// Receives the next PUBLISH and completes its flow.
pub async fn recv_acked(c: &mut RawClient, level: u8) -> Received {
    let r = c.recv_publish(level).await;
    ack_received(c, &r).await;
    r
}

/// Receives and acknowledges PUBLISHes (answering PUBRELs, which may interleave with later
/// PUBLISHes) until one with payload `fence` arrives and every QoS 2 flow is complete; returns the
/// PUBLISHes before the fence.
pub async fn collect_until(c: &mut RawClient, level: u8, fence: &[u8]) -> Vec<Received> {
    let mut got = Vec::new();
    let mut awaiting_pubrel = Vec::new();
    let mut fenced = false;
    while !fenced || !awaiting_pubrel.is_empty() {
        let (first, body) = c.recv_packet().await;
        if first == PUBREL {
            let (pkid, _) = parse_ack(&body);
            awaiting_pubrel.retain(|p| *p != pkid);
            c.send(&pubcomp(pkid)).await;
            continue;
        }
        let r = parse_publish(level, first, &body);
        match r.qos {
            0 => {}
            1 => c.send(&puback(r.pkid)).await,
            _ => {
                c.send(&pubrec(r.pkid)).await;
                awaiting_pubrel.push(r.pkid);
            }
        }
        if r.payload == fence {
            fenced = true;
        } else {
            assert!(!fenced, "PUBLISH after the fence: {r:?}");
            got.push(r);
        }
    }
    got
}

/// Asserts that no packet at all arrives for [`SILENCE`].
pub async fn expect_nothing(c: &mut RawClient) {
    c.expect_silence(SILENCE).await;
}

/// Payloads as UTF-8 strings, for readable assertions.
pub fn payloads(got: &[Received]) -> Vec<String> {
    got.iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect()
}

/// Every value of property `id`, in wire order.
pub fn all_props(props: &Props, id: u8) -> Vec<PropValue> {
    props
        .iter()
        .filter(|(i, _)| *i == id)
        .map(|(_, v)| v.clone())
        .collect()
}

/// Properties of an ack body (PUBACK/PUBREC/PUBCOMP/SUBACK/UNSUBACK...) after `skip` bytes.
pub fn ack_props(body: &[u8], skip: usize) -> Props {
    if body.len() > skip {
        parse_props(&body[skip..])
    } else {
        Vec::new()
    }
}

/// A TLS connector trusting the PEM CA file `ca` (a raw TLS client for the broker's listeners).
pub fn tls_connector(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}
