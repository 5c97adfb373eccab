//! MQTT over WebSockets (`ws` and `wss` listeners): rumqttc over WebSockets talking to TCP
//! clients, MQTT packets split across frames and several in one frame (raw frames from
//! tokio-tungstenite's client), refused upgrades, and the per-listener connection limit
//! answered with a CONNACK over TLS and WebSockets.

use futures_util::{SinkExt, StreamExt};
use rumqttc::QoS;
use tern::config::{ExtraListener, ListenerKind};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::harness::{TestBroker, WAIT};
use crate::rmq::{V4, V5};
use crate::wire::{self, Connect, RawClient, V311, V5 as L5};

/// A broker with one `ws` listener on /mqtt (listener 0), tweaked by `more`.
async fn ws_broker(more: impl FnOnce(&mut tern::Config)) -> TestBroker {
    TestBroker::start_with(|c| {
        c.listeners.push(ExtraListener {
            bind: "127.0.0.1".parse().unwrap(),
            ..ExtraListener::new(ListenerKind::Ws, 0)
        });
        more(c);
    })
    .await
}

fn ws_url(b: &TestBroker, i: usize) -> String {
    format!("ws://127.0.0.1:{}/mqtt", b.listener_addr(i).port())
}

/// A raw WebSocket client: sends exact frames, reads MQTT packets back whatever the framing.
pub struct RawWs {
    ws: WebSocketStream<TcpStream>,
    buf: Vec<u8>,
}

/// Opens a WebSocket to `path` on `port` offering `protocols` (none: no header).
pub async fn raw_ws(port: u16, path: &str, protocols: Option<&str>) -> Result<RawWs, WsError> {
    let mut request = format!("ws://127.0.0.1:{port}{path}")
        .into_client_request()
        .unwrap();
    if let Some(p) = protocols {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, tcp))
        .await
        .expect("upgrade answered")?;
    if let Some(p) = protocols {
        // The broker picks `mqtt` whenever it is offered.
        let chosen = if p.contains("mqtt,") || p.ends_with("mqtt") {
            "mqtt"
        } else {
            p
        };
        assert_eq!(
            response.headers().get("sec-websocket-protocol").unwrap(),
            chosen
        );
    }
    Ok(RawWs {
        ws,
        buf: Vec::new(),
    })
}

impl RawWs {
    pub async fn frame(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::Binary(bytes.to_vec().into()))
            .await
            .unwrap();
    }

    /// The next whole MQTT packet (first byte, body), reassembled from however many frames.
    pub async fn packet(&mut self) -> (u8, Vec<u8>) {
        loop {
            if let Some((len, header)) = whole_packet(&self.buf) {
                let packet: Vec<u8> = self.buf.drain(..header + len).collect();
                return (packet[0], packet[header..].to_vec());
            }
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) => self.buf.extend_from_slice(&b),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                other => panic!("expected a binary frame, got {other:?}"),
            }
        }
    }

    /// Whether the broker closes the WebSocket (close frame or end of stream) within [`WAIT`].
    async fn closed(&mut self) -> bool {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Err(_) => return false,
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// The body length and fixed-header length of the packet at the start of `buf`, once it is
/// all there.
fn whole_packet(buf: &[u8]) -> Option<(usize, usize)> {
    let (mut len, mut shift) = (0usize, 0);
    for (i, b) in buf.iter().enumerate().skip(1).take(4) {
        len |= ((b & 0x7F) as usize) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return (buf.len() >= 1 + i + len).then_some((len, 1 + i));
        }
    }
    None
}

/// rumqttc clients over WebSockets (MQTT 3.1.1 and 5) exchange QoS 1 messages with a TCP
/// client both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_clients_talk_to_tcp_clients() {
    let b = ws_broker(|_| {}).await;
    let url = ws_url(&b, 0);
    let mut ws4 = V4::connect_ws(&url, "ws4", None).await;
    let mut ws5 = V5::connect_ws(&url, "ws5").await;
    let mut tcp = V4::connect(b.port(), "tcp").await;
    ws4.subscribe("to/ws", QoS::AtLeastOnce).await;
    ws5.subscribe("to/ws", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await;
    tcp.subscribe("to/tcp", QoS::AtLeastOnce).await;
    tcp.client
        .publish("to/ws", QoS::AtLeastOnce, false, vec![7u8; 3000])
        .await
        .unwrap();
    assert_eq!(ws4.next_publish().await.payload.len(), 3000);
    assert_eq!(ws5.next_publish().await.payload.len(), 3000);
    ws4.client
        .publish("to/tcp", QoS::AtLeastOnce, false, "from v4")
        .await
        .unwrap();
    assert_eq!(&tcp.next_publish().await.payload[..], b"from v4");
    ws5.client
        .publish(
            "to/tcp",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "from v5",
        )
        .await
        .unwrap();
    assert_eq!(&tcp.next_publish().await.payload[..], b"from v5");
    b.stop().await;
}

/// Secure WebSockets with a required client certificate: the wss client and a TCP client talk
/// both ways; a wss client without a certificate is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_client_certificate_talks_to_tcp() {
    let dir = tempfile::tempdir().unwrap();
    tern::certs::generate(dir.path(), &[]).unwrap();
    let p = |f: &str| dir.path().join(f);
    let (cert, key, ca) = (p("server.pem"), p("server.key"), p("ca.pem"));
    let b = TestBroker::start_with(move |c| {
        c.listeners.push(ExtraListener {
            bind: "127.0.0.1".parse().unwrap(),
            cert: Some(cert),
            key: Some(key),
            client_ca: Some(ca),
            ..ExtraListener::new(ListenerKind::Wss, 0)
        });
    })
    .await;
    let url = format!("wss://127.0.0.1:{}/mqtt", b.listener_addr(0).port());
    let read = |f: &str| std::fs::read(dir.path().join(f)).unwrap();
    let client_auth = Some((read("client.pem"), read("client.key")));
    let mut secure = V4::connect_ws(&url, "wss", Some((read("ca.pem"), client_auth))).await;
    let mut tcp = V4::connect(b.port(), "tcp").await;
    secure.subscribe("down", QoS::AtLeastOnce).await;
    tcp.subscribe("up", QoS::AtLeastOnce).await;
    tcp.client
        .publish("down", QoS::AtLeastOnce, false, "to device")
        .await
        .unwrap();
    assert_eq!(&secure.next_publish().await.payload[..], b"to device");
    secure
        .client
        .publish("up", QoS::AtLeastOnce, false, "from device")
        .await
        .unwrap();
    assert_eq!(&tcp.next_publish().await.payload[..], b"from device");
    // Without a client certificate the TLS handshake fails: no CONNACK.
    let (client, mut el) = rumqttc::AsyncClient::new(
        crate::rmq::ws_options(&url, "anon", Some((read("ca.pem"), None))),
        10,
    );
    let refused = tokio::time::timeout(WAIT, el.poll())
        .await
        .expect("answered");
    assert!(refused.is_err(), "{refused:?}");
    drop(client);
    b.stop().await;
}

/// Frame boundaries mean nothing to MQTT: a CONNECT split over three frames, then SUBSCRIBE and
/// PINGREQ in one frame, are all understood; a PUBLISH from a TCP client comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_span_frames_and_frames_hold_packets() {
    let b = ws_broker(|_| {}).await;
    let port = b.listener_addr(0).port();
    for (level, protocols) in [(V311, "mqtt"), (L5, "mqttv3.1, mqtt")] {
        let mut ws = raw_ws(port, "/mqtt", Some(protocols)).await.unwrap();
        let connect = Connect::new(level, &format!("frames{level}")).build();
        ws.frame(&connect[..1]).await;
        ws.frame(&connect[1..5]).await;
        ws.frame(&connect[5..]).await;
        let (first, body) = ws.packet().await;
        assert_eq!(first, wire::CONNACK);
        assert_eq!(wire::parse_connack(level, &body).reason, 0);
        let both = [
            wire::subscribe(level, 1, &[("frames/t", 0)], &[]),
            wire::packet(wire::PINGREQ, &[]),
        ]
        .concat();
        ws.frame(&both).await;
        assert_eq!(ws.packet().await.0, wire::SUBACK);
        assert_eq!(ws.packet().await.0, wire::PINGRESP);
        let mut tcp = RawClient::connected(b.addr, V311, "pub").await;
        tcp.send(&wire::publish(V311, "frames/t", 0, 0, b"hello"))
            .await;
        let (first, body) = ws.packet().await;
        let got = wire::parse_publish(level, first, &body);
        assert_eq!(got.payload, b"hello");
        drop(tcp);
    }
    b.stop().await;
}

/// Bytes read before the session starts reach the session: a frame holding CONNECT,
/// SUBSCRIBE and PINGREQ gets CONNACK, SUBACK and PINGRESP (not only the CONNACK).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_with_connect_and_more_is_read_whole() {
    let b = ws_broker(|_| {}).await;
    let port = b.listener_addr(0).port();
    for level in [V311, L5] {
        let mut ws = raw_ws(port, "/mqtt", Some("mqtt")).await.unwrap();
        let all = [
            Connect::new(level, &format!("one-frame{level}")).build(),
            wire::subscribe(level, 3, &[("one/frame", 1)], &[]),
            wire::packet(wire::PINGREQ, &[]),
        ]
        .concat();
        ws.frame(&all).await;
        let (first, body) = ws.packet().await;
        assert_eq!(first, wire::CONNACK);
        assert_eq!(wire::parse_connack(level, &body).reason, 0);
        let (first, body) = ws.packet().await;
        assert_eq!(first, wire::SUBACK);
        assert_eq!(wire::parse_suback(level, &body), (3, vec![1]));
        assert_eq!(ws.packet().await.0, wire::PINGRESP);
    }
    b.stop().await;
}

/// The same over `wss`: TLS, the upgrade, then one frame with CONNECT, SUBSCRIBE and PINGREQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wss_frame_with_connect_and_more_is_read_whole() {
    use rustls_pki_types::ServerName;

    let dir = tempfile::tempdir().unwrap();
    tern::certs::generate(dir.path(), &[]).unwrap();
    let p = |f: &str| dir.path().join(f);
    let (cert, key) = (p("server.pem"), p("server.key"));
    let b = TestBroker::start_with(move |c| {
        c.listeners.push(ExtraListener {
            bind: "127.0.0.1".parse().unwrap(),
            cert: Some(cert),
            key: Some(key),
            ..ExtraListener::new(ListenerKind::Wss, 0)
        });
    })
    .await;
    let connector = crate::support::tls_connector(&p("ca.pem"));
    let port = b.listener_addr(0).port();
    for level in [V311, L5] {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let mut request = format!("wss://localhost:{port}/mqtt")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::client_async(request, tls).await.unwrap();
        let all = [
            Connect::new(level, &format!("wss-frame{level}")).build(),
            wire::subscribe(level, 3, &[("one/frame", 1)], &[]),
            wire::packet(wire::PINGREQ, &[]),
        ]
        .concat();
        ws.send(Message::Binary(all.into())).await.unwrap();
        let mut buf = Vec::new();
        let mut firsts = Vec::new();
        while firsts.len() < 3 {
            if let Some((len, header)) = whole_packet(&buf) {
                firsts.push(buf[0]);
                buf.drain(..header + len);
                continue;
            }
            match tokio::time::timeout(WAIT, ws.next()).await {
                Ok(Some(Ok(Message::Binary(data)))) => buf.extend_from_slice(&data),
                other => {
                    panic!("v{level}: expected a binary frame after {firsts:02x?}, got {other:?}")
                }
            }
        }
        assert_eq!(
            firsts,
            [wire::CONNACK, wire::SUBACK, wire::PINGRESP],
            "v{level}"
        );
    }
    b.stop().await;
}

/// Upgrades to another path (404), with another subprotocol (400), plain MQTT on the WebSocket
/// port, a stalled socket, and a text frame are all refused or closed, and a good client still
/// gets in after them. Without a subprotocol header the upgrade is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_upgrades_are_refused_and_others_carry_on() {
    let b = ws_broker(|c| c.listeners[0].handshake_timeout_secs = 1).await;
    let port = b.listener_addr(0).port();
    let status = |r: Result<RawWs, WsError>| match r {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => 101,
    };
    assert_eq!(status(raw_ws(port, "/other", Some("mqtt")).await), 404);
    assert_eq!(status(raw_ws(port, "/mqtt", Some("stomp")).await), 400);
    assert_eq!(status(raw_ws(port, "/mqtt", None).await), 101);
    // A stalled socket holds nothing up.
    let _stalled = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // Plain MQTT where an HTTP upgrade belongs: closed.
    let mut plain = RawClient::connect(b.listener_addr(0)).await;
    plain.send(&Connect::new(V311, "plain").build()).await;
    plain.expect_closed().await;
    // A text frame closes that connection [MQTT-6.0.0-1].
    let mut text = raw_ws(port, "/mqtt", Some("mqtt")).await.unwrap();
    text.frame(&Connect::new(V311, "text").build()).await;
    assert_eq!(text.packet().await.0, wire::CONNACK);
    text.ws.send(Message::Text("hello".into())).await.unwrap();
    assert!(text.closed().await);
    let mut good = V4::connect_ws(&ws_url(&b, 0), "good", None).await;
    good.subscribe("x", QoS::AtMostOnce).await;
    b.stop().await;
}

/// A listener's own `max_connections`: one more client over WebSockets gets CONNACK 0x97 (v5),
/// one more over TLS CONNACK 0x03 (v3.1.1), both after their handshakes, while the plain TCP
/// listener still takes clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_limits_refuse_with_connack_over_ws_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    tern::certs::generate(dir.path(), &[]).unwrap();
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let b = ws_broker(move |c| {
        c.listeners[0].max_connections = Some(1);
        c.listeners.push(ExtraListener {
            bind: "127.0.0.1".parse().unwrap(),
            cert: Some(cert),
            key: Some(key),
            max_connections: Some(1),
            ..ExtraListener::new(ListenerKind::Tls, 0)
        });
    })
    .await;
    let ws_port = b.listener_addr(0).port();
    let tls_port = b.listener_addr(1).port();
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let _ws_in = V4::connect_ws(&ws_url(&b, 0), "ws-in", None).await;
    let _tls_in = V4::connect_tls(tls_port, "tls-in", ca.clone(), None).await;

    let mut ws = raw_ws(ws_port, "/mqtt", Some("mqtt")).await.unwrap();
    ws.frame(&Connect::new(L5, "ws-over").build()).await;
    let (first, body) = ws.packet().await;
    assert_eq!(first, wire::CONNACK);
    assert_eq!(wire::parse_connack(L5, &body).reason, 0x97);

    let mut opts = rumqttc::MqttOptions::new("tls-over", "127.0.0.1", tls_port);
    opts.set_transport(rumqttc::Transport::tls(
        ca,
        None,
        Some(vec![b"mqtt".to_vec()]),
    ));
    let (_client, mut el) = rumqttc::AsyncClient::new(opts, 10);
    match tokio::time::timeout(WAIT, el.poll())
        .await
        .expect("answered")
    {
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, rumqttc::ConnectReturnCode::ServiceUnavailable)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let mut tcp = V4::connect(b.port(), "tcp").await;
    tcp.subscribe("still/here", QoS::AtMostOnce).await;
    b.stop().await;
}
