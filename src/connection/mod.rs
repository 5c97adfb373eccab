//! One task per client: reads and decodes packets, drives the session's flows, drains the
//! mailbox into one write buffer, and keeps the deadlines (CONNECT, keep-alive). It is the only
//! place that `select!`s; an error ends this connection alone, with the reason code the spec asks.

mod handshake;
mod inbound;
mod outbound;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tracing::{debug, debug_span, Instrument};

use crate::broker::{BrokerState, Mailbox};
use crate::metrics;
use crate::protocol::{
    self, Ack, Connect, DecodeError, Decoder, Disconnect, LastWill, Packet, ProtocolVersion,
    Publish, ReasonCode,
};
use crate::session::{Message, Resend, Session};

use outbound::Outbound;

/// Stop reading the mailbox while this much is waiting to be written: a client that does not
/// read leaves its messages in its bounded mailbox, not in our memory.
const HIGH_WATER: usize = 256 * 1024;
/// Deliveries taken from the mailbox per turn, so reads and deadlines stay responsive.
const BATCH: usize = 256;
/// Smallest and largest room kept for one read.
const MIN_READ: usize = 128;
const MAX_READ: usize = 64 * 1024;
/// How long the final DISCONNECT and pending bytes may take to flush.
const FLUSH_ON_CLOSE: Duration = Duration::from_secs(2);

/// Serves one accepted connection until it closes.
///
/// Not an `async fn`: its arguments would stay in the task for the connection's whole life.
/// The handshake and the goodbye run in their own heap futures, so the task of a connected
/// client holds only what its main loop needs (memory per idle client).
pub fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<BrokerState>,
    shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send {
    let span = debug_span!("conn", %peer, client_id = tracing::field::Empty);
    let open = Box::pin(Connection::open(stream, state, shutdown).instrument(span.clone()));
    async move {
        let Some(mut conn) = open.await else {
            return;
        };
        conn.resend();
        let end = conn.run().await;
        Box::pin(conn.finish(end)).await;
    }
    .instrument(span)
}

/// Answers a connection over `max_connections`: reads its CONNECT and refuses it (v5: 0x97
/// Quota exceeded; v3: 0x03 Server unavailable).
pub async fn refuse_busy(stream: TcpStream, state: Arc<BrokerState>) {
    let mut io = Io::new(stream, state.config.limits.max_packet_size);
    let deadline = Instant::now() + state.config.connect_timeout();
    if let Ok(c) = io.read_connect(deadline).await {
        let reason = if c.version.is_v5() {
            ReasonCode::QuotaExceeded
        } else {
            ReasonCode::ServerUnavailable
        };
        metrics::connect_refused(reason as u8);
        let ack = handshake::refusal(reason);
        let _ = protocol::encode(&Packet::ConnAck(ack), c.version, &mut io.outbuf);
    }
    io.close().await;
}

/// A socket direction that is ready.
enum Ready {
    Read,
    Write,
}

/// Byte-level I/O of one connection. Reads and writes wait for readiness first, so a quiet
/// client holds no buffer at all: memory is taken when bytes arrive and given back once they
/// are handled.
struct Io {
    stream: TcpStream,
    inbuf: BytesMut,
    outbuf: BytesMut,
    /// Room taken for the next read: small for quiet clients, doubled while reads fill it.
    read_size: usize,
    decoder: Decoder,
}

impl Io {
    fn new(stream: TcpStream, max_packet_size: u32) -> Io {
        Io {
            stream,
            inbuf: BytesMut::new(),
            outbuf: BytesMut::new(),
            read_size: MIN_READ,
            decoder: Decoder::new(max_packet_size),
        }
    }

    /// Reads what the socket has (after `readable()` said so); `Ok(0)` at end of stream,
    /// `WouldBlock` on a false alarm.
    fn try_read(&mut self) -> std::io::Result<usize> {
        if self.inbuf.capacity() - self.inbuf.len() < self.read_size / 2 {
            self.inbuf.reserve(self.read_size);
        }
        let room = self.inbuf.capacity() - self.inbuf.len();
        let n = self.stream.try_read_buf(&mut self.inbuf)?;
        // Reads that fill the room ask for more next time; small ones for less.
        if n == room && self.read_size < MAX_READ {
            self.read_size *= 2;
        } else if n < self.read_size / 8 && self.read_size > MIN_READ {
            self.read_size /= 2;
        }
        Ok(n)
    }

    /// Which direction of the socket is ready. Polling readiness directly (rather than holding
    /// `readable()`/`writable()` futures) keeps the connection's task small.
    /// `read_first` alternates between calls so neither direction can starve the other.
    fn poll_ready(
        &self,
        cx: &mut Context<'_>,
        can_read: bool,
        read_first: bool,
    ) -> Poll<std::io::Result<Ready>> {
        let want_write = !self.outbuf.is_empty();
        let read = |cx: &mut Context<'_>| match can_read {
            true => self.stream.poll_read_ready(cx).map_ok(|()| Ready::Read),
            false => Poll::Pending,
        };
        let write = |cx: &mut Context<'_>| match want_write {
            true => self.stream.poll_write_ready(cx).map_ok(|()| Ready::Write),
            false => Poll::Pending,
        };
        if read_first {
            match read(cx) {
                Poll::Pending => write(cx),
                ready => ready,
            }
        } else {
            match write(cx) {
                Poll::Pending => read(cx),
                ready => ready,
            }
        }
    }

    /// Waits for and reads the next bytes.
    async fn read_some(&mut self) -> std::io::Result<usize> {
        loop {
            self.stream.readable().await?;
            match self.try_read() {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }

    /// Gives back buffers that hold nothing. A busy client re-takes one per batch (one
    /// allocation per read or write of many packets); a client that goes quiet after a burst
    /// keeps nothing.
    fn release_idle_buffers(&mut self) {
        if self.inbuf.is_empty() && self.inbuf.capacity() > 0 {
            self.inbuf = BytesMut::new();
        }
        if self.outbuf.is_empty() && self.outbuf.capacity() > 0 {
            self.outbuf = BytesMut::new();
        }
    }

    /// Reads until a CONNECT is decoded or the absolute `deadline` passes; bytes trickling in do
    /// not extend it. Answers a refused CONNECT itself.
    async fn read_connect(&mut self, deadline: Instant) -> Result<Box<Connect>, String> {
        loop {
            match self.decoder.decode(&mut self.inbuf) {
                Ok(Some(Packet::Connect(c))) => return Ok(c),
                Ok(Some(_)) => return Err("first packet is not CONNECT".into()),
                Ok(None) => {}
                Err(e) => {
                    self.refuse_connect(&e);
                    return Err(e.to_string());
                }
            }
            match tokio::time::timeout_at(deadline, self.read_some()).await {
                Err(_) => return Err("CONNECT timeout".into()),
                Ok(Ok(0)) => return Err("closed".into()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.to_string()),
            }
        }
    }

    /// CONNACK for a CONNECT that could not be decoded, where the spec gives one.
    fn refuse_connect(&mut self, e: &DecodeError) {
        let (version, reason) = if let DecodeError::UnsupportedProtocol { .. } = e {
            if e.wants_v5_connack() {
                (ProtocolVersion::V5, ReasonCode::UnsupportedProtocolVersion)
            } else {
                (
                    ProtocolVersion::V311,
                    ReasonCode::UnsupportedProtocolVersion,
                )
            }
        } else if self.decoder.version_hint() == Some(ProtocolVersion::V5) {
            (ProtocolVersion::V5, e.reason_code())
        } else {
            metrics::protocol_violation(e.reason_code() as u8);
            return;
        };
        metrics::connect_refused(reason as u8);
        let ack = handshake::refusal(reason);
        let _ = protocol::encode(&Packet::ConnAck(ack), version, &mut self.outbuf);
    }

    /// Flushes what is pending (bounded in time) and closes the write side.
    async fn close(&mut self) {
        let _ = tokio::time::timeout(FLUSH_ON_CLOSE, async {
            let _ = self.stream.write_all(&self.outbuf).await;
            let _ = self.stream.shutdown().await;
        })
        .await;
        self.outbuf.clear();
    }
}

/// Why a connected client's connection ends.
#[derive(Debug)]
enum End {
    /// DISCONNECT from the client; `will` for v5 reason 0x04.
    Disconnect { will: bool },
    /// Socket closed or failed without DISCONNECT.
    Lost(String),
    /// We end it with this reason (v5: sent in DISCONNECT).
    Violation(ReasonCode, String),
    /// Keep-alive expired [MQTT-3.1.2-24].
    KeepAlive,
    /// Another connection took the client id over.
    TakenOver,
    /// The broker is stopping.
    Shutdown,
}

impl End {
    fn violation(code: ReasonCode, why: impl Into<String>) -> End {
        End::Violation(code, why.into())
    }

    /// The DISCONNECT a v5 client gets, if any.
    fn reason(&self) -> Option<ReasonCode> {
        match self {
            End::Disconnect { .. } | End::Lost(_) => None,
            End::Violation(code, _) => Some(*code),
            End::KeepAlive => Some(ReasonCode::KeepAliveTimeout),
            End::TakenOver => Some(ReasonCode::SessionTakenOver),
            End::Shutdown => Some(ReasonCode::ServerShuttingDown),
        }
    }

    fn publishes_will(&self) -> bool {
        !matches!(self, End::Disconnect { will: false })
    }
}

/// A connected client.
struct Connection {
    io: Io,
    state: Arc<BrokerState>,
    version: ProtocolVersion,
    client_id: Arc<str>,
    session: Box<Session>,
    mailbox: Arc<Mailbox>,
    generation: u64,
    will: Option<Box<LastWill>>,
    keep_alive: Option<Duration>,
    /// Reset to `last_packet + keep_alive` as packets arrive; boxed so clients without
    /// keep-alive pay nothing for it.
    keep_alive_timer: Option<Pin<Box<Sleep>>>,
    last_packet: Instant,
    /// The client sent Session Expiry 0 in CONNECT: DISCONNECT may not raise it [MQTT-3.14.2-2].
    connect_expiry_zero: bool,
    /// Topics of the client's Topic Aliases, indexed by alias - 1 (at most our maximum).
    inbound_aliases: Vec<Option<String>>,
    out: Outbound,
}

impl Connection {
    /// Reads and answers the CONNECT, attaches the session; `None` if the connection ended.
    async fn open(
        stream: TcpStream,
        state: Arc<BrokerState>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Option<Box<Self>> {
        let mut io = Io::new(stream, state.config.limits.max_packet_size);
        let deadline = Instant::now() + state.config.connect_timeout();
        let read = tokio::select! {
            r = io.read_connect(deadline) => r,
            _ = shutdown.changed() => Err("broker shutting down".to_string()),
        };
        let connect = match read {
            Ok(c) => c,
            Err(end) => {
                debug!(reason = %end, "closed before CONNECT completed");
                io.close().await;
                return None;
            }
        };
        let version = connect.version;
        let accepted = match handshake::accept(&connect, &state.config) {
            Ok(a) => a,
            Err(reason) => {
                debug!(?reason, "CONNECT refused");
                metrics::connect_refused(reason as u8);
                let ack = handshake::refusal(reason);
                let _ = protocol::encode(&Packet::ConnAck(ack), version, &mut io.outbuf);
                io.close().await;
                return None;
            }
        };
        // Keep only what the connection needs: the CONNECT itself is not held across awaits.
        let Connect {
            clean_start,
            will,
            properties: props,
            ..
        } = *connect;
        let out = Outbound::new(
            version,
            props.maximum_packet_size,
            props.topic_alias_maximum.unwrap_or(0),
            props.request_problem_information != Some(0),
        );
        drop(props);
        let client_id: Arc<str> = accepted.client_id.as_str().into();
        tracing::Span::current().record("client_id", &*client_id);
        let attached = state
            .attach(
                &client_id,
                clean_start,
                accepted.session_expiry,
                accepted.window,
            )
            .await;
        let ack = handshake::connack(&accepted, version, attached.session_present, &state.config);
        if protocol::encode(&Packet::ConnAck(ack), version, &mut io.outbuf).is_err() {
            debug!("CONNACK could not be encoded");
        }
        debug!(version = ?version, clean_start, present = attached.session_present, "connected");
        let keep_alive = (accepted.keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(accepted.keep_alive) * 1500));
        let conn = Box::new(Connection {
            io,
            version,
            client_id,
            session: attached.session,
            mailbox: attached.mailbox,
            generation: attached.generation,
            will: will.map(Box::new),
            keep_alive,
            keep_alive_timer: keep_alive.map(|k| Box::pin(tokio::time::sleep(k))),
            last_packet: Instant::now(),
            connect_expiry_zero: accepted.session_expiry == 0,
            inbound_aliases: Vec::new(),
            out,
            state,
        });
        Some(conn)
    }

    /// Resends unacknowledged messages, in order, DUP set [MQTT-4.4.0-1].
    fn resend(&mut self) {
        let now = std::time::Instant::now();
        for r in self.session.resend() {
            match r {
                Resend::Publish { pkid, delivery } => {
                    self.out
                        .publish(&mut self.io.outbuf, delivery, pkid, true, now);
                }
                Resend::PubRel(pkid) => {
                    self.out.ack(
                        &mut self.io.outbuf,
                        Packet::PubRel(Ack {
                            pkid,
                            ..Ack::default()
                        }),
                    );
                }
            }
        }
    }

    async fn run(&mut self) -> End {
        let mut scratch = Vec::new();
        let mut read_first = false;
        loop {
            // Shutdown and takeover arrive as mailbox wake-ups, checked here.
            if self.state.is_shutting_down() {
                return End::Shutdown;
            }
            if self.mailbox.take_kick() {
                return End::TakenOver;
            }
            if let Err(end) = self.pump(&mut scratch) {
                return end;
            }
            if let (Some(timer), Some(k)) = (&mut self.keep_alive_timer, self.keep_alive) {
                let deadline = self.last_packet + k;
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
            }
            self.io.release_idle_buffers();
            let io = &mut self.io;
            // A client that sends but does not read (its acks pile up) is read no further until
            // it catches up: what we owe it stays bounded.
            let can_read = io.outbuf.len() < 4 * HIGH_WATER;
            read_first = !read_first;
            tokio::select! {
                biased;
                ready = std::future::poll_fn(|cx| io.poll_ready(cx, can_read, read_first)) => {
                    match ready {
                        Err(e) => return End::Lost(e.to_string()),
                        Ok(Ready::Write) => match self.io.stream.try_write(&self.io.outbuf) {
                            Ok(n) => self.io.outbuf.advance(n),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(e) => return End::Lost(e.to_string()),
                        },
                        Ok(Ready::Read) => match self.io.try_read() {
                            Ok(0) => return End::Lost("closed by peer".into()),
                            Ok(_) => {
                                if let Err(end) = self.handle_input() {
                                    return end;
                                }
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(e) => return End::Lost(e.to_string()),
                        },
                    }
                }
                // Always armed: a kick or shutdown must wake even a client we cannot write to.
                _ = self.mailbox.notified() => {}
                _ = keep_alive_expired(&mut self.keep_alive_timer) => return End::KeepAlive,
            }
        }
    }

    /// Decodes and handles every complete packet in the read buffer.
    fn handle_input(&mut self) -> Result<(), End> {
        loop {
            let packet = match self.io.decoder.decode(&mut self.io.inbuf) {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()),
                Err(e) => return Err(End::violation(e.reason_code(), e.to_string())),
            };
            self.last_packet = Instant::now();
            self.handle_packet(packet)?;
        }
    }

    /// Moves ready deliveries from the mailbox into the write buffer, within the window.
    fn pump(&mut self, scratch: &mut Vec<crate::session::Delivery>) -> Result<(), End> {
        if self.io.outbuf.len() >= HIGH_WATER {
            return Ok(());
        }
        self.mailbox
            .drain_into(scratch, BATCH, self.session.window_free());
        if scratch.is_empty() {
            return Ok(());
        }
        let now = std::time::Instant::now();
        let taken = scratch.len();
        for d in scratch.drain(..) {
            if !self.out.fits(&d, now) {
                metrics::dropped("too_large");
                continue;
            }
            match self.session.start(d, now) {
                Some((pkid, d)) => self.out.publish(&mut self.io.outbuf, &d, pkid, false, now),
                None => metrics::dropped("expired"),
            }
        }
        if taken < BATCH / 8 && scratch.capacity() > BATCH / 8 {
            // After a burst, a trickle does not keep the burst's room.
            *scratch = Vec::new();
        }
        Ok(())
    }

    /// Sends the final DISCONNECT (v5), hands the session back and publishes the will if due.
    async fn finish(mut self: Box<Self>, end: End) {
        match &end {
            End::Violation(code, why) => {
                metrics::protocol_violation(*code as u8);
                debug!(reason = ?code, why, "closing connection");
            }
            End::Lost(why) => debug!(why, "connection lost"),
            other => debug!(end = ?other, "connection ended"),
        }
        if self.version.is_v5() {
            if let Some(reason) = end.reason() {
                let mut d = Disconnect {
                    reason,
                    ..Disconnect::default()
                };
                if let End::Violation(_, why) = &end {
                    d.properties.reason_string = Some(why.clone());
                }
                self.ack(Packet::Disconnect(d));
            }
        }
        let will = if end.publishes_will() {
            self.will.take().map(|w| {
                let delay = w.delay_interval.unwrap_or(0);
                (Arc::new(will_message(*w, &self.client_id)), delay)
            })
        } else {
            None
        };
        self.io.close().await;
        self.state.detach(
            &self.client_id,
            self.generation,
            self.session,
            &self.mailbox,
            will,
        );
    }
}

/// The will as a message to route.
fn will_message(w: LastWill, client_id: &Arc<str>) -> Message {
    let publish = Publish {
        dup: false,
        qos: w.qos,
        retain: w.retain,
        topic: w.topic,
        pkid: 0,
        payload: w.payload,
        properties: w.properties,
    };
    let _ = client_id;
    Message::new(publish, None, std::time::Instant::now())
}

/// Completes when the keep-alive deadline passes; never without keep-alive.
async fn keep_alive_expired(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}
