//! What the cluster keeps of each client: one record per client id in the ownership bucket,
//! holding which node has the client (its claim), the will of its connection, and its
//! persistent session (subscriptions, expiry, and how far through the message stream it has
//! got). Because all of it is one key, the claim's compare-and-set fences every later write:
//! a node that lost the client to another fails its next write instead of overwriting the new
//! owner's state.
//!
//! A session's place in the message stream is its floor: every message at or below it is done
//! with (acknowledged, or not for it). The node that holds the session counts the stream
//! messages queued for it and not yet released, and moves the floor up to just below the
//! oldest of them, written at most once a second. A node that resumes the session reads the
//! stream from the floor on; what was released after the last write comes again, with DUP.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::broker::{Claimed, ClusterSession, ClusterWill, Waiting};
use crate::metrics;
use crate::protocol::{QoS, RetainHandling, SubscriptionOptions};
use crate::session::{Delivery, StoreOp, Subscription, NEVER_EXPIRES};
use crate::store::{StoreError, Ticket};

/// How often moved floors are written.
const FLOORS: Duration = Duration::from_secs(1);

/// The bucket key for a client id: any string a client may use, in the characters keys allow.
pub(super) fn key(client_id: &str) -> String {
    let digest = Sha256::digest(client_id.as_bytes());
    let mut k = String::with_capacity(2 + 64);
    k.push_str("c.");
    for b in digest {
        k.push_str(&format!("{b:02x}"));
    }
    k
}

/// Now, in Unix milliseconds.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A client's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record {
    /// The node holding the client.
    pub(super) node: String,
    pub(super) client_id: String,
    /// The will of its connection (or of the connection that ended, until it is due).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) will: Option<KeptWill>,
    /// Its persistent session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) session: Option<KeptSession>,
}

/// A will kept with its client's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct KeptWill {
    pub(super) msg: super::wire::KeptMessage,
    pub(super) delay: u32,
    pub(super) expiry: u32,
}

/// A persistent session as kept in the cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct KeptSession {
    /// Session Expiry Interval, seconds.
    pub(super) expiry: u32,
    /// When its connection ended (Unix ms); none while connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) gone: Option<u64>,
    #[serde(default)]
    pub(super) subs: Vec<KeptSub>,
    /// Every stream message up to here is done with.
    #[serde(default)]
    pub(super) floor: u64,
    /// The last stream message queued for it: above the floor and up to here, one may have
    /// been sent.
    #[serde(default)]
    pub(super) sent: u64,
    /// Inbound QoS 2 messages awaiting PUBREL: packet id and number.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) q2: Vec<(u16, u64)>,
    /// Outbound QoS 2 flows: packet id, stream sequence, and how far: [`SENT`], [`AT_PUBREL`],
    /// or [`DONE`] (kept until the floor passes it, so it is not read back as new).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) q2out: Vec<(u16, u64, u8)>,
}

/// An outbound QoS 2 flow sent, its PUBREC not yet come.
pub(super) const SENT: u8 = 0;
/// An outbound QoS 2 flow at PUBREL: the receiver has the message.
pub(super) const AT_PUBREL: u8 = 1;
/// An outbound QoS 2 flow over (or refused at PUBREC).
pub(super) const DONE: u8 = 2;

impl KeptSession {
    /// Whether its expiry ran out by `now` (Unix ms).
    pub(super) fn expired(&self, now: u64) -> bool {
        match self.gone {
            Some(gone) if self.expiry != NEVER_EXPIRES => {
                gone.saturating_add(u64::from(self.expiry) * 1000) <= now
            }
            _ => false,
        }
    }

    fn for_broker(&self) -> ClusterSession {
        ClusterSession {
            expiry: self.expiry,
            subscriptions: self.subs.iter().filter_map(KeptSub::subscription).collect(),
            floor: self.floor,
            sent: self.sent,
            inbound_qos2: inbound_for_broker(&self.q2),
            outbound_qos2: outbound_for_broker(&self.q2out),
        }
    }
}

fn inbound_for_broker(q2: &[(u16, u64)]) -> Vec<(crate::protocol::PacketId, u64)> {
    q2.iter()
        .filter_map(|(p, s)| Some((crate::protocol::PacketId::new(*p)?, *s)))
        .collect()
}

fn outbound_for_broker(
    q2out: &[(u16, u64, u8)],
) -> Vec<(crate::protocol::PacketId, u64, Option<bool>)> {
    q2out
        .iter()
        .filter_map(|(p, s, how)| {
            let state = match *how {
                SENT => Some(false),
                AT_PUBREL => Some(true),
                _ => None,
            };
            Some((crate::protocol::PacketId::new(*p)?, *s, state))
        })
        .collect()
}

impl Handover {
    /// `session`, as its previous node had it last.
    pub(super) fn apply(&self, session: &mut ClusterSession) {
        session.floor = session.floor.max(self.floor);
        session.sent = session.sent.max(self.sent);
        session.inbound_qos2 = inbound_for_broker(&self.q2);
        session.outbound_qos2 = outbound_for_broker(&self.q2out);
    }
}

/// One subscription of a kept session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct KeptSub {
    pub(super) f: String,
    q: u8,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    nl: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    rap: bool,
    #[serde(default)]
    rh: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<u32>,
}

impl KeptSub {
    pub(super) fn of(filter: &str, sub: &Subscription) -> KeptSub {
        let o = &sub.options;
        KeptSub {
            f: filter.to_string(),
            q: o.qos as u8,
            nl: o.no_local,
            rap: o.retain_as_published,
            rh: o.retain_handling as u8,
            id: sub.id,
        }
    }

    fn subscription(&self) -> Option<(String, Subscription)> {
        let retain_handling = match self.rh {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            _ => RetainHandling::DoNotSend,
        };
        let options = SubscriptionOptions {
            qos: QoS::from_u8(self.q)?,
            no_local: self.nl,
            retain_as_published: self.rap,
            retain_handling,
        };
        Some((
            self.f.clone(),
            Subscription {
                options,
                id: self.id,
            },
        ))
    }
}

/// A client this node holds, as its record is written and its session's floor moves.
#[derive(Debug)]
pub(super) struct Held {
    /// The revision of the claim: what the broker calls the claim.
    pub(super) epoch: u64,
    /// The revision of the last write.
    pub(super) rev: u64,
    /// What the bucket is to hold.
    record: Record,
    dirty: bool,
    writing: bool,
    /// The record is to go (the client and its session are done).
    end: bool,
    waiters: Vec<oneshot::Sender<Result<(), StoreError>>>,
    /// Stream messages queued for the session and not yet released, by sequence (a count, since a
    /// release may come before the note of its queueing).
    pending: BTreeMap<u64, i32>,
    /// Something was released since the floor was last worked out.
    released: bool,
    /// The last stream message queued for it.
    high: u64,
    /// Its queue is being read back from the stream: the floor waits.
    resuming: bool,
    /// Another node claimed the client: nothing more is written; kept a moment for that
    /// node's handover request ([`Records::handover`]).
    lost: bool,
}

impl Held {
    pub(super) fn new(epoch: u64, record: Record) -> Held {
        Held {
            epoch,
            rev: epoch,
            record,
            dirty: false,
            writing: false,
            end: false,
            waiters: Vec::new(),
            pending: BTreeMap::new(),
            released: false,
            high: 0,
            resuming: false,
            lost: false,
        }
    }
}

/// How long a lost client's state stays for the new owner's handover request.
const LOST_KEPT: Duration = Duration::from_secs(5);

/// What the node that held a client tells the node that took it over: the session's state as
/// it was when its connection here ended, fresher than its last write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Handover {
    pub(super) floor: u64,
    pub(super) sent: u64,
    #[serde(default)]
    pub(super) q2: Vec<(u16, u64)>,
    #[serde(default)]
    pub(super) q2out: Vec<(u16, u64, u8)>,
}

/// This node's clients' records.
#[derive(Clone)]
pub(super) struct Records {
    pub(super) owners: kv::Store,
    pub(super) me: String,
    pub(super) held: Arc<DashMap<Arc<str>, Held>>,
    /// The stream sequence up to which this node has routed every message.
    pub(super) routed: Arc<AtomicU64>,
    /// The broker, to move a client away from once it is lost.
    state: Arc<std::sync::OnceLock<std::sync::Weak<crate::broker::BrokerState>>>,
}

impl Records {
    pub(super) fn new(owners: kv::Store, me: String) -> Records {
        Records {
            owners,
            me,
            held: Arc::new(DashMap::new()),
            routed: Arc::new(AtomicU64::new(0)),
            state: Arc::default(),
        }
    }

    /// The broker lost clients are moved away from; set once at start.
    pub(super) fn set_state(&self, state: &Arc<crate::broker::BrokerState>) {
        let _ = self.state.set(Arc::downgrade(state));
    }

    /// Claims `client_id` for this node: reads its record and writes this node's over it
    /// with compare-and-set on the revision read (or creates it). The new record keeps the
    /// session when the client resumes it (`clean_start` false) and it did not expire; a
    /// session expiry of 0 keeps none. A will left by another node comes back in the answer,
    /// with `died`'s verdict on that node: if it died with the connection, the will is this
    /// node's to publish.
    pub(super) fn claim(
        &self,
        client_id: &Arc<str>,
        will: Option<ClusterWill>,
        clean_start: bool,
        expiry: u32,
        died: impl Fn(&str) -> Waiting<bool> + Send + Sync + 'static,
        timeout: Duration,
    ) -> Waiting<Result<Claimed, String>> {
        let this = self.clone();
        let client_id = Arc::clone(client_id);
        let will = will.map(|w| KeptWill {
            msg: super::wire::KeptMessage::of(&w.msg, &client_id),
            delay: w.delay,
            expiry: w.expiry,
        });
        Box::pin(async move {
            let attempt = this.try_claim(&client_id, will, clean_start, expiry, &died);
            match tokio::time::timeout(timeout, attempt).await {
                Ok(r) => r.inspect_err(|_| metrics::cluster_error("ownership")),
                Err(_) => {
                    metrics::cluster_error("ownership");
                    Err(format!("no answer from JetStream in {timeout:?}"))
                }
            }
        })
    }

    async fn try_claim(
        &self,
        client_id: &Arc<str>,
        will: Option<KeptWill>,
        clean_start: bool,
        expiry: u32,
        died: &(impl Fn(&str) -> Waiting<bool> + Send + Sync),
    ) -> Result<Claimed, String> {
        let k = key(client_id);
        for _ in 0..16 {
            let current = self
                .owners
                .entry(k.clone())
                .await
                .map_err(|e| e.to_string())?;
            let (previous, revision) = match current {
                Some(e) if e.operation == kv::Operation::Put => (
                    serde_json::from_slice::<Record>(&e.value).ok(),
                    Some(e.revision),
                ),
                _ => (None, None),
            };
            let now = now_ms();
            let resumed = previous
                .as_ref()
                .and_then(|p| p.session.clone())
                .filter(|s| !clean_start && !s.expired(now));
            let session = (expiry > 0).then(|| match &resumed {
                Some(s) => KeptSession {
                    expiry,
                    gone: None,
                    ..s.clone()
                },
                None => KeptSession {
                    expiry,
                    floor: self.routed.load(Ordering::Acquire),
                    ..KeptSession::default()
                },
            });
            let record = Record {
                node: self.me.clone(),
                client_id: client_id.to_string(),
                will: will.clone(),
                session,
            };
            let value: bytes::Bytes = serde_json::to_vec(&record).unwrap_or_default().into();
            let written = match revision {
                Some(rev) => match self.owners.update(&k, value, rev).await {
                    Ok(rev) => Some(rev),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => None,
                    Err(e) => return Err(e.to_string()),
                },
                None => match self.owners.create(&k, value).await {
                    Ok(rev) => Some(rev),
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => None,
                    Err(e) => return Err(e.to_string()),
                },
            };
            let Some(rev) = written else { continue };
            let elsewhere = previous.as_ref().is_some_and(|p| p.node != self.me);
            if elsewhere {
                metrics::cluster_takeover("taken");
            }
            let mut fresh = Held::new(rev, record);
            // Replaced in place, so routing never finds the client missing meanwhile.
            let waiters = match self.held.entry(Arc::clone(client_id)) {
                dashmap::mapref::entry::Entry::Occupied(mut o) => {
                    let old = o.get_mut();
                    // The same node again: what its session still has queued stays counted.
                    if !clean_start && !elsewhere {
                        fresh.pending = std::mem::take(&mut old.pending);
                        fresh.high = old.high;
                    }
                    std::mem::replace(old, fresh).waiters
                }
                dashmap::mapref::entry::Entry::Vacant(v) => {
                    v.insert(fresh);
                    Vec::new()
                }
            };
            for w in waiters {
                let _ = w.send(Err(StoreError::Cluster("claimed again".into())));
            }
            let orphan_will = previous
                .as_ref()
                .filter(|_| elsewhere)
                .and_then(|p| Some((p, p.will.as_ref()?)))
                .and_then(|(p, w)| Some((w.msg.message().ok()?, w.delay, died(&p.node))));
            return Ok(Claimed {
                claim: rev,
                session: resumed.as_ref().map(KeptSession::for_broker),
                elsewhere,
                from: previous.filter(|_| elsewhere).map(|p| p.node),
                orphan_will,
            });
        }
        Err("the client id changed owner too often to claim it".to_string())
    }

    /// Changes the record of `client_id` held under claim `epoch` (nothing if it is not held
    /// under it any more); the ticket completes once the change is written.
    pub(super) fn amend(
        &self,
        client_id: &Arc<str>,
        epoch: u64,
        change: impl FnOnce(&mut Record),
    ) -> Option<Ticket> {
        self.touch(client_id, epoch, |h| change(&mut h.record))
    }

    /// Notes (`Some(serial)`) or forgets (`None`) an inbound QoS 2 message of the session
    /// held here under `pkid`.
    pub(super) fn inbound_qos2(
        &self,
        client_id: &str,
        pkid: u16,
        serial: Option<u64>,
    ) -> Option<Ticket> {
        let (id, epoch) = {
            let h = self.held.get(client_id)?;
            h.record.session.as_ref()?;
            (Arc::clone(h.key()), h.epoch)
        };
        self.amend(&id, epoch, |r| {
            if let Some(s) = r.session.as_mut() {
                s.q2.retain(|(p, _)| *p != pkid);
                if let Some(serial) = serial {
                    s.q2.push((pkid, serial));
                }
            }
        })
    }

    /// Notes how an outbound QoS 2 flow of the session held here moved (the session's store
    /// operation `op`); the ticket for a flow sent or at PUBREL.
    pub(super) fn outbound_qos2(&self, client_id: &str, op: StoreOp) -> Option<Ticket> {
        let (id, epoch) = {
            let h = self.held.get(client_id)?;
            let kept = h.record.session.as_ref()?;
            let known = |f: &dyn Fn(&(u16, u64, u8)) -> bool| kept.q2out.iter().any(f);
            let relevant = match op {
                StoreOp::Sent(..) | StoreOp::Released(..) => true,
                StoreOp::Completed(p) => known(&|e| e.0 == p.get() && e.2 == AT_PUBREL),
                // QoS 1 flows, never kept: nothing to write.
                StoreOp::Acked(_, seq) => known(&|e| e.1 == seq.get() && e.2 != DONE),
                _ => false,
            };
            if !relevant {
                return None;
            }
            (Arc::clone(h.key()), h.epoch)
        };
        self.amend(&id, epoch, |r| {
            if let Some(s) = r.session.as_mut() {
                q2out_moved(&mut s.q2out, op);
            }
        })
    }

    /// The client and its session are done here: the record goes, unless another claim
    /// replaced `epoch`.
    pub(super) fn end(&self, client_id: &Arc<str>, epoch: u64) -> Option<Ticket> {
        self.touch(client_id, epoch, |h| h.end = true)
    }

    fn touch(
        &self,
        client_id: &Arc<str>,
        epoch: u64,
        change: impl FnOnce(&mut Held),
    ) -> Option<Ticket> {
        let mut h = self.held.get_mut(client_id)?;
        if h.epoch != epoch || h.lost {
            return None;
        }
        change(&mut h);
        h.dirty = true;
        let (ticket, tx) = Ticket::manual();
        h.waiters.push(tx);
        let start = !std::mem::replace(&mut h.writing, true);
        drop(h);
        if start {
            tokio::spawn(self.clone().write(Arc::clone(client_id), epoch));
        }
        Some(ticket)
    }

    /// Writes the record of `client_id` until what is written is what is wanted. One such loop
    /// per client at a time, so writes never race each other.
    ///
    /// A refused compare-and-set is not taken on trust: right after a partition heals, the
    /// server cut off with the minority can still act as the bucket's leader for a moment and
    /// refuse with its own stale revision, while the real leader takes the same write (both get
    /// it; the first answer wins). So the entry is read again: only a revision after this
    /// node's last write that none of its own attempts explains means another node took the
    /// client (see [`refusal`]).
    async fn write(self, client_id: Arc<str>, epoch: u64) {
        let k = key(&client_id);
        // What was tried since the last write known to be in, its outcome not known or a
        // refusal (a value, or `None` for a purge): any of them may be in after all.
        let mut tried: Vec<Option<Vec<u8>>> = Vec::new();
        loop {
            let (value, rev, end, waiters) = {
                let Some(mut h) = self.held.get_mut(&client_id) else {
                    return;
                };
                if h.epoch != epoch {
                    // Claimed again meanwhile: that claim writes its own record.
                    return;
                }
                if !h.dirty {
                    h.writing = false;
                    return;
                }
                h.dirty = false;
                let value = serde_json::to_vec(&h.record).unwrap_or_default();
                (value, h.rev, h.end, std::mem::take(&mut h.waiters))
            };
            let attempt = (!end).then(|| value.clone());
            let this = attempt.clone();
            let outcome = if end {
                self.owners
                    .purge_expect_revision(&k, Some(rev))
                    .await
                    .map(|()| None)
                    .map_err(|e| (e.to_string(), false))
            } else {
                match self.owners.update(&k, value.into(), rev).await {
                    Ok(rev) => Ok(Some(rev)),
                    Err(e) => {
                        let refused = e.kind() == kv::UpdateErrorKind::WrongLastRevision;
                        Err((e.to_string(), refused))
                    }
                }
            };
            if outcome.is_ok() {
                tried.clear();
            } else if !tried.contains(&attempt) {
                if tried.len() == TRIED_KEPT {
                    tried.remove(0);
                }
                tried.push(attempt);
            }
            let result = match outcome {
                Ok(Some(new)) => {
                    if let Some(mut h) = self.held.get_mut(&client_id) {
                        if h.epoch == epoch {
                            h.rev = new;
                        }
                    }
                    Ok(())
                }
                Ok(None) => {
                    self.held.remove_if(&client_id, |_, h| h.epoch == epoch);
                    Ok(())
                }
                Err((e, refused)) => {
                    metrics::cluster_error("record");
                    let refused = refused || e.contains("wrong last sequence");
                    // Read back only after a refusal (the server that refused may be behind).
                    let current = if refused {
                        self.owners.entry(k.clone()).await.ok().flatten()
                    } else {
                        None
                    };
                    let current = current.map(|c| {
                        let value = (c.operation == kv::Operation::Put).then_some(c.value);
                        (c.revision, value)
                    });
                    let verdict = if refused {
                        let read = current.as_ref().map(|c| (c.0, c.1.as_deref()));
                        refusal(rev, read, &tried)
                    } else {
                        Refusal::Behind
                    };
                    // This very attempt is what is in (not an earlier one).
                    let this_in = current.as_ref().and_then(|c| c.1.as_deref()) == this.as_deref();
                    match verdict {
                        Refusal::Lost => {
                            // Another node claimed the client: its watch moves it away here.
                            if self.lose(&client_id, |h| h.epoch == epoch) {
                                tracing::info!(client_id = %crate::logged::clip(&client_id), epoch, rev, error = %e, "ownership record changed under this node: client let go");
                            }
                            Err(StoreError::Cluster(e))
                        }
                        Refusal::Ours(new, purged) => {
                            tried.clear();
                            if purged {
                                // Gone, as this writer wanted (whoever purged it).
                                tracing::info!(client_id = %crate::logged::clip(&client_id), epoch, rev, purged = new, error = %e, "record write refused, the record purged meanwhile: done");
                                self.held.remove_if(&client_id, |_, h| h.epoch == epoch);
                                Ok(())
                            } else {
                                tracing::info!(client_id = %crate::logged::clip(&client_id), epoch, rev, written = new, error = %e, "record write refused by a server behind, yet written: going on from it");
                                match self.held.get_mut(&client_id) {
                                    Some(mut h) if h.epoch == epoch && !h.lost => {
                                        h.rev = new;
                                        if !this_in {
                                            // An earlier attempt is in, not this one: written
                                            // again on the revision found, its waiters
                                            // answered then.
                                            h.dirty = true;
                                            h.waiters.extend(waiters);
                                            continue;
                                        }
                                        Ok(())
                                    }
                                    _ => Err(StoreError::Cluster(e)),
                                }
                            }
                        }
                        Refusal::Behind => {
                            if refused {
                                tracing::info!(client_id = %crate::logged::clip(&client_id), epoch, rev, error = %e, "record write refused by a server behind this node's last write: tried again");
                            }
                            if let Some(mut h) = self.held.get_mut(&client_id) {
                                // No quorum, say: tried again while the node holds the client.
                                if !h.lost {
                                    h.dirty = true;
                                }
                            }
                            Err(StoreError::Cluster(e))
                        }
                    }
                }
            };
            let failed = result.is_err();
            for w in waiters {
                let _ = w.send(result.clone());
            }
            if failed {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    /// Another node holds `client_id` now (if `which` says so of what is held here): nothing
    /// more is written for it; its state stays [`LOST_KEPT`] for the new owner's handover
    /// request, then goes. True if it was held here.
    pub(super) fn lose(&self, client_id: &Arc<str>, which: impl FnOnce(&Held) -> bool) -> bool {
        let epoch = match self.held.get_mut(client_id) {
            Some(mut h) if !h.lost && which(&h) => {
                h.lost = true;
                h.epoch
            }
            _ => return false,
        };
        let (held, id) = (Arc::clone(&self.held), Arc::clone(client_id));
        tokio::spawn(async move {
            tokio::time::sleep(LOST_KEPT).await;
            held.remove_if(&id, |_, h| h.lost && h.epoch == epoch);
        });
        // Whoever learns of it first (the watch, a write that failed) moves the client away;
        // its session's state is taken as it ends, for the new owner's handover request.
        if let Some(state) = self.state.get().and_then(std::sync::Weak::upgrade) {
            let (records, id) = (self.clone(), Arc::clone(client_id));
            tokio::spawn(async move {
                let still = || records.elsewhere(&id);
                let last = |installed| records.freeze(&id, installed);
                state.moved_away(&id, still, last).await;
            });
        }
        true
    }

    /// Keeps, in the lost client's state, the floor its session had when it ended here.
    fn freeze(&self, client_id: &str, installed: bool) {
        let Some(h) = self.handover(client_id, installed) else {
            return;
        };
        if let Some(mut held) = self.held.get_mut(client_id) {
            if let Some(s) = held.record.session.as_mut() {
                s.floor = h.floor;
                s.sent = h.sent;
            }
        }
    }

    /// Whether `client_id` is (still) held by another node as far as this one knows: lost, or
    /// not held here at all.
    pub(super) fn elsewhere(&self, client_id: &str) -> bool {
        self.held.get(client_id).is_none_or(|h| h.lost)
    }

    /// The state of `client_id`'s session as this node has it, for the node that took it over.
    /// `installed`: its subscriptions route here now, so every stream message up to where the
    /// routing stands that it matched is counted (else only what was counted stands).
    pub(super) fn handover(&self, client_id: &str, installed: bool) -> Option<Handover> {
        let routed = self.routed.load(Ordering::Acquire);
        let h = self.held.get(client_id)?;
        let s = h.record.session.as_ref()?;
        let floor = match h.pending.keys().next() {
            _ if installed => floor_of(&h.pending, routed),
            Some(oldest) => oldest - 1,
            None => s.floor,
        };
        Some(Handover {
            floor: floor.max(s.floor),
            sent: s.sent.max(h.high),
            q2: s.q2.clone(),
            q2out: s.q2out.clone(),
        })
    }

    /// The session of `client_id`, just claimed under `epoch`, goes on from what its previous
    /// node handed over.
    pub(super) fn taken_over(&self, client_id: &Arc<str>, epoch: u64, from: &Handover) {
        let from = from.clone();
        let _ = self.amend(client_id, epoch, move |r| {
            if let Some(s) = r.session.as_mut() {
                s.floor = s.floor.max(from.floor);
                s.sent = s.sent.max(from.sent);
                s.q2 = from.q2;
                s.q2out = from.q2out;
            }
        });
    }

    /// A stream message `seq` was queued for `client_id`.
    pub(super) fn queued(&self, client_id: &str, seq: u64) {
        if let Some(mut h) = self.held.get_mut(client_id) {
            *h.pending.entry(seq).or_insert(0) += 1;
            h.high = h.high.max(seq);
        }
    }

    /// `client_id` is done with stream messages `seqs`.
    pub(super) fn released(&self, client_id: &str, seqs: impl Iterator<Item = u64>) {
        if let Some(mut h) = self.held.get_mut(client_id) {
            for seq in seqs {
                let n = h.pending.entry(seq).or_insert(0);
                *n -= 1;
                if *n == 0 {
                    h.pending.remove(&seq);
                }
            }
            h.released = true;
        }
    }

    /// Marks `client_id`'s queue as being read back (`true`) or read (`false`).
    pub(super) fn resuming(&self, client_id: &str, resuming: bool) {
        if let Some(mut h) = self.held.get_mut(client_id) {
            h.resuming = resuming;
            h.released = true;
        }
    }

    /// Moves the floors of sessions that released messages, every [`FLOORS`], for as long as
    /// the node lives.
    pub(super) async fn keep_floors(self) {
        let mut tick = tokio::time::interval(FLOORS);
        loop {
            tick.tick().await;
            let routed = self.routed.load(Ordering::Acquire);
            let mut moved = Vec::new();
            for mut h in self.held.iter_mut() {
                if !h.released || h.resuming || h.end || h.lost {
                    continue;
                }
                h.released = false;
                let floor = floor_of(&h.pending, routed);
                let high = h.high;
                let Some(s) = h.record.session.as_mut() else {
                    continue;
                };
                if floor > s.floor {
                    s.floor = floor;
                    s.sent = s.sent.max(high);
                    // Flows over and below the floor are not read back anyway.
                    s.q2out.retain(|e| e.2 != DONE || e.1 > floor);
                    moved.push((Arc::clone(h.key()), h.epoch));
                }
            }
            for (client_id, epoch) in moved {
                // Nothing waits for it: the ticket is dropped.
                let _ = self.amend(&client_id, epoch, |_| {});
            }
        }
    }
}

/// How store operation `op` moves a session's outbound QoS 2 flows (kept by stream sequence).
fn q2out_moved(q2out: &mut Vec<(u16, u64, u8)>, op: StoreOp) {
    match op {
        StoreOp::Sent(p, seq) => {
            q2out.retain(|e| e.1 != seq.get());
            q2out.push((p.get(), seq.get(), SENT));
        }
        StoreOp::Released(_, seq) => {
            for e in q2out.iter_mut().filter(|e| e.1 == seq.get()) {
                e.2 = AT_PUBREL;
            }
        }
        StoreOp::Completed(p) => {
            for e in q2out
                .iter_mut()
                .filter(|e| e.0 == p.get() && e.2 == AT_PUBREL)
            {
                e.2 = DONE;
            }
        }
        // A QoS 2 flow refused at PUBREC.
        StoreOp::Acked(_, seq) => {
            for e in q2out.iter_mut().filter(|e| e.1 == seq.get()) {
                e.2 = DONE;
            }
        }
        StoreOp::Delivered(_) | StoreOp::InboundReleased(_) => {}
    }
}

/// Where a session's floor stands: just below the oldest stream message queued for it and not
/// released, or where the node's routing stands (`routed`) when none is.
fn floor_of(pending: &BTreeMap<u64, i32>, routed: u64) -> u64 {
    pending.keys().next().map_or(routed, |s| s - 1)
}

/// After a compare-and-set of `value` on `key` at revision `rev` was refused: the revision it
/// was written at after all, if the entry read back is this very value, newer than `rev` (the
/// refusal came from a server behind, and the bucket's leader took the write). Records name
/// their node, so no other node writes the same bytes.
pub(super) async fn written_anyway(
    owners: &kv::Store,
    key: &str,
    rev: u64,
    value: &[u8],
) -> Option<u64> {
    let e = owners.entry(key.to_string()).await.ok().flatten()?;
    let read = (e.operation == kv::Operation::Put).then_some(&e.value[..]);
    match refusal(rev, Some((e.revision, read)), &[Some(value.to_vec())]) {
        Refusal::Ours(at, false) => Some(at),
        _ => None,
    }
}

/// How many attempts of unknown outcome a record's writer remembers, the latest (a partition
/// mostly repeats the same one).
const TRIED_KEPT: usize = 8;

/// What a compare-and-set of a record on revision `rev` that a server refused means.
#[derive(Debug, PartialEq)]
enum Refusal {
    /// Written over since `rev` by another writer: the client is another node's.
    Lost,
    /// One of the writer's own attempts since `rev` is in, at this revision: the writer goes
    /// on from there. With `true`, a purge marker after a purge was tried: the record is gone
    /// as the writer wanted, whoever purged it (markers name no node; only a dead node's
    /// reaper purges another node's record, and only one with nothing left in it).
    Ours(u64, bool),
    /// Nothing after `rev` is known: the refusal came from a server behind this node's last
    /// write (a former leader cut off by a partition, before it learns of the new one), or
    /// the entry could not be read. Tried again, as without a quorum.
    Behind,
}

/// The verdict on a refused write on revision `rev`, from the entry read after it (`current`:
/// its revision and value, `None` for a delete or purge marker; `None` if none was read) and
/// what the writer tried since `rev` (`tried`: values, `None` for a purge). Revisions only
/// grow and a server only holds what a quorum agreed on, so an entry after `rev` is a write
/// made after this node's; it is this node's own only if it is byte for byte one of its
/// attempts (the record names the node, so no other node writes the same bytes).
fn refusal(rev: u64, current: Option<(u64, Option<&[u8]>)>, tried: &[Option<Vec<u8>>]) -> Refusal {
    match current {
        Some((at, value)) if at > rev => {
            if tried.iter().any(|t| t.as_deref() == value) {
                Refusal::Ours(at, value.is_none())
            } else {
                Refusal::Lost
            }
        }
        _ => Refusal::Behind,
    }
}

/// Notes the stream messages the node's consumer queues for the sessions held here.
pub(super) struct Noting<'a> {
    pub(super) records: &'a Records,
    pub(super) seq: u64,
}

impl crate::broker::Recorder for Noting<'_> {
    fn next_seq(&mut self) -> u64 {
        self.seq
    }

    fn record(&mut self, client_id: &str, delivery: &Delivery) {
        if delivery.seq.is_some() {
            self.records.queued(client_id, self.seq);
        }
    }

    fn defer(&mut self, _: &Arc<str>, _: &Arc<crate::broker::Mailbox>) {}

    fn by_seq_only(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests;
