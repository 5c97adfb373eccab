//! The outbound window's scenarios: `drain-one` (one persistent session drains its queue: does
//! a large window cost anything per message?) and `slow-link` (one QoS 1 subscriber behind a
//! slow link: what does a window buy there?).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tokio::sync::{mpsc, Semaphore};

use super::{drain, queue_for_offline, receive, Args, Outcome, Tally};
use crate::client::{Client, Incoming};

/// One persistent session subscribes at QoS 1 and goes offline; `--messages` QoS 1 messages are
/// queued for it; then it comes back and drains them, acknowledging each at once.
/// `msgs_per_s`: messages drained per second, from its CONNECT to the last message.
pub async fn drain_one(args: &Args) -> Result<Outcome> {
    let epoch = Instant::now();
    let tally = Tally::new(epoch)?;
    let prefix = format!("drain-one-{}", std::process::id());
    queue_for_offline(args, &prefix, 1, epoch).await?;
    let start = Instant::now();
    let c = Client::connect_with(&args.host, args.port, &format!("{prefix}-sub-0"), false).await?;
    let task = tokio::spawn(receive(c, Arc::clone(&tally), None));
    drain(&tally, args.messages).await?;
    task.abort();
    let (mut o, took) = tally.rate_since(start, args.messages);
    o.drain_ms = took.as_millis() as u64;
    Ok(o)
}

/// A QoS 1 subscriber on a slow link: each PUBACK leaves `--ack-delay-ms` after its PUBLISH
/// arrived (the link's round trip), and it reads at most `--read-bytes-per-s` (0: no cap).
/// One publisher sends `--messages` QoS 1 messages to it, at most `--messages` ahead (the
/// broker queues what the window holds back: set `max_queued_messages` above `--messages`).
/// `msgs_per_s`: messages received per second, first to last; a `SLOW held_max=` line: the
/// most messages the subscriber held at once (received, PUBACK not yet sent).
pub async fn slow_link(args: &Args) -> Result<Outcome> {
    let epoch = Instant::now();
    let tally = Tally::new(epoch)?;
    let prefix = format!("slow-{}", std::process::id());
    let topic = format!("bench/{prefix}");
    let mut sub = Client::connect(&args.host, args.port, &format!("{prefix}-sub-0")).await?;
    sub.subscribe(&topic, 1).await?;
    let (mut reader, mut writer) = sub.into_split();
    let delay = Duration::from_millis(args.ack_delay_ms);
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, u16)>();
    // Messages the device holds: received, not yet acknowledged; and the most at once.
    let held = Arc::new(AtomicU64::new(0));
    let held_max = Arc::new(AtomicU64::new(0));
    let acked = Arc::clone(&held);
    let acker = tokio::spawn(async move {
        while let Some((due, pkid)) = rx.recv().await {
            tokio::time::sleep_until(due.into()).await;
            writer.queue_puback(pkid);
            let mut n = 1;
            while let Ok((due, pkid)) = rx.try_recv() {
                if due > Instant::now() {
                    writer.flush().await?;
                    acked.fetch_sub(n, Ordering::Relaxed);
                    n = 0;
                    tokio::time::sleep_until(due.into()).await;
                }
                writer.queue_puback(pkid);
                n += 1;
            }
            writer.flush().await?;
            acked.fetch_sub(n, Ordering::Relaxed);
        }
        anyhow::Ok(())
    });
    let (holding, most) = (Arc::clone(&held), Arc::clone(&held_max));
    let rate = args.read_bytes_per_s;
    let t = Arc::clone(&tally);
    let reading = tokio::spawn(async move {
        let mut order = super::Order(Vec::new());
        let (started, mut bytes) = (Instant::now(), 0u64);
        loop {
            match reader.next().await? {
                Incoming::Publish { pkid, payload, .. } => {
                    if let Some(pkid) = pkid {
                        let now = holding.fetch_add(1, Ordering::Relaxed) + 1;
                        most.fetch_max(now, Ordering::Relaxed);
                        let _ = tx.send((Instant::now() + delay, pkid));
                    }
                    order.check(&t, &payload);
                    if rate > 0 {
                        bytes += payload.len() as u64 + topic_overhead();
                        let due = started + Duration::from_secs_f64(bytes as f64 / rate as f64);
                        tokio::time::sleep_until(due.into()).await;
                    }
                }
                Incoming::Closed => return anyhow::Ok(()),
                Incoming::Other => {}
            }
        }
    });
    let unlimited = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
    let publishers = super::Publishers {
        count: 1,
        per_pub: args.messages,
        qos: 1,
        epoch,
        prefix: &prefix,
    };
    let started = super::publish_all(
        args,
        publishers,
        |_| topic.clone(),
        |_| vec![Arc::clone(&unlimited)],
    )
    .await?;
    drain(&tally, args.messages).await?;
    reading.abort();
    acker.abort();
    let secs = tally
        .last_delivery()
        .saturating_duration_since(started)
        .as_secs_f64();
    if secs <= 0.0 {
        bail!("nothing received");
    }
    println!("SLOW held_max={}", held_max.load(Ordering::Relaxed));
    Ok(tally.outcome(args.messages as f64 / secs, args.messages))
}

/// Bytes a PUBLISH carries besides its payload here (fixed header, topic, packet id): counted
/// against the read rate.
fn topic_overhead() -> u64 {
    32
}
