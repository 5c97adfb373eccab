//! `connect-storm`: does a reconnect storm starve the clients already connected? A pair (one
//! QoS 1 publisher at a fixed rate, one QoS 1 subscriber) measures end-to-end latency while idle,
//! then while `--connections` clients connect as fast as `--storm-concurrency` lets them
//! (CONNECT, CONNACK, DISCONNECT; with `--hold`, they stay connected until the storm is over). A
//! client refused (CONNACK 0x03, e.g. over `max_connect_rate`) or not answered retries after an
//! exponential backoff with full jitter (0-1 s, then 0-2 s, … up to 0-16 s), as device SDKs
//! (AWS IoT, Azure IoT, paho's reconnect) do. The storm's clients run in a child process at the
//! lowest CPU priority, so that on one machine their own work does not come out of the broker's
//! CPU (remote devices' does not); the pair runs on a runtime and thread of its own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::client::{self, Client, Incoming};
use crate::Args;

/// Messages per second the pair exchanges.
const PAIR_RATE: u64 = 500;
/// How long the idle latency is measured before the storm.
const IDLE: Duration = Duration::from_secs(5);
/// A refused client's first wait before it retries, at most (full jitter: 0 to this).
const FIRST_BACKOFF_MS: u64 = 1_000;
/// Its longest wait: the bound doubles after each refusal up to this.
const MAX_BACKOFF_MS: u64 = 16_000;

/// What the storm did and what the pair saw.
pub struct Storm {
    pub idle_p50_us: u64,
    pub idle_p99_us: u64,
    pub storm_p50_us: u64,
    pub storm_p99_us: u64,
    pub storm_secs: f64,
    pub connected: u64,
    pub refused: u64,
    pub failed: u64,
    pub lost: u64,
}

/// Latencies of the pair, split by phase.
struct Phases {
    storming: AtomicBool,
    idle: parking_lot::Mutex<Histogram<u64>>,
    storm: parking_lot::Mutex<Histogram<u64>>,
    received: AtomicU64,
}

pub fn connect_storm(args: &Args) -> Result<Storm> {
    let phases = Arc::new(Phases {
        storming: AtomicBool::new(false),
        idle: parking_lot::Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        storm: parking_lot::Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        received: AtomicU64::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (host, port) = (args.host.clone(), args.port);
    // The pair: its own thread and runtime.
    let pair = {
        let (phases, stop) = (Arc::clone(&phases), Arc::clone(&stop));
        std::thread::spawn(move || -> Result<u64> {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(run_pair(host, port, phases, stop))
        })
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let storm = runtime.block_on(async {
        // Warm up, then measure idle.
        tokio::time::sleep(Duration::from_secs(1)).await;
        phases.idle.lock().reset();
        tokio::time::sleep(IDLE).await;
        phases.storming.store(true, Ordering::Release);
        let started = Instant::now();
        let counts = storm_process(args).await;
        let secs = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Release);
        anyhow::Ok((counts?, secs))
    });
    let sent = pair
        .join()
        .map_err(|_| anyhow::anyhow!("pair panicked"))??;
    let ((connected, refused, failed), storm_secs) = storm?;
    let idle = phases.idle.lock();
    let during = phases.storm.lock();
    Ok(Storm {
        idle_p50_us: idle.value_at_quantile(0.5),
        idle_p99_us: idle.value_at_quantile(0.99),
        storm_p50_us: during.value_at_quantile(0.5),
        storm_p99_us: during.value_at_quantile(0.99),
        storm_secs,
        connected,
        refused,
        failed,
        lost: sent.saturating_sub(phases.received.load(Ordering::Relaxed)),
    })
}

/// Publishes QoS 1 at [`PAIR_RATE`] until `stop`, recording each delivery's latency in the
/// phase it arrived in; returns how many were sent.
async fn run_pair(
    host: String,
    port: u16,
    phases: Arc<Phases>,
    stop: Arc<AtomicBool>,
) -> Result<u64> {
    let prefix = format!("storm-pair-{}", std::process::id());
    let topic = format!("bench/{prefix}");
    let mut sub = Client::connect(&host, port, &format!("{prefix}-sub")).await?;
    sub.subscribe(&topic, 1).await?;
    let epoch = Instant::now();
    let receiver = {
        let phases = Arc::clone(&phases);
        tokio::spawn(async move {
            loop {
                match sub.next().await? {
                    Incoming::Publish { pkid, payload, .. } => {
                        if let Some(id) = pkid {
                            sub.puback(id).await?;
                        }
                        let Some((_, _, sent)) = client::parse_payload(&payload) else {
                            continue;
                        };
                        let now = epoch.elapsed().as_nanos() as u64;
                        let us = (now.saturating_sub(sent) / 1000).max(1);
                        let h = match phases.storming.load(Ordering::Acquire) {
                            false => &phases.idle,
                            true => &phases.storm,
                        };
                        let _ = h.lock().record(us);
                        phases.received.fetch_add(1, Ordering::Relaxed);
                    }
                    Incoming::Closed => return anyhow::Ok(()),
                    Incoming::Other => {}
                }
            }
        })
    };
    let publisher = Client::connect(&host, port, &format!("{prefix}-pub")).await?;
    let (mut acks, mut writer) = publisher.into_split();
    let acker = tokio::spawn(async move { while let Ok(Some(_)) = acks.puback().await {} });
    let start = tokio::time::Instant::now();
    let mut seq = 0;
    while !stop.load(Ordering::Acquire) {
        tokio::time::sleep_until(start + Duration::from_micros(seq * 1_000_000 / PAIR_RATE)).await;
        let payload = client::make_payload(0, seq, epoch, 64);
        writer.publish(&topic, 1, &payload).await?;
        writer.flush().await?;
        seq += 1;
    }
    // The last ones in flight arrive (or count as lost).
    let deadline = Instant::now() + Duration::from_secs(5);
    while phases.received.load(Ordering::Relaxed) < seq && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    receiver.abort();
    acker.abort();
    Ok(seq)
}

/// Runs the storm's clients in a child process (`--scenario storm-clients`) at the lowest CPU
/// priority (`nice -n 19`): on a machine shared by broker and load tool, the clients' own work
/// would otherwise take the broker's CPU, which remote devices do not. Returns its counts.
async fn storm_process(args: &Args) -> Result<(u64, u64, u64)> {
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new("nice");
    cmd.arg("-n")
        .arg("19")
        .arg(exe)
        .args(["--host", &args.host])
        .args(["--port", &args.storm_port.unwrap_or(args.port).to_string()])
        .args(["--scenario", "storm-clients"])
        .args(["--connections", &args.connections.to_string()])
        .args(["--storm-concurrency", &args.storm_concurrency.to_string()]);
    if args.hold {
        cmd.arg("--hold");
    }
    if let (Some(u), Some(p)) = (&args.username, &args.password) {
        cmd.args(["--username", u, "--password", p]);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .context("running the storm's clients")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("CLIENTS "))
        .with_context(|| {
            format!(
                "storm clients failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let field = |name: &str| -> Result<u64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .context("field missing")?
            .parse()
            .context("not a number")
    };
    Ok((field("connected")?, field("refused")?, field("failed")?))
}

/// `storm-clients`: the storm itself, in the child process; prints its counts.
pub async fn storm_clients(args: &Args) -> Result<()> {
    let (connected, refused, failed) = storm(args).await?;
    println!("CLIENTS connected={connected} refused={refused} failed={failed}");
    Ok(())
}

/// Runs the storm: (connected, refusals, connection failures) once every client got in.
async fn storm(args: &Args) -> Result<(u64, u64, u64)> {
    let gate = Arc::new(Semaphore::new(args.storm_concurrency));
    let refused = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let (gate, refused, failed) =
            (Arc::clone(&gate), Arc::clone(&refused), Arc::clone(&failed));
        let (host, port, hold) = (args.host.clone(), args.port, args.hold);
        let login = args.username.clone().zip(args.password.clone());
        let id = format!("storm-{}-{i}", std::process::id());
        tasks.push(tokio::spawn(async move {
            let mut backoff = FIRST_BACKOFF_MS;
            loop {
                let permit = gate.acquire().await?;
                match one_connect(&host, port, &id, login.as_ref(), hold).await {
                    Ok(Some(stream)) => {
                        drop(permit);
                        return anyhow::Ok(hold.then_some(stream));
                    }
                    Ok(None) => refused.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
                drop(permit);
                // Exponential backoff with full jitter, as device SDKs retry.
                let wait = rand::random::<u64>() % backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF_MS);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        }));
    }
    let mut held = Vec::new();
    let mut connected = 0;
    for t in tasks {
        if let Some(s) = t.await?? {
            held.push(s);
        }
        connected += 1;
    }
    drop(held);
    Ok((
        connected,
        refused.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    ))
}

/// One attempt: CONNECT (3.1.1, clean, keep-alive off, `login` if any), CONNACK within 10 s. Accepted: the
/// stream after a DISCONNECT (or, to `hold` it, without one); refused: `None`.
async fn one_connect(
    host: &str,
    port: u16,
    id: &str,
    login: Option<&(String, String)>,
    hold: bool,
) -> Result<Option<TcpStream>> {
    let attempt = async {
        let mut s = TcpStream::connect((host, port)).await?;
        let mut body = Vec::with_capacity(64 + id.len());
        // Clean session, plus user name and password flags with a login.
        let flags = if login.is_some() { 0xC2 } else { 0x02 };
        body.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 0]);
        for field in [
            Some(id),
            login.map(|l| l.0.as_str()),
            login.map(|l| l.1.as_str()),
        ]
        .into_iter()
        .flatten()
        {
            body.extend_from_slice(&(field.len() as u16).to_be_bytes());
            body.extend_from_slice(field.as_bytes());
        }
        if body.len() > 127 {
            bail!("CONNECT over 127 bytes: use a shorter user name or password");
        }
        let mut packet = vec![0x10, body.len() as u8];
        packet.extend_from_slice(&body);
        s.write_all(&packet).await?;
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).await.context("no CONNACK")?;
        if ack[0] != 0x20 {
            bail!("not a CONNACK: {ack:02x?}");
        }
        anyhow::Ok((s, ack[3]))
    };
    let (mut s, code) = tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .context("CONNACK timed out")??;
    if code != 0 {
        return Ok(None);
    }
    if !hold {
        let _ = s.write_all(&[0xE0, 0]).await;
    }
    Ok(Some(s))
}
