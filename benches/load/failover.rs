//! `failover`: persistent subscribers (clean session 0, QoS 1) on one node of a Tern cluster
//! (`--sub-port`), one QoS 1 publisher on another (`--port`). Halfway through, the subscribers'
//! node is killed (`kill -9 --kill-pid`) and every subscriber connects to a survivor
//! (`--failover-port`), where it must find its session (Session Present) and, from there,
//! every message the publisher had acknowledged. Reports how long after the kill the sessions
//! were resumed (median and slowest) and how many acknowledged messages any subscriber never
//! got (must be 0; QoS 1 may bring duplicates, which are counted, not refused).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use parking_lot::Mutex;

use crate::client::{make_payload, parse_payload, Client, Incoming};
use crate::{Args, Outcome};

/// Messages the publisher has in flight.
const WINDOW: usize = 16;
/// How long the subscribers may take, after the last acknowledgement, to have everything.
const SETTLE: Duration = Duration::from_secs(60);

struct Shared {
    /// When the node was killed.
    killed: Mutex<Option<Instant>>,
    subs: Vec<Mutex<Seen>>,
}

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    /// Sequences received.
    got: HashSet<u64>,
    /// Deliveries of a sequence already received.
    dup: u64,
    /// How long after the kill it had its session back.
    resumed: Option<Duration>,
}

pub async fn failover(args: &Args) -> Result<Outcome> {
    let failover_port = args.failover_port.context("--failover-port")?;
    let kill_pid = args.kill_pid.context("--kill-pid")?;
    let sub_port = args.sub_port.context("--sub-port")?;
    let subscribers = args.connections.min(1000);
    let prefix = format!("fo-{}", std::process::id());
    let topic = format!("{prefix}/data");
    let shared = Arc::new(Shared {
        killed: Mutex::new(None),
        subs: (0..subscribers).map(|_| Mutex::default()).collect(),
    });
    let mut tasks = Vec::new();
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for i in 0..subscribers {
        let id = format!("{prefix}-s{i}");
        let mut c = Client::connect_with(&args.host, sub_port, &id, false).await?;
        c.subscribe(&format!("{prefix}/#"), 1).await?;
        let (shared, host, finished) = (
            Arc::clone(&shared),
            args.host.clone(),
            Arc::clone(&finished),
        );
        tasks.push(tokio::spawn(async move {
            subscriber(c, i, &id, &host, failover_port, &shared, &finished).await
        }));
    }
    // The publisher: QoS 1, WINDOW in flight; PUBACKs come back in order.
    let mut p = Client::connect(&args.host, args.port, &format!("{prefix}-p")).await?;
    let epoch = Instant::now();
    let mut outstanding = std::collections::VecDeque::new();
    let mut acked: Vec<u64> = Vec::with_capacity(args.messages as usize);
    let started = Instant::now();
    for seq in 0..args.messages {
        if seq == args.messages / 2 {
            let status = std::process::Command::new("kill")
                .args(["-9", &kill_pid.to_string()])
                .status()?;
            if !status.success() {
                bail!("kill -9 {kill_pid} failed");
            }
            *shared.killed.lock() = Some(Instant::now());
        }
        p.publish(&topic, 1, &make_payload(0, seq, epoch, args.payload))
            .await?;
        p.flush().await?;
        outstanding.push_back(seq);
        while outstanding.len() >= WINDOW {
            match p.next().await? {
                Incoming::Other => acked.extend(outstanding.pop_front()),
                Incoming::Closed => bail!("the publisher's node closed its connection"),
                Incoming::Publish { .. } => {}
            }
        }
    }
    while !outstanding.is_empty() {
        match p.next().await? {
            Incoming::Other => acked.extend(outstanding.pop_front()),
            Incoming::Closed => bail!("the publisher's node closed its connection"),
            Incoming::Publish { .. } => {}
        }
    }
    let msgs_per_s = acked.len() as f64 / started.elapsed().as_secs_f64();
    let deadline = Instant::now() + SETTLE;
    loop {
        let all = shared
            .subs
            .iter()
            .all(|s| acked.iter().all(|seq| s.lock().got.contains(seq)));
        if all || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    finished.store(true, std::sync::atomic::Ordering::Release);
    for t in tasks {
        let _ = t.await;
    }
    let mut lost = 0;
    let mut dup = 0;
    let mut resumed: Vec<Duration> = Vec::new();
    for s in &shared.subs {
        let s = s.lock();
        lost += acked.iter().filter(|seq| !s.got.contains(seq)).count() as u64;
        dup += s.dup;
        match s.resumed {
            Some(d) => resumed.push(d),
            None => bail!("a subscriber never resumed its session"),
        }
    }
    resumed.sort();
    let p50 = resumed[resumed.len() / 2];
    let max = resumed[resumed.len() - 1];
    println!(
        "FAILOVER subscribers={subscribers} acked={} resumed_p50_ms={} resumed_max_ms={} lost={lost} duplicates={dup}",
        acked.len(),
        p50.as_millis(),
        max.as_millis()
    );
    Ok(Outcome {
        msgs_per_s,
        p50_us: p50.as_micros() as u64,
        p99_us: max.as_micros() as u64,
        lost,
        ..Outcome::default()
    })
}

/// Receives (acknowledging) until `finished`; when its node dies, connects to the survivor,
/// which must have its session.
async fn subscriber(
    mut c: Client,
    i: usize,
    id: &str,
    host: &str,
    failover_port: u16,
    shared: &Shared,
    finished: &std::sync::atomic::AtomicBool,
) -> Result<()> {
    let mut moved = false;
    loop {
        if finished.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let next = tokio::time::timeout(Duration::from_millis(200), c.next()).await;
        match next {
            Err(_) => {}
            Ok(Ok(Incoming::Publish { pkid, payload, .. })) => {
                if let Some(pkid) = pkid {
                    c.puback_batched(pkid).await.ok();
                }
                if let Some((_, seq, _)) = parse_payload(&payload) {
                    let mut s = shared.subs[i].lock();
                    if !s.got.insert(seq) {
                        s.dup += 1;
                    }
                }
            }
            Ok(Ok(Incoming::Other)) => {}
            Ok(Ok(Incoming::Closed)) | Ok(Err(_)) => {
                if moved {
                    bail!("{id}: lost its connection a second time");
                }
                moved = true;
                let (client, present) = loop {
                    match Client::connect_session(host, failover_port, id, false).await {
                        Ok(ok) => break ok,
                        // Refused while the survivor takes over, say: again.
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                };
                if !present {
                    bail!("{id}: no session on the survivor");
                }
                let since = shared.killed.lock().map(|k| k.elapsed());
                shared.subs[i].lock().resumed = since;
                c = client;
            }
        }
    }
}
