//! The scenarios that build or take in a backlog across processes, for `benches/bridge.sh`:
//! `publish` (a backlog with every message acknowledged), `collect` (its receiving end, checked
//! for order and duplicates) and `await-received` (watch a Tern broker take it in through its
//! metrics).

use super::*;

/// One publisher sends `messages` QoS 1 messages to `bench/{prefix}` (at most `ACK_WINDOW`
/// unacknowledged) and returns once every one is acknowledged: a backlog for whatever
/// subscribes elsewhere (`benches/bridge.sh` fills a bridge's queue with it). Unlike
/// `mosquitto_pub -l`, which may disconnect with messages still unsent, every message is sent.
pub async fn publish(args: &Args) -> Result<Outcome> {
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| format!("publish-{}", std::process::id()));
    let topic = format!("bench/{prefix}");
    let unlimited = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
    let publishers = Publishers {
        count: 1,
        per_pub: args.messages,
        qos: 1,
        epoch: Instant::now(),
        prefix: &prefix,
    };
    let started = publish_all(
        args,
        publishers,
        |_| topic.clone(),
        |_| vec![Arc::clone(&unlimited)],
    )
    .await?;
    Ok(Outcome {
        msgs_per_s: args.messages as f64 / started.elapsed().as_secs_f64(),
        ..Outcome::default()
    })
}

/// One QoS 1 subscriber to `bench/#` receives until `messages` messages arrived, checking
/// order and duplicates per publisher: the receiving end of a backlog built elsewhere
/// (`benches/bridge.sh`). Without `--prefix` it subscribes, prints `READY` and receives. With
/// `--prefix P` its session `P-collect` is persistent: `--subscribe-only` subscribes, prints
/// `READY` and leaves (messages queue for it); without, it comes back (no new SUBSCRIBE, which
/// would race what is queued) and receives. It acknowledges each burst in one write. Waits up
/// to 5 minutes for the first message, then gives up after 10 s without one.
pub async fn collect(args: &Args) -> Result<Outcome> {
    let epoch = Instant::now();
    let tally = Tally::new(epoch)?;
    let c = match &args.prefix {
        None => {
            let id = format!("collect-{}", std::process::id());
            let mut c = Client::connect(&args.host, args.port, &id).await?;
            c.subscribe("bench/#", 1).await?;
            println!("READY");
            c
        }
        Some(prefix) => {
            let id = format!("{prefix}-collect");
            let mut c = Client::connect_with(&args.host, args.port, &id, false).await?;
            if args.subscribe_only {
                c.subscribe("bench/#", 1).await?;
                c.disconnect().await?;
                println!("READY");
                return Ok(Outcome::default());
            }
            c
        }
    };
    let task = tokio::spawn(receive_with(c, Arc::clone(&tally), None, true));
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut last, mut stalled) = (0, Instant::now());
    loop {
        let got = tally.received.load(Ordering::Relaxed) + tally.gaps.load(Ordering::Relaxed);
        if got >= args.messages {
            break;
        }
        if got != last {
            (last, stalled) = (got, Instant::now());
        } else if (last > 0 && stalled.elapsed() > Duration::from_secs(10))
            || Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    task.abort();
    Ok(tally.outcome(0.0, args.messages))
}

/// The value of Tern's `tern_messages_received_total` (every QoS) from its HTTP listener on
/// `port`; `None` if it does not answer within 100 ms (e.g. stopped with SIGSTOP).
async fn tern_received(port: u16) -> Option<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let scrape = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: tern\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).await.ok()?;
        let total: f64 = body
            .lines()
            .filter(|l| l.starts_with("tern_messages_received_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        Some(total as u64)
    };
    tokio::time::timeout(Duration::from_millis(100), scrape)
        .await
        .ok()
        .flatten()
}

/// Reads a Tern broker's received-message count (HTTP on `--http-port`), prints `READY`, then
/// scrapes every 2 ms until it grew by `messages` (or 5 minutes passed; `lost` counts what
/// is missing): when a cloud has taken in a backlog from a bridge.
pub async fn await_received(args: &Args) -> Result<Outcome> {
    let port = args.http_port.context("--http-port is required")?;
    let base = tern_received(port)
        .await
        .context("no metrics from --http-port")?;
    println!("READY");
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut now = base;
    while now < base + args.messages && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
        now = tern_received(port).await.unwrap_or(now);
    }
    Ok(Outcome {
        lost: (base + args.messages).saturating_sub(now),
        ..Outcome::default()
    })
}
