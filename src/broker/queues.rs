//! The broker's queues: the declared ones (`[[queues]]`), fixed from start, and shared
//! subscriptions' groups, made when their first member joins and closed when their last one
//! leaves. Here: their slots (what a delivery's [`Link`] names), offering what is published,
//! members joining and leaving through `$queue/{name}` and `$share/{name}/{filter}`
//! subscriptions, their sessions' reports ([`BrokerState::settle`]), and the queues' stored
//! pseudo-sessions at start.

use std::num::NonZeroU64;
use std::sync::Arc;

use parking_lot::RwLock;

use super::durable::StoredSession;
use super::mailbox::Queued;
use super::queue::{self, Offered, Queue, QueueIo};
use super::router::{Recorder, Subscriber};
use super::BrokerState;
use crate::config::Config;
use crate::session::{Delivery, Link, Message, Seq, Session, Settled, NEVER_EXPIRES};
use crate::topic::TopicFilter;

pub use queue::is_queue_session;

/// Every queue by its slot: the declared ones first, for good; groups after them, in slots
/// reused once their group is closed.
#[derive(Debug, Default)]
pub(super) struct Slots {
    all: RwLock<Vec<Option<Arc<Queue>>>>,
}

impl Slots {
    /// The declared queues of `config`, in slots 0, 1, ...
    pub(super) fn declared(config: &Config) -> (Slots, Vec<Arc<Queue>>) {
        let declared: Vec<Arc<Queue>> = config
            .queues
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let slot = u32::try_from(i).unwrap_or(u32::MAX);
                Arc::new(Queue::declared(slot, q, config.shared.strategy))
            })
            .collect();
        let slots = Slots {
            all: RwLock::new(declared.iter().cloned().map(Some).collect()),
        };
        (slots, declared)
    }

    fn get(&self, slot: u32) -> Option<Arc<Queue>> {
        self.all.read().get(slot as usize).cloned().flatten()
    }

    /// A new queue made by `make` in a free slot.
    fn insert(&self, make: impl FnOnce(u32) -> Queue) -> Arc<Queue> {
        let mut all = self.all.write();
        let slot = all.iter().position(Option::is_none).unwrap_or(all.len());
        let q = Arc::new(make(u32::try_from(slot).unwrap_or(u32::MAX)));
        match all.get_mut(slot) {
            Some(free) => *free = Some(Arc::clone(&q)),
            None => all.push(Some(Arc::clone(&q))),
        }
        q
    }

    fn remove(&self, q: &Queue) {
        if let Some(s) = self.all.write().get_mut(q.slot() as usize) {
            *s = None;
        }
    }

    /// Every group now, in slot order.
    fn groups(&self, declared: usize) -> Vec<Arc<Queue>> {
        self.all
            .read()
            .iter()
            .skip(declared)
            .flatten()
            .cloned()
            .collect()
    }
}

/// The queue name a `$queue/{name}` subscription names, if it is one.
pub fn queue_name(filter: &str) -> Option<&str> {
    filter.strip_prefix("$queue/")
}

/// How a member joins its queue or group.
#[derive(Debug, Clone, Copy)]
pub(super) struct Joining {
    /// Its weight under `weighted`.
    pub(super) weight: u32,
    /// Its inflight window.
    pub(super) window: u16,
}

/// What a queue reads and releases through.
pub(super) struct Io<'a> {
    state: &'a BrokerState,
}

impl QueueIo for Io<'_> {
    fn load(&self, store_id: &str, seq: Seq) -> Option<Delivery> {
        self.state.load_stored(store_id, seq.get())
    }

    fn release(&self, store_id: &str, seq: Seq) {
        if let Some(d) = &self.state.durable {
            d.delivered(store_id, seq.get());
        }
        if let Some(r) = self.state.remote.get() {
            r.queue_released(store_id, seq.get());
        }
    }

    fn may_read(&self, client_id: &Arc<str>, topic: &str) -> bool {
        self.state
            .auth
            .authorizer()
            .is_none_or(|a| self.state.may_read(&a, client_id, topic))
    }

    fn checks_reads(&self) -> bool {
        self.state.auth.authorizer().is_some()
    }
}

impl BrokerState {
    pub(super) fn io(&self) -> Io<'_> {
        Io { state: self }
    }

    /// The queue or group whose store id is `store_id` (`$queue/{name}`,
    /// `$share/{name}/{filter}`).
    pub(super) fn queue_by_store_id(&self, store_id: &str) -> Option<Arc<Queue>> {
        if let Some(name) = queue_name(store_id) {
            return self.queue(name).cloned();
        }
        let filter = TopicFilter::parse(store_id).ok()?;
        self.router.find_group(filter.share()?, filter.filter())
    }

    /// The declared queue `name`.
    fn queue(&self, name: &str) -> Option<&Arc<Queue>> {
        self.queues.iter().find(|q| q.name() == name)
    }

    /// The filter a subscription stands for in ACL checks: a declared queue's own filter for
    /// `$queue/{name}`, the filter itself otherwise.
    pub fn acl_filter<'a>(&'a self, filter: &'a TopicFilter) -> &'a str {
        match queue_name(filter.as_str()).and_then(|n| self.queue(n)) {
            Some(q) => q.filter(),
            None => filter.filter(),
        }
    }

    /// Offers `msg` to `groups` (those it matched) and to every declared queue whose filter
    /// matches it; `(taken, refused by a full group, refused by a full declared queue)`.
    pub(super) fn enqueue(
        &self,
        msg: &Arc<Message>,
        mut recorder: Option<&mut dyn Recorder>,
        groups: &[Arc<Queue>],
    ) -> (usize, usize, usize) {
        let (mut taken, mut group_full, mut refused) = (0, 0, 0);
        if self.queues.is_empty() && groups.is_empty() {
            return (0, 0, 0);
        }
        let io = self.io();
        let declared = self
            .queues
            .iter()
            .filter(|q| crate::topic::matches(q.filter(), msg.topic()));
        for q in groups.iter().chain(declared) {
            let r = recorder.as_mut().map(|r| &mut **r as &mut dyn Recorder);
            match q.offer(msg, r, &io) {
                Offered::Accepted => taken += 1,
                Offered::Rejected if q.is_group() => group_full += 1,
                Offered::Rejected => refused += 1,
                Offered::Closed => {}
            }
        }
        (taken, group_full, refused)
    }

    /// `sub` joins the queue `filter` names (`$queue/{name}` or `$share/{name}/{filter}`),
    /// taking nothing until [`BrokerState::queue_ready`]: the queue's slot and whether `sub`
    /// is a new member, or `None` if `filter` names a queue not declared (or no queue at all).
    pub(super) fn join_queue(
        &self,
        filter: &TopicFilter,
        sub: Subscriber,
        joining: Joining,
    ) -> Option<(u32, bool)> {
        let q = match (queue_name(filter.as_str()), filter.share()) {
            (Some(name), _) => Arc::clone(self.queue(name)?),
            (None, Some(name)) => self.group(name, filter.filter()),
            (None, None) => return None,
        };
        let new = q.join(sub, joining.weight, joining.window);
        if new {
            self.router.count_member(true);
        }
        Some((q.slot(), new))
    }

    /// The group of share `name` on `filter`, made (and, with persistence on, given its
    /// record in the store) if there is none.
    fn group(&self, name: &str, filter: &str) -> Arc<Queue> {
        let config = self.config();
        let strategy = config.shared.strategy_of(name);
        let max = config.limits.max_queued_messages;
        let (q, made) = self.router.group(name, filter, || {
            self.slots
                .insert(|slot| Queue::group(slot, name, filter, strategy, max))
        });
        if made {
            if let Some(remote) = self.remote.get() {
                remote.queue_opened(q.store_id(), filter, false);
            }
            if let Some(durable) = &self.durable {
                let session = Session::new(Arc::clone(q.store_id()), NEVER_EXPIRES, 1);
                // Applied before any message stored under it: the store applies in order.
                drop(durable.session_connected(&session, true, None));
            }
        }
        q
    }

    /// Queue `slot` may hand `client_id` messages from now on (its SUBACK is out).
    pub fn queue_ready(&self, slot: u32, client_id: &str) {
        if let Some(q) = self.slots.get(slot) {
            q.ready(client_id, &self.io());
        }
    }

    /// `client_id` leaves the queue `filter` names; false if it was no member. A group left
    /// without members is closed: what it held is dropped, and released in the store.
    pub(super) fn leave_queue(&self, filter: &TopicFilter, client_id: &str) -> bool {
        if let Some(name) = queue_name(filter.as_str()) {
            let left = self.queue(name).is_some_and(|q| q.leave(client_id));
            if left {
                self.router.count_member(false);
            }
            return left;
        }
        let Some(name) = filter.share() else {
            return false;
        };
        let (found, emptied) = self.router.leave_group(name, filter.filter(), client_id);
        if let Some(q) = emptied {
            let seqs: Vec<u64> = q.close().into_iter().map(Seq::get).collect();
            if let Some(durable) = &self.durable {
                durable.session_ended(q.store_id(), &seqs);
            }
            if let Some(remote) = self.remote.get() {
                remote.queue_closed(q.store_id(), seqs);
            }
            self.slots.remove(&q);
        }
        found
    }

    /// `session`, just connected, can take messages from the queues it consumes from.
    pub(super) fn queues_online(&self, session: &Session) {
        let io = self.io();
        for filter in session.subscriptions().keys() {
            let q = match (queue_name(filter.as_str()), filter.share()) {
                (Some(name), _) => self.queue(name).cloned(),
                (None, Some(name)) => self.router.find_group(name, filter.filter()),
                (None, None) => None,
            };
            if let Some(q) = q {
                q.online(session.client_id(), session.window(), &io);
            }
        }
    }

    /// A consumer's session reports how a queue's delivery went.
    pub fn settle(&self, link: Link, how: Settled) {
        if let Some(q) = self.slots.get(link.queue) {
            q.settle(link.id, how, &self.io());
        }
    }

    /// Hands queues' deliveries that `client_id` did not get back to their queues: `queued`
    /// (never sent) and `inflight` (sent, not acknowledged: DUP from now on, every one from a
    /// queue). Returns the queued deliveries that did not come from a queue.
    pub(super) fn give_back(
        &self,
        client_id: &str,
        queued: Vec<Queued>,
        inflight: Vec<Delivery>,
    ) -> Vec<Queued> {
        let mut back: Vec<(u32, Vec<(NonZeroU64, bool)>)> = Vec::new();
        let mut take = |d: &Delivery, sent: bool| {
            let Some(l) = d.link() else {
                return false;
            };
            match back.iter_mut().find(|(slot, _)| *slot == l.queue) {
                Some((_, ids)) => ids.push((l.id, sent)),
                None => back.push((l.queue, vec![(l.id, sent)])),
            }
            true
        };
        for d in &inflight {
            take(d, true);
        }
        let queued: Vec<Queued> = queued
            .into_iter()
            .filter(|q| !matches!(q, Queued::Ready(d) if take(d, false)))
            .collect();
        let io = self.io();
        for (slot, ids) in back {
            if let Some(q) = self.slots.get(slot) {
                q.give_back(client_id, &ids, &io);
            }
        }
        queued
    }

    /// The backlog series, as Prometheus reads them: every queue's and group's figures (each
    /// taken at one instant) and every session's queue depth.
    pub fn render_backlog(&self) -> String {
        let queues = self.queue_figures();
        let groups = self.group_figures();
        let max = self.config().metrics.max_labelled_queues;
        crate::metrics::render_backlog(&queues, &groups, max, &self.registry.depths())
    }

    /// Every shared subscription group's figures, each taken at one instant.
    pub fn group_figures(&self) -> Vec<crate::metrics::Backlog> {
        let groups = self.slots.groups(self.queues.len());
        groups.iter().map(|q| q.figures()).collect()
    }

    /// Every declared queue's figures, each taken at one instant.
    pub fn queue_figures(&self) -> Vec<crate::metrics::Backlog> {
        self.queues.iter().map(|q| q.figures()).collect()
    }

    /// At start, before sessions are restored: the stored queues and groups, apart from the
    /// other sessions (returned). A declared queue gets its messages back now; one the store
    /// has no record of yet gets one; a stored queue no longer declared is dropped, with a
    /// warning.
    pub(super) fn restore_queues(
        &self,
        sessions: Vec<StoredSession>,
    ) -> (Vec<StoredSession>, Vec<StoredSession>) {
        let Some(durable) = &self.durable else {
            return (sessions, Vec::new());
        };
        let mut found = vec![false; self.queues.len()];
        let (mut others, mut groups) = (Vec::with_capacity(sessions.len()), Vec::new());
        for stored in sessions {
            if stored.client_id.starts_with("$share/") {
                groups.push(stored);
                continue;
            }
            if !is_queue_session(&stored.client_id) {
                others.push(stored);
                continue;
            }
            match self
                .queues
                .iter()
                .position(|q| **q.store_id() == stored.client_id)
            {
                Some(i) => {
                    found[i] = true;
                    self.queues[i].restore(stored.queue);
                }
                None => {
                    tracing::warn!(
                        queue = %stored.client_id,
                        messages = stored.queue.len(),
                        "stored queue no longer declared in [[queues]]: its messages are dropped"
                    );
                    self.drop_stored(&stored);
                }
            }
        }
        for (q, found) in self.queues.iter().zip(found) {
            if !found {
                let session = Session::new(Arc::clone(q.store_id()), NEVER_EXPIRES, 1);
                // Applied before any message stored under it: the store applies in order.
                drop(durable.session_connected(&session, true, None));
            }
        }
        (others, groups)
    }

    /// After sessions are restored (their groups with them): each stored group gets its
    /// messages back; one no member came back to is dropped.
    pub(super) fn restore_groups(&self, groups: Vec<StoredSession>) {
        for stored in groups {
            let group = TopicFilter::parse(&stored.client_id)
                .ok()
                .and_then(|f| self.router.find_group(f.share()?, f.filter()));
            match group {
                Some(q) => q.restore(stored.queue),
                None => self.drop_stored(&stored),
            }
        }
    }

    fn drop_stored(&self, stored: &StoredSession) {
        if let Some(durable) = &self.durable {
            let seqs: Vec<u64> = stored.queue.iter().map(|(seq, _)| *seq).collect();
            durable.session_ended(&stored.client_id, &seqs);
        }
    }
}
