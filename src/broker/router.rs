//! Matches each accepted message against the subscription trie and pushes one delivery into the
//! mailbox of every matching session: once per client at the highest granted QoS with every
//! matching Subscription Identifier, and once per shared-subscription group, to the member its
//! strategy picks (`shared`). It never touches a socket or a session.

use crate::logged::clip;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::mailbox::{DropReason, Mailbox};
use super::shared::{Group, Key};
use crate::config::Strategy;
use crate::protocol::{QoS, SubscriptionOptions};
use crate::session::{Delivery, Message, Seq, SharedTag};
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

/// How a member joins a shared-subscription group.
#[derive(Debug, Clone, Copy)]
pub struct Share<'a> {
    /// The share name.
    pub name: &'a str,
    /// How the group picks (set when the group is made; its members do not change it).
    pub strategy: Strategy,
    /// The member's weight under `weighted` (1 to 1000).
    pub weight: u32,
}

impl<'a> Share<'a> {
    /// Group `name`, round robin, weight 1.
    pub fn new(name: &'a str) -> Share<'a> {
        Share {
            name,
            strategy: Strategy::RoundRobin,
            weight: 1,
        }
    }
}

/// Everything subscribed to one exact filter.
#[derive(Debug, Default)]
struct FilterSubs {
    direct: Vec<Subscriber>,
    groups: Vec<Group>,
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
}

/// The subscription index.
#[derive(Debug, Default)]
pub struct Router {
    trie: RwLock<SubscriptionTrie<FilterSubs>>,
    /// Subscriptions in the trie, shared ones included.
    count: AtomicUsize,
}

struct Target<'a> {
    sub: &'a Subscriber,
    qos: QoS,
    retain: bool,
    sub_ids: Vec<u32>,
    shared: Option<SharedTag>,
}

impl Router {
    /// Adds or replaces a subscription; `share` is the group of a `$share/` subscription.
    /// Returns true if it replaced one.
    pub fn subscribe(&self, share: Option<Share<'_>>, filter: &str, sub: Subscriber) -> bool {
        let mut trie = self.trie.write();
        let subs = trie.get_or_insert_with(filter, FilterSubs::default);
        let replaced = match share {
            None => match subs
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
            },
            Some(share) => {
                let i = match subs.groups.iter().position(|g| &*g.tag.group == share.name) {
                    Some(i) => i,
                    None => {
                        let tag = SharedTag {
                            group: share.name.into(),
                            filter: filter.into(),
                        };
                        subs.groups.push(Group::new(tag, share.strategy));
                        subs.groups.len() - 1
                    }
                };
                subs.groups[i].upsert(sub, share.weight)
            }
        };
        if !replaced {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        replaced
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Removes one client's subscription; true if it existed.
    pub fn unsubscribe(&self, share: Option<&str>, filter: &str, client_id: &str) -> bool {
        let mut found = false;
        self.trie.write().remove_if(filter, |subs| {
            found = match share {
                None => {
                    let before = subs.direct.len();
                    subs.direct.retain(|s| &*s.client_id != client_id);
                    subs.direct.len() != before
                }
                Some(group) => subs
                    .groups
                    .iter_mut()
                    .find(|g| &*g.tag.group == group)
                    .is_some_and(|g| g.remove(client_id)),
            };
            subs.groups.retain(|g| !g.is_empty());
            subs.is_empty()
        });
        if found {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        found
    }

    /// Queues `msg` for every matching subscription.
    /// With a `recorder`, QoS 1/2 deliveries to stored sessions (not through shared
    /// subscriptions, which may move between members) get a sequence number and are recorded
    /// once queued.
    /// With `may_read`, only clients it allows get the message (ACLs).
    pub fn route(
        &self,
        msg: &Arc<Message>,
        mut recorder: Option<&mut dyn Recorder>,
        may_read: Option<ReadCheck<'_>>,
    ) -> RouteOutcome {
        let trie = self.trie.read();
        let mut targets: Vec<Target<'_>> = Vec::new();
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
                    shared: None,
                });
            }
            let key = Key {
                publisher,
                topic: msg.topic(),
            };
            for g in &subs.groups {
                if let Some(s) = g.pick(key, None, may_read) {
                    targets.push(Target {
                        sub: s,
                        qos: msg.qos().min(s.options.qos),
                        retain: s.options.retain_as_published && msg.publish.retain,
                        sub_ids: s.id.into_iter().collect(),
                        shared: Some(g.tag.clone()),
                    });
                }
            }
        });
        merge_overlapping(&mut targets);
        let mut outcome = RouteOutcome::default();
        for t in targets {
            let mut delivery = Delivery {
                msg: Arc::clone(msg),
                qos: t.qos,
                retain: t.retain,
                sub_ids: t.sub_ids,
                shared: t.shared,
                seq: None,
                dup: false,
                link: None,
            };
            let record = match recorder.as_deref_mut() {
                Some(r) if t.sub.mailbox.stores(delivery.qos) => {
                    delivery.seq = Seq::new(r.next_seq());
                    if t.sub.mailbox.keeps_stored_only() {
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

    /// Sends a shared-subscription delivery to another member of its group than `exclude`;
    /// true if that member's session is stored. Gives the delivery back if the group has no
    /// other member.
    pub fn redistribute(
        &self,
        delivery: Delivery,
        exclude: &str,
        may_read: Option<ReadCheck<'_>>,
    ) -> Result<bool, Delivery> {
        let Some(tag) = delivery.shared.clone() else {
            return Err(delivery);
        };
        let trie = self.trie.read();
        let member = trie
            .get(&tag.filter)
            .and_then(|subs| subs.groups.iter().find(|g| g.tag.group == tag.group))
            .and_then(|g| {
                let key = Key {
                    publisher: delivery.msg.publisher.as_deref(),
                    topic: delivery.msg.topic(),
                };
                g.pick(key, Some(exclude), may_read)
            });
        match member {
            Some(m) => {
                let mut d = delivery;
                d.qos = d.msg.qos().min(m.options.qos);
                d.sub_ids = m.id.into_iter().collect();
                let stored = m.mailbox.is_stored();
                m.mailbox.push(d.clone()).map(|()| stored).map_err(|_| d)
            }
            None => Err(delivery),
        }
    }
}

/// One delivery per client for its non-shared subscriptions: highest QoS, every Subscription
/// Identifier, retain kept if any matching subscription keeps it [MQTT-3.3.4-2, -3].
fn merge_overlapping(targets: &mut Vec<Target<'_>>) {
    if targets.len() < 2 {
        return;
    }
    targets.sort_by_key(|t| (t.shared.is_some(), Arc::as_ptr(&t.sub.mailbox)));
    let mut merged: Vec<Target<'_>> = Vec::with_capacity(targets.len());
    for t in targets.drain(..) {
        match merged.last_mut() {
            Some(last)
                if t.shared.is_none()
                    && last.shared.is_none()
                    && Arc::ptr_eq(&last.sub.mailbox, &t.sub.mailbox) =>
            {
                last.qos = last.qos.max(t.qos);
                last.retain |= t.retain;
                last.sub_ids.extend(t.sub_ids);
            }
            _ => merged.push(t),
        }
    }
    *targets = merged;
}
