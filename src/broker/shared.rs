//! The members of a queue (a declared `[[queues]]` one, or a shared subscription's group
//! `$share/{group}/{filter}`), and how each message picks the one member it goes to, by the
//! queue's [`Strategy`].
//!
//! Only a connected member with room (as the queue judges it: fewer of its messages
//! outstanding than the member's inflight window) is picked; with none, the message waits in
//! the queue. `round_robin`, `random`, `least_inflight` and `weighted` pick among the members
//! with room; `hash_client`, `hash_topic` and `sticky` keep to their member and wait for it
//! (affinity is their point).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;

use super::router::{ReadCheck, Subscriber};
use crate::config::Strategy;

/// One member of a group.
#[derive(Debug)]
pub(super) struct Member {
    pub(super) sub: Subscriber,
    /// Under `weighted`: its share, 1 to 1000.
    weight: u32,
}

/// What picking keeps between messages.
#[derive(Debug, Default)]
struct PickState {
    /// Where the next round-robin scan starts.
    next: usize,
    /// Smooth weighted round robin: each member's current weight, by position.
    current: Vec<i64>,
    /// Under `sticky`: the member messages go to until it leaves.
    sticky: Option<Arc<str>>,
}

/// A queue's members.
#[derive(Debug)]
pub(super) struct Group {
    members: Vec<Member>,
    strategy: Strategy,
    state: Mutex<PickState>,
}

/// How a picker judges members: whether one has room for another message, and how loaded it
/// is (`least_inflight`).
pub(super) struct Fit<'a> {
    /// Room for one more (besides being connected).
    pub(super) room: &'a dyn Fn(&Subscriber) -> bool,
    /// Messages it still has to work through.
    pub(super) load: &'a dyn Fn(&Subscriber) -> usize,
}

/// What a message offers to affinity strategies.
#[derive(Debug, Clone, Copy)]
pub(super) struct Key<'a> {
    /// Its publisher (none for wills and the broker's own messages).
    pub(super) publisher: Option<&'a str>,
    /// Its topic.
    pub(super) topic: &'a str,
}

impl Group {
    /// An empty group picking by `strategy`.
    pub(super) fn new(strategy: Strategy) -> Group {
        Group {
            members: Vec::new(),
            strategy,
            state: Mutex::new(PickState::default()),
        }
    }

    /// Adds `sub` (weight `weight`), or replaces its earlier subscription; true if it replaced.
    pub(super) fn upsert(&mut self, sub: Subscriber, weight: u32) -> bool {
        let member = Member { sub, weight };
        match self
            .members
            .iter_mut()
            .find(|m| m.sub.client_id == member.sub.client_id)
        {
            Some(existing) => {
                *existing = member;
                true
            }
            None => {
                self.members.push(member);
                self.state.get_mut().current.push(0);
                false
            }
        }
    }

    /// Every member's subscription.
    pub(super) fn subscribers(&self) -> impl Iterator<Item = &Subscriber> {
        self.members.iter().map(|m| &m.sub)
    }

    /// Removes `client_id`; true if it was a member.
    pub(super) fn remove(&mut self, client_id: &str) -> bool {
        let Some(i) = self
            .members
            .iter()
            .position(|m| &*m.sub.client_id == client_id)
        else {
            return false;
        };
        self.members.remove(i);
        let state = self.state.get_mut();
        if i < state.current.len() {
            state.current.remove(i);
        }
        if state.sticky.as_deref() == Some(client_id) {
            state.sticky = None;
        }
        true
    }

    /// Whether some member's subscriber satisfies `f`.
    pub(super) fn any(&self, f: impl Fn(&Subscriber) -> bool) -> bool {
        self.members.iter().any(|m| f(&m.sub))
    }

    /// How many members it has.
    pub(super) fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the group has no member left.
    pub(super) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member a message with `key` goes to now, by the group's strategy: a connected one
    /// with room by `fit`, never `exclude`, only among members `may_read` allows. `None`: the
    /// message waits.
    pub(super) fn pick(
        &self,
        key: Key<'_>,
        exclude: Option<&str>,
        may_read: Option<ReadCheck<'_>>,
        fit: &Fit<'_>,
    ) -> Option<&Subscriber> {
        if self.members.is_empty() {
            return None;
        }
        let connected = |m: &Member| {
            Some(&*m.sub.client_id) != exclude
                && m.sub.mailbox.is_online()
                && may_read.is_none_or(|ok| ok(&m.sub.client_id))
        };
        let room = |m: &Member| connected(m) && (fit.room)(&m.sub);
        let mut state = self.state.lock();
        let chosen = match self.strategy {
            Strategy::RoundRobin => self.in_turn(&mut state, &room),
            Strategy::Random => self.uniform(&room),
            Strategy::LeastInflight => self.least_loaded(&mut state, &room, fit.load),
            Strategy::Weighted => self.weighted(&mut state, &room),
            Strategy::HashClient => self.hashed(key.publisher.unwrap_or(""), &room),
            Strategy::HashTopic => self.hashed(key.topic, &room),
            Strategy::Sticky => self.sticky(&mut state, &connected, &room),
        };
        chosen.map(|i| &self.members[i].sub)
    }

    /// The next member in turn with room.
    fn in_turn(&self, state: &mut PickState, room: &dyn Fn(&Member) -> bool) -> Option<usize> {
        let n = self.members.len();
        let start = state.next % n;
        let i = (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| room(&self.members[i]))?;
        state.next = i + 1;
        Some(i)
    }

    /// One of the members `candidate` allows, each as likely as the others.
    fn uniform(&self, candidate: &dyn Fn(&Member) -> bool) -> Option<usize> {
        let count = self.members.iter().filter(|m| candidate(m)).count();
        if count == 0 {
            return None;
        }
        let k = rand::random_range(0..count);
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| candidate(m))
            .nth(k)
            .map(|(i, _)| i)
    }

    /// The member with room and the least `load` (messages in flight and queued); ties in
    /// turn.
    fn least_loaded(
        &self,
        state: &mut PickState,
        room: &dyn Fn(&Member) -> bool,
        load: &dyn Fn(&Subscriber) -> usize,
    ) -> Option<usize> {
        let n = self.members.len();
        let start = state.next % n;
        let i = (0..n)
            .map(|i| (start + i) % n)
            .filter(|&i| room(&self.members[i]))
            .min_by_key(|&i| load(&self.members[i].sub))?;
        state.next = i + 1;
        Some(i)
    }

    /// Smooth weighted round robin among members with room: each pick adds every candidate's
    /// weight to its current weight, takes the highest and takes the candidates' total weight
    /// back from it, so a 3:1 pair goes A A B A, not A A A B.
    fn weighted(&self, state: &mut PickState, room: &dyn Fn(&Member) -> bool) -> Option<usize> {
        let n = self.members.len();
        state.current.resize(n, 0);
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, m) in self.members.iter().enumerate() {
            if !room(m) {
                continue;
            }
            let w = i64::from(m.weight);
            state.current[i] += w;
            total += w;
            if best.is_none_or(|b| state.current[i] > state.current[b]) {
                best = Some(i);
            }
        }
        let i = best?;
        state.current[i] -= total;
        Some(i)
    }

    /// The member `key` hashes to, if it has room (else nobody: the message waits for it): the
    /// same key, the same member while the membership is unchanged.
    fn hashed(&self, key: &str, room: &dyn Fn(&Member) -> bool) -> Option<usize> {
        // A fixed-key hasher: the same key picks the same member across restarts too.
        let mut h = std::hash::DefaultHasher::new();
        key.hash(&mut h);
        let i = (h.finish() % self.members.len() as u64) as usize;
        room(&self.members[i]).then_some(i)
    }

    /// The sticky member while it stays (connected), if `usable` (else nobody: the message
    /// waits for it); once it is gone, the next usable one in turn, sticky from then on.
    fn sticky(
        &self,
        state: &mut PickState,
        connected: &dyn Fn(&Member) -> bool,
        usable: &dyn Fn(&Member) -> bool,
    ) -> Option<usize> {
        if let Some(id) = &state.sticky {
            if let Some(i) = self.members.iter().position(|m| m.sub.client_id == *id) {
                if connected(&self.members[i]) {
                    return usable(&self.members[i]).then_some(i);
                }
            }
        }
        let i = self.in_turn(state, usable)?;
        state.sticky = Some(Arc::clone(&self.members[i].sub.client_id));
        Some(i)
    }
}
