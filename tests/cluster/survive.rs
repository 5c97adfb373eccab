//! What a cluster promises when part of it dies: persistent sessions resume on the survivors
//! with their queues, nothing acknowledged is lost, and the wills of the dead node's clients
//! are published.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::wire::*;

/// How long after its node died a session must be resumed elsewhere.
pub const RESUMED_WITHIN: Duration = Duration::from_secs(10);

/// A persistent subscriber that goes from node to node.
pub struct Subscriber {
    pub id: String,
    pub level: u8,
    /// What it has received: payload → how many times.
    pub got: Arc<Mutex<HashMap<Vec<u8>, usize>>>,
    /// When each of its connections after the first was accepted, with Session Present.
    pub resumed: Arc<Mutex<Vec<(Instant, bool)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Connects to `addrs[0]` with a new persistent session subscribed to `filter` at `qos`
    /// (`will` with it, if any), and keeps receiving, acknowledging everything; when the
    /// connection is lost it connects to the next of `addrs` (resuming the session) and goes
    /// on, until `stop`.
    pub async fn start(
        id: String,
        level: u8,
        addrs: Vec<SocketAddr>,
        (filter, qos): (String, u8),
        will: Option<Will>,
        stop: Arc<AtomicBool>,
    ) -> Subscriber {
        let got = Arc::new(Mutex::new(HashMap::new()));
        let resumed = Arc::new(Mutex::new(Vec::new()));
        let connect = |clean: bool| {
            let mut c = Connect::new(level, &id).clean(clean);
            if level == V5 {
                c = c.props(prop_u32(SESSION_EXPIRY, 300));
            }
            if let Some(w) = &will {
                c = c.will(w.clone());
            }
            c
        };
        // A new session: v5 by Clean Start with an expiry; 3.1.1 ids are new, and clean
        // session 0 keeps the session.
        let (mut c, _) = RawClient::handshake(addrs[0], level, &connect(level == V5)).await;
        c.subscribe(level, &filter, qos).await;
        let again = connect(false);
        let (g, r) = (Arc::clone(&got), Arc::clone(&resumed));
        let task = tokio::spawn(async move {
            let mut next = 1;
            loop {
                match c.next_event(Duration::from_millis(200)).await {
                    Event::Packet(first, body) if first & 0xF0 == PUBLISH => {
                        take(&mut c, level, first, &body, &g).await;
                    }
                    Event::Packet(first, body) => complete(&mut c, first, &body).await,
                    Event::Closed => {
                        let addr = addrs[next % addrs.len()];
                        next += 1;
                        let (client, ack) = loop {
                            // The survivors may refuse while they take over (0x88 / 0x03).
                            let (client, ack) = RawClient::try_handshake(addr, level, &again).await;
                            if ack.reason == 0 {
                                break (client, ack);
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        };
                        r.lock().push((Instant::now(), ack.session_present));
                        c = client;
                    }
                    Event::Timeout if stop.load(Ordering::Acquire) => return,
                    Event::Timeout => {}
                }
            }
        });
        Subscriber {
            id,
            level,
            got,
            resumed,
            task,
        }
    }

    /// Waits until it has every payload of `expected` (at most `within`); the ones missing.
    pub async fn wait_for(&self, expected: &[Vec<u8>], within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let missing: Vec<String> = {
                let got = self.got.lock();
                expected
                    .iter()
                    .filter(|p| !got.contains_key(*p))
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect()
            };
            if missing.is_empty() || Instant::now() >= deadline {
                return missing;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops it (after `stop` was set).
    pub async fn finish(self) {
        let _ = self.task.await;
    }
}

/// Publishes messages `0..n` to `topic` through `addr` one after another, QoS 1 and QoS 2 in
/// turn, each flow completed; `halfway` runs once half of them are acknowledged. Returns the
/// acknowledged payloads (PUBACK, or PUBREC for QoS 2): a message refused, or whose
/// acknowledgement did not come (the connection was closed, the cluster being unavailable), is
/// not counted, as its publisher would send it again. A closed connection is opened again.
pub async fn publish_acked(
    addr: SocketAddr,
    id: &str,
    topic: &str,
    n: usize,
    halfway: impl FnOnce(),
) -> Vec<Vec<u8>> {
    let mut p = RawClient::connected(addr, V5, id).await;
    let mut acked = Vec::new();
    let mut halfway = Some(halfway);
    for i in 0..n {
        let payload = format!("{id}/m{i}").into_bytes();
        let pkid = (i % 60_000) as u16 + 1;
        let qos = 1 + (i % 2) as u8;
        let sent = p
            .try_send(&Publish::new(V5, topic, &payload).qos(qos, pkid).build())
            .await;
        let event = match sent {
            Ok(()) => p.next_event(Duration::from_secs(10)).await,
            Err(_) => Event::Closed,
        };
        let open = match event {
            Event::Packet(first @ (PUBACK | PUBREC), body) => {
                let (id, reason) = parse_ack(&body);
                assert_eq!((id, first), (pkid, if qos == 1 { PUBACK } else { PUBREC }));
                if reason < 0x80 {
                    acked.push(payload);
                }
                // QoS 2: the flow is completed (a failure here loses nothing: PUBREC said the
                // message is stored).
                qos == 1 || reason >= 0x80 || release(&mut p, pkid).await
            }
            Event::Packet(DISCONNECT, _) | Event::Closed | Event::Timeout => false,
            other => panic!("PUBACK or PUBREC expected for m{i}: {other:?}"),
        };
        if !open {
            let deadline = Instant::now() + Duration::from_secs(60);
            p = loop {
                let c = Connect::new(V5, id);
                let (client, ack) = RawClient::try_handshake(addr, V5, &c).await;
                if ack.reason == 0 {
                    break client;
                }
                assert!(Instant::now() < deadline, "publisher not let in again");
                tokio::time::sleep(Duration::from_millis(250)).await;
            };
        }
        if i == n / 2 {
            if let Some(f) = halfway.take() {
                f();
            }
        }
    }
    acked
}

/// PUBREL for `pkid`, and its PUBCOMP; false if the connection ended first.
async fn release(p: &mut RawClient, pkid: u16) -> bool {
    if p.try_send(&pubrel(pkid)).await.is_err() {
        return false;
    }
    matches!(
        p.next_event(Duration::from_secs(10)).await,
        Event::Packet(PUBCOMP, _)
    )
}

/// A member of a shared subscription on one node: receives and acknowledges until its
/// connection ends or `stop`; [`Member::drop_connection`] ends it without a word.
pub struct Member {
    pub got: Arc<Mutex<HashMap<Vec<u8>, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Member {
    pub async fn start(
        addr: SocketAddr,
        level: u8,
        id: &str,
        filter: &str,
        stop: Arc<AtomicBool>,
    ) -> Member {
        let mut c = RawClient::connected(addr, level, id).await;
        c.subscribe(level, filter, 1).await;
        let got = Arc::new(Mutex::new(HashMap::new()));
        let g = Arc::clone(&got);
        let task = tokio::spawn(async move {
            loop {
                match c.next_event(Duration::from_millis(200)).await {
                    Event::Packet(first, body) if first & 0xF0 == PUBLISH => {
                        take(&mut c, level, first, &body, &g).await;
                    }
                    Event::Packet(first, body) => complete(&mut c, first, &body).await,
                    Event::Closed => return,
                    Event::Timeout if stop.load(Ordering::Acquire) => return,
                    Event::Timeout => {}
                }
            }
        });
        Member { got, task }
    }

    /// How many messages it has.
    pub fn count(&self) -> usize {
        self.got.lock().values().sum()
    }

    /// Closes its socket at once (no DISCONNECT): the broker finds the connection lost.
    pub fn drop_connection(&self) {
        self.task.abort();
    }

    pub async fn finish(self) {
        let _ = self.task.await;
    }
}

/// Every payload of `expected` and how many times the members got it, waiting up to `within`
/// for all to arrive.
pub async fn gathered(
    members: &[&Member],
    expected: &[Vec<u8>],
    within: Duration,
) -> HashMap<Vec<u8>, usize> {
    let deadline = Instant::now() + within;
    loop {
        let mut all: HashMap<Vec<u8>, usize> = HashMap::new();
        for m in members {
            for (p, n) in m.got.lock().iter() {
                *all.entry(p.clone()).or_insert(0) += n;
            }
        }
        if expected.iter().all(|p| all.contains_key(p)) || Instant::now() >= deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Acknowledges a PUBLISH received (QoS 1) and counts its payload in `got`.
async fn take(
    c: &mut RawClient,
    level: u8,
    first: u8,
    body: &[u8],
    got: &Mutex<HashMap<Vec<u8>, usize>>,
) {
    let p = parse_publish(level, first, body);
    // The node may be dying: a failed write shows as the connection's end next.
    let _ = match p.qos {
        1 => c.try_send(&puback(p.pkid)).await,
        2 => c.try_send(&pubrec(p.pkid)).await,
        _ => Ok(()),
    };
    *got.lock().entry(p.payload).or_insert(0) += 1;
}

/// Answers a PUBREL with its PUBCOMP.
async fn complete(c: &mut RawClient, first: u8, body: &[u8]) {
    if first == PUBREL {
        let _ = c.try_send(&pubcomp(parse_ack(body).0)).await;
    }
}
