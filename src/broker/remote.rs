//! The seam between one node's broker and a cluster of them ([`Remote`]). A single node has
//! none, and every path below is the local one; cluster mode (`crate::cluster`) plugs in
//! here. The local hot path stays as it is: a QoS 0 message is routed locally first, then
//! handed over; what the cluster sends back comes in through [`BrokerState::route_remote`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::BrokerState;
use crate::session::Message;
use crate::store::Ticket;

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
    /// die while the client is connected. The claim's number, for what the connection later
    /// writes under it; an error says why the cluster cannot answer now.
    fn claim(
        &self,
        client_id: &Arc<str>,
        will: Option<ClusterWill>,
    ) -> Waiting<Result<u64, String>>;
    /// The will kept with `claim` is no longer due (published here, or the client left
    /// without one): the cluster forgets it, unless a newer claim replaced that one. Resolves
    /// once it has.
    fn will_settled(&self, client_id: &Arc<str>, claim: u64) -> Waiting<()>;
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

    /// Routes a message another node (or the cluster's stream) brought to this node's
    /// subscribers, groups and queues; nothing of it goes back out.
    pub fn route_remote(&self, msg: &Arc<Message>) {
        self.route(msg, None);
    }

    /// Applies a retained message from the cluster's retained stream to this node's copy
    /// (an empty payload deletes).
    pub fn retain_remote(&self, msg: &Arc<Message>) {
        self.retained.update(msg);
    }

    /// `client_id` now belongs to another node: a connection here is told so (v5 DISCONNECT
    /// 0x8E, its will published as at any takeover) and the session it leaves here ends
    /// (a pending will with it: the client came back, elsewhere). `still` says whether that
    /// is still so (the client may come back here meanwhile).
    pub async fn moved_away(self: &Arc<Self>, client_id: &Arc<str>, still: impl Fn() -> bool) {
        for _ in 0..50 {
            if !still() {
                return;
            }
            match self.registry.evict(client_id) {
                super::registry::Evicted::Gone => return,
                super::registry::Evicted::Parked(session, mailbox) => {
                    let queued = mailbox.take_all();
                    self.end_session(&session, false, None, queued);
                    return;
                }
                super::registry::Evicted::Connected(parked) => {
                    let _ =
                        tokio::time::timeout(std::time::Duration::from_millis(100), parked).await;
                }
            }
        }
    }
}
