//! The seam between one node's broker and a cluster of them ([`Remote`]). A single node has
//! none, and every path below is the local one; cluster mode (`crate::cluster`) plugs in
//! here. The local hot path stays as it is: a QoS 0 message is routed locally first, then
//! handed over; what the cluster sends back comes in through [`BrokerState::route_remote`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::router::{Recorder, Subscriber};
use super::{Attached, BrokerState};
use crate::session::{Delivery, Message, Session, Subscription};
use crate::store::Ticket;
use crate::topic::TopicFilter;

/// A future the broker awaits without knowing what is behind it.
pub type Waiting<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Why a client's message cannot go into the cluster (it is never truncated or altered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfit {
    /// Its topic, escaped for NATS, is longer than a NATS subject may be.
    TopicTooLong,
    /// Its payload is larger than the NATS servers' `max_payload`.
    PayloadTooLarge,
}

/// A client's will as the cluster keeps it while the client is connected.
#[derive(Debug, Clone)]
pub struct ClusterWill {
    /// The will.
    pub msg: Arc<Message>,
    /// Its Will Delay, in seconds.
    pub delay: u32,
    /// The session's expiry interval, in seconds: the will goes out when the session ends, if
    /// that comes before the delay is over.
    pub expiry: u32,
}

/// A persistent session as the cluster keeps it, for the node a client resumes it on.
#[derive(Debug, Clone, Default)]
pub struct ClusterSession {
    /// Session Expiry Interval, seconds.
    pub expiry: u32,
    /// Its subscriptions (filters with any `$share/` or `$queue/` prefix).
    pub subscriptions: Vec<(String, Subscription)>,
    /// Every message of the cluster's stream up to this sequence is done with.
    pub floor: u64,
    /// Above the floor and up to this sequence, a message may have been sent before (DUP).
    pub sent: u64,
    /// Inbound QoS 2 messages awaiting PUBREL: packet id and the message's number
    /// ([`Session::inbound_qos2_serial`]).
    pub inbound_qos2: Vec<(crate::protocol::PacketId, u64)>,
    /// Outbound QoS 2 flows: packet id, stream sequence, and whether at PUBREL (`Some(true)`),
    /// sent and not yet received (`Some(false)`), or over (`None`: not to be sent again).
    pub outbound_qos2: Vec<(crate::protocol::PacketId, u64, Option<bool>)>,
}

/// What a claim found.
pub struct Claimed {
    /// The claim's number: what the connection writes under.
    pub claim: u64,
    /// The session to resume, when the client asked for it and the cluster had it.
    pub session: Option<ClusterSession>,
    /// The client was held by another node: anything kept of it here is out of date.
    pub elsewhere: bool,
    /// That node.
    pub from: Option<String>,
    /// The will (and its delay) of the client's previous connection on another node, with
    /// whether that node turned out to have died with it (then the will is this node's to
    /// publish; a live node publishes it itself as the client is taken over).
    pub orphan_will: Option<(Arc<Message>, u32, Waiting<bool>)>,
}

/// What one stream message read back for a resumed session came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replayed {
    /// Queued; `stored` when at QoS 1/2 (it is owed until acknowledged).
    Queued {
        /// At QoS 1/2.
        stored: bool,
    },
    /// Not for this session (no match, No Local, the ACL).
    Skipped,
    /// Its queue is full: nothing more is read back.
    Full,
}

/// Queues one message read back for a resumed session: (message, stream sequence, DUP).
pub type Deliver = dyn FnMut(&Arc<Message>, u64, bool) -> Replayed + Send;

/// A persistent session the cluster kept, resumed on this node: its queue is read back from
/// the cluster's stream, then its subscriptions go into the router, at one point of the
/// stream, so nothing is missed or queued twice.
pub struct Resume {
    /// Whose.
    pub client_id: Arc<str>,
    /// Its subscriptions' filters (without shared ones): what to read back.
    pub filters: Vec<String>,
    /// Read back from after this sequence.
    pub floor: u64,
    /// Up to this sequence, a message goes again with DUP.
    pub sent: u64,
    /// Queues one message read back: (message, sequence, DUP).
    pub deliver: Box<Deliver>,
    /// Puts the subscriptions in the router: from then on routing feeds the session.
    pub install: Box<dyn FnOnce() + Send>,
}

/// What the broker hands to the rest of the cluster, and asks of it.
pub trait Remote: Send + Sync + std::fmt::Debug {
    /// Whether a message with this topic and payload size can travel at all; checked before
    /// it is accepted.
    fn fits(&self, topic: &str, payload_len: usize) -> Result<(), Unfit>;
    /// Hands over a message accepted here. `local` says whether it was routed here already
    /// (QoS 0); otherwise the cluster brings it back to every node, this one included, once
    /// stored, and the returned ticket completes then: the publisher's acknowledgement waits
    /// for it. `qos2` identifies an inbound QoS 2 message, so a copy sent again is stored once.
    fn forward(&self, msg: &Arc<Message>, local: bool, qos2: Option<u64>) -> Option<Ticket>;
    /// A topic filter entered (`true`) or left (`false`) this node's subscription index.
    fn interest(&self, filter: &str, present: bool);
    /// Completes once every interest change made so far is known to every peer (the SUBACK
    /// barrier); `None` if there is nothing to wait for.
    fn interest_settled(&self) -> Option<Ticket>;
    /// Resolves once this node has every retained message stored in the cluster before the
    /// call; `None` if there is nothing to wait for.
    fn retained_synced(&self) -> Option<Waiting<()>>;
    /// Makes this node the owner of `client_id` cluster-wide (a connection elsewhere is told
    /// to go), keeping `will` with the claim, so another node publishes it should this one
    /// die while the client is connected. With `clean_start` false the session the cluster
    /// kept comes back; a session `expiry` above 0 is kept from now on. An error says why the
    /// cluster cannot answer now.
    fn claim(
        &self,
        client_id: &Arc<str>,
        will: Option<ClusterWill>,
        clean_start: bool,
        expiry: u32,
    ) -> Waiting<Result<Claimed, String>>;
    /// The will kept with `claim` is no longer due (published here, or the client left
    /// without one): the cluster forgets it, unless a newer claim replaced that one. Resolves
    /// once it has.
    fn will_settled(&self, client_id: &Arc<str>, claim: u64) -> Waiting<()>;
    /// The persistent session held under `claim` has these subscriptions now; the ticket
    /// completes once the cluster keeps them (SUBACK and UNSUBACK wait for it).
    fn keep_subscriptions(
        &self,
        client_id: &Arc<str>,
        claim: u64,
        subscriptions: Vec<(String, Subscription)>,
    ) -> Option<Ticket>;
    /// The connection of the persistent session held under `claim` ended (its expiry counts
    /// from now); `will_waits` says whether its will is still to come.
    fn parked(&self, client_id: &Arc<str>, claim: u64, will_waits: bool);
    /// The client held under `claim` and its session are done: the cluster forgets them.
    fn ended(&self, client_id: &Arc<str>, claim: u64);
    /// `client_id` is done with these messages of the cluster's stream (acknowledged, dropped).
    fn released(&self, client_id: &str, seqs: &mut dyn Iterator<Item = u64>);
    /// The persistent session of `client_id` (held here) has an inbound QoS 2 message under
    /// `pkid` awaiting PUBREL, with this number (`Some`), or no longer (`None`); the ticket
    /// completes once the cluster keeps it (the PUBREC waits for it).
    fn inbound_qos2(
        &self,
        client_id: &str,
        pkid: crate::protocol::PacketId,
        serial: Option<u64>,
    ) -> Option<Ticket>;
    /// An outbound QoS 2 flow of the persistent session of `client_id` (held here) moved, as
    /// its store operation `op` says (sent, at PUBREL, completed, refused): kept with the
    /// session, so a node that resumes it goes on with the same packet id and sends nothing
    /// twice. The PUBLISH and the PUBREL wait for the ticket.
    fn outbound_qos2(&self, client_id: &str, op: crate::session::StoreOp) -> Option<Ticket>;
    /// Reads back the queue of a session resumed here, then installs its subscriptions.
    fn resume(&self, resume: Resume) -> Waiting<Result<(), String>>;
    /// A queue (declared, or a shared subscription's group) is open on this node: its QoS 1/2
    /// messages come to it from the cluster, each to one of the nodes where it is open, taken
    /// as its consumers here have room ([`BrokerState::offer_stream`]).
    fn queue_opened(&self, store_id: &Arc<str>, filter: &str, declared: bool);
    /// The group closed here (its last member here left); `waiting`: the stream messages it
    /// held, which go to another node.
    fn queue_closed(&self, store_id: &str, waiting: Vec<u64>);
    /// The queue is done with stream message `seq` (a consumer has it, or it was dropped).
    fn queue_released(&self, store_id: &str, seq: u64);
    /// The node is stopping: its peers stop waiting for it.
    fn leave(&self) -> Waiting<()>;
    /// Whether the node's last write to JetStream (its heartbeat, every 2 s) succeeded: without
    /// a quorum it can acknowledge no QoS 1/2 message and take no CONNECT.
    fn healthy(&self) -> bool;
}

impl BrokerState {
    /// Plugs the cluster in; once only, before any client connects. The declared queues'
    /// filters become this node's interest for good.
    pub fn set_remote(&self, remote: Arc<dyn Remote>) {
        for q in &self.queues {
            remote.interest(q.filter(), true);
            remote.queue_opened(q.store_id(), q.filter(), true);
        }
        self.router.set_interest(Arc::clone(&remote));
        let _ = self.remote.set(remote);
    }

    /// Cluster mode: the will kept with `claim` is no longer due.
    pub(super) fn will_settled(&self, client_id: &Arc<str>, claim: Option<u64>) {
        if let (Some(r), Some(c)) = (self.remote.get(), claim) {
            tokio::spawn(r.will_settled(client_id, c));
        }
    }

    /// Publishes the will of a client whose node died, as its own node would have.
    pub fn publish_orphaned_will(&self, msg: Arc<Message>) {
        self.publish_will_message(msg);
    }

    /// The cluster, when there is one.
    pub fn remote(&self) -> Option<&Arc<dyn Remote>> {
        self.remote.get()
    }

    /// Routes a QoS 0 message another node brought to this node's subscribers; nothing of it
    /// goes back out.
    pub fn route_remote(&self, msg: &Arc<Message>) {
        // Its node offered it to its own queues and groups: one node does.
        self.route_noting(msg, None, false);
    }

    /// Applies a retained message from the cluster's retained stream to this node's copy
    /// (an empty payload deletes), within this node's retained budget.
    pub fn retain_remote(&self, msg: &Arc<Message>) {
        self.retain_within_budget(msg);
    }

    /// `client_id` now belongs to another node: a connection here is told so (v5 DISCONNECT
    /// 0x8E, its will published as at any takeover) and the session it leaves here ends
    /// without a word to the cluster, where the newer one lives (a pending will with it: the
    /// client came back, elsewhere). `still` says whether that is still so (the client may come
    /// back here meanwhile). `last` runs once the connection is gone, before the session ends
    /// (its subscriptions still route here), told whether there was a session here; what it
    /// returns comes back.
    pub async fn moved_away<T>(
        self: &Arc<Self>,
        client_id: &Arc<str>,
        still: impl Fn() -> bool,
        last: impl FnOnce(bool) -> T,
    ) -> T {
        for _ in 0..50 {
            if !still() {
                break;
            }
            match self.registry.evict(client_id) {
                super::registry::Evicted::Gone => break,
                super::registry::Evicted::Parked(mut session, mailbox) => {
                    let taken = last(true);
                    session.set_claim(None);
                    let queued = mailbox.take_all();
                    self.end_session(&session, false, None, queued);
                    return taken;
                }
                super::registry::Evicted::Connected(parked) => {
                    let _ =
                        tokio::time::timeout(std::time::Duration::from_millis(100), parked).await;
                }
            }
        }
        last(false)
    }
}

impl BrokerState {
    /// Routes a QoS 1/2 message read from the cluster's stream at sequence `seq`: like
    /// [`BrokerState::route_remote`], with `recorder` told of each delivery queued for a
    /// persistent session, so the cluster knows how far through the stream each has got.
    pub fn route_stream(&self, msg: &Arc<Message>, recorder: &mut dyn Recorder) {
        self.route_noting(msg, Some(recorder), false);
    }

    /// Offers a message read from the cluster's stream at `seq` to the queue or group whose
    /// store id is `store_id`; false if it did not take it (gone, full).
    pub fn offer_stream(&self, store_id: &str, msg: &Arc<Message>, seq: u64) -> bool {
        self.queue_by_store_id(store_id).is_some_and(|q| {
            q.offer_stream(msg, seq, &self.io()) == super::queue::Offered::Accepted
        })
    }

    /// How many more messages the consumers of the queue or group `store_id` could take now;
    /// `None` once it is gone.
    pub fn queue_room(&self, store_id: &str) -> Option<usize> {
        self.queue_by_store_id(store_id).map(|q| q.room())
    }

    /// The subscriptions of a persistent session, for the cluster to keep (`None` when it
    /// keeps none of this session: not persistent, or not in cluster mode). SUBACK and UNSUBACK
    /// wait for the ticket, and for the peers' interest.
    pub(super) fn keep_subscriptions(
        &self,
        session: &Session,
        mailbox: &super::Mailbox,
    ) -> Option<Ticket> {
        let remote = self.remote.get()?;
        let claim = session.claim()?.get();
        if !mailbox.is_stored() {
            return None;
        }
        let subscriptions = session
            .subscriptions()
            .iter()
            .map(|(f, s)| (f.as_str().to_string(), s.clone()))
            .collect();
        remote.keep_subscriptions(session.client_id(), claim, subscriptions)
    }

    /// Cluster mode: the persistent session's new inbound QoS 2 message under `pkid` is kept
    /// with the session, so a copy sent again to another node after this one died is stored
    /// once; `None` when nothing is kept (not persistent, or not in cluster mode).
    pub fn keep_inbound_qos2(
        &self,
        session: &Session,
        mailbox: &super::Mailbox,
        pkid: crate::protocol::PacketId,
    ) -> Option<Ticket> {
        let remote = self.remote.get().filter(|_| mailbox.is_stored())?;
        let serial = session.inbound_qos2_serial(pkid)?;
        remote.inbound_qos2(session.client_id(), pkid, Some(serial))
    }

    /// A session kept here is out of date (the client was held by another node since): it
    /// ends without a word to the cluster, where the newer one lives.
    pub fn drop_local(&self, client_id: &Arc<str>) {
        if let super::registry::Evicted::Parked(mut session, mailbox) =
            self.registry.evict(client_id)
        {
            session.set_claim(None);
            let queued = mailbox.take_all();
            self.end_session(&session, false, None, queued);
        }
    }

    /// Resumes on this connection's new session the persistent session `kept` the cluster
    /// kept: its subscriptions (groups and queues joined again), then its queue read back
    /// from the cluster's stream, in order, before anything routed from then on.
    pub async fn resume_clustered(
        self: &Arc<Self>,
        attached: &mut Attached,
        kept: ClusterSession,
    ) -> Result<(), String> {
        let remote = Arc::clone(self.remote.get().ok_or("not in cluster mode")?);
        let client_id = Arc::clone(attached.session.client_id());
        let mailbox = Arc::clone(&attached.mailbox);
        let window = attached.session.window();
        let mut plain: Vec<(TopicFilter, Subscription)> = Vec::new();
        for (filter, sub) in kept.subscriptions {
            // Valid when kept; one that is not any more is left out.
            let Ok(filter) = TopicFilter::parse(&filter) else {
                continue;
            };
            if super::queue_name(filter.as_str()).is_some() || filter.share().is_some() {
                let joining = super::queues::Joining {
                    weight: self.share_weight(&client_id, None),
                    window,
                };
                let member = subscriber(&client_id, &mailbox, &sub);
                let Some((slot, _)) = self.join_queue(&filter, member, joining) else {
                    continue;
                };
                self.queue_ready(slot, &client_id);
            } else {
                plain.push((filter.clone(), sub.clone()));
            }
            attached.session.subscribe(filter, sub);
        }
        for (pkid, serial) in kept.inbound_qos2 {
            attached.session.restore_inbound_qos2_serial(pkid, serial);
        }
        // QoS 2 flows at PUBREL go on there; those sent and not yet received are sent again
        // under their packet ids, with DUP, before anything else.
        let mut sent: std::collections::HashMap<u64, Option<crate::protocol::PacketId>> =
            std::collections::HashMap::new();
        for (pkid, seq, state) in kept.outbound_qos2 {
            match state {
                Some(false) => {
                    sent.insert(seq, Some(pkid));
                }
                // Received: never sent again; a flow at PUBREL goes on.
                Some(true) => {
                    attached.session.restore_released(pkid);
                    sent.insert(seq, None);
                }
                None => {
                    sent.insert(seq, None);
                }
            }
        }
        let resent: Arc<parking_lot::Mutex<Vec<(u64, crate::protocol::PacketId, Delivery)>>> =
            Arc::default();
        let filters = plain.iter().map(|(f, _)| f.filter().to_string()).collect();
        let deliver = {
            let (state, plain) = (Arc::clone(self), plain.clone());
            let (client_id, mailbox) = (Arc::clone(&client_id), Arc::clone(&mailbox));
            let resent = Arc::clone(&resent);
            Box::new(
                move |msg: &Arc<Message>, seq: u64, dup: bool| match sent.get(&seq) {
                    Some(Some(pkid)) => {
                        state.replay_sent(&client_id, &plain, msg, seq, *pkid, &resent)
                    }
                    Some(None) => Replayed::Skipped,
                    None => state.replay_one(&client_id, &mailbox, &plain, msg, seq, dup),
                },
            )
        };
        let install = {
            let state = Arc::clone(self);
            let (client_id, mailbox) = (Arc::clone(&client_id), Arc::clone(&mailbox));
            Box::new(move || {
                for (filter, sub) in &plain {
                    let s = subscriber(&client_id, &mailbox, sub);
                    state.router.subscribe(filter.filter(), s);
                }
            })
        };
        remote
            .resume(Resume {
                client_id,
                filters,
                floor: kept.floor,
                sent: kept.sent,
                deliver,
                install,
            })
            .await?;
        let mut resent = std::mem::take(&mut *resent.lock());
        resent.sort_by_key(|(seq, _, _)| *seq);
        attached.session.restore_inflight(
            resent
                .into_iter()
                .map(|(_, pkid, d)| (Some(pkid), d))
                .collect(),
        );
        attached.session_present = true;
        Ok(())
    }

    /// A message read back for a resumed session that its previous node had sent at QoS 2
    /// under `pkid` and not had received: kept aside, to go again first under that id.
    fn replay_sent(
        &self,
        client_id: &Arc<str>,
        subs: &[(TopicFilter, Subscription)],
        msg: &Arc<Message>,
        seq: u64,
        pkid: crate::protocol::PacketId,
        resent: &parking_lot::Mutex<Vec<(u64, crate::protocol::PacketId, Delivery)>>,
    ) -> Replayed {
        let Some(mut delivery) = self.replay_delivery(client_id, subs, msg) else {
            return Replayed::Skipped;
        };
        delivery.seq = crate::session::Seq::new(seq);
        delivery.dup = true;
        resent.lock().push((seq, pkid, delivery));
        Replayed::Queued { stored: true }
    }

    /// Queues one message read back from the cluster's stream for a resumed session, as the
    /// router would have: once, at the highest QoS of its matching subscriptions, with all
    /// their identifiers, if the ACL lets the client read it.
    fn replay_one(
        &self,
        client_id: &Arc<str>,
        mailbox: &super::Mailbox,
        subs: &[(TopicFilter, Subscription)],
        msg: &Arc<Message>,
        seq: u64,
        dup: bool,
    ) -> Replayed {
        let Some(mut delivery) = self.replay_delivery(client_id, subs, msg) else {
            return Replayed::Skipped;
        };
        delivery.dup = dup;
        let stored = delivery.qos != crate::protocol::QoS::AtMostOnce;
        if stored {
            delivery.seq = crate::session::Seq::new(seq);
        }
        match mailbox.push(delivery) {
            Ok(()) => Replayed::Queued { stored },
            Err(super::mailbox::DropReason::QueueFull) => Replayed::Full,
            Err(_) => Replayed::Skipped,
        }
    }

    /// `msg` as the router would deliver it to a session with `subs`: once, at the highest QoS
    /// of its matching subscriptions, with all their identifiers, if the ACL lets the client
    /// read it.
    fn replay_delivery(
        &self,
        client_id: &Arc<str>,
        subs: &[(TopicFilter, Subscription)],
        msg: &Arc<Message>,
    ) -> Option<Delivery> {
        let topic = msg.topic();
        let mut found: Option<Delivery> = None;
        for (filter, sub) in subs {
            if !crate::topic::matches(filter.filter(), topic)
                || sub.options.no_local && msg.publisher.as_deref() == Some(&**client_id)
            {
                continue;
            }
            let qos = msg.qos().min(sub.options.qos);
            let retain = sub.options.retain_as_published && msg.publish.retain;
            match &mut found {
                Some(d) => {
                    d.qos = d.qos.max(qos);
                    d.retain |= retain;
                    if let Some(id) = sub.id {
                        d.add_sub_id(id);
                    }
                }
                None => {
                    found = Some(Delivery::new(Arc::clone(msg), qos, retain).with_sub_ids(sub.id))
                }
            }
        }
        let delivery = found?;
        if let Some(authorizer) = self.auth.authorizer() {
            if !self.may_read(&authorizer, client_id, topic) {
                return None;
            }
        }
        Some(delivery)
    }
}

/// A session's subscription as the router holds it.
fn subscriber(
    client_id: &Arc<str>,
    mailbox: &Arc<super::Mailbox>,
    sub: &Subscription,
) -> Subscriber {
    Subscriber {
        client_id: Arc::clone(client_id),
        mailbox: Arc::clone(mailbox),
        options: sub.options,
        id: sub.id,
    }
}

/// One ticket for two things to wait for (either may be missing).
pub fn both(a: Option<Ticket>, b: Option<Ticket>) -> Option<Ticket> {
    match (a, b) {
        (Some(a), Some(b)) => {
            let (ticket, done) = Ticket::manual();
            tokio::spawn(async move {
                let (a, b) = tokio::join!(a.wait(), b.wait());
                let _ = done.send(a.and(b));
            });
            Some(ticket)
        }
        (a, b) => a.or(b),
    }
}
