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

use super::router::Recorder;
use crate::config::PersistenceConfig;
use crate::protocol::{
    self, Decoder, Packet, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions,
};
use crate::session::{Delivery, Message, Session, Subscription, NEVER_EXPIRES};
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
    /// Its queued and unacknowledged QoS 1/2 deliveries, in order.
    pub queue: Vec<Delivery>,
    /// Packet ids of outbound QoS 2 flows at PUBREL (sent again on resume).
    pub released: Vec<u16>,
    /// Deliveries sent and not acknowledged, with their packet ids (sent again on resume,
    /// with DUP, under the same packet id), in sending order.
    pub inflight: Vec<(u16, Delivery)>,
    /// Packet ids of inbound QoS 2 messages awaiting PUBREL (not forwarded again).
    pub inbound_qos2: Vec<u16>,
    /// Packet id of each stored message it was sent and has not acknowledged, by sequence.
    pub sent: HashMap<u64, u16>,
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
    pub fn inbound_qos2(&mut self, client_id: &str, pkid: u16) {
        self.ops.push(Op::Put(
            Space::InflightIn,
            client_key_with(client_id, &pkid.to_be_bytes()),
            vec![INBOUND_RECORD_V1],
        ));
    }

    /// Submits what was recorded; `None` if nothing was. The message is stored once, with the
    /// list of its stored recipients: one write however many sessions it is queued for.
    pub fn submit(mut self) -> Option<Ticket> {
        if let (Some(seq), Some(msg)) = (self.seq, &self.message) {
            let mut v = Vec::with_capacity(3 + self.recipients.len() + 64);
            v.push(LOG_RECORD_V1);
            v.extend_from_slice(&self.count.to_be_bytes());
            v.extend_from_slice(&self.recipients);
            v.extend_from_slice(&encode_message(msg));
            self.ops
                .push(Op::Put(Space::Queue, seq.to_be_bytes().to_vec(), v));
            if self.durable.owe(seq, i64::from(self.count)) {
                // Every recipient already has it: stored and released in one batch.
                self.ops.extend(forget_message(seq));
            }
        }
        (!self.ops.is_empty()).then(|| self.durable.committer.submit(self.ops))
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
            Committer::start(Box::new(engine), policy).map_err(|e| StoreError::Engine {
                path: config.path.clone(),
                message: e.to_string(),
            })?;
        if !cleanup.is_empty() {
            committer.submit_detached(cleanup);
        }
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
            },
            recovered,
        ))
    }

    /// Stored messages still owed to someone.
    #[cfg(test)]
    pub fn pending_len(&self) -> usize {
        self.pending.lock().len()
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
        }
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

    /// The client acknowledged stored message `seq` (or refused it at QoS 2). Not waited for: a
    /// lost write only means the message is sent once more.
    pub fn delivered(&self, client_id: &str, seq: u64) {
        self.committer.submit_detached(self.ack_ops(client_id, seq));
    }

    /// Stored deliveries about to be sent under these packet ids: after a restart they are sent
    /// again with DUP under the same ids, so the client can tell them from new messages. The
    /// PUBLISHes go out once the ticket completes.
    pub fn sent(&self, client_id: &str, sent: &[(u16, u64)]) -> Ticket {
        let ops = sent
            .iter()
            .map(|(pkid, seq)| {
                let mut v = vec![SENT_RECORD_V1];
                v.extend_from_slice(&seq.to_be_bytes());
                Op::Put(
                    Space::InflightOut,
                    client_key_with(client_id, &pkid.to_be_bytes()),
                    v,
                )
            })
            .collect();
        self.committer.submit(ops)
    }

    /// PUBACK (or a refusing PUBREC) for a stored delivery sent under `pkid`.
    pub fn acked(&self, client_id: &str, pkid: u16, seq: u64) {
        let mut ops = vec![Op::Delete(
            Space::InflightOut,
            client_key_with(client_id, &pkid.to_be_bytes()),
        )];
        ops.extend(self.ack_ops(client_id, seq));
        self.committer.submit_detached(ops);
    }

    /// PUBREC for a stored QoS 2 delivery: the message leaves the queue and the flow is stored
    /// at PUBREL, which is sent only once that is durable (after it, the PUBLISH must never be
    /// sent again).
    pub fn released(&self, client_id: &str, pkid: u16, seq: u64) -> Ticket {
        let mut ops = vec![Op::Put(
            Space::InflightOut,
            client_key_with(client_id, &pkid.to_be_bytes()),
            vec![RELEASED_RECORD_V1],
        )];
        if seq != 0 {
            ops.extend(self.ack_ops(client_id, seq));
        }
        self.committer.submit(ops)
    }

    /// PUBCOMP: the outbound QoS 2 flow is over.
    pub fn completed(&self, client_id: &str, pkid: u16) {
        self.committer.submit_detached(vec![Op::Delete(
            Space::InflightOut,
            client_key_with(client_id, &pkid.to_be_bytes()),
        )]);
    }

    /// PUBREL from the client: its inbound QoS 2 packet id is free again.
    pub fn inbound_released(&self, client_id: &str, pkid: u16) {
        self.committer.submit_detached(vec![Op::Delete(
            Space::InflightIn,
            client_key_with(client_id, &pkid.to_be_bytes()),
        )]);
    }

    /// Records a persistent session as connected, with its will and Will Delay (it counts as
    /// disconnected, will due, from the next start if Tern stops without saying otherwise).
    /// With `fresh`, whatever was stored for the client id before goes first.
    pub fn session_connected(&self, session: &Session, fresh: bool, will: Option<(&Message, u32)>) {
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
        self.committer.submit_detached(ops);
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

/// Format, expiry interval, disconnection time in Unix milliseconds (0: connected), then, if
/// it has a will, the Will Delay and the will as a message record.
fn session_op(
    client_id: &str,
    expiry_interval: u32,
    disconnected: Option<SystemTime>,
    will: Option<(&Message, u32)>,
) -> Op {
    let mut v = Vec::with_capacity(13);
    v.push(SESSION_RECORD_V1);
    v.extend_from_slice(&expiry_interval.to_be_bytes());
    let at = disconnected.map_or(0, |t| {
        t.duration_since(UNIX_EPOCH).map_or(1, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
        })
    });
    v.extend_from_slice(&at.to_be_bytes());
    if let Some((msg, delay)) = will {
        v.extend_from_slice(&delay.to_be_bytes());
        v.extend_from_slice(&encode_message(msg));
    }
    Op::Put(Space::Sessions, client_key(client_id), v)
}

/// A stored session: expiry interval, disconnection time, will (Will Delay, message; the
/// message `None` if it expired); `None` if damaged.
#[allow(clippy::type_complexity)]
fn decode_session(
    record: &[u8],
    now: (Instant, SystemTime),
) -> Option<(u32, Option<SystemTime>, Option<(u32, Option<Message>)>)> {
    let mut r = record;
    if r.remaining() < 13 || r.get_u8() != SESSION_RECORD_V1 {
        return None;
    }
    let expiry = r.get_u32();
    let at = r.get_u64();
    let disconnected = (at != 0).then(|| UNIX_EPOCH + Duration::from_millis(at));
    if r.is_empty() {
        return Some((expiry, disconnected, None));
    }
    if r.remaining() < 4 {
        return None;
    }
    let delay = r.get_u32();
    let will = decode_message(r, now).ok()?;
    Some((expiry, disconnected, Some((delay, will))))
}

/// Format, QoS, flags (No Local, Retain As Published), Retain Handling, Subscription Identifier
/// (0: none).
fn encode_subscription(sub: &Subscription) -> Vec<u8> {
    let o = &sub.options;
    let mut v = vec![
        SUBSCRIPTION_RECORD_V1,
        o.qos as u8,
        u8::from(o.no_local) | u8::from(o.retain_as_published) << 1,
        o.retain_handling as u8,
    ];
    v.extend_from_slice(&sub.id.unwrap_or(0).to_be_bytes());
    v
}

fn decode_subscription(record: &[u8]) -> Option<Subscription> {
    let mut r = record;
    if r.remaining() != 8 || r.get_u8() != SUBSCRIPTION_RECORD_V1 {
        return None;
    }
    let qos = QoS::from_u8(r.get_u8())?;
    let flags = r.get_u8();
    let retain_handling = match r.get_u8() {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return None,
    };
    let id = r.get_u32();
    Some(Subscription {
        options: SubscriptionOptions {
            qos,
            no_local: flags & 1 != 0,
            retain_as_published: flags & 2 != 0,
            retain_handling,
        },
        id: (id != 0).then_some(id),
    })
}

/// The client id at the start of a key, and the rest.
fn split_client_key(key: &[u8]) -> Option<(&str, &[u8])> {
    let (len, rest) = key.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    let id = std::str::from_utf8(rest.get(..len)?).ok()?;
    Some((id, rest.get(len..)?))
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

/// Reads every retained message back; returns the deletes for records that expired or could not
/// be read.
fn recover(engine: &dyn Engine) -> Result<(Recovered, Vec<Op>), StoreError> {
    let mut recovered = Recovered::default();
    let mut cleanup = Vec::new();
    let now = (Instant::now(), SystemTime::now());
    engine.scan(Space::Retained, b"", &mut |key, value| {
        match decode_message(value, now) {
            Ok(Some(msg)) if msg.topic().as_bytes() == key => {
                recovered.retained.push(Arc::new(msg));
            }
            Ok(None) => cleanup.push(Op::Delete(Space::Retained, key.to_vec())),
            Ok(Some(_)) | Err(_) => {
                warn!(key = %String::from_utf8_lossy(key), "unreadable retained message dropped");
                recovered.unreadable += 1;
                cleanup.push(Op::Delete(Space::Retained, key.to_vec()));
            }
        }
        true
    })?;
    recover_sessions(engine, &mut recovered, &mut cleanup)?;
    Ok((recovered, cleanup))
}

/// Reads persistent sessions and their subscriptions. Sessions whose expiry ran out while Tern
/// was down are forgotten; the downtime counts against the others.
fn recover_sessions(
    engine: &dyn Engine,
    recovered: &mut Recovered,
    cleanup: &mut Vec<Op>,
) -> Result<(), StoreError> {
    let now = SystemTime::now();
    let clock = (Instant::now(), now);
    let mut sessions = Vec::new();
    engine.scan(Space::Sessions, b"", &mut |key, value| {
        match (split_client_key(key), decode_session(value, clock)) {
            (Some((id, [])), Some((expiry, disconnected, will))) => {
                let down = disconnected
                    .and_then(|t| now.duration_since(t).ok())
                    .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
                // The will is due: after what is left of its delay, or when the session ends.
                let will = will.and_then(|(delay, msg)| {
                    msg.map(|m| (m, delay.saturating_sub(down), disconnected.unwrap_or(now)))
                });
                if expiry == NEVER_EXPIRES {
                    sessions.push((id.to_string(), expiry, NEVER_EXPIRES, will));
                } else if down < expiry {
                    sessions.push((id.to_string(), expiry, expiry - down, will));
                } else {
                    // Ended while Tern was down: its will, if any, is published at start.
                    if let Some((m, _, t)) = will {
                        recovered.ended_wills.push((m, t));
                    }
                    cleanup.extend(forget_ops(id));
                }
            }
            _ => {
                warn!(key = %String::from_utf8_lossy(key), "unreadable session dropped");
                recovered.unreadable += 1;
                cleanup.push(Op::Delete(Space::Sessions, key.to_vec()));
            }
        }
        true
    })?;
    for (client_id, expiry_interval, remaining, will) in sessions {
        let mut subscriptions = Vec::new();
        engine.scan(
            Space::Subscriptions,
            &client_key(&client_id),
            &mut |key, value| {
                let filter = split_client_key(key).and_then(|(_, f)| std::str::from_utf8(f).ok());
                match (filter, decode_subscription(value)) {
                    (Some(f), Some(sub)) => subscriptions.push((f.to_string(), sub)),
                    _ => {
                        warn!(%client_id, "unreadable subscription dropped");
                        recovered.unreadable += 1;
                        cleanup.push(Op::Delete(Space::Subscriptions, key.to_vec()));
                    }
                }
                true
            },
        )?;
        let (released, sent, inbound_qos2) = recover_flows(engine, &client_id, recovered, cleanup)?;
        recovered.sessions.push(StoredSession {
            client_id,
            expiry_interval,
            remaining,
            subscriptions,
            queue: Vec::new(),
            released,
            inflight: Vec::new(),
            sent,
            inbound_qos2,
            will,
        });
    }
    recover_log(engine, recovered, cleanup)
}

/// A client's outbound flows at PUBREL, sent-unacknowledged packet ids by sequence, and
/// inbound QoS 2 packet ids.
type Flows = (Vec<u16>, HashMap<u64, u16>, Vec<u16>);

fn recover_flows(
    engine: &dyn Engine,
    client_id: &str,
    recovered: &mut Recovered,
    cleanup: &mut Vec<Op>,
) -> Result<Flows, StoreError> {
    let prefix = client_key(client_id);
    let mut pkids = |space: Space, format: u8, what: &str| {
        let mut out = Vec::new();
        engine.scan(space, &prefix, &mut |key, value| {
            let pkid = key
                .get(prefix.len()..)
                .and_then(|s| <[u8; 2]>::try_from(s).ok())
                .map(u16::from_be_bytes);
            match pkid {
                Some(p) if p != 0 && value == [format] => out.push(p),
                _ => {
                    warn!(%client_id, what, "unreadable flow record dropped");
                    recovered.unreadable += 1;
                    cleanup.push(Op::Delete(space, key.to_vec()));
                }
            }
            true
        })?;
        Ok::<_, StoreError>(out)
    };
    let inbound = pkids(Space::InflightIn, INBOUND_RECORD_V1, "inbound QoS 2")?;
    let mut released = Vec::new();
    let mut sent = HashMap::new();
    engine.scan(Space::InflightOut, &prefix, &mut |key, value| {
        let pkid = key
            .get(prefix.len()..)
            .and_then(|s| <[u8; 2]>::try_from(s).ok())
            .map(u16::from_be_bytes)
            .filter(|p| *p != 0);
        match (pkid, value) {
            (Some(p), [RELEASED_RECORD_V1]) => released.push(p),
            (Some(p), [SENT_RECORD_V1, seq @ ..]) if seq.len() == 8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(seq);
                sent.insert(u64::from_be_bytes(b), p);
            }
            _ => {
                warn!(%client_id, "unreadable outbound flow record dropped");
                recovered.unreadable += 1;
                cleanup.push(Op::Delete(Space::InflightOut, key.to_vec()));
            }
        }
        true
    })?;
    Ok((released, sent, inbound))
}

/// Reads the stored messages in order and queues each for its recipients that still have a
/// session and have not acknowledged it. Messages nobody is owed any more, or expired, go.
fn recover_log(
    engine: &dyn Engine,
    recovered: &mut Recovered,
    cleanup: &mut Vec<Op>,
) -> Result<(), StoreError> {
    let mut acks: HashSet<Vec<u8>> = HashSet::new();
    engine.scan(Space::Acks, b"", &mut |key, _| {
        acks.insert(key.to_vec());
        true
    })?;
    let index: HashMap<String, usize> = recovered
        .sessions
        .iter()
        .enumerate()
        .map(|(i, s)| (s.client_id.clone(), i))
        .collect();
    let now = (Instant::now(), SystemTime::now());
    let mut unreadable = 0;
    engine.scan(Space::Queue, b"", &mut |key, value| {
        let Ok(seq) = <[u8; 8]>::try_from(key).map(u64::from_be_bytes) else {
            unreadable += 1;
            cleanup.push(Op::Delete(Space::Queue, key.to_vec()));
            return true;
        };
        recovered.max_seq = recovered.max_seq.max(seq);
        let (recipients, msg) = match decode_log(value, now) {
            Ok(Some(found)) => found,
            Ok(None) => {
                cleanup.extend(forget_message(seq));
                return true;
            }
            Err(e) => {
                warn!(seq, error = %e, "unreadable stored message dropped");
                unreadable += 1;
                cleanup.extend(forget_message(seq));
                return true;
            }
        };
        let msg = Arc::new(msg);
        let mut owed = 0u32;
        for r in recipients {
            let Some(&i) = index.get(&r.client_id) else {
                continue;
            };
            if acks.contains(&ack_key(seq, &r.client_id)) {
                continue;
            }
            owed += 1;
            let session = &mut recovered.sessions[i];
            let delivery = Delivery {
                msg: Arc::clone(&msg),
                qos: r.qos,
                retain: r.retain,
                sub_ids: r.sub_ids,
                shared: None,
                seq,
            };
            match session.sent.get(&seq) {
                Some(&pkid) => session.inflight.push((pkid, delivery)),
                None => session.queue.push(delivery),
            }
        }
        if owed == 0 {
            cleanup.extend(forget_message(seq));
        } else {
            recovered.pending.insert(seq, i64::from(owed));
        }
        true
    })?;
    recovered.unreadable += unreadable;
    Ok(())
}

/// One recipient: client id (u16 length, bytes), QoS, RETAIN, Subscription Identifiers (count,
/// then each).
fn encode_recipient(out: &mut Vec<u8>, client_id: &str, d: &Delivery) {
    out.extend_from_slice(&client_key(client_id));
    let ids = &d.sub_ids[..d.sub_ids.len().min(255)];
    out.extend_from_slice(&[d.qos as u8, u8::from(d.retain)]);
    out.push(u8::try_from(ids.len()).unwrap_or(u8::MAX));
    for id in ids {
        out.extend_from_slice(&id.to_be_bytes());
    }
}

/// A recipient of a stored message, as read back.
struct Recipient {
    client_id: String,
    qos: QoS,
    retain: bool,
    sub_ids: Vec<u32>,
}

/// Recipients and message of a stored message record; `Ok(None)` if the message expired.
#[allow(clippy::type_complexity)]
fn decode_log(
    record: &[u8],
    now: (Instant, SystemTime),
) -> Result<Option<(Vec<Recipient>, Message)>, String> {
    let mut r = record;
    if r.remaining() < 3 || r.get_u8() != LOG_RECORD_V1 {
        return Err("unknown record format".into());
    }
    let n = r.get_u16();
    let mut recipients = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        if r.remaining() < 2 {
            return Err("short".into());
        }
        let len = usize::from(r.get_u16());
        if r.remaining() < len + 3 {
            return Err("short".into());
        }
        let client_id = std::str::from_utf8(&r[..len])
            .map_err(|_| "client id not UTF-8")?
            .to_string();
        r.advance(len);
        let qos = QoS::from_u8(r.get_u8()).ok_or("bad QoS")?;
        let retain = r.get_u8() != 0;
        let ids = usize::from(r.get_u8());
        if r.remaining() < 4 * ids {
            return Err("short".into());
        }
        let sub_ids = (0..ids).map(|_| r.get_u32()).collect();
        recipients.push(Recipient {
            client_id,
            qos,
            retain,
            sub_ids,
        });
    }
    Ok(decode_message(r, now)?.map(|m| (recipients, m)))
}

/// Key of an acknowledgement: sequence, then the client, so a message's acknowledgements are
/// one prefix.
fn ack_key(seq: u64, client_id: &str) -> Vec<u8> {
    let mut k = seq.to_be_bytes().to_vec();
    k.extend_from_slice(&client_key(client_id));
    k
}

/// Header (format, expiry in Unix milliseconds or 0) then the message as a v5 PUBLISH.
fn encode_message(msg: &Message) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8(MESSAGE_RECORD_V1);
    let expires = msg.expires_at.map_or(0, |at| {
        let left = at.saturating_duration_since(Instant::now());
        let wall = SystemTime::now() + left;
        wall.duration_since(UNIX_EPOCH).map_or(1, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
        })
    });
    out.put_u64(expires);
    let mut publish = msg.publish.clone();
    // A QoS 1/2 PUBLISH must carry a packet id to be well-formed; it means nothing here.
    publish.pkid = u16::from(publish.qos != QoS::AtMostOnce);
    // The encoder only fails on sizes no accepted message has.
    let _ = protocol::encode(&Packet::Publish(publish), ProtocolVersion::V5, &mut out);
    out.to_vec()
}

/// A stored message; `Ok(None)` if it has expired.
fn decode_message(
    record: &[u8],
    (now, wall_now): (Instant, SystemTime),
) -> Result<Option<Message>, String> {
    let mut r = record;
    if r.remaining() < 9 || r.get_u8() != MESSAGE_RECORD_V1 {
        return Err("unknown record format".into());
    }
    let expires = r.get_u64();
    let expires_at = if expires == 0 {
        None
    } else {
        let wall = UNIX_EPOCH + Duration::from_millis(expires);
        match wall.duration_since(wall_now) {
            Ok(left) if !left.is_zero() => Some(now + left),
            _ => return Ok(None),
        }
    };
    let mut buf = BytesMut::from(r);
    let packet = Decoder::resumed(u32::MAX, ProtocolVersion::V5)
        .decode(&mut buf)
        .map_err(|e| e.to_string())?;
    let Some(Packet::Publish(mut publish)) = packet else {
        return Err("not a PUBLISH".into());
    };
    if !buf.is_empty() {
        return Err("trailing bytes".into());
    }
    publish.pkid = 0;
    Ok(Some(Message {
        publish,
        expires_at,
        publisher: None,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::protocol::{Publish, PublishProperties};

    fn message(expiry: Option<u32>) -> Message {
        let publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "a/b".into(),
            pkid: 9,
            payload: bytes::Bytes::from_static(b"payload"),
            properties: PublishProperties {
                message_expiry_interval: expiry,
                content_type: Some("text/plain".into()),
                user_properties: vec![("k".into(), "v".into())],
                ..PublishProperties::default()
            },
        };
        Message::new(publish, None, Instant::now())
    }

    /// A stored message comes back with topic, payload, QoS, retain flag and properties, and
    /// with the expiry it had left.
    #[test]
    fn message_round_trips() {
        let msg = message(Some(3600));
        let back = decode_message(&encode_message(&msg), (Instant::now(), SystemTime::now()))
            .unwrap()
            .unwrap();
        assert_eq!(back.publish, msg.publish);
        let left = back.remaining_expiry(Instant::now()).unwrap();
        assert!((3598..=3600).contains(&left), "{left}");
        let plain = message(None);
        let back = decode_message(&encode_message(&plain), (Instant::now(), SystemTime::now()))
            .unwrap()
            .unwrap();
        assert_eq!(back.expires_at, None);
    }

    /// A message whose expiry passed while Tern was down is not restored.
    #[test]
    fn expired_message_is_not_restored() {
        let record = encode_message(&message(Some(1)));
        let later = SystemTime::now() + Duration::from_secs(5);
        assert!(decode_message(&record, (Instant::now(), later))
            .unwrap()
            .is_none());
    }

    /// Time spent down counts against a session's expiry: one that ran out while Tern was down
    /// is forgotten with its subscriptions; others come back with what they have left, and a
    /// session that never expires stays. Damaged records are dropped and counted.
    #[test]
    fn session_expiry_counts_downtime() {
        use crate::store::{Durability, MemoryEngine};
        let ten_s_ago = SystemTime::now() - Duration::from_secs(10);
        let sub = Subscription {
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: false,
                retain_handling: RetainHandling::SendIfNew,
            },
            id: Some(42),
        };
        let mut e = MemoryEngine::new();
        let mut ops = vec![
            session_op("gone", 5, Some(ten_s_ago), None),
            session_op("left", 100, Some(ten_s_ago), None),
            session_op("forever", NEVER_EXPIRES, Some(ten_s_ago), None),
            session_op("connected", 100, None, None),
            Op::Put(Space::Sessions, client_key("bad"), vec![7, 7]),
        ];
        for id in ["gone", "left"] {
            let key = client_key_with(id, b"a/#");
            ops.push(Op::Put(
                Space::Subscriptions,
                key,
                encode_subscription(&sub),
            ));
        }
        e.apply(&ops, Durability::Process).unwrap();
        let (recovered, cleanup) = recover(&e).unwrap();
        let mut got: Vec<(&str, u32)> = recovered
            .sessions
            .iter()
            .map(|s| (s.client_id.as_str(), s.remaining))
            .collect();
        got.sort();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], ("connected", 100));
        assert_eq!(got[1], ("forever", NEVER_EXPIRES));
        assert_eq!(got[2].0, "left");
        assert!((89..=90).contains(&got[2].1), "{:?}", got[2]);
        let left = recovered
            .sessions
            .iter()
            .find(|s| s.client_id == "left")
            .unwrap();
        assert_eq!(left.subscriptions.len(), 1);
        assert_eq!(left.subscriptions[0].0, "a/#");
        assert_eq!(left.subscriptions[0].1.id, Some(42));
        assert!(left.subscriptions[0].1.options.no_local);
        assert_eq!(recovered.unreadable, 1);
        // The expired session and the damaged record are deleted.
        e.apply(&cleanup, Durability::Process).unwrap();
        assert_eq!(e.get(Space::Sessions, &client_key("gone")).unwrap(), None);
        assert_eq!(e.get(Space::Sessions, &client_key("bad")).unwrap(), None);
        let mut subs = 0;
        e.scan(Space::Subscriptions, &client_key("gone"), &mut |_, _| {
            subs += 1;
            true
        })
        .unwrap();
        assert_eq!(subs, 0);
    }

    /// A stored message is queued at start for each recipient that still has a session and has
    /// not acknowledged it; one nobody is owed any more is deleted with its acknowledgements.
    #[test]
    fn stored_messages_go_to_recipients_still_owed() {
        use crate::store::{Durability, MemoryEngine};
        let msg = Arc::new(message(None));
        let delivery = |qos| Delivery {
            msg: Arc::clone(&msg),
            qos,
            retain: false,
            sub_ids: vec![3],
            shared: None,
            seq: 0,
        };
        let log = |recipients: &[&str]| {
            let mut v = vec![LOG_RECORD_V1];
            v.extend_from_slice(&u16::try_from(recipients.len()).unwrap().to_be_bytes());
            for r in recipients {
                encode_recipient(&mut v, r, &delivery(QoS::AtLeastOnce));
            }
            v.extend_from_slice(&encode_message(&msg));
            v
        };
        let mut e = MemoryEngine::new();
        e.apply(
            &[
                session_op("a", NEVER_EXPIRES, None, None),
                session_op("b", NEVER_EXPIRES, None, None),
                Op::Put(
                    Space::Queue,
                    7u64.to_be_bytes().to_vec(),
                    log(&["a", "b", "gone"]),
                ),
                Op::Put(Space::Acks, ack_key(7, "b"), Vec::new()),
                Op::Put(Space::Queue, 8u64.to_be_bytes().to_vec(), log(&["b"])),
                Op::Put(Space::Acks, ack_key(8, "b"), Vec::new()),
            ],
            Durability::Process,
        )
        .unwrap();
        let (recovered, cleanup) = recover(&e).unwrap();
        let queue_of = |id: &str| {
            recovered
                .sessions
                .iter()
                .find(|s| s.client_id == id)
                .map(|s| {
                    s.queue
                        .iter()
                        .map(|d| (d.seq, d.sub_ids.clone()))
                        .collect::<Vec<_>>()
                })
                .unwrap()
        };
        assert_eq!(queue_of("a"), vec![(7, vec![3])]);
        assert!(queue_of("b").is_empty());
        assert_eq!(recovered.pending.get(&7), Some(&1));
        assert_eq!(recovered.max_seq, 8);
        e.apply(&cleanup, Durability::Process).unwrap();
        assert!(e.get(Space::Queue, &7u64.to_be_bytes()).unwrap().is_some());
        assert!(e.get(Space::Queue, &8u64.to_be_bytes()).unwrap().is_none());
        assert!(e.get(Space::Acks, &ack_key(8, "b")).unwrap().is_none());
    }

    /// A recipient fast enough to acknowledge before the publisher's batch is submitted still
    /// releases the message: it is stored and deleted in that batch, and nothing stays owed.
    #[tokio::test]
    async fn acknowledgement_before_submit_releases_the_message() {
        let dir = tempfile::tempdir().unwrap();
        let config = PersistenceConfig {
            enabled: true,
            path: dir.path().join("data"),
            ..PersistenceConfig::default()
        };
        let (durable, _) = Durable::open(&config).unwrap();
        let msg = Arc::new(message(None));
        let mut batch = durable.batch();
        let seq = batch.next_seq();
        let d = Delivery {
            msg: Arc::clone(&msg),
            qos: QoS::AtLeastOnce,
            retain: false,
            sub_ids: Vec::new(),
            shared: None,
            seq,
        };
        batch.record("fast", &d);
        durable.delivered("fast", seq);
        batch.submit().unwrap().wait().await.unwrap();
        assert_eq!(durable.pending_len(), 0);
        let mut left = 0;
        durable
            .committer
            .scan(Space::Queue, b"", &mut |_, _| {
                left += 1;
                true
            })
            .unwrap();
        assert_eq!(left, 0, "message kept though its only recipient has it");
    }

    /// Damaged records are errors, never panics.
    #[test]
    fn damaged_records_are_refused() {
        let record = encode_message(&message(None));
        for cut in 0..record.len() {
            assert!(decode_message(&record[..cut], (Instant::now(), SystemTime::now())).is_err());
        }
        let mut extra = record.clone();
        extra.push(0);
        assert!(decode_message(&extra, (Instant::now(), SystemTime::now())).is_err());
        let mut other = record;
        other[0] = 9;
        assert!(decode_message(&other, (Instant::now(), SystemTime::now())).is_err());
    }
}
