//! The declared queues on the broker's side: enqueueing what is published, consumers joining
//! and leaving through `$queue/{name}` subscriptions, their sessions' reports
//! ([`BrokerState::settle`]), and the queues' stored pseudo-sessions at start.

use std::num::NonZeroU64;
use std::sync::Arc;

use super::durable::StoredSession;
use super::mailbox::Queued;
use super::queue::{self, Offered, Queue, QueueIo};
use super::router::{Recorder, Subscriber};
use super::BrokerState;
use crate::auth::Access;
use crate::config::Config;
use crate::session::{Delivery, Link, Message, Seq, Session, Settled, NEVER_EXPIRES};
use crate::topic::TopicFilter;

pub use queue::is_queue_session;

/// The queues `config` declares, numbered in order.
pub(super) fn declared(config: &Config) -> Vec<Queue> {
    config
        .queues
        .iter()
        .enumerate()
        .filter_map(|(i, q)| Queue::new(u32::try_from(i).ok()?, q, config.shared.strategy))
        .collect()
}

/// The queue name a `$queue/{name}` subscription names, if it is one.
pub fn queue_name(filter: &str) -> Option<&str> {
    filter.strip_prefix("$queue/")
}

/// What a queue reads and releases through.
struct Io<'a> {
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
    }

    fn may_read(&self, client_id: &Arc<str>, topic: &str) -> bool {
        let Some(a) = self.state.auth.authorizer() else {
            return true;
        };
        let ok = a.allows(&self.state.identity(client_id), topic, Access::Read);
        if !ok {
            crate::metrics::acl_denied("read");
        }
        ok
    }

    fn checks_reads(&self) -> bool {
        self.state.auth.authorizer().is_some()
    }
}

impl BrokerState {
    fn io(&self) -> Io<'_> {
        Io { state: self }
    }

    /// The declared queue `name`.
    fn queue(&self, name: &str) -> Option<&Queue> {
        self.queues.iter().find(|q| q.name() == name)
    }

    /// The filter a subscription stands for in ACL checks: a declared queue's own filter for
    /// `$queue/{name}`, the filter itself otherwise.
    pub fn acl_filter<'a>(&'a self, filter: &'a TopicFilter) -> &'a str {
        match queue_name(filter.as_str()).and_then(|n| self.queue(n)) {
            Some(q) => q.filter().filter(),
            None => filter.filter(),
        }
    }

    /// Offers `msg` to every queue whose filter matches it; `(taken, refused)`.
    pub(super) fn enqueue(
        &self,
        msg: &Arc<Message>,
        mut recorder: Option<&mut dyn Recorder>,
    ) -> (usize, usize) {
        let (mut taken, mut refused) = (0, 0);
        if self.queues.is_empty() {
            return (0, 0);
        }
        let io = self.io();
        for q in &self.queues {
            if !crate::topic::matches(q.filter().filter(), msg.topic()) {
                continue;
            }
            let r = recorder.as_mut().map(|r| &mut **r as &mut dyn Recorder);
            match q.offer(msg, r, &io) {
                Offered::Accepted => taken += 1,
                Offered::Rejected => refused += 1,
            }
        }
        (taken, refused)
    }

    /// `sub` joins queue `name` (from `$queue/{name}`) as a consumer, taking nothing until
    /// [`BrokerState::queue_ready`]; the queue's number, or `None` if no such queue is
    /// declared.
    pub(super) fn join_queue(
        &self,
        name: &str,
        sub: Subscriber,
        weight: u32,
        window: u16,
    ) -> Option<u32> {
        let i = self.queues.iter().position(|q| q.name() == name)?;
        self.queues[i].join(sub, weight, window);
        u32::try_from(i).ok()
    }

    /// Queue number `queue` may hand `client_id` messages from now on (its SUBACK is out).
    pub fn queue_ready(&self, queue: u32, client_id: &str) {
        if let Some(q) = self.queues.get(queue as usize) {
            q.ready(client_id, &self.io());
        }
    }

    /// `client_id` consumes from queue `name` no more.
    pub(super) fn leave_queue(&self, name: &str, client_id: &str) {
        if let Some(q) = self.queue(name) {
            q.leave(client_id);
        }
    }

    /// `session`, just connected, can take messages from the queues it consumes from.
    pub(super) fn queues_online(&self, session: &Session) {
        if self.queues.is_empty() {
            return;
        }
        let io = self.io();
        for filter in session.subscriptions().keys() {
            if let Some(q) = queue_name(filter.as_str()).and_then(|n| self.queue(n)) {
                q.online(session.client_id(), session.window(), &io);
            }
        }
    }

    /// A consumer's session reports how a queue's delivery went.
    pub fn settle(&self, link: Link, how: Settled) {
        if let Some(q) = usize::try_from(link.queue)
            .ok()
            .and_then(|i| self.queues.get(i))
        {
            q.settle(link.id, how, &self.io());
        }
    }

    /// Hands queues' deliveries that `client_id` did not get back to their queues: `queued`
    /// (never sent) and `inflight` (sent, not acknowledged: DUP from now on). Returns what
    /// did not come from a queue.
    pub(super) fn give_back(
        &self,
        client_id: &str,
        queued: Vec<Queued>,
        inflight: Vec<Delivery>,
    ) -> (Vec<Queued>, Vec<Delivery>) {
        if self.queues.is_empty() {
            return (queued, inflight);
        }
        let mut back: Vec<Vec<(NonZeroU64, bool)>> = vec![Vec::new(); self.queues.len()];
        let mut take = |d: &Delivery, sent: bool| match d.link {
            Some(l) => match back.get_mut(l.queue as usize) {
                Some(ids) => {
                    ids.push((l.id, sent));
                    true
                }
                None => true,
            },
            None => false,
        };
        let inflight: Vec<Delivery> = inflight.into_iter().filter(|d| !take(d, true)).collect();
        let queued: Vec<Queued> = queued
            .into_iter()
            .filter(|q| !matches!(q, Queued::Ready(d) if take(d, false)))
            .collect();
        let io = self.io();
        for (q, ids) in self.queues.iter().zip(back) {
            if !ids.is_empty() {
                q.give_back(client_id, &ids, &io);
            }
        }
        (queued, inflight)
    }

    /// The backlog series, as Prometheus reads them: every queue's figures (each taken at
    /// one instant) and every session's queue depth.
    pub fn render_backlog(&self) -> String {
        let queues = self.queue_figures();
        let max = self.config().metrics.max_labelled_queues;
        crate::metrics::render_backlog(&queues, &[], max, &self.registry.depths())
    }

    /// Every queue's figures, each taken at one instant.
    pub fn queue_figures(&self) -> Vec<crate::metrics::Backlog> {
        self.queues.iter().map(Queue::figures).collect()
    }

    /// At start: puts each queue's stored messages back, and gives a declared queue the store
    /// has no record of yet one (its messages are stored under it from now on). A stored queue
    /// no longer declared is dropped, with a warning. Returns the other stored sessions.
    pub(super) fn restore_queues(&self, sessions: Vec<StoredSession>) -> Vec<StoredSession> {
        let Some(durable) = &self.durable else {
            return sessions;
        };
        let mut found = vec![false; self.queues.len()];
        let mut others = Vec::with_capacity(sessions.len());
        for stored in sessions {
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
                    let seqs: Vec<u64> = stored.queue.iter().map(|(seq, _)| *seq).collect();
                    durable.session_ended(&stored.client_id, &seqs);
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
        others
    }
}
