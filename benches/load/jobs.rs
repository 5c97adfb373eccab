//! `queue-drain`: a backlog of QoS 1 jobs waits in the broker, then `WORKERS` QoS 1 workers
//! connect and drain it. How the broker holds the jobs depends on what it has:
//!
//! - `--queue NAME` (Tern): a declared queue whose filter takes `bench/jobs/#`. The jobs are
//!   published first; then the workers connect with clean sessions and subscribe to
//!   `$queue/NAME`, and the queue hands each job to one of them.
//! - without (any broker, e.g. Mosquitto): a `$share/jobs/bench/jobs/#` group of `WORKERS`
//!   persistent sessions (clean session 0). Each worker subscribes and leaves; the jobs are
//!   published and queued in the offline members' sessions (Mosquitto 2.0 deals them out round
//!   robin at publish time, so each member holds its share); then the workers come back with the
//!   same client ids and drain their sessions.
//!
//! Each job carries its number (0..messages) in its payload; every delivery is checked off
//! against one set for all the workers, so a job lost, delivered twice, or delivered to two
//! workers is counted. `msgs_per_s`: jobs received and acknowledged per second, from the
//! moment the workers start connecting to the last acknowledgement. Latency: from the start of
//! the receiving worker's connect (all start at once) to the job's acknowledgement, i.e. how
//! long a job waited once there was a worker to take it; the time it waited before that
//! (publishing the backlog) is left out, as it says nothing about the broker.

use super::*;

/// Workers that drain the jobs.
const WORKERS: usize = 5;
/// What the jobs are published under; Tern's declared queue in `benches/run.sh` has this filter.
const JOBS_FILTER: &str = "bench/jobs/#";

/// The jobs checked off, one bit each, for all the workers.
struct Seen(Vec<AtomicU64>);

impl Seen {
    /// Checks off job `n`: false if it was already checked off or is not a job.
    fn check_off(&self, n: u64) -> bool {
        let Some(word) = self.0.get((n / 64) as usize) else {
            return false;
        };
        let bit = 1u64 << (n % 64);
        word.fetch_or(bit, Ordering::Relaxed) & bit == 0
    }
}

/// The `queue-drain` scenario (see the module comment): `--messages` jobs, `WORKERS` workers.
pub async fn queue_drain(args: &Args) -> Result<Outcome> {
    let jobs = args.messages;
    let epoch = Instant::now();
    let tally = Tally::new(epoch)?;
    let prefix = format!("queue-drain-{}", std::process::id());
    let worker_id = |i: usize| format!("{prefix}-worker-{i}");
    let group = format!("$share/jobs/{JOBS_FILTER}");
    if args.queue.is_none() {
        // The group's members, offline with their subscription before any job exists.
        for i in 0..WORKERS {
            let mut c = Client::connect_with(&args.host, args.port, &worker_id(i), false).await?;
            c.subscribe(&group, 1).await?;
            c.disconnect_and_wait().await?;
        }
    }
    // The backlog: one QoS 1 publisher, at most ACK_WINDOW unacknowledged, every job
    // acknowledged before any worker starts.
    let topic = format!("bench/jobs/{prefix}");
    publish_backlog(args, &prefix, &topic, jobs, epoch).await?;

    let seen = Arc::new(Seen(
        (0..jobs.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
    ));
    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..WORKERS).map(|_| AtomicU64::new(0)).collect());
    let drain_start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..WORKERS {
        let (host, port, id) = (args.host.clone(), args.port, worker_id(i));
        let queue = args.queue.clone();
        let (tally, seen, counts) = (Arc::clone(&tally), Arc::clone(&seen), Arc::clone(&counts));
        tasks.push(tokio::spawn(async move {
            let start = tally.epoch.elapsed().as_nanos() as u64;
            let c = match queue {
                Some(name) => {
                    let mut c = Client::connect(&host, port, &id).await?;
                    c.subscribe(&format!("$queue/{name}"), 1).await?;
                    c
                }
                // Back to the persistent session and what it holds (no new SUBSCRIBE).
                None => Client::connect_with(&host, port, &id, false).await?,
            };
            work(c, &tally, &seen, &counts[i], start).await
        }));
    }
    drain(&tally, jobs).await?;
    let elapsed = tally
        .last_delivery()
        .saturating_duration_since(drain_start)
        .max(Duration::from_millis(1));
    for (i, t) in tasks.into_iter().enumerate() {
        t.abort();
        if let Ok(Err(e)) = t.await {
            eprintln!("queue-drain worker {i}: {e:#}");
        }
    }
    let counts: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    eprintln!("queue-drain: deliveries per worker {counts:?}");
    if args.queue.is_none() {
        // End the persistent sessions (clean session 1 discards them), so the group does not
        // keep members that take a share of a later run's jobs.
        for i in 0..WORKERS {
            let c = Client::connect(&args.host, args.port, &worker_id(i)).await?;
            c.disconnect_and_wait().await?;
        }
    }
    let received = tally.received.load(Ordering::Relaxed);
    Ok(tally.outcome(received as f64 / elapsed.as_secs_f64(), jobs))
}

/// A worker's receive loop: acknowledges each job at once, counts it in `count`, checks it off
/// and records how long after `start` (ns after the epoch) it was acknowledged.
async fn work(
    mut c: Client,
    tally: &Tally,
    seen: &Seen,
    count: &AtomicU64,
    start: u64,
) -> Result<()> {
    loop {
        match c.next().await? {
            Incoming::Publish { pkid, payload, .. } => {
                count.fetch_add(1, Ordering::Relaxed);
                if let Some(id) = pkid {
                    c.puback(id).await?;
                }
                let first = client::parse_payload(&payload)
                    .map(|(_, seq, _)| seen.check_off(seq))
                    .unwrap_or(false);
                if !first {
                    tally.dup.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                tally.received.fetch_add(1, Ordering::Relaxed);
                let now = tally.epoch.elapsed().as_nanos() as u64;
                tally.last.fetch_max(now, Ordering::Relaxed);
                let us = now.saturating_sub(start) / 1000;
                let _ = tally.latency.lock().record(us.max(1));
            }
            Incoming::Closed => return Ok(()),
            Incoming::Other => {}
        }
    }
}
