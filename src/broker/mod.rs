//! The only code that sees many clients: the registry of sessions, the router, retained messages
//! and wills (`wills`: publication and a parked session's timers). Connections call in with
//! version-neutral types; nothing here knows about encodings or sockets.

mod admin;
mod bell;
pub mod bridged;
mod carrier;
mod durable;
mod expiry;
mod mailbox;
mod queue;
mod queues;
mod registry;
mod remote;
mod retain_budget;
mod retained;
mod router;
mod shared;
mod subscribe;
mod wills;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use std::time::Instant;

pub use admin::{ClientInfo, ListenerView, RetainedDelete, SubscriptionView, MAX_LISTENERS};
pub use bell::Bell;
pub use carrier::{Carrier, Out};
pub use durable::{check as check_store, StoreReport};
pub use mailbox::{Kick, Mailbox, Queued, Source, Streamed};
pub use queues::{is_queue_session, queue_name};
pub use registry::{Attached, ParkedView, PendingWill, SessionView};
pub use remote::{
    both, Claimed, ClusterSession, ClusterWill, Remote, Replayed, Resume, Unfit, Waiting,
};
pub use retained::{Over as RetainedOver, RetainedStream};
pub use router::{Recorder, RouteOutcome};
pub use subscribe::{After, Feed, SubscribeResult, Wanted};

use registry::{Detached, Registry};
use retained::Retained;
use router::{Router, Subscriber};

use crate::auth::{Access, Auth, Identity};
use crate::config::Config;
use crate::metrics;
use crate::session::{Delivery, Message, Seq, Session, StoreOp, NEVER_EXPIRES};
use crate::topic::TopicFilter;
use dashmap::DashMap;

/// Shared broker state; one per running broker.
pub struct BrokerState {
    /// Settings in force; replaced whole by a reload (SIGHUP), so a reader sees one
    /// consistent version.
    config: ArcSwap<Config>,
    registry: Registry,
    router: Router,
    retained: Retained,
    /// The store, when persistence is on.
    durable: Option<durable::Durable>,
    shutting_down: AtomicBool,
    started: Instant,
    /// This broker's name in bridged messages' path (random per start): a message whose path
    /// names it has been here before and is dropped (bridge loops).
    id: String,
    /// Who may connect and what they may do.
    auth: Auth,
    /// Logins that end when their token expires.
    expiries: Arc<expiry::Expiries>,
    /// User names and own rights of clients that logged in with either, for authorizing their
    /// deliveries and wills; a client missing here is anonymous, with no rights of its own.
    usernames: DashMap<Arc<str>, Who>,
    /// The declared queues (`[[queues]]`), fixed from start.
    queues: Vec<Arc<queue::Queue>>,
    /// Every queue, groups included, by the slot a delivery's [`crate::session::Link`] names.
    slots: queues::Slots,
    /// The rest of the cluster, in cluster mode ([`Remote`]).
    remote: OnceLock<Arc<dyn Remote>>,
    /// The MQTT listeners as bound, for the admin API.
    listeners: OnceLock<Vec<ListenerView>>,
}

/// What publishing one message did.
#[derive(Debug)]
pub struct Published {
    /// Deliveries queued and refused.
    pub outcome: RouteOutcome,
    /// Completes once the message's durable part (its retained copy) is on disk; the publisher
    /// is acknowledged only then.
    pub durable: Option<crate::store::Ticket>,
}

/// A client's user name and own rights, as its login set them.
type Who = (Option<Arc<str>>, Option<Arc<crate::auth::Rights>>);

impl BrokerState {
    /// Empty state with these settings, everyone allowed everything (no auth files read).
    pub fn new(config: Config) -> BrokerState {
        let (slots, queues) = queues::Slots::declared(&config);
        BrokerState {
            auth: Auth::permissive(),
            expiries: Arc::default(),
            usernames: DashMap::new(),
            queues,
            slots,
            config: ArcSwap::from_pointee(config),
            registry: Registry::default(),
            router: Router::default(),
            retained: Retained::default(),
            durable: None,
            shutting_down: AtomicBool::new(false),
            started: Instant::now(),
            id: format!("{:016x}", rand::random::<u64>()),
            remote: OnceLock::new(),
            listeners: OnceLock::new(),
        }
    }

    /// State with these settings and, when persistence is on, what the store holds: retained
    /// messages, and persistent sessions parked with their subscriptions and the expiry time
    /// they have left. Runs inside the runtime (expiry timers start here).
    pub fn open(config: Config, auth: Auth) -> Result<Arc<BrokerState>, crate::store::StoreError> {
        let mut state = BrokerState::new(config);
        state.auth = auth;
        let mut sessions = Vec::new();
        let mut groups = Vec::new();
        let mut ended_wills = Vec::new();
        let persistence = state.config().persistence.clone();
        if persistence.enabled {
            let (durable, recovered) = durable::Durable::open(&persistence)?;
            for msg in &recovered.retained {
                state.retained.update(msg);
            }
            sessions = recovered.sessions;
            ended_wills = recovered.ended_wills;
            state.durable = Some(durable);
            (sessions, groups) = state.restore_queues(sessions);
        }
        let state = Arc::new(state);
        let due: Vec<_> = sessions
            .into_iter()
            .filter_map(|stored| state.restore_session(stored))
            .collect();
        state.restore_groups(groups);
        // Wills go out once every session is back, so persistent subscribers get them.
        for (msg, _) in ended_wills {
            state.publish_will_message(Arc::new(msg));
        }
        for (client_id, generation) in due {
            state.publish_will(&client_id, generation);
        }
        Ok(state)
    }

    /// Parks a stored session; returns it if its will is due at once.
    fn restore_session(
        self: &Arc<Self>,
        stored: durable::StoredSession,
    ) -> Option<(Arc<str>, u32)> {
        let config = self.config();
        let limits = &config.limits;
        let client_id: Arc<str> = stored.client_id.into();
        let mut session = Session::new(
            Arc::clone(&client_id),
            stored.expiry_interval,
            limits.max_inflight_messages,
        );
        let mailbox = Arc::new(Mailbox::new(
            limits.max_queued_messages,
            config.session.queue_qos0_offline,
        ));
        if limits.max_queued_bytes.is_some()
            && !bridged::is_bridge_session(&client_id)
            && !is_queue_session(&client_id)
        {
            mailbox.set_bounds(limits.max_queued_messages, limits.max_queued_bytes);
        }
        for (filter, sub) in stored.subscriptions {
            // Valid when stored; one that is not any more is left out.
            let Ok(filter) = TopicFilter::parse(&filter) else {
                continue;
            };
            // The weight a SUBSCRIBE gave is not stored: `[shared.weights]` or 1 until the
            // client subscribes again.
            let subscriber = Subscriber {
                client_id: Arc::clone(&client_id),
                mailbox: Arc::clone(&mailbox),
                options: sub.options,
                id: sub.id,
            };
            let joining = queues::Joining {
                weight: self.share_weight(&client_id, None),
                window: limits.max_inflight_messages,
            };
            if queue_name(filter.as_str()).is_some() || filter.share().is_some() {
                let Some((slot, _)) = self.join_queue(&filter, subscriber, joining) else {
                    continue;
                };
                self.queue_ready(slot, &client_id);
            } else {
                self.router.subscribe(filter.filter(), subscriber);
            }
            session.subscribe(filter, sub);
        }
        for pkid in stored.released {
            session.restore_released(pkid);
        }
        session.restore_inflight(stored.inflight);
        for pkid in stored.inbound_qos2 {
            session.restore_inbound_qos2(pkid);
        }
        mailbox.set_stored(true);
        mailbox.restore(stored.queue);
        let (pending, will_left) = match stored.will {
            Some((msg, left, disconnected)) => (
                Some(PendingWill {
                    msg: Arc::new(msg),
                    disconnected,
                    claim: None,
                }),
                Some(left),
            ),
            None => (None, None),
        };
        let generation = self.registry.restore(Box::new(session), mailbox, pending);
        let will_due = self.start_timers(
            &client_id,
            generation,
            stored.expiry_interval,
            stored.remaining,
            will_left,
        );
        will_due.then_some((client_id, generation))
    }

    /// Marks the broker as stopping and wakes every connected client's task so it says goodbye.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.registry.wake_connected();
    }

    /// Whether the broker is stopping.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Retains (if flagged) and routes an accepted message. With persistence, its retained
    /// copy, its deliveries to stored sessions and `inbound_qos2` (the publisher's client id and
    /// packet id, when its session is stored) are written as one batch, whose ticket the
    /// publisher's acknowledgement waits for.
    pub fn publish(
        &self,
        msg: Arc<Message>,
        inbound_qos2: Option<(&str, crate::protocol::PacketId)>,
    ) -> Published {
        self.publish_from(msg, inbound_qos2, None)
    }

    /// [`BrokerState::publish`], for an inbound QoS 2 message with its
    /// [`Session::inbound_qos2_serial`] (cluster mode stores each such message once by it).
    pub fn publish_from(
        &self,
        msg: Arc<Message>,
        inbound_qos2: Option<(&str, crate::protocol::PacketId)>,
        serial: Option<u64>,
    ) -> Published {
        if let Some(remote) = self.remote.get() {
            if !msg.topic().starts_with("$SYS") {
                let msg = self.within_budget_for_cluster(msg);
                return self.publish_clustered(remote, msg, serial);
            }
        }
        let retained = msg.publish.retain && self.retain_within_budget(&msg);
        let Some(d) = &self.durable else {
            return Published {
                outcome: self.route(&msg, None),
                durable: None,
            };
        };
        let mut batch = d.batch();
        if retained {
            batch.retain(&msg);
        }
        let outcome = self.route(&msg, Some(&mut batch));
        if let Some((client_id, pkid)) = inbound_qos2 {
            batch.inbound_qos2(client_id, pkid);
        }
        Published {
            outcome,
            durable: batch.submit(),
        }
    }

    /// Cluster mode: a QoS 0 message is routed here at once and handed to the cluster for the
    /// other nodes; a QoS 1/2 one goes into the cluster's stream only, and comes back to every
    /// node from there (this one too), so every node delivers it the same way, once it is
    /// stored. Retained copies live in the cluster; this node's copy follows it.
    fn publish_clustered(
        &self,
        remote: &Arc<dyn Remote>,
        msg: Arc<Message>,
        serial: Option<u64>,
    ) -> Published {
        let local = msg.qos() == crate::protocol::QoS::AtMostOnce;
        let outcome = if local {
            // Queues and groups get it from the cluster, each message from one node.
            self.route_noting(&msg, None, false)
        } else {
            RouteOutcome {
                forwarded: true,
                ..RouteOutcome::default()
            }
        };
        Published {
            outcome,
            durable: remote.forward(&msg, local, serial),
        }
    }

    /// Routes `msg` to every subscriber allowed to read it, and offers it to the groups and
    /// declared queues it matches (each of those checks who may read it as it hands it out).
    fn route(
        &self,
        msg: &Arc<Message>,
        recorder: Option<&mut dyn router::Recorder>,
    ) -> RouteOutcome {
        self.route_noting(msg, recorder, true)
    }

    /// [`BrokerState::route`]; queues and groups are offered the message only with
    /// `to_queues`.
    fn route_noting(
        &self,
        msg: &Arc<Message>,
        mut recorder: Option<&mut dyn router::Recorder>,
        to_queues: bool,
    ) -> RouteOutcome {
        let mut groups = Vec::new();
        let r = recorder
            .as_mut()
            .map(|r| &mut **r as &mut dyn router::Recorder);
        let mut outcome = match self.auth.authorizer() {
            None => self.router.route(msg, r, None, &mut groups),
            Some(authorizer) => {
                let may_read = |id: &Arc<str>| self.may_read(&authorizer, id, msg.topic());
                self.router.route(msg, r, Some(&may_read), &mut groups)
            }
        };
        // Cluster mode: queues and groups take QoS 1/2 messages from the cluster, each to
        // one node ([`Remote::queue_opened`]), and QoS 0 ones only where published.
        let (taken, group_full, refused) = if to_queues {
            self.enqueue(msg, recorder, &groups)
        } else {
            (0, 0, 0)
        };
        outcome.delivered += taken;
        outcome.dropped_queue_full += group_full;
        outcome.refused = refused;
        metrics::routed(outcome.delivered, outcome.dropped_queue_full);
        outcome
    }

    /// Whether `client_id` may read `topic` by `authorizer` (counted when not). A bridge may:
    /// it forwards what its rules say, and the remote enforces its own ACL.
    fn may_read(
        &self,
        authorizer: &Arc<dyn crate::auth::Authorizer>,
        client_id: &Arc<str>,
        topic: &str,
    ) -> bool {
        if bridged::is_bridge_session(client_id) {
            return true;
        }
        let ok = authorizer.allows(&self.identity(client_id), topic, Access::Read);
        if !ok {
            metrics::acl_denied("read");
        }
        ok
    }

    /// This broker's id in bridged messages' path.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether a message with these user properties left or entered this broker through a
    /// bridge before: coming back, it would circle between bridged brokers.
    pub fn crossed_here(&self, user_properties: &crate::protocol::UserProperties) -> bool {
        bridged::visited(user_properties, &self.id)
    }

    /// Who `client_id` is, as far as authorization goes.
    pub fn identity(&self, client_id: &Arc<str>) -> Identity {
        let (username, rights) = self
            .usernames
            .get(client_id)
            .map(|who| who.clone())
            .unwrap_or_default();
        Identity {
            client_id: Arc::clone(client_id),
            username,
            rights,
        }
    }

    /// Authentication and authorization.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Records who `client_id` logged in as (None: anonymous) and the rights its login
    /// granted, if any.
    pub fn set_login(
        &self,
        client_id: &Arc<str>,
        username: Option<&str>,
        rights: Option<Arc<crate::auth::Rights>>,
    ) {
        if username.is_none() && rights.is_none() {
            self.usernames.remove(client_id);
        } else {
            self.usernames
                .insert(Arc::clone(client_id), (username.map(Arc::from), rights));
        }
    }

    /// The settings in force (a reload replaces them; keep the guard only briefly).
    pub fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// Puts reloaded settings in force. What only a restart can change (listeners, the store,
    /// the log format) is kept as it is; returns the keys that changed there, to report.
    pub fn reload(&self, mut new: Config) -> Vec<&'static str> {
        let old = self.config.load_full();
        let mut ignored = Vec::new();
        if new.listener != old.listener {
            ignored.push("listener");
            new.listener = old.listener.clone();
        }
        if new.listeners != old.listeners {
            ignored.push("listeners");
            new.listeners = old.listeners.clone();
        }
        if new.http != old.http {
            ignored.push("http");
            new.http = old.http.clone();
        }
        if new.queues != old.queues {
            ignored.push("queues");
            new.queues = old.queues.clone();
        }
        if new.cluster != old.cluster {
            ignored.push("cluster");
            new.cluster = old.cluster.clone();
        }
        if new.persistence != old.persistence {
            ignored.push("persistence");
            new.persistence = old.persistence.clone();
        }
        if new.log.format != old.log.format {
            ignored.push("log.format");
            new.log.format = old.log.format;
        }
        self.config.store(Arc::new(new));
        ignored
    }

    /// Completes once everything written to the store so far is durable (shutdown); `None`
    /// without persistence.
    pub fn flush_store(&self) -> Option<crate::store::Ticket> {
        self.durable.as_ref().map(durable::Durable::flush)
    }

    /// Retains (in memory only) and routes a message the broker itself publishes about its
    /// own process (`$SYS`): nothing of it is stored, and a restart starts it afresh.
    pub fn publish_volatile(&self, msg: Arc<Message>) {
        if msg.publish.retain {
            self.retained.update(&msg);
        }
        self.route(&msg, None);
    }

    /// Stored message `seq` as a delivery to `client_id`, read back from the store; `None` if
    /// it cannot be (expired, unreadable: counted, and no longer owed).
    pub fn load_stored(&self, client_id: &str, seq: u64) -> Option<Delivery> {
        self.durable.as_ref()?.load(client_id, seq)
    }

    /// Applies a session's store operations (the [`Effect::Store`](crate::session::Effect) and
    /// `Durable` ones of its flows), for a session the store keeps (its mailbox says so); a
    /// no-op otherwise. With `durable`, returns the ticket that completes once they are on
    /// disk.
    pub fn apply_store(
        &self,
        mailbox: &Mailbox,
        client_id: &str,
        ops: &[StoreOp],
        durable: bool,
    ) -> Option<crate::store::Ticket> {
        if ops.is_empty() || !mailbox.is_stored() {
            return None;
        }
        if let Some(remote) = self.remote.get() {
            return clustered_store(remote.as_ref(), client_id, ops);
        }
        self.durable.as_ref()?.apply(client_id, ops, durable)
    }

    /// Attaches a new connection to the session of `client_id` (taking it over from a live
    /// connection if needed). A session ended by clean start is cleaned up here.
    pub async fn attach(
        self: &Arc<Self>,
        client_id: &Arc<str>,
        clean_start: bool,
        expiry_interval: u32,
        window: u16,
        will: Option<(&Message, u32)>,
    ) -> Attached {
        let limits = &self.config().limits;
        let (limit, max_bytes) = (limits.max_queued_messages, limits.max_queued_bytes);
        let attached = self
            .attach_queue(client_id, clean_start, expiry_interval, window, will, limit)
            .await;
        if max_bytes.is_some() {
            attached.mailbox.set_bounds(limit, max_bytes);
        }
        attached
    }

    /// A bridge's local session, always persistent: like [`BrokerState::attach`], with its
    /// queue bounded by `max_messages` deliveries and `max_bytes` payload bytes (a session
    /// read back from the store, or kept from before a reload, gets these bounds too).
    pub async fn attach_bridge(
        self: &Arc<Self>,
        client_id: &Arc<str>,
        window: u16,
        max_messages: usize,
        max_bytes: Option<u64>,
    ) -> Attached {
        let attached = self
            .attach_queue(client_id, false, NEVER_EXPIRES, window, None, max_messages)
            .await;
        attached.mailbox.set_bounds(max_messages, max_bytes);
        attached
    }

    /// [`BrokerState::attach`] with a queue of `queue_limit` deliveries (for a new mailbox;
    /// a resumed one keeps its own).
    async fn attach_queue(
        self: &Arc<Self>,
        client_id: &Arc<str>,
        clean_start: bool,
        expiry_interval: u32,
        window: u16,
        will: Option<(&Message, u32)>,
        queue_limit: usize,
    ) -> Attached {
        let config = self.config();
        let mut attached = self
            .registry
            .attach(
                client_id,
                clean_start,
                || Mailbox::new(queue_limit, config.session.queue_qos0_offline),
                || Session::new(Arc::clone(client_id), expiry_interval, window),
            )
            .await;
        if let Some((old, will)) = attached.ended.take() {
            let queued = attached.mailbox.take_all();
            self.end_session(&old, attached.mailbox.is_stored(), will, queued);
        }
        attached.session.expiry_interval = expiry_interval;
        attached.session.set_window(window);
        if self.remote.get().is_some() {
            // Cluster mode: a persistent session's place in the cluster's stream is kept.
            attached.mailbox.set_stored(expiry_interval > 0);
        }
        if let Some(durable) = &self.durable {
            let session = &mut attached.session;
            if expiry_interval > 0 {
                attached.stored =
                    Some(durable.session_connected(session, !attached.session_present, will));
                attached.mailbox.set_stored(true);
            } else if attached.mailbox.is_stored() {
                // Resumed without persistence: its messages stay in memory only, read back
                // from the store before it lets them go.
                let mut seqs: Vec<u64> = session.stored_seqs().map(Seq::get).collect();
                let queued: Vec<Queued> = attached
                    .mailbox
                    .take_all()
                    .into_iter()
                    .filter_map(|q| match q {
                        Queued::Stored(seq, _) => {
                            seqs.push(seq);
                            durable.read(session.client_id(), seq).map(Queued::Ready)
                        }
                        Queued::Ready(d) => {
                            seqs.extend(d.seq.map(Seq::get));
                            Some(Queued::Ready(d))
                        }
                        // Its walk goes on where it stood: it was never stored.
                        Queued::Retained(s) => Some(Queued::Retained(s)),
                    })
                    .collect();
                attached.mailbox.push_front_all(queued);
                durable.session_ended(session.client_id(), &seqs);
                attached.mailbox.set_stored(false);
            }
        }
        attached.mailbox.set_online(true);
        self.queues_online(&attached.session);
        attached
    }

    /// The connection of `generation` has ended. `will` is published now, after its delay, or at
    /// session end, whichever the spec says comes first.
    pub fn detach(
        self: &Arc<Self>,
        client_id: &Arc<str>,
        generation: u32,
        mut session: Box<Session>,
        mailbox: &Arc<Mailbox>,
        will: Option<(Arc<Message>, u32)>,
    ) {
        let claim = session.claim().map(std::num::NonZeroU64::get);
        self.give_back_unreceived(&mut session, mailbox);
        if let Some(max) = self.config().session.max_expiry_secs {
            // Mosquitto's persistent_client_expiration: clients' sessions only; a bridge's
            // or queue's own session keeps what it holds for as long as it takes.
            if !bridged::is_bridge_session(client_id) && !is_queue_session(client_id) {
                session.expiry_interval = session.expiry_interval.min(max);
            }
        }
        let expiry = session.expiry_interval;
        let (will_now, will_later) = wills::at_disconnect(will, expiry);
        if let Some(msg) = will_now {
            self.publish_will_message(msg);
        }
        if will_later.is_none() {
            // No will waits any more: the cluster's copy goes too.
            self.will_settled(client_id, claim);
        }
        let now = std::time::SystemTime::now();
        let pending = will_later.as_ref().map(|(msg, _)| PendingWill {
            msg: Arc::clone(msg),
            disconnected: now,
            claim,
        });
        let stored = mailbox.is_stored();
        match self
            .registry
            .detach(client_id, generation, session, pending)
        {
            Detached::Stale => {}
            Detached::Ended(session, will) => {
                let queued = mailbox.take_all();
                self.end_session(&session, stored, will, queued);
            }
            Detached::Parked => {
                if let (Some(remote), Some(claim)) = (self.remote.get(), claim) {
                    remote.parked(client_id, claim, will_later.is_some());
                }
                if let Some(durable) = self.durable.as_ref().filter(|_| stored) {
                    let will = will_later.as_ref().map(|(m, d)| (&**m, *d));
                    durable.session_disconnected(client_id, expiry, now, will);
                }
                // Its delay is never 0 here: a will without one went out above.
                let will_left = will_later.map(|(_, delay)| delay);
                self.start_timers(client_id, generation, expiry, expiry, will_left);
            }
        }
    }

    /// A session is gone: drop its subscriptions (and its stored record, when `stored`) and
    /// send its pending will.
    fn end_session(
        &self,
        session: &Session,
        stored: bool,
        will: Option<PendingWill>,
        queued: Vec<Queued>,
    ) {
        if let Some(durable) = self.durable.as_ref().filter(|_| stored) {
            // What it was still owed no longer holds stored messages back.
            let seqs: Vec<u64> = session
                .stored_seqs()
                .chain(queued.iter().filter_map(Queued::seq))
                .map(Seq::get)
                .collect();
            durable.session_ended(session.client_id(), &seqs);
        }
        for filter in session.subscriptions().keys() {
            if !self.leave_queue(filter, session.client_id()) {
                self.router
                    .unsubscribe(filter.filter(), session.client_id());
            }
        }
        // Queues' messages it held: those never sent go back, those it had in flight end
        // with it [MQTT-4.8.2-5].
        self.give_back(session.client_id(), queued, Vec::new());
        let mut settled = Vec::new();
        session.settle_ended(&mut settled);
        for e in settled {
            if let crate::session::Effect::Settle(link, how) = e {
                self.settle(link, how);
            }
        }
        if let Some(will) = will {
            self.publish_will_message(will.msg);
            self.will_settled(session.client_id(), will.claim);
        }
        if let (Some(remote), Some(claim)) = (self.remote.get(), session.claim()) {
            remote.ended(session.client_id(), claim.get());
        }
        // Only if no newer connection holds the client id: its login is its own (it may have
        // attached while this session was being ended).
        let client_id = session.client_id();
        self.usernames
            .remove_if(client_id, |_, _| !self.registry.holds(client_id));
    }

    /// Hands every message a queue (declared, or a shared subscription's group) handed this
    /// client and that it did not receive back to its queue: those never sent, and QoS 1 ones
    /// sent and not acknowledged (QoS 2 ones stay [MQTT-4.8.2-4]).
    fn give_back_unreceived(&self, session: &mut Session, mailbox: &Arc<Mailbox>) {
        let inflight = session.take_unreceived();
        let keep = self.give_back(session.client_id(), mailbox.take_all(), inflight);
        mailbox.push_front_all(keep);
    }

    /// What the broker holds now, for the gauges read at scrape time. Walks every session (a
    /// lock per mailbox) and every retained message: meant for a scrape every few seconds.
    pub fn snapshot(&self) -> metrics::Snapshot {
        let (online, offline, queued) = self.registry.stats();
        let (retained, retained_bytes) = self.retained.stats();
        metrics::Snapshot {
            sessions_online: online,
            sessions_offline: offline,
            subscriptions: self.router.len(),
            queued,
            inflight: crate::session::inflight_total(),
            retained,
            retained_bytes,
            uptime_secs: self.started.elapsed().as_secs_f64(),
        }
    }

    /// Number of known sessions (connected or parked).
    pub fn session_count(&self) -> usize {
        self.registry.len()
    }

    /// Number of retained messages.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }
}

/// Cluster mode: a persistent session's store operations, as the cluster keeps them: stream
/// messages released (the floor moves past them), QoS 2 flows in both directions. The ticket
/// (outbound QoS 2 sent, or at PUBREL) holds the PUBLISH or PUBREL until the cluster has it.
fn clustered_store(
    remote: &dyn Remote,
    client_id: &str,
    ops: &[StoreOp],
) -> Option<crate::store::Ticket> {
    remote.released(client_id, &mut ops.iter().filter_map(released_seq));
    let mut wait = None;
    for op in ops {
        let ticket = match *op {
            StoreOp::InboundReleased(pkid) => remote.inbound_qos2(client_id, pkid, None),
            StoreOp::Delivered(_) => None,
            op => remote.outbound_qos2(client_id, op),
        };
        if matches!(op, StoreOp::Sent(..) | StoreOp::Released(..)) {
            wait = remote::both(wait, ticket);
        }
    }
    wait
}

/// The stream sequence a store operation releases, if any.
fn released_seq(op: &StoreOp) -> Option<u64> {
    match *op {
        StoreOp::Delivered(seq) | StoreOp::Acked(_, seq) | StoreOp::Released(_, seq) => {
            Some(seq.get())
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
