//! `tern-bench`: the load tool behind `benches/run.sh`. A small MQTT 3.1.1/5.0 client written on
//! raw tokio sockets (independent of Tern's own codec) that runs one scenario against any broker
//! and prints one `RESULT` line. Throughput is measured closed-loop: publishers keep a bounded
//! number of messages in flight end to end, so a broker is never pushed into dropping QoS 0
//! messages and any loss or duplicate is a real failure (exit status 1).

mod backlog;
mod client;
mod failover;
mod jobs;
mod storm;
mod window;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use backlog::{await_received, collect, publish};
use client::{Ack, Client, Incoming};

/// Unacknowledged QoS 1 PUBLISHes per publisher.
const ACK_WINDOW: usize = 32;
/// Messages in flight end to end per publisher/subscriber pair.
const PAIR_WINDOW: usize = 32;
/// Messages in flight end to end per subscriber when all share one stream.
const SHARED_WINDOW: usize = 500;
/// Messages in flight end to end for a whole shared-subscription group.
const GROUP_WINDOW: usize = 100;
/// Persistent sessions the `offline` scenario queues for.
const OFFLINE_SESSIONS: usize = 100;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "MQTT load tool: one scenario, one RESULT line")]
struct Args {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Broker port.
    #[arg(long)]
    port: u16,
    /// fan-in | fan-in-qos1 | fan-out | pairs-qos0 | pairs-qos1 | shared-qos1 | queue-drain |
    /// latency | idle | subs | offline | offline-drain | failover | connect-storm |
    /// fill | queue | drain | publish | collect | await-received | drain-one | slow-link
    #[arg(long)]
    scenario: String,
    /// Client id prefix shared by `queue` and a later `drain` (default: from the process id).
    #[arg(long)]
    prefix: Option<String>,
    /// Messages per publisher (fan-out: published messages; queue-drain: jobs; latency:
    /// ignored).
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Payload bytes (at least 24: publisher, sequence, timestamp).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Connections for `idle`; persistent sessions for `fill`; clients in a `connect-storm`.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Subscriptions `subs` makes on its one client.
    #[arg(long, default_value_t = 50_000)]
    subscriptions: usize,
    /// Retained messages for `fill`.
    #[arg(long, default_value_t = 0)]
    retained: u64,
    /// Seconds `idle` holds its connections open after printing (the script reads memory then).
    #[arg(long, default_value_t = 3)]
    hold_secs: u64,
    /// Port the subscribers connect to, when it is not --port (another broker, behind a
    /// bridge).
    #[arg(long)]
    sub_port: Option<u16>,
    /// `collect` with `--prefix`: subscribe the persistent session, then leave.
    #[arg(long)]
    subscribe_only: bool,
    /// Throughput scenarios: subscribers with persistent sessions (clean session 0), so what
    /// they are sent is stored with persistence on.
    #[arg(long)]
    persistent_subscribers: bool,
    /// `queue-drain`: the broker holds the jobs in this declared queue (Tern: workers subscribe
    /// to `$queue/NAME`); without it, in a `$share` group of offline persistent sessions.
    #[arg(long)]
    queue: Option<String>,
    /// Port of a Tern broker's HTTP listener (`await-received`).
    #[arg(long)]
    http_port: Option<u16>,
    /// Connect over TLS, trusting this PEM CA (server name `localhost`), full handshakes.
    #[arg(long)]
    cafile: Option<std::path::PathBuf>,
    /// `failover`: where the subscribers go once their node (`--sub-port`) is gone.
    #[arg(long)]
    failover_port: Option<u16>,
    /// `failover`: the process to kill (kill -9) halfway: the subscribers' node.
    #[arg(long)]
    kill_pid: Option<u32>,
    /// `connect-storm`: connection attempts in progress at once.
    #[arg(long, default_value_t = 2_000)]
    storm_concurrency: usize,
    /// `connect-storm`: clients stay connected until every one got in (else each leaves after
    /// its CONNACK).
    #[arg(long)]
    hold: bool,
    /// `connect-storm`: the storm's clients log in with this user name and `--password` (the
    /// pair stays anonymous).
    #[arg(long)]
    username: Option<String>,
    /// `connect-storm`: the storm's clients' password.
    #[arg(long)]
    password: Option<String>,
    /// MQTT version of every connection: 3.1.1 (also "4") or 5.
    #[arg(long, default_value = "3.1.1")]
    mqtt: String,
    /// MQTT 5: the Receive Maximum every client states in CONNECT (how many QoS 1/2 messages
    /// the broker may have unacknowledged towards it); without it the property is left out.
    #[arg(long)]
    receive_maximum: Option<u16>,
    /// Throughput scenarios: publishers instead of the scenario's own number (fan-in: 8).
    #[arg(long)]
    publishers: Option<usize>,
    /// Throughput scenarios: subscribers instead of the scenario's own number (fan-out: 200;
    /// offline-drain: 1).
    #[arg(long)]
    subscribers: Option<usize>,
    /// Throughput and latency scenarios: QoS of the publishers and the subscriptions instead of
    /// the scenario's own (0, 1 or 2).
    #[arg(long)]
    qos: Option<u8>,
    /// `latency`: messages per second (default 2000).
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// `latency`: seconds it publishes for.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// `connect-storm`: the storm goes to this port instead of --port (a second broker
    /// process: what the storm costs the pair through the machine alone, not through the
    /// broker it shares).
    #[arg(long)]
    storm_port: Option<u16>,
    /// `slow-link`: milliseconds between a PUBLISH arriving and its PUBACK leaving (the link's
    /// round trip).
    #[arg(long, default_value_t = 0)]
    ack_delay_ms: u64,
    /// `slow-link`: bytes per second the subscriber reads at most (0: no cap).
    #[arg(long, default_value_t = 0)]
    read_bytes_per_s: u64,
    /// Throughput scenarios: subscribers acknowledge each burst of deliveries in one write
    /// (as a client that batches acknowledgements does) instead of one write per message.
    #[arg(long)]
    batch_acks: bool,
}

/// What a scenario measured.
#[derive(Default)]
struct Outcome {
    msgs_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    lost: u64,
    dup: u64,
    conn_per_s: f64,
    /// `offline`: milliseconds to drain every queue.
    drain_ms: u64,
}

/// Counts what subscribers received against what was sent, per publisher and in order.
struct Tally {
    epoch: Instant,
    latency: parking_lot::Mutex<Histogram<u64>>,
    received: AtomicU64,
    /// Nanoseconds after `epoch` of the latest delivery.
    last: AtomicU64,
    dup: AtomicU64,
    gaps: AtomicU64,
    /// Each receiver gets part of each publisher's messages (a shared subscription): a jump
    /// in a publisher's sequence is another receiver's share, not a gap.
    subset: std::sync::atomic::AtomicBool,
}

impl Tally {
    /// The scenario's result: `expected` deliveries were due.
    fn outcome(&self, msgs_per_s: f64, expected: u64) -> Outcome {
        let h = self.latency.lock();
        Outcome {
            msgs_per_s,
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            lost: expected.saturating_sub(self.received.load(Ordering::Relaxed)),
            dup: self.dup.load(Ordering::Relaxed),
            conn_per_s: 0.0,
            drain_ms: 0,
        }
    }

    /// The scenario's result at the rate of deliveries from `since` to the last one, and that
    /// span.
    fn rate_since(&self, since: Instant, expected: u64) -> (Outcome, Duration) {
        let took = self
            .last_delivery()
            .saturating_duration_since(since)
            .max(Duration::from_micros(1));
        let received = self.received.load(Ordering::Relaxed);
        (
            self.outcome(received as f64 / took.as_secs_f64(), expected),
            took,
        )
    }

    fn last_delivery(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }

    fn new(epoch: Instant) -> Result<Arc<Tally>> {
        Ok(Arc::new(Tally {
            epoch,
            latency: parking_lot::Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
            received: AtomicU64::new(0),
            last: AtomicU64::new(0),
            dup: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            subset: std::sync::atomic::AtomicBool::new(false),
        }))
    }
}

/// Per-subscriber order check: the next sequence expected from each publisher.
struct Order(Vec<u64>);

impl Order {
    fn check(&mut self, tally: &Tally, payload: &[u8]) {
        self.check_since(tally, payload, tally.epoch);
    }

    /// [`Order::check`], with latency counted from `since` when the message was sent earlier.
    fn check_since(&mut self, tally: &Tally, payload: &[u8], since: Instant) {
        let Some((publisher, seq, sent)) = client::parse_payload(payload) else {
            tally.gaps.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let p = publisher as usize;
        if p >= self.0.len() {
            self.0.resize(p + 1, 0);
        }
        let expected = self.0[p];
        if seq < expected {
            tally.dup.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if seq > expected && !tally.subset.load(Ordering::Relaxed) {
            tally.gaps.fetch_add(seq - expected, Ordering::Relaxed);
        }
        self.0[p] = seq + 1;
        tally.received.fetch_add(1, Ordering::Relaxed);
        let now = tally.epoch.elapsed().as_nanos() as u64;
        tally.last.fetch_max(now, Ordering::Relaxed);
        let from = since.saturating_duration_since(tally.epoch).as_nanos() as u64;
        let us = now.saturating_sub(sent.max(from)) / 1000;
        let _ = tally.latency.lock().record(us.max(1));
    }
}

/// A subscriber's receive loop: acknowledges QoS 1, checks order, and releases one permit of
/// `window` per message.
async fn receive(c: Client, tally: Arc<Tally>, window: Option<Arc<Semaphore>>) -> Result<()> {
    receive_with(c, tally, window, false).await
}

/// [`receive`], acknowledging each burst in one write when `batch_acks`.
async fn receive_with(
    mut c: Client,
    tally: Arc<Tally>,
    window: Option<Arc<Semaphore>>,
    batch_acks: bool,
) -> Result<()> {
    let mut order = Order(Vec::new());
    loop {
        match c.next().await? {
            Incoming::Publish { qos, pkid, payload } => {
                // QoS 1: PUBACK; QoS 2: PUBREC (the PUBREL that follows is answered with
                // PUBCOMP by `next`).
                match (pkid, batch_acks) {
                    (Some(id), true) => c.ack_batched(qos, id).await?,
                    (Some(id), false) => c.ack(qos, id).await?,
                    (None, _) => {}
                }
                order.check(&tally, &payload);
                if let Some(w) = &window {
                    w.add_permits(1);
                }
            }
            Incoming::Closed => return Ok(()),
            Incoming::Other => {}
        }
    }
}

/// Subscribes `n` clients to `filter` (QoS `qos`) and spawns their receive loops; each received
/// message releases one permit of `window`.
async fn subscribers(
    args: &Args,
    n: usize,
    filter: impl Fn(usize) -> String,
    qos: u8,
    tally: &Arc<Tally>,
    window: impl Fn(usize) -> Arc<Semaphore>,
    prefix: &str,
) -> Result<Vec<tokio::task::JoinHandle<Result<()>>>> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let port = args.sub_port.unwrap_or(args.port);
        let id = format!("{prefix}-sub-{i}");
        let mut c =
            Client::connect_with(&args.host, port, &id, !args.persistent_subscribers).await?;
        c.subscribe(&filter(i), qos).await?;
        let tally = Arc::clone(tally);
        let window = window(i);
        tasks.push(tokio::spawn(receive_with(
            c,
            tally,
            Some(window),
            args.batch_acks,
        )));
    }
    Ok(tasks)
}

/// Runs `publishers` publishers of `per_pub` messages each to `topic(i)`, each message taking
/// `copies` permits of its window (one per expected delivery). Returns when publishing started.
/// The publishing side of a scenario.
struct Publishers<'a> {
    count: usize,
    per_pub: u64,
    qos: u8,
    epoch: Instant,
    prefix: &'a str,
}

async fn publish_all(
    args: &Args,
    p: Publishers<'_>,
    topic: impl Fn(usize) -> String,
    windows: impl Fn(usize) -> Vec<Arc<Semaphore>>,
) -> Result<Instant> {
    let Publishers {
        count,
        per_pub,
        qos,
        epoch,
        prefix,
    } = p;
    let mut clients = Vec::new();
    for i in 0..count {
        clients.push(Client::connect(&args.host, args.port, &format!("{prefix}-pub-{i}")).await?);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        let topic = topic(i);
        let windows = windows(i);
        let payload_len = args.payload;
        // QoS 1/2: at most ACK_WINDOW unacknowledged PUBLISHes per publisher, and never more
        // than the broker's Receive Maximum (MQTT 5).
        let ack_window = ACK_WINDOW.min(usize::from(c.send_quota)).max(1);
        let (mut reader, writer) = c.into_split();
        let acks = Arc::new(Semaphore::new(ack_window));
        // QoS 2: the reader hands each PUBREC's packet id to the publishing task, which owns
        // the socket's sending half and answers with PUBREL.
        let (rel_tx, rel_rx) = tokio::sync::mpsc::unbounded_channel::<u16>();
        let acker = (qos > 0).then(|| {
            let acks = Arc::clone(&acks);
            tokio::spawn(async move {
                while let Some(ack) = reader.ack().await? {
                    match ack {
                        Ack::Done => acks.add_permits(1),
                        Ack::Received(id) => {
                            if rel_tx.send(id).is_err() {
                                break;
                            }
                        }
                    }
                }
                anyhow::Ok(())
            })
        });
        let mut out = Outbound {
            writer,
            pubrel: rel_rx,
        };
        tasks.push(tokio::spawn(async move {
            for seq in 0..per_pub {
                // One permit per expected delivery, from each receiver's own window, so no
                // receiver falls further behind than its window.
                for w in &windows {
                    out.acquire(w, 1).await?;
                }
                if qos > 0 {
                    out.acquire(&acks, 1).await?;
                }
                out.pending_pubrels();
                let payload = client::make_payload(i as u32, seq, epoch, payload_len);
                out.writer.publish(&topic, qos, &payload).await?;
            }
            out.writer.flush().await?;
            if qos > 0 {
                // Every PUBACK (PUBCOMP) back before the publisher leaves.
                out.acquire(&acks, ack_window as u32).await?;
            }
            if let Some(a) = acker {
                a.abort();
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(start)
}

/// A publisher's sending half, with the PUBRELs its reader asks for.
struct Outbound {
    writer: client::Writer,
    pubrel: tokio::sync::mpsc::UnboundedReceiver<u16>,
}

impl Outbound {
    /// Queues the PUBRELs due so far.
    fn pending_pubrels(&mut self) {
        while let Ok(id) = self.pubrel.try_recv() {
            self.writer.pubrel(id);
        }
    }

    /// Takes `n` permits of `sem`. Flushes before blocking (the permits we wait for may sit
    /// in our own buffer), and sends PUBRELs while it waits (a QoS 2 exchange completes only
    /// with them).
    async fn acquire(&mut self, sem: &Semaphore, n: u32) -> Result<()> {
        if let Ok(p) = sem.try_acquire_many(n) {
            p.forget();
            return Ok(());
        }
        loop {
            self.pending_pubrels();
            self.writer.flush().await?;
            tokio::select! {
                p = sem.acquire_many(n) => {
                    p?.forget();
                    return Ok(());
                }
                Some(id) = self.pubrel.recv() => self.writer.pubrel(id),
            }
        }
    }
}

/// Waits until subscribers received `expected` messages, or fails after a bounded stall.
async fn drain(tally: &Tally, expected: u64) -> Result<()> {
    let mut last = tally.received.load(Ordering::Relaxed);
    let mut stalled = Instant::now();
    while tally.received.load(Ordering::Relaxed) + tally.gaps.load(Ordering::Relaxed) < expected {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = tally.received.load(Ordering::Relaxed);
        if now != last {
            last = now;
            stalled = Instant::now();
        } else if stalled.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    Ok(())
}

/// How the subscribers of a throughput scenario get the publishers' messages.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Every subscriber gets every message.
    All,
    /// Publisher `i` to subscriber `i` only.
    Pairs,
    /// The subscribers are one `$share` group: each message to one of them.
    Shared,
}

async fn throughput(
    args: &Args,
    pubs: usize,
    subs: usize,
    shape: Shape,
    qos: u8,
) -> Result<Outcome> {
    let pairs = shape == Shape::Pairs;
    let epoch = Instant::now();
    let tally = Tally::new(epoch)?;
    tally
        .subset
        .store(shape == Shape::Shared, Ordering::Relaxed);
    let prefix = format!("{}-{}", args.scenario, std::process::id());
    // Messages in flight end to end, per publisher/subscriber pair, or per subscriber when all
    // publishers share the subscribers: enough to keep connections busy, bounded well below
    // any broker's queue limit for every single subscriber (Mosquitto's and Tern's default
    // max_queued_messages is 1000).
    let windows: Vec<Arc<Semaphore>> = if pairs {
        (0..pubs)
            .map(|_| Arc::new(Semaphore::new(PAIR_WINDOW)))
            .collect()
    } else if shape == Shape::Shared {
        // One window for the group: a message goes to whichever member the broker picks, so
        // keep well below what any one member's queue holds (1000) however unevenly it picks.
        vec![Arc::new(Semaphore::new(GROUP_WINDOW))]
    } else {
        (0..subs)
            .map(|_| Arc::new(Semaphore::new(SHARED_WINDOW)))
            .collect()
    };
    // A subscriber releases its own window; a publisher takes from its pair's, or from every
    // subscriber's.
    let window = |i: usize| Arc::clone(&windows[i % windows.len()]);
    let publisher_windows = |i: usize| {
        if pairs {
            vec![Arc::clone(&windows[i])]
        } else {
            windows.clone()
        }
    };
    let topic = |i: usize| {
        if shape == Shape::All {
            format!("bench/{prefix}")
        } else {
            format!("bench/{prefix}/{i}")
        }
    };
    let filter = |i: usize| {
        if shape == Shape::Shared {
            format!("$share/bench/bench/{prefix}/+")
        } else if subs == 1 {
            "#".to_string()
        } else {
            topic(i)
        }
    };
    let subs_tasks = subscribers(args, subs, filter, qos, &tally, window, &prefix).await?;
    let per_pub = args.messages;
    let publishers = Publishers {
        count: pubs,
        per_pub,
        qos,
        epoch,
        prefix: &prefix,
    };
    let started = publish_all(args, publishers, topic, publisher_windows).await?;
    let expected = if shape != Shape::All {
        pubs as u64 * per_pub
    } else {
        per_pub * pubs as u64 * subs as u64
    };
    drain(&tally, expected).await?;
    for t in subs_tasks {
        t.abort();
    }
    // From the first publish to the last delivery (or to the stall that ended the wait).
    Ok(tally.rate_since(started, expected).0)
}

/// One publisher at a fixed `--rate` (default 2,000 msgs/s) for `--seconds` (5) to one subscriber, both at
/// `--qos` (0 or 1; QoS 1: the publisher's PUBACKs are read as they come, the subscriber
/// acknowledges each message at once): end-to-end latency at a load far below capacity.
async fn latency(args: &Args) -> Result<Outcome> {
    let qos = args.qos.unwrap_or(0);
    if qos > 1 {
        bail!("latency: --qos 0 or 1");
    }
    if args.rate == 0 {
        bail!("latency: --rate must be at least 1");
    }
    let epoch = Instant::now();
    let tally = Tally::new(epoch)?;
    let prefix = format!("latency-{}", std::process::id());
    let window = Arc::new(Semaphore::new(0));
    let topic = format!("bench/{prefix}");
    let subs = subscribers(
        args,
        1,
        |_| topic.clone(),
        qos,
        &tally,
        |_| Arc::clone(&window),
        &prefix,
    )
    .await?;
    let c = Client::connect(&args.host, args.port, &format!("{prefix}-pub")).await?;
    let (mut reader, mut writer) = c.into_split();
    let acked = Arc::new(AtomicU64::new(0));
    let acker = {
        let acked = Arc::clone(&acked);
        tokio::spawn(async move {
            while reader.ack().await?.is_some() {
                acked.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        })
    };
    let rate = args.rate;
    let total = rate * args.seconds.max(1);
    let start = tokio::time::Instant::now();
    for seq in 0..total {
        tokio::time::sleep_until(start + Duration::from_micros(seq * 1_000_000 / rate)).await;
        let payload = client::make_payload(0, seq, epoch, args.payload);
        writer.publish(&topic, qos, &payload).await?;
        writer.flush().await?;
    }
    drain(&tally, total).await?;
    if qos > 0 {
        let deadline = Instant::now() + Duration::from_secs(5);
        while acked.load(Ordering::Relaxed) < total && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if acked.load(Ordering::Relaxed) < total {
            bail!(
                "latency: {} of {total} PUBACKs arrived",
                acked.load(Ordering::Relaxed)
            );
        }
    }
    acker.abort();
    for t in subs {
        t.abort();
    }
    Ok(tally.outcome(rate as f64, total))
}

/// A backlog drained: `--subscribers` (default 1) persistent sessions subscribe at `--qos`
/// (default 1) and go offline (each waits until the broker closed its connection); one
/// publisher sends `--messages` QoS 1 messages to them, every PUBACK back; then the sessions
/// come back at once and receive their queues, acknowledging each burst in one write.
/// msgs/s: deliveries per second from the first reconnect to the last delivery; `drain_ms`
/// that time; latency from the reconnect to each delivery. What a broker's outbound window and
/// queue bookkeeping cost with thousands of messages ready at once.
async fn offline_drain(args: &Args) -> Result<Outcome> {
    let sessions = args.subscribers.unwrap_or(1);
    let qos = args.qos.unwrap_or(1);
    if qos == 0 {
        bail!("offline-drain: --qos 1 or 2 (QoS 0 is not queued for offline sessions)");
    }
    let prefix = format!("offline-drain-{}", std::process::id());
    let id = |i: usize| format!("{prefix}-sub-{i}");
    let topic = format!("bench/{prefix}");
    for i in 0..sessions {
        let mut c = Client::connect_with(&args.host, args.port, &id(i), false).await?;
        c.subscribe(&topic, qos).await?;
        c.disconnect_and_wait().await?;
    }
    let epoch = Instant::now();
    let tally = Tally::new(epoch)?;
    publish_backlog(args, &prefix, &topic, args.messages, epoch).await?;
    // Latency from here: how long a message waited once its session was back.
    let back = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..sessions {
        let c = Client::connect_with(&args.host, args.port, &id(i), false).await?;
        tasks.push(tokio::spawn(receive_from(c, Arc::clone(&tally), back)));
    }
    let expected = args.messages * sessions as u64;
    drain(&tally, expected).await?;
    for t in tasks {
        t.abort();
    }
    let (mut o, took) = tally.rate_since(back, expected);
    o.drain_ms = took.as_millis() as u64;
    Ok(o)
}

/// `offline-drain`'s receive loop: like [`receive_with`] (acknowledgements batched), but each
/// message's latency counts from `since` (the reconnect), not from its send time.
async fn receive_from(mut c: Client, tally: Arc<Tally>, since: Instant) -> Result<()> {
    let mut order = Order(Vec::new());
    loop {
        match c.next().await? {
            Incoming::Publish { qos, pkid, payload } => {
                if let Some(id) = pkid {
                    c.ack_batched(qos, id).await?;
                }
                order.check_since(&tally, &payload, since);
            }
            Incoming::Closed => return Ok(()),
            Incoming::Other => {}
        }
    }
}

/// Persistent sessions: `OFFLINE_SESSIONS` subscribers (clean session 0) subscribe at QoS 1 and
/// go offline; one publisher sends `messages` QoS 1 messages, each queued for all of them, at
/// most `ACK_WINDOW` unacknowledged (`msgs_per_s`: acknowledged publishes per second). Then they
/// come back and drain their queues (`drain_ms`: from the first reconnect to the last message);
/// `lost`/`dup` count what did not arrive or arrived twice.
async fn offline(args: &Args) -> Result<Outcome> {
    let epoch = Instant::now();
    let tally = Tally::new(epoch)?;
    let prefix = format!("offline-{}", std::process::id());
    let id = |i: usize| format!("{prefix}-sub-{i}");
    let started = queue_for_offline(args, &prefix, OFFLINE_SESSIONS, epoch).await?;
    let published = started.elapsed().max(Duration::from_millis(1));
    let drain_start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..OFFLINE_SESSIONS {
        let c = Client::connect_with(&args.host, args.port, &id(i), false).await?;
        let tally = Arc::clone(&tally);
        tasks.push(tokio::spawn(receive(c, tally, None)));
    }
    let expected = args.messages * OFFLINE_SESSIONS as u64;
    drain(&tally, expected).await?;
    let drain_ms = tally
        .last_delivery()
        .saturating_duration_since(drain_start)
        .as_millis() as u64;
    for t in tasks {
        t.abort();
    }
    let mut o = tally.outcome(args.messages as f64 / published.as_secs_f64(), expected);
    o.drain_ms = drain_ms;
    Ok(o)
}

/// The first half of `offline`, for a broker to be killed in between: queues `messages` QoS 1
/// messages for `OFFLINE_SESSIONS` offline persistent sessions named after `--prefix`.
async fn queue(args: &Args) -> Result<Outcome> {
    let prefix = args.prefix.clone().context("--prefix is required")?;
    let started = queue_for_offline(args, &prefix, OFFLINE_SESSIONS, Instant::now()).await?;
    Ok(Outcome {
        msgs_per_s: args.messages as f64 / started.elapsed().as_secs_f64(),
        ..Outcome::default()
    })
}

/// The second half: the sessions of `--prefix` come back and receive what is queued for them
/// (until all `messages` each arrived, or nothing came for 5 s); `lost` counts what did not.
async fn drain_sessions(args: &Args) -> Result<Outcome> {
    let prefix = args.prefix.clone().context("--prefix is required")?;
    let epoch = Instant::now();
    let tally = Tally::new(epoch)?;
    let mut tasks = Vec::new();
    for i in 0..OFFLINE_SESSIONS {
        let id = format!("{prefix}-sub-{i}");
        let c = Client::connect_with(&args.host, args.port, &id, false).await?;
        tasks.push(tokio::spawn(receive(c, Arc::clone(&tally), None)));
    }
    let expected = args.messages * OFFLINE_SESSIONS as u64;
    drain(&tally, expected).await?;
    for t in tasks {
        t.abort();
    }
    let mut o = tally.outcome(0.0, expected);
    o.drain_ms = tally
        .last_delivery()
        .saturating_duration_since(epoch)
        .as_millis() as u64;
    Ok(o)
}

/// `sessions` persistent sessions `{prefix}-sub-{i}` subscribe at QoS 1 to `bench/{prefix}`
/// and go offline; then one publisher sends `messages` QoS 1 messages there (each queued for
/// every session), at most `ACK_WINDOW` unacknowledged. Returns when publishing started.
async fn queue_for_offline(
    args: &Args,
    prefix: &str,
    sessions: usize,
    epoch: Instant,
) -> Result<Instant> {
    let topic = format!("bench/{prefix}");
    for i in 0..sessions {
        let id = format!("{prefix}-sub-{i}");
        let mut c = Client::connect_with(&args.host, args.port, &id, false).await?;
        c.subscribe(&topic, 1).await?;
        c.disconnect().await?;
    }
    publish_backlog(args, prefix, &topic, args.messages, epoch).await
}

/// One publisher sends `messages` QoS 1 messages to `topic`, at most `ACK_WINDOW`
/// unacknowledged and with no end-to-end window (nobody may be receiving yet). Returns when
/// publishing started.
async fn publish_backlog(
    args: &Args,
    prefix: &str,
    topic: &str,
    messages: u64,
    epoch: Instant,
) -> Result<Instant> {
    let unlimited = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
    let publishers = Publishers {
        count: 1,
        per_pub: messages,
        qos: 1,
        epoch,
        prefix,
    };
    publish_all(
        args,
        publishers,
        |_| topic.to_string(),
        |_| vec![Arc::clone(&unlimited)],
    )
    .await
}

/// Fills a broker for the restart measurement: `connections` persistent sessions subscribe at
/// QoS 1 to one topic and go offline, then `messages` QoS 1 messages are published to it (each
/// queued for every session) and `retained` retained messages on topics of their own.
async fn fill(args: &Args) -> Result<Outcome> {
    let epoch = Instant::now();
    let prefix = format!("fill-{}", std::process::id());
    let started = queue_for_offline(args, &prefix, args.connections, epoch).await?;
    let mut c = Client::connect(&args.host, args.port, &format!("{prefix}-retain")).await?;
    for i in 0..args.retained {
        let payload = client::make_payload(0, i, epoch, args.payload);
        c.publish_retained(&format!("retained/{prefix}/{i}"), &payload)
            .await?;
        if i % 1000 == 999 {
            c.flush().await?;
        }
    }
    // A QoS 1 retained message last: its PUBACK comes once everything before it is stored
    // (the store commits in order), so the broker can be killed right after.
    let payload = client::make_payload(0, args.retained, epoch, args.payload);
    c.publish_with_flags(&format!("retained/{prefix}/last"), 0x03, &payload)
        .await?;
    c.flush().await?;
    loop {
        match c.next().await? {
            Incoming::Other => break,
            Incoming::Closed => bail!("closed before the last PUBACK"),
            Incoming::Publish { .. } => {}
        }
    }
    c.disconnect().await?;
    Ok(Outcome {
        msgs_per_s: args.messages as f64 / started.elapsed().as_secs_f64(),
        ..Outcome::default()
    })
}

async fn idle(args: &Args) -> Result<Outcome> {
    let start = Instant::now();
    // At most 64 handshakes at once: below both brokers' listen backlogs (Mosquitto 100), so the
    // rate measures connection handling, not SYN retransmission after a full backlog.
    let gate = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::new();
    for i in 0..args.connections {
        let gate = Arc::clone(&gate);
        let (host, port) = (args.host.clone(), args.port);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            Client::connect(&host, port, &format!("idle-{}-{i}", std::process::id())).await
        }));
    }
    let mut clients = Vec::with_capacity(tasks.len());
    for t in tasks {
        clients.push(t.await?.context("idle connection")?);
    }
    let rate = clients.len() as f64 / start.elapsed().as_secs_f64();
    // Print first, then hold: the script reads the broker's memory while they are open.
    print_result(
        args,
        &Outcome {
            conn_per_s: rate,
            ..Outcome::default()
        },
    );
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    drop(clients);
    Ok(Outcome {
        conn_per_s: rate,
        ..Outcome::default()
    })
}

/// One client subscribes to `--subscriptions` device topics (`dev/N/up`, 500 per SUBSCRIBE,
/// as a gateway or backend does), then holds them while the script reads the broker's memory.
/// Its rate (msgs_per_s) is subscriptions granted per second.
async fn subs(args: &Args) -> Result<()> {
    let mut c = Client::connect(
        &args.host,
        args.port,
        &format!("subs-{}", std::process::id()),
    )
    .await?;
    let start = Instant::now();
    let filters: Vec<String> = (0..args.subscriptions)
        .map(|i| format!("dev/{i}/up"))
        .collect();
    for (n, chunk) in filters.chunks(500).enumerate() {
        c.subscribe_many((n % 65_535) as u16 + 1, chunk, 1).await?;
    }
    let outcome = Outcome {
        msgs_per_s: args.subscriptions as f64 / start.elapsed().as_secs_f64(),
        ..Outcome::default()
    };
    print_result(args, &outcome);
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    c.disconnect().await
}

fn print_result(args: &Args, o: &Outcome) {
    println!(
        "RESULT scenario={} msgs_per_s={:.0} p50_us={} p99_us={} lost={} dup={} conn_per_s={:.0} drain_ms={}",
        args.scenario, o.msgs_per_s, o.p50_us, o.p99_us, o.lost, o.dup, o.conn_per_s, o.drain_ms
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.payload < client::HEADER_LEN {
        bail!("--payload must be at least {}", client::HEADER_LEN);
    }
    if let Some(ca) = &args.cafile {
        client::use_tls(ca)?;
    }
    match args.mqtt.as_str() {
        "3.1.1" | "4" => {
            if args.receive_maximum.is_some() {
                bail!("--receive-maximum needs --mqtt 5");
            }
        }
        "5" | "5.0" => client::use_mqtt5(args.receive_maximum),
        other => bail!("--mqtt {other}: 3.1.1 or 5"),
    }
    if args.qos.is_some_and(|q| q > 2) {
        bail!("--qos must be 0, 1 or 2");
    }
    // Storms and idle fleets open thousands of sockets: the soft limit is often 1024.
    tern::fds::raise_nofile().context("raising RLIMIT_NOFILE")?;
    if args.scenario == "connect-storm" {
        // Its own runtimes (the pair's apart from the storm's), on a thread outside this one.
        let s = std::thread::scope(|scope| scope.spawn(|| storm::connect_storm(&args)).join())
            .map_err(|_| anyhow::anyhow!("connect-storm panicked"))??;
        println!(
            "STORM clients={} connected={} refused={} failed={} storm_s={:.2} idle_p50_us={} idle_p99_us={} storm_p50_us={} storm_p99_us={} p99_ratio={:.2} lost={}",
            args.connections, s.connected, s.refused, s.failed, s.storm_secs, s.idle_p50_us,
            s.idle_p99_us, s.storm_p50_us, s.storm_p99_us,
            s.storm_p99_us as f64 / s.idle_p99_us.max(1) as f64, s.lost
        );
        let outcome = Outcome {
            p50_us: s.storm_p50_us,
            p99_us: s.storm_p99_us,
            lost: s.lost,
            conn_per_s: s.connected as f64 / s.storm_secs,
            ..Outcome::default()
        };
        print_result(&args, &outcome);
        if s.lost > 0 {
            bail!("{} lost", s.lost);
        }
        return Ok(());
    }
    // --publishers, --subscribers and --qos replace a scenario's own numbers.
    let pubs = |n: usize| args.publishers.unwrap_or(n);
    let subs_n = |n: usize| args.subscribers.unwrap_or(n);
    let pairs = args.publishers.or(args.subscribers).unwrap_or(100);
    let qos = |q: u8| args.qos.unwrap_or(q);
    let outcome = match args.scenario.as_str() {
        "fan-in" => throughput(&args, pubs(8), subs_n(1), Shape::All, qos(0)).await?,
        "fan-out" => throughput(&args, pubs(1), subs_n(200), Shape::All, qos(0)).await?,
        "fan-in-qos1" => throughput(&args, pubs(8), subs_n(1), Shape::All, qos(1)).await?,
        "pairs-qos0" => throughput(&args, pairs, pairs, Shape::Pairs, qos(0)).await?,
        "pairs-qos1" => throughput(&args, pairs, pairs, Shape::Pairs, qos(1)).await?,
        // 100 publishers to one shared-subscription group of 5 QoS 1 workers.
        "shared-qos1" => throughput(&args, pubs(100), subs_n(5), Shape::Shared, qos(1)).await?,
        "offline-drain" => offline_drain(&args).await?,
        // --messages QoS 1 jobs waiting (run.sh: 100,000), then 5 QoS 1 workers drain them.
        "queue-drain" => jobs::queue_drain(&args).await?,
        "latency" => latency(&args).await?,
        // The clients of a `connect-storm`, run by it in a child process.
        "storm-clients" => return storm::storm_clients(&args).await,
        "idle" => return idle(&args).await.map(|_| ()),
        "subs" => return subs(&args).await,
        "offline" => offline(&args).await?,
        "fill" => fill(&args).await?,
        "queue" => queue(&args).await?,
        "publish" => publish(&args).await?,
        "collect" => collect(&args).await?,
        "await-received" => await_received(&args).await?,
        "drain" => drain_sessions(&args).await?,
        // The outbound window: one session drains its queue; a subscriber on a slow link.
        "drain-one" => window::drain_one(&args).await?,
        "slow-link" => window::slow_link(&args).await?,
        // Cluster: the subscribers' node killed halfway; sessions resumed on a survivor.
        "failover" => failover::failover(&args).await?,
        other => bail!("unknown scenario {other}"),
    };
    print_result(&args, &outcome);
    if outcome.lost > 0 || outcome.dup > 0 {
        bail!("{} lost, {} duplicated", outcome.lost, outcome.dup);
    }
    Ok(())
}
