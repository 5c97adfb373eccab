//! What Mosquitto users take for granted and hostile clients try: topics as deep and long as
//! MQTT allows, tens of thousands of subscriptions on one client, packets sent together with
//! the CONNECT, a last word that reaches a client still sending, and log lines a client cannot
//! flood. Raw bytes on real sockets, both protocol versions where they apply.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{TestBroker, WAIT};
use crate::support::{pub_msg, recv_acked};
use crate::wire::*;

/// v3.1.1 and v5.
const LEVELS: [u8; 2] = [V311, V5];

/// Item 8: any topic Mosquitto 2.x accepts, Tern accepts with its defaults: 201 levels (200
/// separators) and names of 65,535 bytes, end to end: exact and `#` subscribers, the retained
/// copy for a later subscriber, a filter of 65,535 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_and_long_topics_work_end_to_end() {
    let broker = TestBroker::start().await;
    let deep = vec!["l"; 201].join("/");
    let long = format!("long/{}", "x".repeat(65_535 - 5));
    assert_eq!(long.len(), 65_535);
    for level in LEVELS {
        for topic in [&deep, &long] {
            let mut exact = RawClient::connected(broker.addr, level, "exact").await;
            exact.subscribe(level, topic, 1).await;
            let mut all = RawClient::connected(broker.addr, level, "all").await;
            all.subscribe(level, "#", 1).await;
            let mut publ = RawClient::connected(broker.addr, level, "publ").await;
            let p = Publish::new(level, topic, b"deep or long")
                .qos(1, 5)
                .retain(true);
            publ.send(&p.build()).await;
            let (pkid, reason) = parse_ack(&publ.recv_expect(PUBACK).await);
            assert_eq!((pkid, reason), (5, 0), "v{level}, {} bytes", topic.len());
            for c in [&mut exact, &mut all] {
                let got = recv_acked(c, level).await;
                assert_eq!(got.topic, *topic);
                assert_eq!(got.payload, b"deep or long");
            }
            let mut later = RawClient::connected(broker.addr, level, "later").await;
            later.subscribe(level, topic, 1).await;
            let got = recv_acked(&mut later, level).await;
            assert!(got.retain && got.topic == *topic);
            // Empty payload: the retained copy goes.
            publ.send(&Publish::new(level, topic, b"").retain(true).build())
                .await;
            publ.ping().await;
        }
    }
    broker.stop().await;
}

/// Item 11: subscriptions per client are unbounded by default, as in Mosquitto: a gateway
/// subscribing to 20,000 device topics gets every one granted and receives on the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_subscriptions_on_one_client() {
    let broker = TestBroker::start().await;
    for level in LEVELS {
        let mut c = RawClient::connected(broker.addr, level, "gateway").await;
        let filters: Vec<String> = (0..20_000).map(|i| format!("dev/{i}/up")).collect();
        for (n, chunk) in filters.chunks(2_000).enumerate() {
            let pairs: Vec<(&str, u8)> = chunk.iter().map(|f| (f.as_str(), 1)).collect();
            let pkid = n as u16 + 1;
            c.send(&subscribe(level, pkid, &pairs, &[])).await;
            let (got, codes) = parse_suback(level, &c.recv_expect(SUBACK).await);
            assert_eq!(got, pkid);
            assert_eq!(codes, vec![1; chunk.len()], "v{level} chunk {n}");
        }
        let mut publ = RawClient::connected(broker.addr, level, "device").await;
        pub_msg(&mut publ, level, "dev/19999/up", 1, b"last").await;
        assert_eq!(recv_acked(&mut c, level).await.payload, b"last");
        c.send(&disconnect()).await;
    }
    broker.stop().await;
}

/// Item 12 (TCP): packets sent in the same write as the CONNECT are handled at once, not when
/// more bytes arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_sent_with_the_connect_are_handled() {
    let broker = TestBroker::start().await;
    for level in LEVELS {
        let mut c = RawClient::connect(broker.addr).await;
        let mut bytes = Connect::new(level, "eager").build();
        bytes.extend(subscribe(level, 7, &[("eager/t", 1)], &[]));
        bytes.extend(pingreq());
        c.send(&bytes).await;
        assert_eq!(
            parse_connack(level, &c.recv_expect(CONNACK).await).reason,
            0
        );
        let (pkid, codes) = parse_suback(level, &c.recv_expect(SUBACK).await);
        assert_eq!((pkid, codes), (7, vec![1]));
        assert!(c.recv_expect(PINGRESP).await.is_empty());
    }
    broker.stop().await;
}

/// Item 12 (TLS): CONNECT, SUBSCRIBE and PINGREQ in one TLS record are all answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_sent_with_the_connect_over_tls_are_handled() {
    use rustls_pki_types::ServerName;
    use tern::config::{ExtraListener, ListenerKind};

    let dir = tempfile::tempdir().unwrap();
    tern::certs::generate(dir.path(), &[]).unwrap();
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let broker = TestBroker::start_with(move |c| {
        c.listeners.push(ExtraListener {
            bind: "127.0.0.1".parse().unwrap(),
            cert: Some(cert),
            key: Some(key),
            ..ExtraListener::new(ListenerKind::Tls, 0)
        });
    })
    .await;
    let connector = crate::support::tls_connector(&dir.path().join("ca.pem"));
    for level in LEVELS {
        let tcp = TcpStream::connect(broker.listener_addr(0)).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let mut bytes = Connect::new(level, "eager-tls").build();
        bytes.extend(subscribe(level, 7, &[("eager/t", 1)], &[]));
        bytes.extend(pingreq());
        tls.write_all(&bytes).await.unwrap();
        tls.flush().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        // CONNACK (4 or more bytes), SUBACK (5 or 6), PINGRESP (2): read until all are in.
        let want_firsts = [CONNACK, SUBACK, PINGRESP];
        let deadline = tokio::time::Instant::now() + WAIT;
        while firsts(&got).len() < 3 {
            let n = tokio::time::timeout_at(deadline, tls.read(&mut buf))
                .await
                .expect("answers within the wait")
                .unwrap();
            assert!(n > 0, "closed after {got:02x?}");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(firsts(&got), want_firsts, "v{level}: {got:02x?}");
    }
    broker.stop().await;
}

/// First bytes of the whole packets at the front of `buf`.
fn firsts(buf: &[u8]) -> Vec<u8> {
    split_packets(buf).into_iter().map(|(f, _)| f).collect()
}

/// The whole packets at the front of `buf`: first byte and body.
fn split_packets(mut buf: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while buf.len() >= 2 {
        let (mut len, mut i) = (0usize, 1);
        loop {
            let b = buf[i];
            len |= usize::from(b & 0x7F) << (7 * (i - 1));
            i += 1;
            if b & 0x80 == 0 || i > 4 {
                break;
            }
        }
        if buf.len() < i + len {
            break;
        }
        out.push((buf[0], buf[i..i + len].to_vec()));
        buf = &buf[i + len..];
    }
    out
}

/// Reads everything until the broker closes its side (end of stream).
async fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => panic!("still open after {WAIT:?}; got {got:02x?}"),
            Ok(Ok(0)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("{e} after {got:02x?}"),
        }
    }
}

/// What a client does that keeps sending after the broker's last word: 32 writes of 1 KiB, each
/// of which must succeed (a broker that closed with input unread would have reset the
/// connection, and the client's write would fail with EPIPE before it read the last word).
async fn keep_sending(s: &mut TcpStream) {
    let junk = publish(V311, "junk/t", 0, 0, &[b'j'; 1013]);
    assert_eq!(junk.len(), 1024);
    for i in 0..32 {
        if let Err(e) = s.write_all(&junk).await {
            panic!("write {i} after the broker's last word failed: {e}");
        }
        tokio::task::yield_now().await;
    }
    s.shutdown().await.unwrap();
}

/// Item 13: the last word reaches a client that is still sending: after DISCONNECT (0x93, a
/// client over Receive Maximum with QoS 2 publishes) or a refusing CONNACK, the broker shuts its
/// side and reads what still comes for a while, so the client's writes do not fail and the
/// connection is not reset under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_word_reaches_a_client_still_sending() {
    let broker = TestBroker::start_with(|c| c.limits.receive_maximum = 2).await;
    let mut s = TcpStream::connect(broker.addr).await.unwrap();
    let mut bytes = Connect::new(V5, "greedy").build();
    for pkid in 1..=3 {
        bytes.extend(Publish::new(V5, "greedy/t", b"q2").qos(2, pkid).build());
    }
    s.write_all(&bytes).await.unwrap();
    let got = read_to_end(&mut s).await;
    let packets = split_packets(&got);
    let Some((DISCONNECT, body)) = packets.last() else {
        panic!("no DISCONNECT last: {got:02x?}");
    };
    assert_eq!(parse_disconnect(body).0, 0x93, "{got:02x?}");
    keep_sending(&mut s).await;

    // 3.1: a refused CONNECT (client id too long), then more packets.
    let mut s = TcpStream::connect(broker.addr).await.unwrap();
    s.write_all(&Connect::new(V31, &"z".repeat(24)).build())
        .await
        .unwrap();
    assert_eq!(read_to_end(&mut s).await, vec![CONNACK, 2, 0, 2]);
    keep_sending(&mut s).await;
    broker.stop().await;
}

/// Item 14: a client cannot flood or forge the log: a 65,000-character client id and user
/// name, with a newline and a terminal escape in them, appear clipped and escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_fields_cannot_flood_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let b = crate::child::ChildBroker::start(dir.path(), false, "fsync");
    let id = format!("flood\nFAKE LINE\u{1b}[31m{}", "i".repeat(65_000));
    let user = format!("user\r\n{}", "u".repeat(60_000));
    let connect = Connect::new(V5, &id).username(&user);
    let (mut c, _) = RawClient::handshake(b.addr, V5, &connect).await;
    c.send(&disconnect()).await;
    c.expect_closed().await;
    let connected = b.wait_log("client connected", 1);
    assert!(
        connected.contains("flood\\nFAKE LINE\\u{1b}[31m"),
        "{connected}"
    );
    assert!(connected.contains("bytes)"), "{connected}");
    b.wait_log("client disconnected", 1);
    for line in b.log_lines() {
        assert!(line.len() < 2_000, "a log line of {} bytes", line.len());
        assert!(!line.contains('\u{1b}'), "raw escape in {line}");
        assert!(!line.starts_with("FAKE LINE"), "forged line {line}");
    }
    b.kill9();
}
