//! Shared-subscription groups (`$share/{group}/{filter}`): their members, and how each message
//! picks the one member it goes to, by the group's [`Strategy`].
//!
//! A member "has room" when it is connected and its inflight window is not full (as its
//! connection last said, after every batch it sent and every acknowledgement it took).
//! `round_robin`, `random`, `least_inflight` and
//! `weighted` skip members without room while another has some; `hash_client`, `hash_topic` and
//! `sticky` keep to their member (affinity is their point).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;

use super::router::{ReadCheck, Subscriber};
use crate::config::Strategy;
use crate::session::SharedTag;

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

/// One group: a share name on one filter.
#[derive(Debug)]
pub(super) struct Group {
    pub(super) tag: SharedTag,
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
    /// Only a connected member with room will do (a queue); otherwise a `$share` group falls
    /// back to a connected member without room, then to an offline one.
    pub(super) strict: bool,
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
    pub(super) fn new(tag: SharedTag, strategy: Strategy) -> Group {
        Group {
            tag,
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

    /// Whether the group has no member left.
    pub(super) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member a message with `key` goes to: by the group's strategy, never `exclude`, only
    /// among members `may_read` allows and, for a `$share` group, connected members first, then
    /// (nobody connected) an offline one whose session keeps the message for it.
    pub(super) fn pick(
        &self,
        key: Key<'_>,
        exclude: Option<&str>,
        may_read: Option<ReadCheck<'_>>,
    ) -> Option<&Subscriber> {
        let fit = Fit {
            room: &|s: &Subscriber| !s.mailbox.window_full(),
            load: &|s: &Subscriber| s.mailbox.load(),
            strict: false,
        };
        self.pick_by(key, exclude, may_read, &fit)
    }

    /// [`Group::pick`], with room and load judged by `fit`; under `fit.strict` only a member
    /// with room is picked (a queue's message waits in the queue otherwise).
    pub(super) fn pick_by(
        &self,
        key: Key<'_>,
        exclude: Option<&str>,
        may_read: Option<ReadCheck<'_>>,
        fit: &Fit<'_>,
    ) -> Option<&Subscriber> {
        let eligible = |m: &Member| {
            Some(&*m.sub.client_id) != exclude && may_read.is_none_or(|ok| ok(&m.sub.client_id))
        };
        let mut state = self.state.lock();
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let connected = |m: &Member| eligible(m) && m.sub.mailbox.is_online();
        let room = |m: &Member| connected(m) && (fit.room)(&m.sub);
        // The fallback when no member has room: any connected one, unless strict.
        let online = |m: &Member| if fit.strict { room(m) } else { connected(m) };
        let chosen = match self.strategy {
            Strategy::RoundRobin => self.in_turn(&mut state, &room, &online),
            Strategy::Random => self.uniform(&room).or_else(|| self.uniform(&online)),
            Strategy::LeastInflight => self.least_loaded(&mut state, &room, &online, fit.load),
            Strategy::Weighted => self.weighted(&mut state, &room, &online),
            Strategy::HashClient if fit.strict => self.hashed(key.publisher.unwrap_or(""), &room),
            Strategy::HashTopic if fit.strict => self.hashed(key.topic, &room),
            Strategy::HashClient => self.hashed(key.publisher.unwrap_or(""), &eligible),
            Strategy::HashTopic => self.hashed(key.topic, &eligible),
            Strategy::Sticky => self.sticky(&mut state, &connected, &online),
        };
        if fit.strict {
            return chosen.map(|i| &self.members[i].sub);
        }
        let chosen = chosen.or_else(|| {
            // Nobody connected: a member whose session keeps the message until it is back.
            let start = state.next % n;
            state.next = state.next.wrapping_add(1);
            (0..n)
                .map(|i| (start + i) % n)
                .find(|&i| eligible(&self.members[i]))
        });
        chosen.map(|i| &self.members[i].sub)
    }

    /// The next member in turn with room, else the next connected one.
    fn in_turn(
        &self,
        state: &mut PickState,
        room: &dyn Fn(&Member) -> bool,
        online: &dyn Fn(&Member) -> bool,
    ) -> Option<usize> {
        let n = self.members.len();
        let start = state.next % n;
        let order = || (0..n).map(move |i| (start + i) % n);
        let i = order()
            .find(|&i| room(&self.members[i]))
            .or_else(|| order().find(|&i| online(&self.members[i])))?;
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

    /// The connected member with the least `load` (messages in flight and queued); ties in
    /// turn.
    fn least_loaded(
        &self,
        state: &mut PickState,
        room: &dyn Fn(&Member) -> bool,
        online: &dyn Fn(&Member) -> bool,
        load: &dyn Fn(&Subscriber) -> usize,
    ) -> Option<usize> {
        let n = self.members.len();
        let start = state.next % n;
        let mut best: Option<(bool, usize, usize)> = None;
        for i in (0..n).map(|i| (start + i) % n) {
            let m = &self.members[i];
            if !online(m) {
                continue;
            }
            // Members with room first, then the least loaded.
            let rank = (!room(m), load(&m.sub));
            if best.is_none_or(|(r, l, _)| rank < (r, l)) {
                best = Some((rank.0, rank.1, i));
            }
        }
        let (_, _, i) = best?;
        state.next = i + 1;
        Some(i)
    }

    /// Smooth weighted round robin among members with room (else among connected ones): each
    /// pick adds every candidate's weight to its current weight, takes the highest and takes
    /// the candidates' total weight back from it, so a 3:1 pair goes A A B A, not A A A B.
    fn weighted(
        &self,
        state: &mut PickState,
        room: &dyn Fn(&Member) -> bool,
        online: &dyn Fn(&Member) -> bool,
    ) -> Option<usize> {
        let n = self.members.len();
        state.current.resize(n, 0);
        let any_room = self.members.iter().any(room);
        let candidate = |m: &Member| if any_room { room(m) } else { online(m) };
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, m) in self.members.iter().enumerate() {
            if !candidate(m) {
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

    /// The member `key` hashes to, whether it has room or not (connected or, for a session
    /// that outlives its connection, offline: the message waits for it): the same key, the same
    /// member while the membership is unchanged.
    fn hashed(&self, key: &str, eligible: &dyn Fn(&Member) -> bool) -> Option<usize> {
        // A fixed-key hasher: the same key picks the same member across restarts too.
        let mut h = std::hash::DefaultHasher::new();
        key.hash(&mut h);
        let i = (h.finish() % self.members.len() as u64) as usize;
        eligible(&self.members[i]).then_some(i)
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
        let i = self.in_turn(state, usable, usable)?;
        state.sticky = Some(Arc::clone(&self.members[i].sub.client_id));
        Some(i)
    }
}
