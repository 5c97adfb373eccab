//! Graceful shutdown.

use crate::harness::{TestBroker, WAIT};
use crate::wire::*;

/// `stop()` sends every v5 client DISCONNECT 0x8B (Server shutting down) and closes v3 clients
/// without a packet; afterwards no new connection is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_disconnects_v5_with_0x8b_and_closes_v3() {
    let broker = TestBroker::start().await;
    let addr = broker.addr;
    let mut v5a = RawClient::connected(addr, V5, "v5a").await;
    let mut v5b = RawClient::connected(addr, V5, "v5b").await;
    let mut v3 = RawClient::connected(addr, V311, "v3").await;
    let mut v31 = RawClient::connected(addr, V31, "v31").await;
    v5b.subscribe(V5, "s/#", 1).await;

    tokio::time::timeout(WAIT, broker.stop())
        .await
        .expect("stop() finished");

    v5a.expect_disconnect(0x8B).await;
    v5b.expect_disconnect(0x8B).await;
    v3.expect_disconnect_or_close(V311, 0).await;
    v31.expect_disconnect_or_close(V31, 0).await;

    // The listener is gone: a new connection is refused, or closed without a CONNACK.
    if let Ok(Ok(mut s)) = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr)).await {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = s.write_all(&connect(V311, "late")).await;
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("late connection neither served nor closed");
        assert!(
            matches!(n, Ok(0) | Err(_)),
            "late connection got {:02x?}",
            &buf
        );
    }
}

/// `stop()` completes promptly even with a client that never reads its socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_completes_with_a_client_that_does_not_read() {
    let broker = TestBroker::start().await;
    let mut stuck = RawClient::connected(broker.addr, V5, "stuck").await;
    stuck.subscribe(V5, "big/#", 0).await;
    let mut publ = RawClient::connected(broker.addr, V311, "bigpub").await;
    let payload = vec![b'x'; 64 * 1024];
    for _ in 0..64 {
        if publ
            .try_send(&publish(V311, "big/t", 0, 0, &payload))
            .await
            .is_err()
        {
            break;
        }
    }
    publ.ping().await;
    tokio::time::timeout(WAIT, broker.stop())
        .await
        .expect("stop() finished despite a client that does not read");
}

/// SIGTERM while a cluster node is still trying to reach NATS (it retries each start step for
/// up to a minute) ends the process at once, with status 0: the signal handlers are installed
/// before the start, so nothing else would act on the signal.
#[test]
fn sigterm_while_joining_a_cluster_exits() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    // A port nothing listens on: NATS is unreachable for the whole test.
    let nats = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = nats.local_addr().unwrap().port();
    drop(nats);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tern.toml");
    std::fs::write(
        &config,
        format!("[listener]\nbind = \"127.0.0.1\"\nport = 0\n\n[http]\nport = 0\n\n[cluster]\nenabled = true\nnode_id = \"n1\"\nnats_urls = [\"nats://127.0.0.1:{port}\"]\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
    // Waits for the first failed attempt: the node is inside its start, retrying.
    let retrying = log
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("joining the cluster; trying again"));
    assert!(retrying, "tern never tried to reach NATS");
    std::thread::spawn(move || log.for_each(drop));
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tern still starting 20 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}
