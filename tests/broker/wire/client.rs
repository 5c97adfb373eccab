//! [`RawClient`]: a bare TCP client that sends exact bytes and reads whole packets back, and the
//! checks built on it that a broker still serves.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::harness::WAIT;

/// What [`RawClient::next_event`] saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A whole packet: first byte and body.
    Packet(u8, Vec<u8>),
    /// EOF or a socket error (reset): the broker closed the connection.
    Closed,
    /// Nothing within the timeout.
    Timeout,
}

/// A bare TCP client: sends exact bytes, reads whole packets. Every read is bounded by a timeout
/// and reads are cancel-safe (partial packets stay buffered).
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    closed: bool,
}

impl RawClient {
    /// Opens a TCP connection (panics if it cannot within [`WAIT`]).
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("TCP connect timed out")
            .expect("TCP connect failed");
        stream.set_nodelay(true).expect("set_nodelay");
        RawClient {
            stream,
            buf: Vec::new(),
            closed: false,
        }
    }

    /// A client on a TCP connection opened elsewhere (e.g. from a chosen source address).
    pub fn from_stream(stream: TcpStream) -> RawClient {
        stream.set_nodelay(true).expect("set_nodelay");
        RawClient {
            stream,
            buf: Vec::new(),
            closed: false,
        }
    }

    /// Connects, sends `connect` and returns the CONNACK whatever its code (and the client).
    pub async fn try_handshake(
        addr: SocketAddr,
        level: u8,
        connect: &Connect,
    ) -> (RawClient, Connack) {
        let mut c = RawClient::connect(addr).await;
        c.send(&connect.build()).await;
        let body = c.recv_expect(CONNACK).await;
        (c, parse_connack(level, &body))
    }

    /// Connects and completes an MQTT handshake with `connect`, asserting CONNACK success.
    pub async fn handshake(addr: SocketAddr, level: u8, connect: &Connect) -> (RawClient, Connack) {
        let mut c = RawClient::connect(addr).await;
        c.send(&connect.build()).await;
        let body = c.recv_expect(CONNACK).await;
        let ack = parse_connack(level, &body);
        assert_eq!(ack.reason, 0, "CONNACK refused: {ack:?}");
        (c, ack)
    }

    /// Connects with a clean session as `client_id`, asserting CONNACK success.
    pub async fn connected(addr: SocketAddr, level: u8, client_id: &str) -> RawClient {
        Self::handshake(addr, level, &Connect::new(level, client_id))
            .await
            .0
    }

    /// Writes all of `bytes`; panics on error (use [`RawClient::try_send`] when the broker may
    /// already have closed the connection).
    pub async fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).await.expect("send failed");
    }

    /// Writes all of `bytes`, bounded by [`WAIT`] (a timeout is reported as `TimedOut`).
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match tokio::time::timeout(WAIT, self.stream.write_all(bytes)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }

    /// Splits a complete packet off the front of the buffer, if there is one.
    fn take_buffered(&mut self) -> Option<(u8, Vec<u8>)> {
        if self.buf.len() < 2 {
            return None;
        }
        let mut len = 0usize;
        let mut i = 1;
        loop {
            let b = *self.buf.get(i)?;
            len |= usize::from(b & 0x7f) << (7 * (i - 1));
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            assert!(i <= 4, "broker sent a remaining length over 4 bytes");
        }
        if self.buf.len() < i + len {
            return None;
        }
        let first = self.buf[0];
        let body = self.buf[i..i + len].to_vec();
        self.buf.drain(..i + len);
        Some((first, body))
    }

    /// The next packet, or Closed, or Timeout after `within`.
    pub async fn next_event(&mut self, within: Duration) -> Event {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some((f, b)) = self.take_buffered() {
                return Event::Packet(f, b);
            }
            if self.closed {
                return Event::Closed;
            }
            let mut tmp = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut tmp)).await {
                Err(_) => return Event::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => self.closed = true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }

    /// The next packet within [`WAIT`]; panics on close or timeout.
    pub async fn recv_packet(&mut self) -> (u8, Vec<u8>) {
        match self.next_event(WAIT).await {
            Event::Packet(f, b) => (f, b),
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// The next packet, asserting its first byte equals `first` (for PUBLISH use
    /// [`RawClient::recv_publish`]); returns the body.
    pub async fn recv_expect(&mut self, first: u8) -> Vec<u8> {
        let (f, b) = self.recv_packet().await;
        assert_eq!(
            f, first,
            "expected packet {first:#04x}, got {f:#04x} body {b:02x?}"
        );
        b
    }

    /// The next packet, which must be a PUBLISH.
    pub async fn recv_publish(&mut self, level: u8) -> Received {
        let (f, b) = self.recv_packet().await;
        parse_publish(level, f, &b)
    }

    /// Asserts nothing arrives (and the connection stays open) for `within`.
    pub async fn expect_silence(&mut self, within: Duration) {
        match self.next_event(within).await {
            Event::Timeout => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    /// Waits (up to [`WAIT`]) for the broker to close the connection; returns the packets that
    /// arrived first. Panics if the connection is still open after [`WAIT`].
    pub async fn expect_closed(&mut self) -> Vec<(u8, Vec<u8>)> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Event::Packet(f, b) => got.push((f, b)),
                Event::Closed => return got,
                Event::Timeout => panic!("connection still open after {WAIT:?}; got {got:02x?}"),
            }
        }
    }

    /// Waits for close and asserts the packets before it were exactly one v5 DISCONNECT with
    /// `reason` (PUBLISHes that were already in flight are skipped).
    pub async fn expect_disconnect(&mut self, reason: u8) {
        self.expect_disconnect_in(&[reason]).await;
    }

    /// Like [`RawClient::expect_disconnect`], accepting any reason in `reasons`; returns it.
    pub async fn expect_disconnect_in(&mut self, reasons: &[u8]) -> u8 {
        let got = self.expect_closed().await;
        let discs: Vec<_> = got.iter().filter(|(f, _)| f & 0xF0 != PUBLISH).collect();
        assert_eq!(
            discs.len(),
            1,
            "expected one DISCONNECT {reasons:02x?} before close, got {got:02x?}"
        );
        let (f, b) = discs[0];
        assert_eq!(*f, DISCONNECT, "expected DISCONNECT, got {f:#04x} {b:02x?}");
        let reason = parse_disconnect(b).0;
        assert!(
            reasons.contains(&reason),
            "DISCONNECT reason: expected one of {reasons:02x?}, got {reason:#04x}"
        );
        reason
    }

    /// Half-closes the connection (sends FIN): the broker then sees end of stream.
    pub async fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// For v5 expects DISCONNECT `reason` then close; for v3 expects a close with no packet.
    pub async fn expect_disconnect_or_close(&mut self, level: u8, reason: u8) {
        if level == V5 {
            self.expect_disconnect(reason).await;
        } else {
            let got = self.expect_closed().await;
            let other: Vec<_> = got.iter().filter(|(f, _)| f & 0xF0 != PUBLISH).collect();
            assert!(other.is_empty(), "v3 close preceded by {got:02x?}");
        }
    }

    /// Like [`RawClient::expect_disconnect_or_close`], accepting any v5 reason in `reasons`;
    /// `Err` describes what came instead.
    pub async fn expect_disconnect_or_close_in(
        &mut self,
        level: u8,
        reasons: &[u8],
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Event::Packet(f, b) => got.push((f, b)),
                Event::Closed => break,
                Event::Timeout => return Err(format!("still open; got {got:02x?}")),
            }
        }
        let other: Vec<_> = got.iter().filter(|(f, _)| f & 0xF0 != PUBLISH).collect();
        match (level == V5, other.as_slice()) {
            (false, []) => Ok(()),
            (true, [(DISCONNECT, b)]) if reasons.contains(&parse_disconnect(b).0) => Ok(()),
            _ => Err(format!(
                "expected a close (v5: DISCONNECT {reasons:02x?}), got {got:02x?}"
            )),
        }
    }

    /// Subscribes to one filter and asserts the SUBACK grants it (reason < 0x80).
    pub async fn subscribe(&mut self, level: u8, filter: &str, qos: u8) {
        self.send(&subscribe(level, 1, &[(filter, qos)], &[])).await;
        let (pkid, reasons) = parse_suback(level, &self.recv_expect(SUBACK).await);
        assert_eq!(pkid, 1);
        assert_eq!(reasons.len(), 1);
        assert!(
            reasons[0] < 0x80,
            "subscription to {filter} refused: {reasons:02x?}"
        );
    }

    /// PINGREQ → PINGRESP, proving the connection is alive and served.
    pub async fn ping(&mut self) {
        self.send(&pingreq()).await;
        let b = self.recv_expect(PINGRESP).await;
        assert!(b.is_empty());
    }
}

/// Proves the broker still serves: a fresh subscriber and publisher (both `level`) complete a QoS 1
/// round trip on a unique topic.
pub async fn assert_broker_serves(addr: SocketAddr, level: u8) {
    let id = format!("probe-{}", rand_suffix());
    let topic = format!("probe/{id}");
    let mut sub = RawClient::connected(addr, level, &format!("{id}-s")).await;
    sub.subscribe(level, &topic, 1).await;
    let mut publ = RawClient::connected(addr, level, &format!("{id}-p")).await;
    assert_round_trip(&mut publ, &mut sub, level, &topic).await;
    publ.send(&disconnect()).await;
    sub.send(&disconnect()).await;
}

/// `publ` publishes QoS 1 on `topic`, `sub` (already subscribed to `topic` at QoS ≥ 1) receives
/// it; both acks are exchanged.
pub async fn assert_round_trip(publ: &mut RawClient, sub: &mut RawClient, level: u8, topic: &str) {
    let payload = rand_suffix().into_bytes();
    publ.send(&publish(level, topic, 1, 77, &payload)).await;
    let (pkid, reason) = parse_ack(&publ.recv_expect(PUBACK).await);
    assert_eq!(pkid, 77);
    assert!(reason < 0x80, "PUBACK reason {reason:#04x}");
    let got = sub.recv_publish(level).await;
    assert_eq!(got.topic, topic);
    assert_eq!(got.payload, payload);
    if got.qos > 0 {
        sub.send(&puback(got.pkid)).await;
    }
}

/// A short unique-enough string for client ids and topics.
pub fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{t:x}{}", N.fetch_add(1, Ordering::Relaxed))
}
