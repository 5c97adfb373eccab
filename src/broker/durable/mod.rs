//! What the broker keeps in the store, and in what form: retained messages, persistent sessions
//! (expiry interval, when they were disconnected) and their subscriptions. Every record starts
//! with a record-format byte, so a later Tern can read (or migrate) what this one wrote.
//!
//! A message is stored as a v5 PUBLISH packet (the protocol module's own encoding, so every
//! property survives) after a header holding what the packet cannot: when the message expires,
//! in wall-clock time, since `Instant`s do not survive a restart.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, BytesMut};
use parking_lot::Mutex;
use tracing::{info, warn};

use super::mailbox::Mailbox;
use super::router::Recorder;
use crate::config::PersistenceConfig;
use crate::protocol::{
    self, Decoder, Packet, PacketId, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions,
};
use crate::session::{Delivery, Message, Seq, Session, StoreOp, Subscription, NEVER_EXPIRES};
use crate::store::{
    client_key, client_key_with, BatchPolicy, Committer, Engine, FjallEngine, Op, Space,
    StoreError, Ticket,
};

/// Record format of a stored message.
const MESSAGE_RECORD_V1: u8 = 1;
/// Record format of a stored session.
const SESSION_RECORD_V1: u8 = 1;
/// Record format of a stored subscription.
const SUBSCRIPTION_RECORD_V1: u8 = 1;
/// Record format of a stored message with its recipients.
const LOG_RECORD_V1: u8 = 1;
/// Record of an outbound QoS 2 flow at PUBREL.
const RELEASED_RECORD_V1: u8 = 1;
/// Record of an outbound PUBLISH sent and not yet acknowledged: this tag, then its sequence.
const SENT_RECORD_V1: u8 = 2;
/// Record format of an inbound QoS 2 packet id awaiting PUBREL.
const INBOUND_RECORD_V1: u8 = 1;

/// A persistent session as read back.
#[derive(Debug)]
pub struct StoredSession {
    /// Its client id.
    pub client_id: String,
    /// Session Expiry Interval, seconds ([`NEVER_EXPIRES`] for ever).
    pub expiry_interval: u32,
    /// Seconds of its expiry interval still left.
    pub remaining: u32,
    /// Its subscriptions: filter (with any `$share/` prefix) and options.
    pub subscriptions: Vec<(String, Subscription)>,
    /// Sequence numbers of its queued and unsent stored messages, with their payload sizes,
    /// in order (the messages stay in the store until sent).
    pub queue: Vec<(u64, u32)>,
    /// Packet ids of outbound QoS 2 flows at PUBREL (sent again on resume).
    pub released: Vec<PacketId>,
    /// Deliveries sent and not acknowledged, with their packet ids (sent again on resume,
    /// with DUP, under the same packet id), in sending order; no packet id for one that may
    /// have been sent under an id not stored (QoS 1 ids are not), queued before a stored one.
    pub inflight: Vec<(Option<PacketId>, Delivery)>,
    /// Packet ids of inbound QoS 2 messages awaiting PUBREL (not forwarded again).
    pub inbound_qos2: Vec<PacketId>,
    /// Packet id of each stored message it was sent and has not acknowledged, by sequence.
    pub sent: HashMap<u64, PacketId>,
    /// Its will, due: the message, seconds of Will Delay left, when the connection ended (a
    /// session connected when Tern stopped counts as disconnected at this start).
    pub will: Option<(Message, u32, SystemTime)>,
}

/// The broker's side of the store.
pub struct Durable {
    committer: Committer,
    /// Next message sequence number.
    next_seq: AtomicU64,
    /// Stored messages still owed to some recipient: sequence → recipients yet to acknowledge.
    /// The record goes once the count reaches zero.
    /// Signed: a fast recipient can acknowledge before the publisher's batch adds its count.
    pending: Mutex<HashMap<u64, i64>>,
    /// Message records submitted and not yet applied, by sequence: a delivery queued by
    /// sequence number can be read back before its batch lands.
    unsettled: Arc<Mutex<HashMap<u64, Arc<[u8]>>>>,
    /// Messages lately read back, by sequence modulo [`RECENT`]: the sessions a message was
    /// queued for usually drain it at about the same time, and decode it once.
    recent: Box<[Mutex<Option<Recent>>]>,
}

/// Slots of [`Durable::recent`].
const RECENT: usize = 256;

/// A message read back from the store.
struct Recent {
    seq: u64,
    record: Arc<[u8]>,
    msg: Arc<Message>,
}

/// The store writes one PUBLISH causes: its queued deliveries, its retained copy, the inbound
/// QoS 2 packet id. Submitted together, so the publisher's acknowledgement waits for one batch.
pub struct PublishBatch<'a> {
    durable: &'a Durable,
    ops: Vec<Op>,
    /// The message's sequence number, once it has a stored recipient.
    seq: Option<u64>,
    /// Its stored recipients, encoded ([`encode_recipient`]).
    recipients: Vec<u8>,
    count: u16,
    message: Option<Arc<Message>>,
    /// Mailboxes to queue the message in by sequence number once it is submitted.
    deferred: Vec<(Arc<str>, Arc<Mailbox>)>,
}

impl PublishBatch<'_> {
    /// Records the retained copy of `msg` (an empty payload deletes it).
    pub fn retain(&mut self, msg: &Message) {
        let key = msg.topic().as_bytes().to_vec();
        self.ops.push(if msg.publish.payload.is_empty() {
            Op::Delete(Space::Retained, key)
        } else {
            Op::Put(Space::Retained, key, encode_message(msg))
        });
    }

    /// Records an inbound QoS 2 packet id of `client_id` as awaiting PUBREL.
    pub fn inbound_qos2(&mut self, client_id: &str, pkid: PacketId) {
        self.ops.push(Op::Put(
            Space::InflightIn,
            client_key_with(client_id, &pkid.get().to_be_bytes()),
            vec![INBOUND_RECORD_V1],
        ));
    }

    /// Submits what was recorded; `None` if nothing was. The message is stored once, with the
    /// list of its stored recipients: one write however many sessions it is queued for. Then
    /// the deferred recipients get it queued by sequence number.
    pub fn submit(mut self) -> Option<Ticket> {
        let mut settle = None;
        if let (Some(seq), Some(msg)) = (self.seq, &self.message) {
            let mut v = Vec::with_capacity(3 + self.recipients.len() + 64);
            v.push(LOG_RECORD_V1);
            v.extend_from_slice(&self.count.to_be_bytes());
            v.extend_from_slice(&self.recipients);
            v.extend_from_slice(&encode_message(msg));
            if !self.deferred.is_empty() {
                self.durable
                    .unsettled
                    .lock()
                    .insert(seq, v.as_slice().into());
                settle = Some(seq);
            }
            self.ops
                .push(Op::Put(Space::Queue, seq.to_be_bytes().to_vec(), v));
            if self.durable.owe(seq, i64::from(self.count)) {
                // Every recipient already has it: stored and released in one batch.
                self.ops.extend(forget_message(seq));
            }
        }
        if self.ops.is_empty() {
            return None;
        }
        let committer = &self.durable.committer;
        let ticket = match settle {
            Some(seq) => {
                let unsettled = Arc::clone(&self.durable.unsettled);
                committer.submit_then(
                    self.ops,
                    Box::new(move || {
                        unsettled.lock().remove(&seq);
                    }),
                )
            }
            None => committer.submit(self.ops),
        };
        if let Some(seq) = settle {
            let bytes = self.message.as_ref().map_or(0, |m| {
                u32::try_from(m.publish.payload.len()).unwrap_or(u32::MAX)
            });
            for (client_id, mailbox) in self.deferred {
                if mailbox.push_stored(seq, bytes).is_err() {
                    crate::metrics::dropped("queue_full");
                    self.durable.delivered(&client_id, seq);
                }
            }
        }
        Some(ticket)
    }
}

impl Recorder for PublishBatch<'_> {
    fn next_seq(&mut self) -> u64 {
        // One number per message, shared by all its deliveries.
        *self
            .seq
            .get_or_insert_with(|| self.durable.next_seq.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&mut self, client_id: &str, delivery: &Delivery) {
        if self.count == u16::MAX {
            return;
        }
        self.message
            .get_or_insert_with(|| Arc::clone(&delivery.msg));
        encode_recipient(&mut self.recipients, client_id, delivery);
        self.count += 1;
    }

    fn defer(&mut self, client_id: &Arc<str>, mailbox: &Arc<Mailbox>) {
        self.deferred
            .push((Arc::clone(client_id), Arc::clone(mailbox)));
    }
}

/// What was read back at start.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Retained messages still within their expiry.
    pub retained: Vec<Arc<Message>>,
    /// Persistent sessions whose expiry has not run out.
    pub sessions: Vec<StoredSession>,
    /// Records that could not be read and were dropped, each logged with its key.
    pub unreadable: usize,
    /// Highest message sequence number in the store.
    pub max_seq: u64,
    /// Stored messages and how many recipients still owe an acknowledgement.
    pub pending: HashMap<u64, i64>,
    /// Wills of sessions that ended while Tern was down, to publish at start.
    pub ended_wills: Vec<(Message, SystemTime)>,
}

impl Durable {
    /// Opens the store in `config.path` and reads back what it holds.
    pub fn open(config: &PersistenceConfig) -> Result<(Durable, Recovered), StoreError> {
        let started = Instant::now();
        std::fs::create_dir_all(&config.path).map_err(|e| StoreError::Engine {
            path: config.path.clone(),
            message: e.to_string(),
        })?;
        let engine = open_or_quarantine(&config.path)?;
        let (mut recovered, cleanup) = recover(&engine)?;
        let policy = BatchPolicy {
            max_ops: config.batch_max_operations,
            max_wait: Duration::from_micros(config.batch_wait_us),
            durability: config.durability,
        };
        let committer =
            Committer::start(Arc::new(engine), policy).map_err(|e| StoreError::Engine {
                path: config.path.clone(),
                message: e.to_string(),
            })?;
        if !cleanup.is_empty() {
            committer.submit_detached(cleanup);
        }
        crate::metrics::store_recovered(started.elapsed());
        info!(
            path = %config.path.display(),
            retained = recovered.retained.len(),
            sessions = recovered.sessions.len(),
            unreadable = recovered.unreadable,
            took_ms = started.elapsed().as_millis() as u64,
            "store opened"
        );
        let next_seq = AtomicU64::new(recovered.max_seq + 1);
        let pending = Mutex::new(std::mem::take(&mut recovered.pending));
        Ok((
            Durable {
                committer,
                next_seq,
                pending,
                unsettled: Arc::default(),
                recent: (0..RECENT).map(|_| Mutex::new(None)).collect(),
            },
            recovered,
        ))
    }

    /// Stored messages still owed to someone.
    #[cfg(test)]
    pub fn pending_len(&self) -> usize {
        self.pending.lock().len()
    }

    /// Completes once everything submitted before is applied (batches apply in order).
    pub fn flush(&self) -> Ticket {
        self.committer.submit(Vec::new())
    }

    /// Collects the writes of one PUBLISH.
    pub fn batch(&self) -> PublishBatch<'_> {
        PublishBatch {
            durable: self,
            ops: Vec::new(),
            seq: None,
            recipients: Vec::new(),
            count: 0,
            message: None,
            deferred: Vec::new(),
        }
    }

    /// Reads back stored message `seq` as a delivery to `client_id`, with the options it was
    /// queued with. `None` if it expired or cannot be read (logged and counted); either way
    /// the client is no longer owed it.
    pub fn load(&self, client_id: &str, seq: u64) -> Option<Delivery> {
        match self.lookup(client_id, seq) {
            Ok(Some(d)) => return Some(d),
            Ok(None) => crate::metrics::dropped("expired"),
            Err(e) => {
                warn!(%client_id, seq, error = %e, "stored message unreadable, skipped");
                crate::metrics::dropped("unreadable");
            }
        }
        self.delivered(client_id, seq);
        None
    }

    /// Like [`Durable::load`], without releasing what cannot be read (the caller releases it).
    pub fn read(&self, client_id: &str, seq: u64) -> Option<Delivery> {
        self.lookup(client_id, seq).ok().flatten()
    }

    fn lookup(&self, client_id: &str, seq: u64) -> Result<Option<Delivery>, String> {
        let now = (Instant::now(), SystemTime::now());
        let slot = &self.recent[(seq % RECENT as u64) as usize];
        let hit = slot
            .lock()
            .as_ref()
            .filter(|r| r.seq == seq)
            .map(|r| (Arc::clone(&r.record), Arc::clone(&r.msg)));
        if let Some((record, msg)) = hit {
            let (r, _) = recipient_in(&record, client_id)?;
            return Ok((!msg.is_expired(now.0)).then(|| r.delivery(msg, seq)));
        }
        let unsettled = self.unsettled.lock().get(&seq).cloned();
        let record: Arc<[u8]> = match unsettled {
            Some(r) => r,
            None => match self
                .committer
                .engine()
                .get(Space::Queue, &seq.to_be_bytes())
            {
                Ok(Some(r)) => r.into(),
                Ok(None) => return Err("not in the store".to_string()),
                Err(e) => return Err(e.to_string()),
            },
        };
        let (r, body) = recipient_in(&record, client_id)?;
        let Some(msg) = decode_message(body, now)? else {
            return Ok(None);
        };
        let msg = Arc::new(msg);
        *slot.lock() = Some(Recent {
            seq,
            record: Arc::clone(&record),
            msg: Arc::clone(&msg),
        });
        Ok(Some(r.delivery(msg, seq)))
    }

    /// The writes that record `client_id` as having message `seq`, and forget the message once
    /// every recipient has it.
    fn ack_ops(&self, client_id: &str, seq: u64) -> Vec<Op> {
        let mut ops = vec![Op::Put(Space::Acks, ack_key(seq, client_id), Vec::new())];
        if self.owe(seq, -1) {
            ops.extend(forget_message(seq));
        }
        ops
    }

    /// Adds `delta` to what is owed of message `seq`; true when that reaches zero (the message
    /// can go).
    fn owe(&self, seq: u64, delta: i64) -> bool {
        let mut pending = self.pending.lock();
        let left = pending.entry(seq).or_insert(0);
        *left += delta;
        if *left == 0 {
            pending.remove(&seq);
            return true;
        }
        false
    }

    /// The client is done with stored message `seq` (acknowledged, refused, expired, dropped).
    /// Not waited for: a lost write only means the message is sent once more.
    pub(super) fn delivered(&self, client_id: &str, seq: u64) {
        self.committer.submit_detached(self.ack_ops(client_id, seq));
    }

    /// Applies a session's store operations in one batch: waited for (`Some(ticket)`) when
    /// `durable`, the ticket completing once all of them are on disk; detached otherwise.
    pub fn apply(&self, client_id: &str, ops: &[StoreOp], durable: bool) -> Option<Ticket> {
        let mut writes = Vec::with_capacity(ops.len() * 2);
        for op in ops {
            self.writes(client_id, *op, &mut writes);
        }
        if durable {
            return Some(self.committer.submit(writes));
        }
        if !writes.is_empty() {
            self.committer.submit_detached(writes);
        }
        None
    }

    /// The writes of one store operation of `client_id`'s flows.
    fn writes(&self, client_id: &str, op: StoreOp, into: &mut Vec<Op>) {
        let flow = |pkid: PacketId| client_key_with(client_id, &pkid.get().to_be_bytes());
        match op {
            StoreOp::Delivered(seq) => into.extend(self.ack_ops(client_id, seq.get())),
            // After a restart it is sent again under the same id, with DUP.
            StoreOp::Sent(pkid, seq) => {
                let mut v = vec![SENT_RECORD_V1];
                v.extend_from_slice(&seq.get().to_be_bytes());
                into.push(Op::Put(Space::InflightOut, flow(pkid), v));
            }
            StoreOp::Acked(pkid, seq) => {
                into.push(Op::Delete(Space::InflightOut, flow(pkid)));
                into.extend(self.ack_ops(client_id, seq.get()));
            }
            // The message leaves the queue; the flow is kept at PUBREL.
            StoreOp::Released(pkid, seq) => {
                into.push(Op::Put(
                    Space::InflightOut,
                    flow(pkid),
                    vec![RELEASED_RECORD_V1],
                ));
                into.extend(self.ack_ops(client_id, seq.get()));
            }
            StoreOp::Completed(pkid) => into.push(Op::Delete(Space::InflightOut, flow(pkid))),
            StoreOp::InboundReleased(pkid) => {
                into.push(Op::Delete(Space::InflightIn, flow(pkid)));
            }
        }
    }

    /// Records a persistent session as connected, with its will and Will Delay (it counts as
    /// disconnected, will due, from the next start if Tern stops without saying otherwise).
    /// With `fresh`, whatever was stored for the client id before goes first. The ticket
    /// completes once that is durable.
    pub fn session_connected(
        &self,
        session: &Session,
        fresh: bool,
        will: Option<(&Message, u32)>,
    ) -> Ticket {
        let mut ops = Vec::new();
        if fresh {
            ops.extend(forget_ops(session.client_id()));
        }
        ops.push(session_op(
            session.client_id(),
            session.expiry_interval,
            None,
            will,
        ));
        self.committer.submit(ops)
    }

    /// Records that a persistent session's connection ended at `when`, with the will still to
    /// publish, if any.
    pub fn session_disconnected(
        &self,
        client_id: &str,
        expiry_interval: u32,
        when: SystemTime,
        will: Option<(&Message, u32)>,
    ) {
        let op = session_op(client_id, expiry_interval, Some(when), will);
        self.committer.submit_detached(vec![op]);
    }

    /// Forgets everything stored for `client_id` (its session ended), and releases its share of
    /// the stored messages `seqs` it was still owed.
    pub fn session_ended(&self, client_id: &str, seqs: &[u64]) {
        let mut ops = forget_ops(client_id);
        for seq in seqs {
            ops.extend(self.ack_ops(client_id, *seq));
        }
        self.committer.submit_detached(ops);
    }

    /// Records subscriptions (`Some`) and their removal (`None`) for a persistent session; the
    /// ticket completes once they are durable (SUBACK/UNSUBACK wait for it).
    pub fn subscriptions(
        &self,
        client_id: &str,
        changes: &[(&str, Option<&Subscription>)],
    ) -> Ticket {
        let ops = changes
            .iter()
            .map(|(filter, sub)| {
                let key = client_key_with(client_id, filter.as_bytes());
                match sub {
                    Some(sub) => Op::Put(Space::Subscriptions, key, encode_subscription(sub)),
                    None => Op::Delete(Space::Subscriptions, key),
                }
            })
            .collect();
        self.committer.submit(ops)
    }
}

/// What `tern store check` found in a store.
#[derive(Debug)]
pub struct StoreReport {
    /// Retained messages still within their expiry.
    pub retained: usize,
    /// Persistent sessions whose expiry has not run out.
    pub sessions: usize,
    /// Their subscriptions.
    pub subscriptions: usize,
    /// Deliveries owed to them (queued, and sent but not acknowledged).
    pub queued: usize,
    /// Distinct stored messages those deliveries refer to.
    pub messages: usize,
    /// Records that cannot be read (each logged with its key); Tern drops them at start.
    pub unreadable: usize,
    /// Records that are no longer needed (expired, acknowledged by everyone, of ended
    /// sessions); Tern deletes them at start.
    pub obsolete: usize,
    /// Bytes on disk.
    pub disk_bytes: Option<u64>,
}

/// Reads a store the way Tern does at start, changing nothing: for `tern store check`. Fails if
/// it cannot be opened at all (in use, damaged beyond reading, another format).
pub fn check(path: &std::path::Path) -> Result<StoreReport, StoreError> {
    let engine = FjallEngine::open(path)?;
    let (recovered, cleanup) = recover(&engine)?;
    let sessions = &recovered.sessions;
    Ok(StoreReport {
        retained: recovered.retained.len(),
        sessions: sessions.len(),
        subscriptions: sessions.iter().map(|s| s.subscriptions.len()).sum(),
        queued: sessions
            .iter()
            .map(|s| s.queue.len() + s.inflight.len())
            .sum(),
        messages: recovered.pending.len(),
        unreadable: recovered.unreadable,
        obsolete: cleanup.len().saturating_sub(recovered.unreadable),
        disk_bytes: engine.disk_space(),
    })
}

/// Deletes stored message `seq` and its acknowledgements.
fn forget_message(seq: u64) -> [Op; 2] {
    let key = seq.to_be_bytes().to_vec();
    [
        Op::Delete(Space::Queue, key.clone()),
        Op::DeletePrefix(Space::Acks, key),
    ]
}

/// Deletes every record of `client_id` except retained messages.
fn forget_ops(client_id: &str) -> Vec<Op> {
    let prefix = client_key(client_id);
    vec![
        Op::Delete(Space::Sessions, prefix.clone()),
        Op::DeletePrefix(Space::Subscriptions, prefix.clone()),
        Op::DeletePrefix(Space::InflightOut, prefix.clone()),
        Op::DeletePrefix(Space::InflightIn, prefix),
    ]
}

/// Opens the store; a damaged one is moved aside (`<path>.damaged-<unix seconds>`, kept for
/// inspection) and a fresh one started, so a damaged store never keeps Tern from starting. A
/// store of another format, in use by another process, or unreachable (permissions, full
/// disk) is refused: nothing is wrong with it, and moving it would lose it.
fn open_or_quarantine(path: &std::path::Path) -> Result<FjallEngine, StoreError> {
    match FjallEngine::open(path) {
        Err(StoreError::Damaged { message, .. }) => {
            let secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let mut aside = path.as_os_str().to_owned();
            aside.push(format!(".damaged-{secs}"));
            let aside = std::path::PathBuf::from(aside);
            std::fs::rename(path, &aside).map_err(|e| StoreError::Engine {
                path: path.to_path_buf(),
                message: format!("damaged ({message}) and cannot be moved aside: {e}"),
            })?;
            tracing::error!(
                path = %path.display(),
                moved_to = %aside.display(),
                error = %message,
                "store damaged: moved aside, starting with an empty store; retained messages and sessions in it are not restored"
            );
            std::fs::create_dir_all(path).map_err(|e| StoreError::Engine {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            FjallEngine::open(path)
        }
        other => other,
    }
}

mod records;
mod recover;
#[cfg(test)]
mod tests;

use records::*;
use recover::recover;
