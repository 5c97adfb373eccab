//! One entry per client id: either connected (with a way to kick that connection) or parked (the
//! session waiting for its client, with a pending will). Takeover is one atomic step on the entry:
//! the old connection is told to go, parks its session, and the new one takes it over.

use std::sync::Arc;
use std::time::Duration;

use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;
use tokio::sync::Notify;

use super::admin::ClientInfo;
use super::mailbox::Mailbox;
use crate::session::{Message, Session};

/// A will waiting for its delay or for the end of its session.
#[derive(Debug, Clone)]
pub struct PendingWill {
    /// The message to publish.
    pub msg: Arc<Message>,
    /// When the connection ended (the store keeps it, so a restart does not move it).
    pub disconnected: std::time::SystemTime,
    /// Cluster mode: the claim of the connection that left it, under which the cluster keeps
    /// the will too (another node publishes it should this one die first).
    pub claim: Option<u64>,
}

/// What a connection gets when it attaches to its session.
#[derive(Debug)]
pub struct Attached {
    /// The session, resumed or new.
    pub session: Box<Session>,
    /// Its mailbox (the same one across reconnects).
    pub mailbox: Arc<Mailbox>,
    /// Identifies this connection's tenure of the entry.
    pub generation: u32,
    /// CONNACK Session Present.
    pub session_present: bool,
    /// A session that clean start ended, with its pending will, for the caller to clean up.
    pub ended: Option<(Box<Session>, Option<PendingWill>)>,
    /// Completes once the session's record is durable (persistent sessions only); CONNACK
    /// with Session Present = 1 waits for it.
    pub stored: Option<crate::store::Ticket>,
}

enum State {
    /// A connection drains the mailbox; a takeover kicks it through the mailbox. `info`: what
    /// the admin API shows of it, once it is set (clients only, not bridges' local sessions).
    Connected { info: Option<Arc<ClientInfo>> },
    Parked {
        session: Box<Session>,
        /// Boxed: most parked sessions have none, and every entry, connected ones too, pays
        /// for the largest variant (memory per idle connection).
        will: Option<Box<PendingWill>>,
    },
}

/// 32 bytes, 48 with its key: the map's buckets are most of what the registry costs per
/// client (memory per idle client, docs/architecture.md).
struct Entry {
    /// Counts the connections that took the entry (wrapping: a connection compares its own
    /// with the entry's while it lives, and 2^32 takeovers do not fit in one lifetime).
    generation: u32,
    /// A parked session: when its expiry timer ends it, in Unix seconds (0: never, or no
    /// timer started yet). Wall-clock and 4 bytes: it is only shown, every entry pays for it
    /// (here, beside the generation, it takes no room of its own).
    expires_at: u32,
    mailbox: Arc<Mailbox>,
    state: State,
}

/// One known client id as the admin API lists it: connected (with its connection's figures)
/// or parked.
#[derive(Debug, Clone)]
pub struct SessionView {
    /// The client id.
    pub client_id: Arc<str>,
    /// The connection, when connected through a listener.
    pub info: Option<Arc<ClientInfo>>,
    /// Its queue.
    pub mailbox: Arc<Mailbox>,
    /// Parked: its subscriptions' filters and its expiry interval, when it ends.
    pub parked: Option<ParkedView>,
}

/// What a parked session shows.
#[derive(Debug, Clone)]
pub struct ParkedView {
    /// Its subscriptions' filters as the client sent them.
    pub filters: Vec<String>,
    /// Its Session Expiry Interval, in seconds.
    pub expiry_interval: u32,
    /// When its expiry timer ends it (`None`: never).
    pub expires_at: Option<std::time::SystemTime>,
}

/// What [`Registry::detach`] did with a session.
#[derive(Debug)]
pub enum Detached {
    /// Parked until the client returns or it expires.
    Parked,
    /// Ended now (expiry interval 0): the caller removes its subscriptions and sends the will.
    Ended(Box<Session>, Option<PendingWill>),
    /// The entry belongs to a newer connection already; nothing done.
    Stale,
}

/// What [`Registry::evict`] found.
pub enum Evicted<'r> {
    /// No entry (any more).
    Gone,
    /// The parked session, taken out of the registry.
    Parked(Box<Session>, Arc<Mailbox>),
    /// A live connection, now told to go; resolves when some session parks (then look again).
    Connected(tokio::sync::futures::Notified<'r>),
}

/// Every client id the broker knows.
#[derive(Default)]
pub struct Registry {
    clients: DashMap<Arc<str>, Entry>,
    /// Wakes takeovers waiting for an old connection to park its session. One for all clients:
    /// takeovers are rare, and a spurious wake-up only costs a re-check.
    parked: Notify,
}

/// Bounds the wait for an old connection to let go during takeover; it only has to finish one
/// loop iteration, so this is reached only if it is wedged.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

impl Registry {
    /// Takes over the entry for `client_id`: kicks a live connection and waits for it to park,
    /// then resumes the parked session unless `clean_start`, in which case `fresh` builds the new
    /// one.
    pub async fn attach(
        &self,
        client_id: &Arc<str>,
        clean_start: bool,
        new_mailbox: impl Fn() -> Mailbox,
        fresh: impl Fn() -> Session,
    ) -> Attached {
        let mut give_up = tokio::time::Instant::now() + TAKEOVER_WAIT;
        loop {
            let parked;
            let seen;
            {
                let entry = match self.clients.entry(Arc::clone(client_id)) {
                    MapEntry::Vacant(v) => {
                        let mailbox = Arc::new(new_mailbox());
                        v.insert(Entry {
                            generation: 1,
                            expires_at: 0,
                            mailbox: Arc::clone(&mailbox),
                            state: State::Connected { info: None },
                        });
                        return Attached {
                            session: Box::new(fresh()),
                            mailbox,
                            generation: 1,
                            session_present: false,
                            ended: None,
                            stored: None,
                        };
                    }
                    MapEntry::Occupied(o) => o.into_ref(),
                };
                let mut entry = entry;
                let e = entry.value_mut();
                match std::mem::replace(&mut e.state, State::Connected { info: None }) {
                    State::Connected { info } => {
                        e.state = State::Connected { info };
                        // Still the old connection's: tell it to go [MQTT-3.1.4-3], and wait
                        // for it to park the session.
                        seen = e.generation;
                        e.mailbox.kick();
                        // Registered before the entry lock is released, so the old
                        // connection's `notify_waiters` in `detach` cannot be missed.
                        parked = self.parked.notified();
                    }
                    State::Parked { session, will, .. } => {
                        e.generation = e.generation.wrapping_add(1);
                        // A kick meant for the previous connection is not for this one.
                        e.mailbox.take_kick();
                        // The ended session's queue is emptied by the caller, which releases what
                        // of it was stored.
                        let (session, ended) = if clean_start {
                            (Box::new(fresh()), Some((session, will.map(|w| *w))))
                        } else {
                            (session, None)
                        };
                        return Attached {
                            session,
                            mailbox: Arc::clone(&e.mailbox),
                            generation: e.generation,
                            session_present: ended.is_none(),
                            ended,
                            stored: None,
                        };
                    }
                }
            }
            if tokio::time::timeout_at(give_up, parked).await.is_err() {
                self.abandon(client_id, seen, &fresh);
                give_up = tokio::time::Instant::now() + TAKEOVER_WAIT;
            }
        }
    }

    /// The connection of `generation` never parked its session (its task died): let the client
    /// id be used again, with a fresh session, rather than refuse it for ever.
    fn abandon(&self, client_id: &Arc<str>, generation: u32, fresh: impl Fn() -> Session) {
        if let Some(mut e) = self.clients.get_mut(client_id) {
            if e.generation == generation && matches!(e.state, State::Connected { .. }) {
                tracing::warn!(%client_id, "previous connection vanished without its session");
                e.state = State::Parked {
                    session: Box::new(fresh()),
                    will: None,
                };
                e.expires_at = 0;
            }
        }
    }

    /// The connection of `generation` ended: park its session, or end it when its expiry
    /// interval is 0.
    pub fn detach(
        &self,
        client_id: &Arc<str>,
        generation: u32,
        session: Box<Session>,
        will: Option<PendingWill>,
    ) -> Detached {
        let MapEntry::Occupied(mut o) = self.clients.entry(Arc::clone(client_id)) else {
            return Detached::Stale;
        };
        if o.get().generation != generation {
            return Detached::Stale;
        }
        o.get().mailbox.set_online(false);
        self.parked.notify_waiters();
        if session.expiry_interval == 0 {
            o.remove();
            return Detached::Ended(session, will);
        }
        let e = o.get_mut();
        e.state = State::Parked {
            session,
            will: will.map(Box::new),
        };
        e.expires_at = 0;
        Detached::Parked
    }

    /// Takes the entry of `client_id` out, for a client that now lives on another node: a
    /// parked session is handed back to be ended; a live connection is kicked first.
    pub fn evict(&self, client_id: &Arc<str>) -> Evicted<'_> {
        let MapEntry::Occupied(o) = self.clients.entry(Arc::clone(client_id)) else {
            return Evicted::Gone;
        };
        if matches!(o.get().state, State::Connected { .. }) {
            // Registered before the entry lock is released: the park cannot be missed.
            let parked = self.parked.notified();
            o.get().mailbox.kick();
            return Evicted::Connected(parked);
        }
        let entry = o.remove();
        match entry.state {
            State::Parked { session, .. } => Evicted::Parked(session, entry.mailbox),
            State::Connected { .. } => Evicted::Gone,
        }
    }

    /// Ends a parked session whose expiry interval ran out, if `generation` still owns it.
    pub fn expire(
        &self,
        client_id: &Arc<str>,
        generation: u32,
    ) -> Option<(Box<Session>, Option<PendingWill>, Arc<Mailbox>)> {
        let MapEntry::Occupied(o) = self.clients.entry(Arc::clone(client_id)) else {
            return None;
        };
        if o.get().generation != generation || !matches!(o.get().state, State::Parked { .. }) {
            return None;
        }
        let entry = o.remove();
        match entry.state {
            State::Parked { session, will, .. } => Some((session, will.map(|w| *w), entry.mailbox)),
            State::Connected { .. } => None,
        }
    }

    /// Takes a parked session out, whatever its generation (an operator ends it).
    pub fn remove_parked(
        &self,
        client_id: &str,
    ) -> Option<(Box<Session>, Option<PendingWill>, Arc<Mailbox>)> {
        let MapEntry::Occupied(o) = self.clients.entry(Arc::from(client_id)) else {
            return None;
        };
        if !matches!(o.get().state, State::Parked { .. }) {
            return None;
        }
        let entry = o.remove();
        match entry.state {
            State::Parked { session, will, .. } => Some((session, will.map(|w| *w), entry.mailbox)),
            State::Connected { .. } => None,
        }
    }

    /// The connection of `generation` shows `info` to the admin API.
    pub fn set_info(&self, client_id: &Arc<str>, generation: u32, info: Arc<ClientInfo>) {
        if let Some(mut e) = self.clients.get_mut(client_id) {
            if e.generation == generation {
                if let State::Connected { info: slot } = &mut e.state {
                    *slot = Some(info);
                }
            }
        }
    }

    /// The parked session of `generation` ends at `at` (its expiry timer started).
    pub fn set_expiry(&self, client_id: &Arc<str>, generation: u32, at: std::time::SystemTime) {
        let secs = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        if let Some(mut e) = self.clients.get_mut(client_id) {
            if e.generation == generation {
                if let State::Parked { .. } = e.state {
                    e.expires_at = secs;
                }
            }
        }
    }

    /// Tells the connected client `client_id` to close on an operator's word; false when it
    /// is not connected.
    pub fn kick_by_admin(&self, client_id: &str, discard: bool) -> bool {
        match self.clients.get(client_id) {
            Some(e) if matches!(e.state, State::Connected { .. }) => {
                e.mailbox.kick_by_admin(discard);
                true
            }
            _ => false,
        }
    }

    /// Whether `client_id` has an entry (a connection or a parked session).
    pub fn holds(&self, client_id: &str) -> bool {
        self.clients.contains_key(client_id)
    }

    /// Tells the connection of `generation` with `mailbox` to close for its expired token;
    /// false if that connection is gone. (A generation alone does not name a connection: a
    /// client id whose session ended starts again from 1.)
    pub fn kick_expired(&self, client_id: &str, generation: u32, mailbox: *const Mailbox) -> bool {
        match self.clients.get(client_id) {
            Some(e)
                if e.generation == generation
                    && std::ptr::eq(Arc::as_ptr(&e.mailbox), mailbox)
                    && matches!(e.state, State::Connected { .. }) =>
            {
                e.mailbox.kick_expired();
                true
            }
            _ => false,
        }
    }

    /// Waits until the connection of `client_id` that is attached now (if any) has handed its
    /// session back, at most until `deadline`; false if it has not by then.
    pub async fn wait_detached(&self, client_id: &str, deadline: tokio::time::Instant) -> bool {
        let attached = |r: &Registry| {
            r.clients
                .get(client_id)
                .filter(|e| matches!(e.state, State::Connected { .. }))
                .map(|e| e.generation)
        };
        let Some(generation) = attached(self) else {
            return true;
        };
        loop {
            let parked = self.parked.notified();
            tokio::pin!(parked);
            parked.as_mut().enable();
            if attached(self) != Some(generation) {
                return true;
            }
            if tokio::time::timeout_at(deadline, parked).await.is_err() {
                return attached(self) != Some(generation);
            }
        }
    }

    /// Clients connected through a listener (bridges' local sessions are not counted).
    pub fn connected_clients(&self) -> usize {
        self.clients
            .iter()
            .filter(|e| matches!(e.state, State::Connected { info: Some(_) }))
            .count()
    }

    /// Every known client id, or only `client_id`, as the admin API shows it.
    pub fn views(&self, only: Option<&str>) -> Vec<SessionView> {
        let view = |id: &Arc<str>, e: &Entry| SessionView {
            client_id: Arc::clone(id),
            info: match &e.state {
                State::Connected { info } => info.clone(),
                State::Parked { .. } => None,
            },
            mailbox: Arc::clone(&e.mailbox),
            parked: match &e.state {
                State::Connected { .. } => None,
                State::Parked { session, .. } => Some(ParkedView {
                    filters: session
                        .subscriptions()
                        .keys()
                        .map(|f| f.filter().to_string())
                        .collect(),
                    expiry_interval: session.expiry_interval,
                    expires_at: (e.expires_at > 0).then(|| {
                        std::time::UNIX_EPOCH + Duration::from_secs(u64::from(e.expires_at))
                    }),
                }),
            },
        };
        match only {
            Some(id) => self
                .clients
                .get(id)
                .map(|r| view(r.key(), r.value()))
                .into_iter()
                .collect(),
            None => self
                .clients
                .iter()
                .map(|r| view(r.key(), r.value()))
                .collect(),
        }
    }

    /// Takes the pending will of a parked session whose will delay ran out.
    /// Also the session's expiry interval and whether it is stored.
    pub fn take_will(
        &self,
        client_id: &Arc<str>,
        generation: u32,
    ) -> Option<(PendingWill, u32, bool)> {
        let mut e = self.clients.get_mut(client_id)?;
        if e.generation != generation {
            return None;
        }
        let stored = e.mailbox.is_stored();
        match &mut e.state {
            State::Parked { will, session, .. } => {
                will.take().map(|w| (*w, session.expiry_interval, stored))
            }
            State::Connected { .. } => None,
        }
    }

    /// Puts a session read back from the store, parked, under `client_id`; its generation.
    pub fn restore(
        &self,
        session: Box<Session>,
        mailbox: Arc<Mailbox>,
        will: Option<PendingWill>,
    ) -> u32 {
        let client_id = Arc::clone(session.client_id());
        self.clients.insert(
            client_id,
            Entry {
                generation: 1,
                expires_at: 0,
                mailbox,
                state: State::Parked {
                    session,
                    will: will.map(Box::new),
                },
            },
        );
        1
    }

    /// Wakes every connected client's task (at shutdown, so each sees the broker stopping).
    pub fn wake_connected(&self) {
        for e in self.clients.iter() {
            if matches!(e.state, State::Connected { .. }) {
                e.mailbox.wake();
            }
        }
    }

    /// Sessions connected, sessions parked, and deliveries queued for all of them.
    pub fn stats(&self) -> (usize, usize, usize) {
        let (mut online, mut offline, mut queued) = (0, 0, 0);
        for e in self.clients.iter() {
            match e.state {
                State::Connected { .. } => online += 1,
                State::Parked { .. } => offline += 1,
            }
            queued += e.mailbox.len();
        }
        (online, offline, queued)
    }

    /// Every session's queue depth, for the backlog series.
    pub fn depths(&self) -> crate::metrics::Depths {
        let mut d = crate::metrics::Depths::default();
        for e in self.clients.iter() {
            d.add(
                e.mailbox.len() as u64,
                matches!(e.state, State::Connected { .. }),
            );
        }
        d
    }

    /// Number of known client ids (connected or parked).
    pub fn len(&self) -> usize {
        self.clients.len()
    }
}

/// Every client id pays for one entry in the map, connected or parked, dormant or awake, at
/// the map's load (between 44% and 88% full): a change that grows it should be deliberate
/// (docs/architecture.md, memory per idle connection).
#[cfg(test)]
mod size_budget {
    #[test]
    fn an_entry_stays_small() {
        let n = std::mem::size_of::<(std::sync::Arc<str>, super::Entry)>();
        assert!(n <= 56, "{n}");
    }
}
