//! Matches each accepted message against the subscription trie and pushes one delivery into the
//! mailbox of every matching session: once per client at the highest granted QoS with every
//! matching Subscription Identifier. Shared-subscription groups are queues of their own
//! ([`Queue`]): the router finds the ones a message matches, and the broker offers it to each.
//! It never touches a socket or a session.

use crate::logged::clip;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
use smallvec::SmallVec;

use super::mailbox::{DropReason, Mailbox};
use super::queue::Queue;
use crate::protocol::{QoS, SubscriptionOptions};
use crate::session::{Delivery, Message, Seq};
use crate::topic::SubscriptionTrie;

/// One client's subscription, as the router sees it.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// Whose.
    pub client_id: Arc<str>,
    /// Where its deliveries go.
    pub mailbox: Arc<Mailbox>,
    /// Options from SUBSCRIBE.
    pub options: SubscriptionOptions,
    /// v5 Subscription Identifier.
    pub id: Option<u32>,
}

/// Everything subscribed to one exact filter.
#[derive(Debug, Default)]
struct FilterSubs {
    direct: Vec<Subscriber>,
    groups: Vec<Arc<Queue>>,
}

impl FilterSubs {
    fn is_empty(&self) -> bool {
        self.direct.is_empty() && self.groups.is_empty()
    }
}

/// Takes note of deliveries to stored sessions as they are queued.
pub trait Recorder {
    /// A fresh sequence number for a stored delivery.
    fn next_seq(&mut self) -> u64;
    /// `delivery` was queued for `client_id`.
    fn record(&mut self, client_id: &str, delivery: &Delivery);
    /// The recorded delivery to `mailbox` is to be queued by sequence number only, once its
    /// message is stored (or readable on its way there).
    fn defer(&mut self, client_id: &Arc<str>, mailbox: &Arc<Mailbox>);
    /// Whether a delivery to an offline or far-behind stored session is queued by sequence
    /// number only ([`Recorder::defer`]); otherwise it is queued whole, as to any session.
    fn by_seq_only(&self) -> bool {
        true
    }
}

/// Whether the client with this id may receive the message being routed (ACLs).
pub type ReadCheck<'a> = &'a dyn Fn(&Arc<str>) -> bool;

/// What routing one message did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RouteOutcome {
    /// Deliveries queued.
    pub delivered: usize,
    /// Deliveries refused because a queue was full.
    pub dropped_queue_full: usize,
    /// Declared queues that took the message.
    pub queued: usize,
    /// Declared queues that refused it (full, `overflow = "reject"`).
    pub refused: usize,
    /// Cluster mode: handed to the cluster, which routes it on every node (this one too).
    pub forwarded: bool,
}

/// The subscription index.
#[derive(Debug, Default)]
pub struct Router {
    /// Every message reads it; subscriptions change it now and then. Readers on different
    /// cores lock different cache lines (one shared reader count, bouncing between the cores,
    /// cost about 3% of a QoS 1 message's CPU); a writer locks them all.
    trie: ShardedLock<SubscriptionTrie<FilterSubs>>,
    /// Told when a filter enters or leaves the trie (cluster mode: the node's interest).
    interest: std::sync::OnceLock<Arc<dyn super::Remote>>,
    /// Subscriptions: in the trie, and members of groups and declared queues.
    count: AtomicUsize,
}

struct Target<'a> {
    sub: &'a Subscriber,
    qos: QoS,
    retain: bool,
    sub_ids: Vec<u32>,
}

/// The receivers of one message.
type Targets<'a> = SmallVec<[Target<'a>; 4]>;

impl Router {
    /// The trie to read. A panic elsewhere while it was held changes nothing here: the
    /// trie is only changed by whole operations.
    fn read(&self) -> ShardedLockReadGuard<'_, SubscriptionTrie<FilterSubs>> {
        self.trie
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The trie to change.
    fn write(&self) -> ShardedLockWriteGuard<'_, SubscriptionTrie<FilterSubs>> {
        self.trie
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// From now on, tells `remote` of every filter that enters or leaves the trie (called
    /// under the trie's lock, so it hears of each filter's changes in order).
    pub(super) fn set_interest(&self, remote: Arc<dyn super::Remote>) {
        let _ = self.interest.set(remote);
    }

    /// Tells the cluster, if any, that `filter` entered or left the trie.
    fn interest_changed(&self, filter: &str, present: bool) {
        if let Some(r) = self.interest.get() {
            r.interest(filter, present);
        }
    }

    /// The entry of `filter`, made if there is none (the cluster is told).
    fn entry<'t>(
        &self,
        trie: &'t mut SubscriptionTrie<FilterSubs>,
        filter: &str,
    ) -> &'t mut FilterSubs {
        if self.interest.get().is_some() && trie.get(filter).is_none() {
            self.interest_changed(filter, true);
        }
        trie.get_or_insert_with(filter, FilterSubs::default)
    }

    /// Adds or replaces a client's (non-shared) subscription; true if it replaced one.
    pub fn subscribe(&self, filter: &str, sub: Subscriber) -> bool {
        let mut trie = self.write();
        let subs = self.entry(&mut trie, filter);
        let replaced = match subs
            .direct
            .iter_mut()
            .find(|s| s.client_id == sub.client_id)
        {
            Some(existing) => {
                *existing = sub;
                true
            }
            None => {
                subs.direct.push(sub);
                false
            }
        };
        if !replaced {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        replaced
    }

    /// The group of share `name` on `filter`, made by `make` if there is none yet (true: it
    /// was made).
    pub(super) fn group(
        &self,
        name: &str,
        filter: &str,
        make: impl FnOnce() -> Arc<Queue>,
    ) -> (Arc<Queue>, bool) {
        let mut trie = self.write();
        let subs = self.entry(&mut trie, filter);
        if let Some(g) = subs.groups.iter().find(|g| g.name() == name) {
            return (Arc::clone(g), false);
        }
        let g = make();
        subs.groups.push(Arc::clone(&g));
        (g, true)
    }

    /// The group of share `name` on `filter`, if there is one.
    pub(super) fn find_group(&self, name: &str, filter: &str) -> Option<Arc<Queue>> {
        let trie = self.read();
        let subs = trie.get(filter)?;
        subs.groups.iter().find(|g| g.name() == name).cloned()
    }

    /// Counts a member of a group or a declared queue in or out of [`Router::len`].
    pub(super) fn count_member(&self, joined: bool) {
        if joined {
            self.count.fetch_add(1, Ordering::Relaxed);
        } else {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Every subscription in the trie, with the filter as its client sent it
    /// (`$share/{name}/…` for a group's members); declared queues' consumers are not here.
    pub(super) fn list(&self, mut f: impl FnMut(&str, &Subscriber)) {
        let trie = self.read();
        trie.for_each(|filter, subs| {
            for sub in &subs.direct {
                f(filter, sub);
            }
            for group in &subs.groups {
                let shared = format!("$share/{}/{filter}", group.name());
                for sub in group.members() {
                    f(&shared, &sub);
                }
            }
        });
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Removes one client's (non-shared) subscription; true if it existed.
    pub fn unsubscribe(&self, filter: &str, client_id: &str) -> bool {
        self.take_out(filter, |subs| {
            let before = subs.direct.len();
            subs.direct.retain(|s| &*s.client_id != client_id);
            subs.direct.len() != before
        })
    }

    /// Changes the entry of `filter` with `change` (true: a subscription was taken out, and is
    /// counted out), and removes the entry once it is empty (the cluster is told).
    fn take_out(&self, filter: &str, change: impl FnOnce(&mut FilterSubs) -> bool) -> bool {
        let mut found = false;
        let mut trie = self.write();
        let gone = trie.remove_if(filter, |subs| {
            found = change(subs);
            subs.is_empty()
        });
        if gone {
            self.interest_changed(filter, false);
        }
        drop(trie);
        if found {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        found
    }

    /// Takes `client_id` out of the group of share `name` on `filter`: whether it was a
    /// member, and the group if it has no member left (it is gone from the router; the caller
    /// closes it).
    pub(super) fn leave_group(
        &self,
        name: &str,
        filter: &str,
        client_id: &str,
    ) -> (bool, Option<Arc<Queue>>) {
        let mut emptied = None;
        let found = self.take_out(filter, |subs| {
            let Some(i) = subs.groups.iter().position(|g| g.name() == name) else {
                return false;
            };
            let found = subs.groups[i].leave(client_id);
            if subs.groups[i].is_empty() {
                emptied = Some(subs.groups.remove(i));
            }
            found
        });
        (found, emptied)
    }

    /// Queues `msg` for every matching (non-shared) subscription, and adds the groups it
    /// matches to `groups` (for the caller to offer it to).
    /// With a `recorder`, QoS 1/2 deliveries to stored sessions get a sequence number and are
    /// recorded once queued.
    /// With `may_read`, only clients it allows get the message (ACLs).
    pub fn route(
        &self,
        msg: &Arc<Message>,
        mut recorder: Option<&mut dyn Recorder>,
        may_read: Option<ReadCheck<'_>>,
        groups: &mut Vec<Arc<Queue>>,
    ) -> RouteOutcome {
        let trie = self.read();
        // Most messages have a few receivers: their list stays on the stack.
        let mut targets: Targets<'_> = SmallVec::new();
        let publisher = msg.publisher.as_deref();
        trie.for_each_match(msg.topic(), |subs| {
            for s in &subs.direct {
                if s.options.no_local && Some(&*s.client_id) == publisher {
                    continue;
                }
                if may_read.is_some_and(|ok| !ok(&s.client_id)) {
                    continue;
                }
                targets.push(Target {
                    sub: s,
                    qos: msg.qos().min(s.options.qos),
                    retain: s.options.retain_as_published && msg.publish.retain,
                    sub_ids: s.id.into_iter().collect(),
                });
            }
            groups.extend(subs.groups.iter().cloned());
        });
        merge_overlapping(&mut targets);
        let mut outcome = RouteOutcome::default();
        for t in targets {
            let mut delivery =
                Delivery::new(Arc::clone(msg), t.qos, t.retain).with_sub_ids(t.sub_ids);
            let record = match recorder.as_deref_mut() {
                Some(r) if t.sub.mailbox.stores(delivery.qos) => {
                    delivery.seq = Seq::new(r.next_seq());
                    if r.by_seq_only() && t.sub.mailbox.keeps_stored_only() {
                        // Offline or far behind: its message waits in the store, not here.
                        r.record(&t.sub.client_id, &delivery);
                        r.defer(&t.sub.client_id, &t.sub.mailbox);
                        outcome.delivered += 1;
                        continue;
                    }
                    Some((r, delivery.clone()))
                }
                _ => None,
            };
            match t.sub.mailbox.push(delivery) {
                Ok(()) => {
                    outcome.delivered += 1;
                    if let Some((r, d)) = record {
                        r.record(&t.sub.client_id, &d);
                    }
                }
                Err(DropReason::QueueFull) => {
                    outcome.dropped_queue_full += 1;
                    if t.sub.mailbox.note_overflow() {
                        tracing::info!(
                            client_id = %clip(&t.sub.client_id),
                            "queue full (max_queued_messages): messages for this client are being dropped"
                        );
                    }
                }
                Err(DropReason::Offline) => {}
            }
        }
        outcome
    }
}

/// One delivery per client: highest QoS, every Subscription Identifier, retain kept if any
/// matching subscription keeps it [MQTT-3.3.4-2, -3].
fn merge_overlapping(targets: &mut Targets<'_>) {
    if targets.len() < 2 {
        return;
    }
    targets.sort_by_key(|t| Arc::as_ptr(&t.sub.mailbox));
    let mut merged: Targets<'_> = SmallVec::with_capacity(targets.len());
    for t in targets.drain(..) {
        match merged.last_mut() {
            Some(last) if Arc::ptr_eq(&last.sub.mailbox, &t.sub.mailbox) => {
                last.qos = last.qos.max(t.qos);
                last.retain |= t.retain;
                last.sub_ids.extend(t.sub_ids);
            }
            _ => merged.push(t),
        }
    }
    *targets = merged;
}
