//! PROXY protocol listeners (`proxy_protocol = true`): v1 and v2 headers written by the test
//! before MQTT, on tcp, tls, ws and wss listeners of the real binary; the address the header
//! names is what the admin API and the "client connected" log line show. A missing, invalid or
//! incomplete header closes the connection (counted); v2 LOCAL and v1 UNKNOWN keep the socket's
//! address; a verified certificate CN in a v2 header names the user only where the listener
//! trusts it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::child::ChildBroker;
use crate::harness::{TestBroker, WAIT};
use crate::support::{pub_msg, recv_acked};
use crate::wire::*;

const TOKEN: &str = "proxy-admin-token";

/// The real binary with the admin API on; `listener` more `[listener]` keys, `extra` more
/// sections.
fn start(dir: &Path, listener: &str, extra: &str) -> ChildBroker {
    let token = dir.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let config = dir.join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "[listener]\nbind = \"127.0.0.1\"\nport = 0\n{listener}\n\n[http]\nport = 0\nadmin_token_file = {token:?}\n\n{extra}"
        ),
    )
    .unwrap();
    ChildBroker::spawn(&config, Duration::from_secs(30))
        .unwrap_or_else(|log| panic!("tern did not start:\n{}", log.join("\n")))
}

/// The address of the `[[listeners]]` entry of `kind` (`Tls`, `Ws`...), from the start log.
fn listener_addr(b: &ChildBroker, kind: &str) -> SocketAddr {
    for n in 1.. {
        let line = b.wait_log("MQTT listener ready", n);
        let field = |key: &str| {
            line.split(key)
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_string)
        };
        if field(" kind=").as_deref() == Some(kind) {
            return field(" address=").unwrap().parse().unwrap();
        }
    }
    unreachable!("wait_log fails first")
}

/// One admin API GET; the body as JSON (and asserts 200).
async fn admin_get(http: SocketAddr, path: &str) -> Value {
    let mut s = TcpStream::connect(http).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: tern\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut raw))
        .await
        .expect("HTTP answer in time")
        .unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "GET {path}: {raw}");
    let body = raw.split_once("\r\n\r\n").unwrap().1;
    let (a, b) = (body.find('{').unwrap(), body.rfind('}').unwrap());
    serde_json::from_str(&body[a..=b]).unwrap()
}

/// The sum of a metric's series whose line starts with `series` (name and labels).
async fn metric(http: SocketAddr, series: &str) -> f64 {
    let mut s = TcpStream::connect(http).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

/// Waits (bounded) until the series reaches `want`: connections are counted as they close.
async fn wait_metric(http: SocketAddr, series: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = metric(http, series).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} is {got}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `peer` the admin API shows for `client_id`.
async fn peer_of(http: SocketAddr, client_id: &str) -> String {
    let c = admin_get(http, &format!("/api/v1/clients/{client_id}")).await;
    c["peer"].as_str().unwrap().to_string()
}

/// A v1 header for a TCP client at `source`.
fn v1(source: SocketAddr) -> Vec<u8> {
    let (proto, dst) = match source {
        SocketAddr::V4(_) => ("TCP4", "10.0.0.1"),
        SocketAddr::V6(_) => ("TCP6", "2001:db8::1"),
    };
    format!(
        "PROXY {proto} {} {dst} {} 1883\r\n",
        source.ip(),
        source.port()
    )
    .into_bytes()
}

/// A v2 header: `command` 1 (PROXY) for a TCP client at `source`, 0 (LOCAL), with `tlvs`.
fn v2(command: u8, source: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    let family = match source {
        SocketAddr::V4(a) => {
            block.extend_from_slice(&a.ip().octets());
            block.extend_from_slice(&[10, 0, 0, 1]);
            0x11
        }
        SocketAddr::V6(a) => {
            block.extend_from_slice(&a.ip().octets());
            block.extend_from_slice(
                &"2001:db8::1"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
            );
            0x21
        }
    };
    block.extend_from_slice(&source.port().to_be_bytes());
    block.extend_from_slice(&1883u16.to_be_bytes());
    block.extend_from_slice(tlvs);
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | command);
    h.push(family);
    h.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
    h.extend_from_slice(&block);
    h
}

fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut t = vec![kind];
    t.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
    t.extend_from_slice(value);
    t
}

/// `PP2_TYPE_SSL` as HAProxy's `send-proxy-v2-ssl-cn` writes it: client flags (SSL 0x01,
/// certificate on this connection 0x02), the verify result (0: verified), version and CN.
fn ssl_tlv(client: u8, verify: u32, cn: &str) -> Vec<u8> {
    let mut v = vec![client];
    v.extend_from_slice(&verify.to_be_bytes());
    v.extend(tlv(0x21, b"TLSv1.3"));
    v.extend(tlv(0x22, cn.as_bytes()));
    tlv(0x20, &v)
}

/// Sends a CONNECT over any stream and returns the CONNACK's reason code (`None`: closed
/// without one).
async fn connack_over<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    connect: &Connect,
) -> Option<u8> {
    s.write_all(&connect.build()).await.ok()?;
    let mut head = [0u8; 2];
    tokio::time::timeout(WAIT, s.read_exact(&mut head))
        .await
        .expect("an answer in time")
        .ok()?;
    assert_eq!(head[0], CONNACK);
    let mut body = vec![0u8; usize::from(head[1])];
    s.read_exact(&mut body).await.ok()?;
    Some(body[1])
}

/// A raw MQTT client whose connection starts with `header`, written in two pieces (the
/// second with the CONNECT) so the broker sees the header arrive split and followed at once
/// by MQTT; the client, the CONNACK's reason code and the client's own socket address.
async fn through_header(
    addr: SocketAddr,
    level: u8,
    header: &[u8],
    connect: &Connect,
) -> (RawClient, u8, SocketAddr) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let own = tcp.local_addr().unwrap();
    let mut c = RawClient::from_stream(tcp);
    let (a, b) = header.split_at(header.len() / 2);
    c.send(a).await;
    let mut rest = b.to_vec();
    rest.extend(connect.build());
    c.send(&rest).await;
    let ack = parse_connack(level, &c.recv_expect(CONNACK).await);
    (c, ack.reason, own)
}

/// v1 (TCP4, TCP6) and v2 (IPv4, IPv6) headers name the client: the admin API's `peer` and
/// the "client connected" log line show the header's address, and MQTT after the header works.
#[tokio::test]
async fn headers_name_the_client_on_a_tcp_listener() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path(), "proxy_protocol = true", "");
    let cases: [(&str, SocketAddr, Vec<u8>); 4] = [
        ("v1-four", "203.0.113.7:40001".parse().unwrap(), Vec::new()),
        ("v1-six", "[2001:db8::7]:40002".parse().unwrap(), Vec::new()),
        ("v2-four", "198.51.100.9:40003".parse().unwrap(), Vec::new()),
        ("v2-six", "[2001:db8::9]:65535".parse().unwrap(), Vec::new()),
    ];
    let mut clients = Vec::new();
    for (id, source, _) in &cases {
        let header = match id.starts_with("v1") {
            true => v1(*source),
            false => v2(1, *source, &[]),
        };
        for level in [V311, V5] {
            let id = format!("{id}-{level}");
            let connect = Connect::new(level, &id);
            let (c, reason, _) = through_header(b.addr, level, &header, &connect).await;
            assert_eq!(reason, 0, "{id}");
            assert_eq!(peer_of(b.http, &id).await, source.to_string(), "{id}");
            clients.push((c, level));
        }
    }
    let line = b.wait_log("peer=203.0.113.7:40001", 1);
    assert!(line.contains("client connected"), "{line}");
    b.wait_log("peer=[2001:db8::9]:65535", 1);
    // MQTT goes on after the header: one client subscribes, another publishes to it.
    let (first, rest) = clients.split_at_mut(1);
    let (sub, sub_level) = (&mut first[0].0, first[0].1);
    sub.subscribe(sub_level, "proxied/#", 1).await;
    let (publisher, pub_level) = (&mut rest[6].0, rest[6].1);
    pub_msg(
        publisher,
        pub_level,
        "proxied/x",
        1,
        b"through the balancer",
    )
    .await;
    let got = recv_acked(sub, sub_level).await;
    assert_eq!(got.payload, b"through the balancer");
    assert_eq!(
        metric(b.http, "tern_proxy_header_failures_total").await,
        0.0
    );
}

/// v2 LOCAL (a balancer's health check) and v1 UNKNOWN keep the socket's own address.
#[tokio::test]
async fn local_and_unknown_keep_the_socket_address() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path(), "proxy_protocol = true", "");
    let ignored: SocketAddr = "192.0.2.1:1".parse().unwrap();
    let headers = [
        ("local", v2(0, ignored, &[])),
        (
            "unknown",
            b"PROXY UNKNOWN 192.0.2.1 192.0.2.2 1 2\r\n".to_vec(),
        ),
    ];
    for (id, header) in headers {
        let (_c, reason, own) = through_header(b.addr, V5, &header, &Connect::new(V5, id)).await;
        assert_eq!(reason, 0);
        assert_eq!(peer_of(b.http, id).await, own.to_string(), "{id}");
    }
}

/// On a proxy_protocol listener a client without a header (a plain MQTT client, which could
/// otherwise claim any address) or with an invalid one is closed at once, with no CONNACK, and
/// counted by reason.
#[tokio::test]
async fn missing_or_invalid_headers_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path(), "proxy_protocol = true", "");
    let plain = Connect::new(V311, "plain").build();
    let invalid = [
        b"PROXY TCP4 203.0.113.300 10.0.0.1 1 2\r\n".to_vec(),
        b"PROXY TCP9 203.0.113.3 10.0.0.1 1 2\r\n".to_vec(),
        v2(1, "203.0.113.3:1".parse().unwrap(), &[0x20, 0x00, 0x09]),
    ];
    let mut c = RawClient::connect(b.addr).await;
    c.send(&plain).await;
    assert_eq!(c.next_event(WAIT).await, Event::Closed);
    for header in &invalid {
        let mut c = RawClient::connect(b.addr).await;
        let mut bytes = header.clone();
        bytes.extend_from_slice(&plain);
        c.send(&bytes).await;
        assert_eq!(c.next_event(WAIT).await, Event::Closed);
    }
    wait_metric(
        b.http,
        "tern_proxy_header_failures_total{reason=\"missing\"}",
        1.0,
    )
    .await;
    wait_metric(
        b.http,
        "tern_proxy_header_failures_total{reason=\"invalid\"}",
        3.0,
    )
    .await;
    assert_eq!(
        admin_get(b.http, "/api/v1/clients").await["clients"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

/// A client that sends part of a header and stops is closed once
/// `proxy_header_timeout_secs` has passed (not before), and counted.
#[tokio::test]
async fn an_incomplete_header_is_closed_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(
        dir.path(),
        "proxy_protocol = true\nproxy_header_timeout_secs = 1",
        "",
    );
    let mut c = RawClient::connect(b.addr).await;
    let started = tokio::time::Instant::now();
    c.send(b"PROXY TCP4 203.0.113.7 ").await;
    assert_eq!(c.next_event(WAIT).await, Event::Closed);
    assert!(started.elapsed() >= Duration::from_millis(900));
    wait_metric(
        b.http,
        "tern_proxy_header_failures_total{reason=\"timeout\"}",
        1.0,
    )
    .await;
}

/// On tls, ws and wss listeners the header comes first, then the TLS handshake and the
/// WebSocket upgrade over the same socket; the admin API shows the header's address.
#[tokio::test]
async fn tls_ws_and_wss_listeners_read_the_header_first() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let dir = tempfile::tempdir().unwrap();
    tern::certs::generate(dir.path(), &[]).unwrap();
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let listener = |kind: &str| {
        let tls = match kind {
            "tls" | "wss" => format!("cert = {cert:?}\nkey = {key:?}\n"),
            _ => String::new(),
        };
        format!(
            "[[listeners]]\nkind = \"{kind}\"\nbind = \"127.0.0.1\"\nport = 0\nproxy_protocol = true\n{tls}\n"
        )
    };
    let extra = format!("{}{}{}", listener("tls"), listener("ws"), listener("wss"));
    let b = start(dir.path(), "", &extra);
    let connector = crate::support::tls_connector(&dir.path().join("ca.pem"));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();

    // TLS: v1 then v2.
    let tls_addr = listener_addr(&b, "Tls");
    for (i, source) in ["203.0.113.21:5001", "[2001:db8::21]:5002"]
        .iter()
        .enumerate()
    {
        let source: SocketAddr = source.parse().unwrap();
        let header = match i {
            0 => v1(source),
            _ => v2(1, source, &[]),
        };
        let mut tcp = TcpStream::connect(tls_addr).await.unwrap();
        tcp.write_all(&header).await.unwrap();
        let mut tls = connector.connect(name.clone(), tcp).await.unwrap();
        let id = format!("tls-{i}");
        assert_eq!(
            connack_over(&mut tls, &Connect::new(V311, &id)).await,
            Some(0)
        );
        assert_eq!(peer_of(b.http, &id).await, source.to_string());
    }
    // A TLS client without a header: closed before its handshake completes.
    let tcp = TcpStream::connect(tls_addr).await.unwrap();
    assert!(connector.connect(name.clone(), tcp).await.is_err());

    // ws and wss: the header, (TLS,) the HTTP upgrade, MQTT in binary frames.
    let ws_addr = listener_addr(&b, "Ws");
    let wss_addr = listener_addr(&b, "Wss");
    for (scheme, addr, source) in [
        ("ws", ws_addr, "203.0.113.31:6001"),
        ("wss", wss_addr, "203.0.113.32:6002"),
    ] {
        let source: SocketAddr = source.parse().unwrap();
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&v2(1, source, &[])).await.unwrap();
        let request = format!("{scheme}://localhost:{}/mqtt", addr.port())
            .into_client_request()
            .unwrap();
        let id = format!("{scheme}-client");
        let connect = Message::Binary(Connect::new(V5, &id).build().into());
        let first = match scheme {
            "ws" => {
                let (mut ws, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
                ws.send(connect).await.unwrap();
                let first = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
                let data = first.unwrap().unwrap().into_data();
                (data, Some(ws), None)
            }
            _ => {
                let tls = connector.connect(name.clone(), tcp).await.unwrap();
                let (mut ws, _) = tokio_tungstenite::client_async(request, tls).await.unwrap();
                ws.send(connect).await.unwrap();
                let first = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
                let data = first.unwrap().unwrap().into_data();
                (data, None, Some(ws))
            }
        };
        assert_eq!(first.0[0], CONNACK, "{scheme}");
        assert_eq!(peer_of(b.http, &id).await, source.to_string(), "{scheme}");
    }
}

/// With `proxy_trust_tls_identity` (and `identity_as_username = "cn"`), the CN of a
/// certificate the balancer verified (v2 SSL TLV) names the user and logs it in without a
/// password; a header without one, or whose certificate failed verification, gets no user;
/// a listener that does not trust the balancer ignores the TLV. Refusals name the header's
/// address.
#[tokio::test]
async fn a_trusted_v2_certificate_cn_names_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[[listeners]]\nkind = \"tcp\"\nbind = \"127.0.0.1\"\nport = 0\n\
                 proxy_protocol = true\nproxy_trust_tls_identity = true\nidentity_as_username = \"cn\"\n";
    // The listener naming users makes anonymous access default to off everywhere.
    let b = start(dir.path(), "proxy_protocol = true", extra);
    let trusting = listener_addr(&b, "Tcp");
    let source: SocketAddr = "203.0.113.40:7001".parse().unwrap();
    let verified = v2(1, source, &ssl_tlv(0x03, 0, "device-7"));
    let (_c, reason, _) = through_header(trusting, V5, &verified, &Connect::new(V5, "dev7")).await;
    assert_eq!(reason, 0);
    let info = admin_get(b.http, "/api/v1/clients/dev7").await;
    assert_eq!(info["username"], "device-7");
    assert_eq!(info["peer"], source.to_string());
    // The CONNECT's own user name does not override the certificate's.
    let claims = Connect::new(V5, "dev7b").username("admin");
    let (_c2, reason, _) = through_header(trusting, V5, &verified, &claims).await;
    assert_eq!(reason, 0);
    assert_eq!(
        admin_get(b.http, "/api/v1/clients/dev7b").await["username"],
        "device-7"
    );
    // No certificate, a failed verification, or a listener that does not trust the TLV:
    // anonymous, and refused.
    let refused = [
        (trusting, v2(1, source, &[])),
        (trusting, v2(1, source, &ssl_tlv(0x03, 20, "device-7"))),
        (trusting, v2(1, source, &ssl_tlv(0x01, 0, "device-7"))),
        (b.addr, verified.clone()),
    ];
    for (i, (addr, header)) in refused.into_iter().enumerate() {
        let connect = Connect::new(V311, &format!("anon{i}"));
        let (_c, reason, _) = through_header(addr, V311, &header, &connect).await;
        assert_eq!(reason, 0x05, "case {i}");
    }
    // Refusals are logged (and delayed) by the client's address, not the balancer's.
    let refusal = b.wait_log("login refused", 1);
    assert!(refusal.contains("peer=203.0.113.40:7001"), "{refusal}");
}

/// Without `proxy_protocol` (the default) a PROXY header is not understood: the connection is
/// closed as malformed MQTT, so a client cannot claim another address.
#[tokio::test]
async fn a_header_on_a_listener_without_proxy_protocol_is_refused() {
    let b = TestBroker::start().await;
    let mut c = RawClient::connect(b.addr).await;
    let mut bytes = v1("203.0.113.50:1".parse().unwrap());
    bytes.extend(Connect::new(V311, "spoof").build());
    c.send(&bytes).await;
    assert_eq!(c.next_event(WAIT).await, Event::Closed);
    let mut c = RawClient::connect(b.addr).await;
    let mut bytes = v2(1, "203.0.113.50:1".parse().unwrap(), &[]);
    bytes.extend(Connect::new(V5, "spoof").build());
    c.send(&bytes).await;
    assert_eq!(c.next_event(WAIT).await, Event::Closed);
    b.stop().await;
}
