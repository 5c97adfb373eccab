//! One task per client: reads and decodes packets, drives the session's flows, drains the
//! mailbox into one write buffer, and keeps the deadlines (CONNECT, keep-alive). It is the only
//! place that `select!`s; an error ends this connection alone, with the reason code the spec asks.

mod dormant;
mod handshake;
mod inbound;
mod io;
mod limit;
mod open;
mod outbound;

pub use dormant::Dormitory;
pub use limit::{Limit, Slot};

use crate::logged::clip;
use open::will_message;
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tracing::{debug, debug_span, info, warn, Instrument};

use crate::broker::{BrokerState, Mailbox, RetainedStream};
use crate::metrics;
use crate::protocol::{
    self, Ack, Connect, Disconnect, LastWill, Packet, ProtocolVersion, Publish, ReasonCode,
};
use crate::session::{Message, Resend, Session};
use crate::store::Ticket;
use crate::transport::Stream;

use dormant::Dormant;
use io::{Done, Io};
use outbound::Outbound;

/// Stop reading the mailbox while this much is waiting to be written: a client that does not
/// read leaves its messages in its bounded mailbox, not in our memory.
const HIGH_WATER: usize = 256 * 1024;
/// Deliveries taken from the mailbox per turn, so reads and deadlines stay responsive.
const BATCH: usize = 256;

/// Serves one accepted connection until it closes or goes dormant (then the [`Dormitory`]
/// resumes it in a new task when it has something to do).
///
/// Not an `async fn`: its arguments would stay in the task for the connection's whole life.
/// The handshake and the goodbye run in their own heap futures, so the task of a connected
/// client holds only what its main loop needs (memory per idle client).
pub fn serve(
    stream: Stream,
    origin: Origin,
    state: Arc<BrokerState>,
    shutdown: watch::Receiver<bool>,
    dormitory: Dormitory,
    slot: Slot,
) -> impl Future<Output = ()> + Send {
    let span = debug_span!("conn", peer = %origin.peer, client_id = tracing::field::Empty);
    let open = Box::pin(
        Connection::open(stream, origin, state, shutdown, dormitory, slot).instrument(span.clone()),
    );
    async move {
        let Some(mut conn) = open.await else {
            return;
        };
        conn.resend();
        // Packets that came with the CONNECT (pipelined, or in the same WebSocket frame or TLS
        // record) are already buffered: handle them now, not when more bytes arrive.
        if !conn.io.inbuf.is_empty() {
            if let Err(end) = conn.handle_input() {
                return Box::pin(conn.finish(end)).await;
            }
        }
        drive(conn).await;
    }
    .instrument(span)
}

/// Runs a connection until it ends or goes dormant.
async fn drive(mut conn: Box<Connection>) {
    loop {
        match conn.run().await {
            Stop::End(end) => return Box::pin(conn.finish(end)).await,
            Stop::Quiet => match conn.sleep() {
                Ok(()) => return,
                Err(Some(awake)) => conn = awake,
                Err(None) => return,
            },
        }
    }
}

/// Wakes a dormant connection in its new task.
fn resume(
    dormant: Dormant,
    state: Arc<BrokerState>,
    dormitory: Dormitory,
) -> impl Future<Output = ()> + Send {
    let client_id = Arc::clone(dormant.client.session.client_id());
    let span = debug_span!("conn", client_id = %clip(&client_id));
    async move {
        metrics::connection_dormant(false);
        if let Some(conn) = Connection::wake(dormant, state, dormitory) {
            drive(conn).await;
        }
    }
    .instrument(span)
}

/// Where a connection comes from, as the listener saw it.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The client's address.
    pub peer: SocketAddr,
    /// The identity in its verified client certificate (mutual TLS, `identity_as_username`).
    pub cert_identity: Option<String>,
    /// The listener's own `allow_anonymous`, if it sets one.
    pub allow_anonymous: Option<bool>,
}

/// Answers a connection over `max_connections`: reads its CONNECT and refuses it (v5: 0x97
/// Quota exceeded; v3: 0x03 Server unavailable).
pub async fn refuse_busy(stream: Stream, state: Arc<BrokerState>) {
    let mut io = Io::new(stream, state.config().limits.max_packet_size);
    let deadline = Instant::now() + state.config().connect_timeout();
    if let Ok(c) = io.read_connect(deadline).await {
        let reason = if c.version.is_v5() {
            ReasonCode::QuotaExceeded
        } else {
            ReasonCode::ServerUnavailable
        };
        metrics::connect_refused(reason as u8);
        let ack = Packet::ConnAck(handshake::refusal(reason));
        metrics::packet_sent(&ack);
        let _ = protocol::encode(&ack, c.version, &mut io.outbuf);
    }
    io.close_gracefully().await;
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

/// A connected client: the live part (socket, buffers, timer) around the [`Client`] state.
struct Connection {
    io: Io,
    state: Arc<BrokerState>,
    client_id: Arc<str>,
    /// The next of: keep-alive deadline, time to go dormant. Reset lazily, when it fires.
    timer: Pin<Box<Sleep>>,
    /// Last time the connection read, wrote or took a delivery.
    last_activity: Instant,
    /// Acknowledgements in the order their packets arrived [MQTT-4.6.0-2] [MQTT-4.6.0-3], each
    /// held until the store has what it promises.
    pending_acks: VecDeque<HeldAck>,
    /// Nothing is written while set: stored deliveries just queued for writing go out only once
    /// their packet ids are stored.
    write_gate: Option<Ticket>,
    dormitory: Dormitory,
    /// A packet other than PUBLISH could not be sent within the client's Maximum Packet Size:
    /// the connection cannot go on [MQTT-3.1.2-24].
    unsendable: bool,
    client: Client,
}

/// What a connection keeps while dormant: everything but the socket's registration, buffers,
/// timer and task. Kept small: it is most of what an idle client costs.
struct Client {
    version: ProtocolVersion,
    /// The client sent Session Expiry 0 in CONNECT: DISCONNECT may not raise it [MQTT-3.14.2-2].
    connect_expiry_zero: bool,
    /// A v3 bridge (protocol level with the top bit, see `Connect::bridge`): its
    /// subscriptions are No Local and Retain As Published.
    bridge: bool,
    session: Box<Session>,
    mailbox: Arc<Mailbox>,
    generation: u64,
    will: Option<Box<LastWill>>,
    /// Keep-alive in seconds as granted; 0 for none.
    keep_alive: u16,
    last_packet: Instant,
    /// Topics of the client's Topic Aliases, indexed by alias - 1 (at most our maximum).
    inbound_aliases: Box<[Option<String>]>,
    out: Outbound,
    _slot: Slot,
}

/// An acknowledgement waiting for the store.
struct HeldAck {
    /// `None`: nothing to wait for, only earlier acknowledgements.
    ticket: Option<Ticket>,
    packet: Packet,
    /// Retained messages that must follow it (after a SUBACK), queued when it is sent.
    then: Vec<RetainedStream>,
}

/// Why [`Connection::run`] returned.
enum Stop {
    End(End),
    /// Nothing to do for `limits.dormant_after_ms`: the connection may go dormant.
    Quiet,
}

impl Connection {
    /// Resends unacknowledged messages, in order, DUP set [MQTT-4.4.0-1].
    fn resend(&mut self) {
        let now = std::time::Instant::now();
        let mut counts = metrics::Counts::default();
        for r in self.client.session.resend() {
            match r {
                Resend::Publish { pkid, delivery } => {
                    if self
                        .client
                        .out
                        .publish(&mut self.io.outbuf, delivery, pkid, true, now)
                    {
                        counts.publish(delivery.qos as u8, false);
                    }
                }
                Resend::PubRel(pkid) => {
                    self.client.out.ack(
                        &mut self.io.outbuf,
                        Packet::PubRel(Ack {
                            pkid,
                            ..Ack::default()
                        }),
                    );
                }
            }
        }
        metrics::sent(&counts);
    }

    async fn run(&mut self) -> Stop {
        let mut scratch = Vec::new();
        let mut read_first = false;
        loop {
            // Shutdown and takeover arrive as mailbox wake-ups, checked here.
            if self.state.is_shutting_down() {
                return Stop::End(End::Shutdown);
            }
            if self.client.mailbox.take_kick() {
                return Stop::End(End::TakenOver);
            }
            if self.unsendable {
                return Stop::End(End::violation(
                    ReasonCode::PacketTooLarge,
                    "[MQTT-3.1.2-24] a packet for the client exceeds its Maximum Packet Size",
                ));
            }
            if let Err(end) = self.pump(&mut scratch) {
                return Stop::End(end);
            }
            if let Some(gate) = &mut self.write_gate {
                match gate.result() {
                    None => {}
                    Some(Ok(())) => self.write_gate = None,
                    Some(Err(e)) => {
                        return Stop::End(End::violation(
                            ReasonCode::UnspecifiedError,
                            format!("delivery state could not be stored: {e}"),
                        ))
                    }
                }
            }
            let can_write = self.write_gate.is_none();
            self.io.release_idle_buffers();
            let io = &mut self.io;
            // A client that sends but does not read (its acks pile up) is read no further until
            // it catches up: what we owe it stays bounded.
            let can_read = io.outbuf.len() < 4 * HIGH_WATER;
            read_first = !read_first;
            let acks = &mut self.pending_acks;
            let acks_pending = !acks.is_empty();
            let gate = &mut self.write_gate;
            tokio::select! {
                biased;
                done = std::future::poll_fn(|cx| io.poll_io(cx, can_read, can_write, read_first)) => {
                    self.last_activity = Instant::now();
                    match done {
                        Err(e) => return Stop::End(End::Lost(e.to_string())),
                        Ok(Done::Wrote) => {}
                        Ok(Done::Read(0)) => return Stop::End(End::Lost("closed by peer".into())),
                        Ok(Done::Read(_)) => {
                            if let Err(end) = self.handle_input() {
                                return Stop::End(end);
                            }
                        }
                    }
                }
                // Always armed: a kick or shutdown must wake even a client we cannot write to.
                _ = self.client.mailbox.notified() => self.last_activity = Instant::now(),
                _ = std::future::poll_fn(|cx| match gate {
                    Some(t) => t.poll_ready(cx),
                    None => Poll::Pending,
                }), if !can_write => {}
                _ = std::future::poll_fn(|cx| poll_front(acks, cx)), if acks_pending => {
                    if let Err(end) = self.flush_acks() {
                        return Stop::End(end);
                    }
                }
                _ = self.timer.as_mut() => {
                    if let Some(stop) = self.on_timer() {
                        return stop;
                    }
                }
            }
        }
    }

    /// The timer fired: keep-alive expired, time to go dormant, or (reset lazily) neither yet.
    fn on_timer(&mut self) -> Option<Stop> {
        let now = Instant::now();
        if self
            .client
            .keep_alive_deadline()
            .is_some_and(|at| at <= now)
        {
            metrics::keepalive_timeout();
            return Some(Stop::End(End::KeepAlive));
        }
        if let Some(after) = self
            .state
            .config()
            .dormant_after()
            .filter(|_| self.io.stream.is_tcp())
        {
            if self.last_activity + after <= now && self.is_idle() {
                return Some(Stop::Quiet);
            }
        }
        let next = next_wake(
            &self.state,
            &self.client,
            self.io.stream.is_tcp(),
            self.last_activity,
            now,
        );
        self.timer.as_mut().reset(next);
        None
    }

    /// Nothing buffered either way, nothing queued, no acknowledgement waiting.
    fn is_idle(&self) -> bool {
        self.io.inbuf.is_empty()
            && self.io.outbuf.is_empty()
            && self.pending_acks.is_empty()
            && self.write_gate.is_none()
            && self.client.mailbox.is_empty()
    }

    /// Sends `ack` (then queues the retained streams `then`) once `durable` completes and every
    /// earlier held acknowledgement is sent.
    fn ack_in_order(&mut self, durable: Option<Ticket>, ack: Packet, then: Vec<RetainedStream>) {
        if durable.is_none() && self.pending_acks.is_empty() {
            self.send_ack(ack, then);
        } else {
            self.pending_acks.push_back(HeldAck {
                ticket: durable,
                packet: ack,
                then,
            });
        }
    }

    /// Writes `ack` and queues `then` behind everything queued so far: retained messages go
    /// after their SUBACK and before whatever is published from now on.
    fn send_ack(&mut self, ack: Packet, then: Vec<RetainedStream>) {
        self.ack(ack);
        for stream in then {
            self.client.mailbox.push_retained(stream);
        }
    }

    /// Sends the held acknowledgements whose writes are durable, in order. A failed write ends
    /// the connection unacknowledged: the client will send the message again.
    fn flush_acks(&mut self) -> Result<(), End> {
        while let Some(held) = self.pending_acks.front_mut() {
            if let Some(t) = &mut held.ticket {
                match t.result() {
                    None => break,
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        return Err(End::violation(
                            ReasonCode::UnspecifiedError,
                            format!("message could not be stored: {e}"),
                        ))
                    }
                }
            }
            if let Some(held) = self.pending_acks.pop_front() {
                self.send_ack(held.packet, held.then);
            }
        }
        Ok(())
    }

    /// Hands the connection to the dormitory. `Err(Some)`: it stays awake (dormitory closed);
    /// `Err(None)`: the socket failed and the connection is over.
    fn sleep(self: Box<Self>) -> Result<(), Option<Box<Self>>> {
        let Connection {
            io,
            state,
            dormitory,
            client,
            ..
        } = *self;
        let tcp = match io.stream.into_tcp() {
            Ok(tcp) => tcp,
            Err(_) => {
                // Not reached: only plain TCP connections are offered dormancy (`can_sleep`).
                Client::detach(client, &state, End::Lost("not a TCP stream".into()));
                return Err(None);
            }
        };
        let stream = match tcp.into_std() {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, "socket lost while going dormant");
                Client::detach(client, &state, End::Lost(e.to_string()));
                return Err(None);
            }
        };
        match dormitory.admit(Dormant { stream, client }) {
            Ok(()) => {
                metrics::connection_dormant(true);
                Ok(())
            }
            Err(d) => Connection::wake(d, state, dormitory).map_or(Err(None), |c| Err(Some(c))),
        }
    }

    /// A dormant connection, awake again in the current task; `None` if its socket could not
    /// rejoin the reactor (the connection then ends as lost).
    fn wake(d: Dormant, state: Arc<BrokerState>, dormitory: Dormitory) -> Option<Box<Self>> {
        let Dormant { stream, client } = d;
        let stream = match TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot resume a dormant connection");
                Client::detach(client, &state, End::Lost(e.to_string()));
                return None;
            }
        };
        let now = Instant::now();
        let next = next_wake(&state, &client, true, now, now);
        Some(Box::new(Connection {
            io: Io::for_version(
                Stream::Tcp(stream),
                state.config().limits.max_packet_size,
                client.version,
            ),
            client_id: Arc::clone(client.session.client_id()),
            state,
            timer: Box::pin(tokio::time::sleep_until(next)),
            last_activity: now,
            pending_acks: VecDeque::new(),
            write_gate: None,
            dormitory,
            unsendable: false,
            client,
        }))
    }

    /// Decodes and handles every complete packet in the read buffer.
    fn handle_input(&mut self) -> Result<(), End> {
        let mut counts = metrics::Counts::default();
        let r = self.handle_packets(&mut counts);
        metrics::received(&counts);
        r
    }

    fn handle_packets(&mut self, counts: &mut metrics::Counts) -> Result<(), End> {
        loop {
            let packet = match self.io.decoder.decode(&mut self.io.inbuf) {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()),
                Err(e) => {
                    metrics::malformed(e.reason_code() as u8);
                    return Err(End::violation(e.reason_code(), e.to_string()));
                }
            };
            counts.packet(&packet);
            tracing::trace!(client_id = %clip(&self.client_id), ?packet, "received");
            self.client.last_packet = Instant::now();
            self.handle_packet(packet)?;
        }
    }

    /// Moves ready deliveries from the mailbox into the write buffer, within the window.
    fn pump(&mut self, scratch: &mut Vec<crate::session::Delivery>) -> Result<(), End> {
        if self.io.outbuf.len() >= HIGH_WATER {
            return Ok(());
        }
        let session = &self.client.session;
        let mut feed = self.state.feed(session);
        self.client
            .mailbox
            .drain_into(scratch, BATCH, session.window_free(), &mut feed);
        if scratch.is_empty() {
            return Ok(());
        }
        let now = std::time::Instant::now();
        let taken = scratch.len();
        let mut sent = Vec::new();
        let mut counts = metrics::Counts::default();
        for d in scratch.drain(..) {
            let seq = d.seq;
            if !self.client.out.fits(&d, now) {
                metrics::dropped("too_large");
                self.state.store_delivered(&self.client.session, seq);
                continue;
            }
            match self.client.session.start(d, now) {
                Some((pkid, d)) => {
                    // QoS 2 only: a QoS 1 message may arrive twice anyway, and storing its id
                    // would cost a write per delivery.
                    if seq != 0 && d.qos == crate::protocol::QoS::ExactlyOnce {
                        sent.push((pkid, seq));
                    }
                    if self
                        .client
                        .out
                        .publish(&mut self.io.outbuf, &d, pkid, false, now)
                    {
                        counts.publish(d.qos as u8, true);
                    }
                    if seq != 0 && d.qos == crate::protocol::QoS::AtMostOnce {
                        // A stored QoS 0 delivery (queued while offline) is done once sent.
                        self.state.store_delivered(&self.client.session, seq);
                    }
                }
                None => {
                    metrics::dropped("expired");
                    self.state.store_delivered(&self.client.session, seq);
                }
            }
        }
        metrics::sent(&counts);
        if let Some(t) = self.state.store_sent(&self.client.session, &sent) {
            // A later ticket completes after any earlier one: it is the only gate needed.
            self.write_gate = Some(t);
        }
        if taken < BATCH / 8 && scratch.capacity() > BATCH / 8 {
            // After a burst, a trickle does not keep the burst's room.
            *scratch = Vec::new();
        }
        Ok(())
    }

    /// Sends the final DISCONNECT (v5), hands the session back and publishes the will if due.
    async fn finish(mut self: Box<Self>, end: End) {
        let client_id = &self.client_id;
        match &end {
            End::Violation(code, why) => {
                metrics::protocol_violation(*code as u8);
                info!(client_id = %clip(client_id), reason = ?code, why, "client disconnected: protocol violation");
            }
            End::Lost(why) => {
                info!(client_id = %clip(client_id), why, "client disconnected: connection lost")
            }
            other => info!(client_id = %clip(client_id), end = ?other, "client disconnected"),
        }
        if self.client.version.is_v5() {
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
        let last_word = !self.io.outbuf.is_empty() && !matches!(end, End::Lost(_));
        let Connection {
            mut io,
            state,
            client,
            ..
        } = *self;
        io.close().await;
        // The session is handed back before lingering: a takeover does not wait for it.
        Client::detach(client, &state, end);
        if last_word {
            io.linger().await;
        }
    }
}

impl Client {
    /// When the connection is closed unless a packet arrives: 1.5 × keep-alive after the last
    /// one [MQTT-3.1.2-24].
    fn keep_alive_deadline(&self) -> Option<Instant> {
        (self.keep_alive > 0)
            .then(|| self.last_packet + Duration::from_millis(u64::from(self.keep_alive) * 1500))
    }

    /// Hands the session back to the broker and publishes the will if `end` calls for it.
    fn detach(mut self, state: &Arc<BrokerState>, end: End) {
        let client_id = Arc::clone(self.session.client_id());
        let will = if end.publishes_will() {
            self.will.take().map(|w| {
                let delay = w.delay_interval.unwrap_or(0);
                (Arc::new(will_message(*w)), delay)
            })
        } else {
            None
        };
        state.detach(
            &client_id,
            self.generation,
            self.session,
            &self.mailbox,
            will,
        );
    }
}

/// Ready when the first held acknowledgement's write has completed.
fn poll_front(acks: &mut VecDeque<HeldAck>, cx: &mut Context<'_>) -> Poll<()> {
    match acks.front_mut().and_then(|h| h.ticket.as_mut()) {
        Some(t) => t.poll_ready(cx),
        None => Poll::Ready(()),
    }
}

/// When a connection's timer must next fire: its keep-alive deadline or the moment it will have
/// been quiet long enough to go dormant, whichever is first. Reset lazily: activity does not
/// move the timer, the timer re-checks when it fires.
fn next_wake(
    state: &BrokerState,
    client: &Client,
    can_sleep: bool,
    last_activity: Instant,
    now: Instant,
) -> Instant {
    /// Re-check once a day when nothing else is due.
    const FAR: Duration = Duration::from_secs(86_400);
    let mut next = match state.config().dormant_after().filter(|_| can_sleep) {
        // Not before a quarter of the period: a busy-but-idle-looking moment is re-checked
        // soon, not in a spin.
        Some(after) => (last_activity + after).max(now + after / 4),
        None => now + FAR,
    };
    if let Some(at) = client.keep_alive_deadline() {
        next = next.min(at);
    }
    next
}

/// What an idle client costs is mostly these records (docs/architecture.md, memory): a change
/// that grows them should be a deliberate one.
#[cfg(test)]
mod size_budget {
    use std::mem::size_of;

    #[test]
    fn dormant_records_stay_small() {
        assert!(
            size_of::<super::Dormant>() <= 112,
            "{}",
            size_of::<super::Dormant>()
        );
        // 112 is the allocator's size class a Session lands in anyway.
        assert!(size_of::<crate::session::Session>() <= 112);
        // Held in an Arc (16 bytes of counts): 80 + 16 stays in jemalloc's 96-byte class,
        // where the spill pointer had already taken it.
        assert!(size_of::<crate::broker::Mailbox>() <= 80);
    }
}
