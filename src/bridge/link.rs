//! One bridge: its local session, and connections to the remote broker, one after another,
//! with exponential backoff and jitter between them.

use crate::logged::clip;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::echo::Echoes;
use super::local::{connection_state, report_queue, subscribe_locally};
use super::outgoing::Shaper;
use super::rules::{rules, to_local, Rule};
use super::tls::connector as tls_connector;
use super::LOCAL_ID_PREFIX;
use crate::broker::bridged::add_to_path;
use crate::broker::{BrokerState, Carrier, Mailbox, Out, Published};
use crate::config::BridgeConfig;
use crate::metrics;
use crate::protocol::{
    self, ConnAck, Connect, ConnectProperties, Decoder, Disconnect, Packet, PacketId,
    ProtocolVersion, Publish, QoS, ReasonCode, RetainHandling, Subscribe, SubscribeFilter,
    SubscriptionOptions,
};
use crate::session::{AckOutcome, Effect, Message, Qos2In, Session};
use crate::topic;

/// Bounds connecting, the TLS handshake and waiting for CONNACK and SUBACK.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Deliveries moved from the mailbox per turn.
const BATCH: usize = 64;
/// Output waiting for the remote beyond which no more deliveries are taken.
const HIGH_WATER: usize = 64 * 1024;
/// The largest packet MQTT can frame: 1 byte of header, 4 of length, 268,435,455 of body.
const MQTT_MAX_PACKET: u32 = 268_435_460;
/// Bytes of room a read from the remote gets.
const READ_ROOM: usize = 16 * 1024;

/// A byte stream to the remote: TCP or TLS.
trait Remote: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Remote for T {}

/// Why a connection to the remote ended.
enum End {
    /// The bridge is stopping (shutdown, reload).
    Stopped,
    /// Lost or refused; try again.
    Lost(String),
}

/// Runs bridge `cfg` until `stop`: attaches its local session, then keeps a connection to the
/// remote up, reconnecting with backoff. Its session is parked when it stops, queue and all.
pub(super) async fn run(
    cfg: BridgeConfig,
    state: Arc<BrokerState>,
    mut stop: watch::Receiver<bool>,
) {
    let local_id: Arc<str> = Arc::from(format!("{LOCAL_ID_PREFIX}{}", cfg.name));
    let attached = state
        .attach_bridge(
            &local_id,
            cfg.max_inflight,
            cfg.max_queued_messages,
            cfg.max_queued_bytes,
        )
        .await;
    let mut session = attached.session;
    let mailbox = attached.mailbox;
    let generation = attached.generation;
    let rules = rules(&cfg);
    subscribe_locally(&cfg, &rules, &state, &mut session, &mailbox).await;
    connection_state(&state, &cfg.name, false);
    let mut delay = cfg.reconnect_min_ms;
    let mut attempts = 0u64;
    // MQTT 5 remotes are told our packet size limit and discard what is larger [MQTT-3.1.2-25];
    // a 3.1.1 remote cannot be told, so from it any size MQTT allows is read rather than a
    // larger message closing the link on every reconnect.
    let max_packet = state.config().limits.max_packet_size;
    // Mosquitto's try_private: dropped for good once a remote refuses it.
    let mut bridge_bit = cfg.try_private && !cfg.is_v5();
    'outer: loop {
        for addr in &cfg.addresses {
            if *stop.borrow() || mailbox.take_kick() {
                break 'outer;
            }
            if attempts > 0 {
                metrics::bridge_reconnect(&cfg.name);
            }
            attempts += 1;
            let connected = tokio::select! {
                c = tokio::time::timeout(HANDSHAKE, Link::connect(&cfg, addr, max_packet, bridge_bit)) => c,
                _ = stop.changed() => break 'outer,
            };
            let (mut link, ack) = match connected {
                Ok(Ok(c)) => c,
                Ok(Err(e)) if e.maybe_bridge_bit => {
                    // Like Mosquitto: the same remote again at once, without the bit.
                    info!(bridge = %cfg.name, %addr, error = %e.why, "the remote does not take the bridge bit (try_private); connecting without it");
                    bridge_bit = false;
                    attempts = 0;
                    continue 'outer;
                }
                Ok(Err(e)) => {
                    warn!(bridge = %cfg.name, %addr, error = %e.why, "bridge cannot connect");
                    continue;
                }
                Err(_) => {
                    warn!(bridge = %cfg.name, %addr, "bridge connect timed out");
                    continue;
                }
            };
            info!(bridge = %cfg.name, %addr, session_present = ack.session_present, "bridge connected");
            delay = cfg.reconnect_min_ms;
            metrics::bridge_connected(&cfg.name, true);
            connection_state(&state, &cfg.name, true);
            let ctx = Ctx {
                local_id: &local_id,
                cfg: &cfg,
                rules: &rules,
                state: &state,
                mailbox: &mailbox,
            };
            let end = link.serve(&ctx, &mut session, &ack, &mut stop).await;
            metrics::bridge_connected(&cfg.name, false);
            connection_state(&state, &cfg.name, false);
            match end {
                End::Stopped => break 'outer,
                End::Lost(why) => warn!(bridge = %cfg.name, %addr, why, "bridge disconnected"),
            }
        }
        // Exponential backoff with jitter: between half and all of the current delay.
        let wait = delay / 2 + rand::random_range(0..=delay / 2);
        delay = (delay.saturating_mul(2)).min(cfg.reconnect_max_ms);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait);
        // The queue's gauges stay current while the link is down.
        loop {
            report_queue(&cfg.name, &mailbox);
            let next = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = stop.changed() => break 'outer,
            }
            if next == deadline {
                break;
            }
        }
    }
    state.detach(&local_id, generation, session, &mailbox, None);
    info!(bridge = %cfg.name, "bridge session parked");
}

/// What a connection's handlers share.
struct Ctx<'a> {
    /// The client id of the bridge's local session.
    local_id: &'a str,
    cfg: &'a BridgeConfig,
    rules: &'a [Rule],
    state: &'a Arc<BrokerState>,
    mailbox: &'a Arc<Mailbox>,
}

/// One connection to the remote.
struct Link {
    rd: ReadHalf<Box<dyn Remote>>,
    wr: WriteHalf<Box<dyn Remote>>,
    decoder: Decoder,
    inbuf: BytesMut,
    wire: Wire,
    keep_alive: Duration,
    last_write: Instant,
    ping_sent: Option<Instant>,
    /// Packet id of our SUBSCRIBE until its SUBACK.
    subscribing: Option<u16>,
    /// What the session's flows send, held while the store does not have it yet.
    carrier: Carrier,
    /// The session's effects, reused from packet to packet.
    effects: Vec<Effect>,
}

/// What goes to the remote, encoded: packets as the remote takes them.
struct Wire {
    outbuf: BytesMut,
    version: ProtocolVersion,
    /// Deliveries as PUBLISHes the remote takes (its CONNACK's limits).
    shaper: Shaper,
    /// MQTT 3.1.1 has no No Local: what we sent recently, so that the remote echoing it back
    /// to our own subscription is recognised and dropped.
    echoes: Echoes,
    /// The remote took our 3.1.1 bridge bit: it gives our subscriptions No Local itself.
    bridge_bit: bool,
}

/// Why connecting to the remote failed.
struct Failure {
    why: String,
    /// The remote may have refused the 3.1.1 bridge bit: worth trying again without it.
    maybe_bridge_bit: bool,
}

impl From<String> for Failure {
    fn from(why: String) -> Failure {
        Failure {
            why,
            maybe_bridge_bit: false,
        }
    }
}

/// What woke the connection.
enum Event {
    Read(std::io::Result<usize>),
    Wrote(std::io::Result<usize>),
    Mail,
    /// A store write that held packets waited for is done.
    Durable,
    Timer,
    Stop,
}

impl Wire {
    /// Sends `packet`, remembering a PUBLISH on a 3.1.1 link (see [`Wire::echoes`]).
    fn send_publish(&mut self, packet: &Packet) {
        if let (Packet::Publish(p), true) = (packet, self.filters_echoes()) {
            self.echoes.remember(&p.topic, &p.payload, Instant::now());
        }
        self.send(packet);
    }

    /// Whether `p` is the remote echoing back something we sent (3.1.1 links); forgets it.
    fn is_echo(&mut self, p: &Publish) -> bool {
        self.filters_echoes() && self.echoes.take(&p.topic, &p.payload)
    }

    /// Whether nothing on the remote's side keeps our messages from coming back to us.
    fn filters_echoes(&self) -> bool {
        !self.version.is_v5() && !self.bridge_bit
    }

    fn send(&mut self, packet: &Packet) {
        if let Err(e) = protocol::encode(packet, self.version, &mut self.outbuf) {
            warn!(error = %e, "bridge: packet could not be encoded");
        }
    }
}

impl Link {
    /// Connects to `addr` (TLS with `cafile` or `capath`), sends CONNECT and reads the CONNACK.
    async fn connect(
        cfg: &BridgeConfig,
        addr: &str,
        max_packet: u32,
        bridge_bit: bool,
    ) -> Result<(Link, ConnAck), Failure> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Remote> = match cfg.uses_tls() {
            false => Box::new(tcp),
            true => {
                let connector = tls_connector(cfg)?;
                let host = cfg.server_name.clone().unwrap_or_else(|| {
                    addr.rsplit_once(':')
                        .map_or(addr, |(h, _)| h)
                        .trim_matches(['[', ']'])
                        .to_string()
                });
                let name = rustls_pki_types::ServerName::try_from(host)
                    .map_err(|e| format!("server name: {e}"))?;
                Box::new(
                    connector
                        .connect(name, tcp)
                        .await
                        .map_err(|e| format!("TLS: {e}"))?,
                )
            }
        };
        let version = if cfg.is_v5() {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        };
        let (rd, wr) = tokio::io::split(stream);
        let mut link = Link {
            rd,
            wr,
            decoder: Decoder::client(
                if version.is_v5() {
                    max_packet
                } else {
                    MQTT_MAX_PACKET
                },
                version,
            ),
            inbuf: BytesMut::new(),
            wire: Wire {
                outbuf: BytesMut::new(),
                version,
                shaper: Shaper::new(version, &ConnAck::default()),
                echoes: Echoes::default(),
                bridge_bit,
            },
            keep_alive: Duration::from_secs(u64::from(cfg.keep_alive_secs)),
            last_write: Instant::now(),
            ping_sent: None,
            subscribing: None,
            carrier: Carrier::default(),
            effects: Vec::new(),
        };
        let connect = Connect {
            version,
            client_id: cfg.remote_client_id(),
            clean_start: cfg.clean_start,
            keep_alive: cfg.keep_alive_secs,
            username: cfg.username.clone(),
            password: cfg.password.clone().map(Into::into),
            will: None,
            properties: ConnectProperties {
                session_expiry_interval: cfg.is_v5().then_some(cfg.session_expiry_secs),
                maximum_packet_size: cfg.is_v5().then_some(max_packet),
                ..ConnectProperties::default()
            },
            bridge: bridge_bit,
        };
        link.wire.send(&Packet::Connect(Box::new(connect)));
        link.flush().await.map_err(|e| format!("write: {e}"))?;
        // A remote that does not know the bridge bit refuses the protocol level (0x01), or
        // just closes.
        let refused = |why: String| Failure {
            why,
            maybe_bridge_bit: bridge_bit,
        };
        match link.next_packet().await.map_err(refused)? {
            Packet::ConnAck(ack) if ack.reason == ReasonCode::Success => Ok((link, *ack)),
            Packet::ConnAck(ack) => Err(Failure {
                why: format!("refused: {:?}", ack.reason),
                maybe_bridge_bit: bridge_bit
                    && ack.reason == ReasonCode::UnsupportedProtocolVersion,
            }),
            other => Err(format!("expected CONNACK, got {other:?}").into()),
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        self.wr.write_all(&self.wire.outbuf).await?;
        self.wire.outbuf.clear();
        self.last_write = Instant::now();
        Ok(())
    }

    /// Reads until one packet is decoded (only while connecting).
    async fn next_packet(&mut self) -> Result<Packet, String> {
        loop {
            match self.decoder.decode(&mut self.inbuf) {
                Ok(Some(p)) => return Ok(p),
                Ok(None) => {}
                Err(e) => return Err(format!("from the remote: {e}")),
            }
            match self.rd.read_buf(&mut self.inbuf).await {
                Ok(0) => return Err("closed by the remote".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// Serves the connection: subscribes the `in` rules, resends what the remote has not
    /// acknowledged, then forwards both ways until the link fails or the bridge stops.
    async fn serve(
        &mut self,
        ctx: &Ctx<'_>,
        session: &mut Session,
        ack: &ConnAck,
        stop: &mut watch::Receiver<bool>,
    ) -> End {
        let window = ack
            .properties
            .receive_maximum
            .unwrap_or(u16::MAX)
            .min(ctx.cfg.max_inflight);
        session.set_window(window);
        self.wire.shaper = Shaper::new(self.wire.version, ack);
        if !ack.session_present {
            // The remote starts afresh: its packet ids of QoS 2 messages we received mean
            // nothing any more (and will be reused for new messages).
            session.forget_inbound_qos2(&mut self.effects);
            self.carry(ctx, session, None);
        }
        if let Some(ka) = ack.properties.server_keep_alive {
            self.keep_alive = Duration::from_secs(u64::from(ka));
        }
        self.subscribe_remote(ctx, session);
        let mut scratch = Vec::new();
        loop {
            if self.subscribing.is_none() {
                self.pump(ctx, session, &mut scratch);
            }
            let ev = self.wait(ctx, stop).await;
            match ev {
                Event::Read(Ok(0)) => return End::Lost("closed by the remote".into()),
                Event::Read(Err(e)) | Event::Wrote(Err(e)) => return End::Lost(e.to_string()),
                Event::Read(Ok(_)) => {
                    if let Err(end) = self.handle_input(ctx, session) {
                        return end;
                    }
                }
                Event::Durable => {
                    if let Err(end) = self.release(ctx, session) {
                        return end;
                    }
                }
                Event::Wrote(Ok(n)) => {
                    self.wire.outbuf.advance(n);
                    self.last_write = Instant::now();
                }
                Event::Mail => {
                    if ctx.mailbox.take_kick() {
                        return self.goodbye().await;
                    }
                }
                Event::Timer => {
                    if self
                        .ping_sent
                        .is_some_and(|at| at.elapsed() >= self.keep_alive)
                    {
                        return End::Lost("no PINGRESP within keep-alive".into());
                    }
                    if self.ping_sent.is_none() {
                        self.wire.send(&Packet::PingReq);
                        self.ping_sent = Some(Instant::now());
                    }
                }
                Event::Stop => return self.goodbye().await,
            }
        }
    }

    /// Waits for the next thing to do: bytes from the remote, room to write, deliveries, the
    /// keep-alive timer, or the stop signal.
    async fn wait(&mut self, ctx: &Ctx<'_>, stop: &mut watch::Receiver<bool>) -> Event {
        let keep_alive = self.keep_alive.max(Duration::from_secs(1));
        let timer = match self.ping_sent {
            Some(at) => at + keep_alive,
            None => self.last_write + keep_alive,
        };
        // Room for a burst of acknowledgements in one read (an empty BytesMut reads 64 bytes).
        if self.inbuf.capacity() - self.inbuf.len() < READ_ROOM / 4 {
            self.inbuf.reserve(READ_ROOM);
        }
        let (rd, wr, inbuf, outbuf) = (
            &mut self.rd,
            &mut self.wr,
            &mut self.inbuf,
            &self.wire.outbuf,
        );
        let writing = !outbuf.is_empty();
        let carrier = &mut self.carrier;
        let holding = !carrier.is_empty();
        tokio::select! {
            r = rd.read_buf(inbuf) => Event::Read(r),
            w = wr.write(outbuf), if writing => Event::Wrote(w),
            _ = std::future::poll_fn(|cx| carrier.poll_ready(cx)), if holding => Event::Durable,
            _ = ctx.mailbox.notified() => Event::Mail,
            _ = tokio::time::sleep_until(timer), if self.keep_alive > Duration::ZERO => Event::Timer,
            _ = stop.changed() => Event::Stop,
        }
    }

    /// DISCONNECT (normal) and close, bounded in time.
    async fn goodbye(&mut self) -> End {
        self.wire.send(&Packet::Disconnect(Disconnect::default()));
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.flush().await;
            let _ = self.wr.shutdown().await;
        })
        .await;
        End::Stopped
    }

    /// SUBSCRIBE for the `in` rules (No Local with MQTT 5: what we send never comes back).
    /// Deliveries wait for the SUBACK, so its packet id cannot collide with theirs.
    fn subscribe_remote(&mut self, ctx: &Ctx<'_>, session: &mut Session) {
        let v5 = self.wire.version.is_v5();
        let filters: Vec<SubscribeFilter> = ctx
            .rules
            .iter()
            .filter(|r| r.inbound)
            .map(|r| SubscribeFilter {
                filter: r.remote_filter.clone(),
                options: SubscriptionOptions {
                    qos: r.qos,
                    no_local: v5,
                    retain_as_published: v5,
                    retain_handling: RetainHandling::SendIfNew,
                },
            })
            .collect();
        if !filters.is_empty() {
            let pkid = (1..=u16::MAX)
                .rev()
                .find(|p| PacketId::new(*p).is_some_and(|id| !session.in_flight(id)))
                .unwrap_or(1);
            self.wire.send(&Packet::Subscribe(Subscribe {
                pkid,
                filters,
                subscription_identifier: None,
                user_properties: Vec::new(),
            }));
            self.subscribing = Some(pkid);
        } else {
            self.resend(ctx, session);
        }
    }

    /// What the remote has not acknowledged, again, in order, DUP set.
    fn resend(&mut self, ctx: &Ctx<'_>, session: &mut Session) {
        session.resend(&mut self.effects);
        self.carry(ctx, session, None);
    }

    /// Carries out the session's effects (the broker's [`Carrier`]): what may go now is
    /// written, the rest held until the store has it. A PUBLISH the remote does not take (a
    /// failover to a remote that takes less than the one it was first sent to, a rule gone
    /// after a reload) ends as the remote refusing it would end it.
    fn carry(&mut self, ctx: &Ctx<'_>, session: &mut Session, after: Option<crate::store::Ticket>) {
        self.through_carrier(ctx, session, |carrier, effects, send| {
            carrier.carry(ctx.state, ctx.mailbox, ctx.local_id, effects, after, send);
        });
    }

    /// Writes held packets whose store writes are durable; a failed write ends the link before
    /// what depended on it goes out.
    fn release(&mut self, ctx: &Ctx<'_>, session: &mut Session) -> Result<(), End> {
        self.through_carrier(ctx, session, |carrier, _, send| carrier.release(send))
            .map_err(|e| End::Lost(format!("store: {e}")))
    }

    /// Runs `f` on the carrier with a [`Writer`] to the remote as its `send`, then ends the
    /// flows of what the remote did not take.
    fn through_carrier<R>(
        &mut self,
        ctx: &Ctx<'_>,
        session: &mut Session,
        f: impl FnOnce(&mut Carrier, &mut Vec<Effect>, &mut dyn FnMut(Out)) -> R,
    ) -> R {
        let mut refused = Vec::new();
        let mut writer = Writer {
            link: &mut self.wire,
            ctx,
            refused: &mut refused,
            now: std::time::Instant::now(),
        };
        let r = f(&mut self.carrier, &mut self.effects, &mut |o| {
            writer.write(o)
        });
        self.abandon(ctx, session, refused);
        r
    }

    /// Ends the flows of PUBLISHes the remote does not take.
    fn abandon(&mut self, ctx: &Ctx<'_>, session: &mut Session, refused: Vec<PacketId>) {
        if refused.is_empty() {
            return;
        }
        for pkid in refused {
            session.abandon(pkid, "refused_by_remote", &mut self.effects);
        }
        self.carry(ctx, session, None);
    }

    /// Moves deliveries from the local queue to the remote, within the remote's window.
    fn pump(
        &mut self,
        ctx: &Ctx<'_>,
        session: &mut Session,
        scratch: &mut Vec<crate::session::Delivery>,
    ) {
        if self.wire.outbuf.len() >= HIGH_WATER {
            return;
        }
        ctx.mailbox.drain_into(
            scratch,
            BATCH,
            session.window_free(),
            &mut ctx.state.feed(session),
        );
        report_queue(&ctx.cfg.name, ctx.mailbox);
        if scratch.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let max_qos = self.wire.shaper.max_qos();
        for mut d in scratch.drain(..) {
            d.qos = d.qos.min(max_qos);
            session.start(d, now, &mut self.effects);
        }
        self.carry(ctx, session, None);
    }

    /// Handles every complete packet read.
    fn handle_input(&mut self, ctx: &Ctx<'_>, session: &mut Session) -> Result<(), End> {
        loop {
            let packet = match self.decoder.decode(&mut self.inbuf) {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()),
                Err(e) => return Err(End::Lost(format!("from the remote: {e}"))),
            };
            self.handle(ctx, session, packet)?;
        }
    }

    fn handle(&mut self, ctx: &Ctx<'_>, session: &mut Session, packet: Packet) -> Result<(), End> {
        let effects = &mut self.effects;
        let (name, outcome) = match packet {
            Packet::PubAck(a) => ("PUBACK", session.on_puback(flow_id(a.pkid)?, effects)),
            Packet::PubRec(a) => (
                "PUBREC",
                session.on_pubrec(flow_id(a.pkid)?, a.reason, effects),
            ),
            Packet::PubComp(a) => ("PUBCOMP", session.on_pubcomp(flow_id(a.pkid)?, effects)),
            Packet::PubRel(a) => ("PUBREL", session.on_pubrel(flow_id(a.pkid)?, effects)),
            Packet::Publish(p) => return self.inbound(ctx, session, p),
            Packet::SubAck(s) if Some(s.pkid) == self.subscribing => {
                self.subscribing = None;
                for (r, code) in ctx.rules.iter().filter(|r| r.inbound).zip(&s.reasons) {
                    if (*code as u8) >= 0x80 {
                        warn!(bridge = %ctx.cfg.name, filter = %r.remote_filter, ?code, "the remote refused a bridge subscription");
                    }
                }
                self.resend(ctx, session);
                return Ok(());
            }
            Packet::PingResp => {
                self.ping_sent = None;
                return Ok(());
            }
            Packet::Disconnect(d) => {
                return Err(End::Lost(format!(
                    "DISCONNECT from the remote: {:?}",
                    d.reason
                )))
            }
            Packet::SubAck(_) | Packet::UnsubAck(_) => return Ok(()),
            other => return Err(End::Lost(format!("unexpected from the remote: {other:?}"))),
        };
        let done = outcome == AckOutcome::Done && matches!(name, "PUBACK" | "PUBCOMP");
        self.carry(ctx, session, None);
        match outcome {
            AckOutcome::Done => {
                if done {
                    metrics::bridge_forwarded(&ctx.cfg.name, "out", 1);
                }
                Ok(())
            }
            AckOutcome::Unknown => {
                metrics::unexpected_ack(name, "unknown");
                Ok(())
            }
            AckOutcome::WrongFlow => {
                metrics::unexpected_ack(name, "wrong_flow");
                Err(End::Lost(format!(
                    "{name} from the remote for a flow in another QoS or stage"
                )))
            }
        }
    }

    /// A message from the remote: published here under its local topic, acknowledged once
    /// it is as safe here as the QoS promises (stored, with persistence on). A QoS 2 message's
    /// packet id is kept in the local session until PUBREL (in the store with it, like a
    /// client's): the remote sending it again, after a reconnect or a restart here, is not
    /// published twice.
    fn inbound(&mut self, ctx: &Ctx<'_>, session: &mut Session, p: Publish) -> Result<(), End> {
        let (qos, pkid) = (p.qos, PacketId::new(p.pkid));
        let mut stored_qos2 = None;
        if let (QoS::ExactlyOnce, Some(id)) = (qos, pkid) {
            match session.on_publish_qos2(id, usize::MAX, &mut self.effects) {
                Qos2In::New => {}
                Qos2In::Duplicate | Qos2In::OverLimit => {
                    self.carry(ctx, session, None);
                    return Ok(());
                }
            }
            stored_qos2 = ctx.mailbox.is_stored().then_some(id);
        }
        // Crossed a bridge here before, or our own message echoed by a 3.1.1 remote: it goes
        // no further (bridge loops).
        let been_here =
            ctx.state.crossed_here(&p.properties.user_properties) || self.wire.is_echo(&p);
        let mapped = to_local(ctx.rules, &p.topic).filter(|(t, _)| {
            !been_here && topic::validate_topic_name(t, usize::MAX).is_ok() && !t.starts_with('$')
        });
        let mut durable = None;
        if let Some((local, max_qos)) = mapped {
            let mut p = p;
            p.topic = local;
            p.qos = p.qos.min(max_qos);
            add_to_path(&mut p.properties.user_properties, ctx.state.id());
            let local_id: Arc<str> = Arc::clone(session.client_id());
            let msg = Arc::new(Message::new(p, Some(local_id), std::time::Instant::now()));
            let inbound_qos2 = stored_qos2.map(|id| (&**session.client_id(), id));
            let Published { durable: d, .. } = ctx.state.publish(msg, inbound_qos2);
            durable = d.filter(|_| qos != QoS::AtMostOnce);
            metrics::bridge_forwarded(&ctx.cfg.name, "in", 1);
        } else {
            debug!(bridge = %ctx.cfg.name, topic = %clip(&p.topic), "message from the remote matches no in rule");
        }
        session.acknowledge(qos, pkid, ReasonCode::Success, &mut self.effects);
        self.carry(ctx, session, durable);
        Ok(())
    }
}

/// The packet id of a QoS flow's acknowledgement (never 0: the decoder refuses it).
fn flow_id(pkid: u16) -> Result<PacketId, End> {
    PacketId::new(pkid).ok_or_else(|| End::Lost("packet identifier 0 from the remote".into()))
}

/// Writes what a [`Carrier`] hands out to the remote. A PUBLISH the remote does not take is
/// not written; its packet id is noted, for the session to end its flow.
struct Writer<'a, 'c> {
    link: &'a mut Wire,
    ctx: &'a Ctx<'c>,
    refused: &'a mut Vec<PacketId>,
    now: std::time::Instant,
}

impl Writer<'_, '_> {
    fn write(&mut self, o: Out) {
        let ctx = self.ctx;
        match o {
            Out::Reply(r) => self.link.send(&r.packet()),
            Out::Control(p, _) => self.link.send(&p),
            Out::Publish {
                pkid,
                dup,
                delivery,
            } => {
                let path_id = ctx.cfg.is_v5().then(|| ctx.state.id());
                match self
                    .link
                    .shaper
                    .publish(ctx.rules, path_id, &delivery, self.now)
                {
                    Ok(mut p) => {
                        p.pkid = pkid.map_or(0, PacketId::get);
                        p.dup = dup;
                        self.link.send_publish(&Packet::Publish(p));
                        if pkid.is_none() {
                            metrics::bridge_forwarded(&ctx.cfg.name, "out", 1);
                        }
                    }
                    Err(why) => {
                        warn!(bridge = %ctx.cfg.name, topic = %clip(delivery.msg.topic()), why, "message not forwarded");
                        match pkid {
                            Some(id) => self.refused.push(id),
                            None => metrics::bridge_dropped(&ctx.cfg.name, 1),
                        }
                    }
                }
            }
            Out::Dropped(_) => metrics::bridge_dropped(&ctx.cfg.name, 1),
        }
    }
}
