//! One task per client: reads and decodes packets, carries out its session's flows (the
//! session decides, the connection sends and waits for the store without blocking), drains the
//! mailbox into one write buffer, and keeps the deadlines (CONNECT, keep-alive). An error ends
//! this connection alone, with the reason code the spec asks ([`Violation`]).

mod admission;
mod dormant;
mod handshake;
mod inbound;
mod io;
mod limit;
mod moment;
mod open;
mod outbound;
mod refuser;
mod violation;

pub use admission::ConnectRate;
pub use dormant::Dormitory;
pub use limit::{listener_name, Limit, Slot};
pub use refuser::{OverLimit, Refuser};

use crate::logged::clip;
use open::will_message;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use moment::Moment;
use tracing::{debug, debug_span, info, warn, Instrument};

use crate::broker::{After, BrokerState, Carrier, ClientInfo, Kick, Mailbox, Out, Waiting};
use crate::metrics;
use crate::protocol::{
    self, Connect, Disconnect, LastWill, Packet, PacketId, ProtocolVersion, Publish, ReasonCode,
};
use crate::session::{Effect, Message, Session};
use crate::store::Ticket;
use crate::transport::Stream;

use dormant::Dormant;
use io::{Done, Io};
use outbound::Outbound;
use violation::Violation;

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
            if let Err(end) = conn.handle_input().map(drop) {
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
    /// The listener's CONNECT rate bucket (`limits.max_connect_rate`).
    pub connect_rate: Arc<ConnectRate>,
}

/// Answers a connection over a limit: reads its CONNECT and refuses it (v5: 0x97 Quota
/// exceeded past `max_connections`, 0x9F Connection rate exceeded past `max_connect_rate`;
/// v3.1.1: 0x03 Server unavailable).
pub async fn refuse_over_limit(stream: Stream, state: Arc<BrokerState>, why: OverLimit) {
    let mut io = Io::new(stream, state.config().limits.max_packet_size);
    let deadline = Instant::now() + state.config().connect_timeout();
    if let Ok(c) = io.read_connect(deadline).await {
        let reason = match (c.version.is_v5(), why) {
            (true, OverLimit::Connections) => ReasonCode::QuotaExceeded,
            (true, OverLimit::ConnectRate) => ReasonCode::ConnectionRateExceeded,
            (false, _) => ReasonCode::ServerUnavailable,
        };
        if why == OverLimit::ConnectRate {
            // As when open() refuses it: the rate is asked once a CONNECT is read.
            metrics::connect_received();
        }
        metrics::connect_refused(reason as u8);
        let ack = Packet::ConnAck(Box::new(handshake::refusal(reason)));
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
    /// We end it (v5: with a DISCONNECT saying why).
    Violation(Violation),
    /// Keep-alive expired [MQTT-3.1.2-24].
    KeepAlive,
    /// Another connection took the client id over.
    TakenOver,
    /// An operator disconnected it (admin API); `discard`: its session ends too.
    Administrative { discard: bool },
    /// The token it logged in with expired.
    TokenExpired,
    /// The broker is stopping.
    Shutdown,
}

impl From<Violation> for End {
    fn from(v: Violation) -> End {
        End::Violation(v)
    }
}

impl End {
    /// The DISCONNECT a v5 client gets, if any.
    fn reason(&self) -> Option<ReasonCode> {
        match self {
            End::Disconnect { .. } | End::Lost(_) => None,
            End::Violation(v) => Some(v.reason()),
            End::KeepAlive => Some(ReasonCode::KeepAliveTimeout),
            End::TakenOver => Some(ReasonCode::SessionTakenOver),
            End::Administrative { .. } => Some(ReasonCode::AdministrativeAction),
            End::TokenExpired => Some(ReasonCode::MaximumConnectTime),
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
    /// When the timer first fires: the next of keep-alive deadline and time to go dormant.
    /// The timer itself lives in [`Connection::run`]'s future, inside the task, and is reset
    /// lazily, when it fires. Not a `Box<Sleep>`: a tokio `Sleep` is 112 bytes, the size class
    /// of every idle client's `Session`, and one freed at each connection's dormancy left the
    /// sessions' slabs half empty (about 115 bytes per idle client).
    first_wake: Instant,
    /// Last time the connection read, wrote or took a delivery.
    last_activity: Instant,
    /// What the session's flows send, held while the store does not have what it promises yet
    /// (acknowledgements in the order their packets arrived [MQTT-4.6.0-2] [MQTT-4.6.0-3]).
    carrier: Carrier,
    /// The session's effects, reused from packet to packet.
    effects: Vec<Effect>,
    dormitory: Dormitory,
    /// A packet other than PUBLISH could not be sent within the client's Maximum Packet Size:
    /// the connection cannot go on [MQTT-3.1.2-24].
    unsendable: bool,
    /// A packet held until something it needs is ready (cluster mode: a SUBSCRIBE until this
    /// node has every retained message the cluster stored before it; with an ACL hook: a
    /// PUBLISH or SUBSCRIBE until the hook answered what the cache lacks); nothing the client
    /// sent after it is read until then.
    deferred: Option<Box<Deferred>>,
    client: Client,
}

/// A packet held, what it waits for, and how it goes on.
struct Deferred {
    packet: Packet,
    wait: Waiting<()>,
    /// Handled as a SUBSCRIBE whose retained messages are in (cluster), or from the start
    /// but without asking the ACL hook again (a miss now refuses).
    synced: bool,
}

/// What a connection keeps while dormant: everything but the socket's registration, buffers,
/// timer and task. Kept small: it is most of what an idle client costs.
struct Client {
    /// The client sent Session Expiry 0 in CONNECT: DISCONNECT may not raise it [MQTT-3.14.2-2].
    connect_expiry_zero: bool,
    /// A v3 bridge (protocol level with the top bit, see `Connect::bridge`): its
    /// subscriptions are No Local and Retain As Published.
    bridge: bool,
    session: Box<Session>,
    mailbox: Arc<Mailbox>,
    generation: u32,
    will: Option<Box<LastWill>>,
    /// Keep-alive in seconds as granted; 0 for none.
    keep_alive: u16,
    /// When the last packet came, for the keep-alive deadline.
    last_packet: Moment,
    /// Its encoder, which keeps its Topic Aliases both ways too.
    out: Outbound,
    /// What the admin API shows of this connection; its counters are kept here.
    info: Arc<ClientInfo>,
    _slot: Slot,
}

/// Why [`Connection::run`] returned.
enum Stop {
    End(End),
    /// Nothing to do for `limits.dormant_after_ms`: the connection may go dormant.
    Quiet,
}

impl Connection {
    /// The client id (its session's).
    fn client_id(&self) -> &Arc<str> {
        self.client.session.client_id()
    }

    /// Resends unacknowledged messages, in order, DUP set [MQTT-4.4.0-1].
    fn resend(&mut self) {
        self.client.session.resend(&mut self.effects);
        self.carry(None);
    }

    /// Carries out the session's effects in `self.effects` (the broker's [`Carrier`]): what may
    /// go now is encoded into the output buffer, the rest is held until the store has it.
    /// `after`: a store ticket every packet here waits for too.
    fn carry(&mut self, after: Option<Ticket>) {
        if self.effects.is_empty() {
            // Nothing to send (a QoS 0 message is not acknowledged): nothing waits for `after`.
            return;
        }
        self.through_carrier(|carrier, effects, ctx, send| {
            carrier.carry(ctx.state, ctx.mailbox, ctx.client_id, effects, after, send);
        });
    }

    /// Sends held packets whose store writes are durable. A failed write ends the connection
    /// before what depended on it is sent: the client sends its message again, or gets ours
    /// again on its next connection.
    fn release(&mut self) -> Result<(), End> {
        let failed = self.through_carrier(|carrier, _, _, send| carrier.release(send));
        match failed {
            Ok(()) => Ok(()),
            Err(crate::store::StoreError::Cluster(why)) => {
                // v5 hears which message the cluster could not take (PUBACK or PUBREC 0x83),
                // then why the connection ends; 3.1.1 has no way to refuse a message.
                if self.client.version() == ProtocolVersion::V5 {
                    if let Some(mut r) = self.carrier.failed_reply() {
                        r.reason = ReasonCode::ImplementationSpecificError;
                        self.ack(r.packet());
                    }
                }
                Err(Violation::ClusterUnavailable(why).into())
            }
            Err(e) => Err(Violation::StoreFailed(e.to_string()).into()),
        }
    }

    /// Sends `packet` (SUBACK, UNSUBACK) in order with the acknowledgements, once `after` is
    /// durable; then queues `then` (retained messages after a SUBACK).
    fn control(&mut self, packet: Packet, then: Vec<After>, after: Option<Ticket>) {
        self.through_carrier(|carrier, _, _, send| carrier.control(packet, then, after, send));
    }

    /// Runs `f` on the carrier with the connection's writer ([`write_out`]) as its `send`.
    fn through_carrier<R>(
        &mut self,
        f: impl FnOnce(&mut Carrier, &mut Vec<Effect>, CarryCtx<'_>, &mut dyn FnMut(Out)) -> R,
    ) -> R {
        let mut now = None;
        let mut counts = metrics::Counts::default();
        let client = &mut self.client;
        let (outbuf, unsendable) = (&mut self.io.outbuf, &mut self.unsendable);
        let mailbox = &client.mailbox;
        let ctx = CarryCtx {
            state: &self.state,
            mailbox,
            client_id: client.session.client_id(),
        };
        let out = &mut client.out;
        let for_sink = ctx;
        let mut send = |o: Out| {
            let mut sink = Sink {
                out: &mut *out,
                outbuf: &mut *outbuf,
                unsendable: &mut *unsendable,
                counts: &mut counts,
                now: &mut now,
            };
            sink.write(&for_sink, o);
        };
        let r = f(&mut self.carrier, &mut self.effects, ctx, &mut send);
        metrics::sent(&counts);
        self.client.info.sent(counts.publishes());
        r
    }

    async fn run(&mut self) -> Stop {
        let mut scratch = Vec::new();
        let mut read_first = false;
        let timer = tokio::time::sleep_until(self.first_wake);
        tokio::pin!(timer);
        loop {
            // Shutdown and takeover arrive as mailbox wake-ups, checked here.
            if self.state.is_shutting_down() {
                return Stop::End(End::Shutdown);
            }
            match self.client.mailbox.take_kick_reason() {
                None => {}
                Some(Kick::TakenOver) => return Stop::End(End::TakenOver),
                Some(Kick::Admin { discard }) => return Stop::End(End::Administrative { discard }),
                Some(Kick::Expired) => {
                    metrics::token_expired();
                    return Stop::End(End::TokenExpired);
                }
            }
            if self.unsendable {
                return Stop::End(Violation::Unsendable.into());
            }
            self.pump(&mut scratch);
            self.client
                .info
                .set_inflight(self.client.session.inflight_len());
            self.io.release_idle_buffers();
            let io = &mut self.io;
            // A client that sends but does not read (its acks pile up) is read no further until
            // it catches up: what we owe it stays bounded.
            let can_read = io.outbuf.len() < 4 * HIGH_WATER && self.deferred.is_none();
            read_first = !read_first;
            let carrier = &mut self.carrier;
            let holding = !carrier.is_empty();
            tokio::select! {
                biased;
                done = std::future::poll_fn(|cx| io.poll_io(cx, can_read, true, read_first)) => {
                    self.last_activity = Instant::now();
                    match done {
                        Err(e) => return Stop::End(End::Lost(e.to_string())),
                        Ok(Done::Wrote) => {}
                        Ok(Done::Read(0)) => return Stop::End(End::Lost("closed by peer".into())),
                        Ok(Done::Read(_)) => match self.handle_input() {
                            Err(end) => return Stop::End(end),
                            // A lone PUBLISH whose acknowledgement waits to be written: the
                            // connections it was routed to run first (they wait in this
                            // worker's next slot), so its delivery is not behind this write,
                            // as a single-threaded broker orders them. QoS 1 latency p99
                            // 106-111 -> 93-96 us at 1k msgs/s; a batch of several goes on at
                            // once, so throughput is unchanged.
                            Ok(1) if !self.io.outbuf.is_empty() => tokio::task::yield_now().await,
                            Ok(_) => {}
                        },
                    }
                }
                // Always armed: a kick or shutdown must wake even a client we cannot write to.
                _ = self.client.mailbox.notified() => self.last_activity = Instant::now(),
                _ = std::future::poll_fn(|cx| carrier.poll_ready(cx)), if holding => {
                    if let Err(end) = self.release() {
                        return Stop::End(end);
                    }
                }
                _ = timer.as_mut() => {
                    if let Some(stop) = self.on_timer(timer.as_mut()) {
                        return stop;
                    }
                }
                _ = async { if let Some(d) = self.deferred.as_mut() { d.wait.as_mut().await } }, if self.deferred.is_some() => {
                    if let Err(end) = self.resume_subscribe() {
                        return Stop::End(end);
                    }
                }
            }
        }
    }

    /// The held packet may go on: handles it, then what the client sent after it.
    fn resume_subscribe(&mut self) -> Result<(), End> {
        if let Some(d) = self.deferred.take() {
            match (d.packet, d.synced) {
                (Packet::Subscribe(s), true) => self.on_subscribe(s)?,
                (packet, _) => self.handle_packet(packet)?,
            }
        }
        self.handle_input().map(drop)
    }

    /// The timer fired: keep-alive expired, time to go dormant, or (reset lazily) neither yet.
    fn on_timer(&mut self, timer: Pin<&mut Sleep>) -> Option<Stop> {
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
        self.first_wake = next;
        timer.reset(next);
        None
    }

    /// Nothing buffered either way, nothing queued, no acknowledgement waiting.
    fn is_idle(&self) -> bool {
        self.io.inbuf.is_empty()
            && self.deferred.is_none()
            && self.io.outbuf.is_empty()
            && self.carrier.is_empty()
            && self.client.mailbox.is_empty()
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
        match dormitory.admit(Dormant::new(stream, client)) {
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
        let Dormant { stream, client, .. } = d;
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
                client.version(),
            ),
            state,
            first_wake: next,
            last_activity: now,
            carrier: Carrier::default(),
            effects: Vec::new(),
            dormitory,
            unsendable: false,
            deferred: None,
            client,
        }))
    }

    /// Decodes and handles every complete packet in the read buffer; how many were PUBLISH.
    fn handle_input(&mut self) -> Result<u64, End> {
        let mut counts = metrics::Counts::default();
        let r = self.handle_packets(&mut counts);
        metrics::received(&counts);
        self.client.info.received(counts.publishes());
        r.map(|()| counts.publishes())
    }

    fn handle_packets(&mut self, counts: &mut metrics::Counts) -> Result<(), End> {
        // The moment of the read that brought them (one clock read per wake-up, not per packet).
        let read_at = Moment::of(self.last_activity);
        loop {
            if self.deferred.is_some() {
                // The rest waits for the held SUBSCRIBE, in order.
                return Ok(());
            }
            let packet = match self.io.decoder.decode(&mut self.io.inbuf) {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()),
                Err(e) => {
                    metrics::malformed(e.reason_code() as u8);
                    return Err(Violation::Decode(e).into());
                }
            };
            counts.packet(&packet);
            tracing::trace!(client_id = %clip(self.client_id()), ?packet, "received");
            self.client.last_packet = read_at;
            let Some(packet) = self.ask_acl_first(packet)? else {
                return Ok(());
            };
            self.handle_packet(packet)?;
        }
    }

    /// Moves ready deliveries from the mailbox into the write buffer, within the window.
    fn pump(&mut self, scratch: &mut Vec<crate::session::Delivery>) {
        if self.io.outbuf.len() >= HIGH_WATER {
            return;
        }
        let (state, session) = (&self.state, &self.client.session);
        let mut feed = state.feed(session);
        self.client
            .mailbox
            .drain_into(scratch, BATCH, session.window_free(), &mut feed);
        if scratch.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let taken = scratch.len();
        for d in scratch.drain(..) {
            if !self.client.out.fits(&d, now) {
                self.client
                    .session
                    .drop_delivery(&d, "too_large", &mut self.effects);
                continue;
            }
            self.client.session.start(d, now, &mut self.effects);
        }
        self.carry(None);
        if taken < BATCH / 8 && scratch.capacity() > BATCH / 8 {
            // After a burst, a trickle does not keep the burst's room.
            *scratch = Vec::new();
        }
    }

    /// Sends the final DISCONNECT (v5), hands the session back and publishes the will if due.
    async fn finish(mut self: Box<Self>, end: End) {
        let client_id = Arc::clone(self.client_id());
        let client_id = &client_id;
        match &end {
            End::Violation(v) if v.by_client() => {
                metrics::protocol_violation(v.reason() as u8);
                info!(client_id = %clip(client_id), reason = ?v.reason(), why = %v, "client disconnected: protocol violation");
            }
            End::Violation(v) => {
                warn!(client_id = %clip(client_id), reason = ?v.reason(), why = %v, "client disconnected");
            }
            End::Lost(why) => {
                info!(client_id = %clip(client_id), why, "client disconnected: connection lost")
            }
            other => info!(client_id = %clip(client_id), end = ?other, "client disconnected"),
        }
        if self.client.version().is_v5() {
            if let Some(reason) = end.reason() {
                let mut d = Disconnect {
                    reason,
                    ..Disconnect::default()
                };
                if let End::Violation(v) = &end {
                    d.properties.reason_string = Some(v.to_string());
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
        if let (Some(remote), Some(claim)) = (state.remote(), client.session.claim()) {
            if client.will.is_some() && !end.publishes_will() {
                // Forgotten by the cluster before the connection closes: a node that dies
                // from now on must not leave this will for the others to publish.
                let wait = state.config().cluster.unavailable_timeout();
                let forget = remote.will_settled(client_id, claim.get());
                let _ = tokio::time::timeout(wait, forget).await;
            }
        }
        // The session is handed back before the socket closes: a client that sees the close
        // (or a takeover) finds the session offline and out of its shared groups and queues,
        // and does not wait for the last word's flush or the linger.
        Client::detach(client, &state, end);
        io.close().await;
        if last_word {
            io.linger().await;
        }
    }
}

impl Client {
    /// The protocol version from CONNECT (kept by its encoder, not again here: every byte
    /// counts in a dormant connection's bed).
    fn version(&self) -> ProtocolVersion {
        self.out.version()
    }

    /// When the connection is closed unless a packet arrives: 1.5 × keep-alive after the last
    /// one [MQTT-3.1.2-24].
    fn keep_alive_deadline(&self) -> Option<Instant> {
        (self.keep_alive > 0).then(|| {
            self.last_packet.instant() + Duration::from_millis(u64::from(self.keep_alive) * 1500)
        })
    }

    /// Hands the session back to the broker and publishes the will if `end` calls for it.
    fn detach(mut self, state: &Arc<BrokerState>, end: End) {
        let client_id = Arc::clone(self.session.client_id());
        if matches!(end, End::Administrative { discard: true }) {
            // An operator ended the session with the connection.
            self.session.expiry_interval = 0;
        }
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

/// Whose effects a carrier carries out.
#[derive(Clone, Copy)]
struct CarryCtx<'a> {
    state: &'a BrokerState,
    mailbox: &'a Mailbox,
    client_id: &'a str,
}

/// Where a [`Carrier`]'s output goes: the client's encoder and output buffer.
struct Sink<'a> {
    out: &'a mut Outbound,
    outbuf: &'a mut bytes::BytesMut,
    unsendable: &'a mut bool,
    counts: &'a mut metrics::Counts,
    now: &'a mut Option<std::time::Instant>,
}

impl Sink<'_> {
    /// Writes what a [`Carrier`] hands out: acknowledgements and control packets through the
    /// client's encoder (a control packet that cannot fit its Maximum Packet Size makes the
    /// connection `unsendable`), PUBLISHes with the per-subscriber parts, drops counted; once a
    /// SUBACK is written, what its subscriptions bring starts.
    fn write(&mut self, ctx: &CarryCtx<'_>, o: Out) {
        match o {
            Out::Reply(r) => *self.unsendable |= !self.out.ack(self.outbuf, r.packet()),
            Out::Control(packet, then) => {
                *self.unsendable |= !self.out.ack(self.outbuf, *packet);
                for after in then {
                    match after {
                        After::Retained(stream) => ctx.mailbox.push_retained(stream),
                        After::Queue(q) => ctx.state.queue_ready(q, ctx.client_id),
                    }
                }
            }
            Out::Publish {
                pkid,
                dup,
                delivery,
            } => {
                let now = *self.now.get_or_insert_with(std::time::Instant::now);
                let pkid = pkid.map_or(0, PacketId::get);
                if self.out.publish(self.outbuf, &delivery, pkid, dup, now) {
                    self.counts.publish(delivery.qos as u8, !dup);
                }
            }
            Out::Dropped(reason) => metrics::dropped(reason),
        }
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

#[cfg(test)]
mod size_budget;
