//! Malformed and forbidden input: each case must close only the offending connection (v5: after a
//! DISCONNECT with the reason the spec gives), while bystander clients connected before, and new
//! clients connected after, keep working. The broker never dies.
//!
//! Cases run in sequence on one broker per test; every failing case is collected and reported at
//! the end, so one failure does not hide the others. By theme: `connect` (instead of a valid
//! CONNECT), `packets` (after one, both versions), `properties` (v5 property misuse), `endings`
//! (truncated frames, garbage, DISCONNECT forms).

mod connect;
mod endings;
mod packets;
mod properties;

use std::net::SocketAddr;

use crate::harness::{TestBroker, WAIT};
use crate::wire::*;

/// Malformed Packet.
const MALFORMED: &[u8] = &[0x81];
/// Protocol Error.
const PROTOCOL: &[u8] = &[0x82];
/// The spec forbids it without naming the class: Malformed Packet or Protocol Error.
const EITHER: &[u8] = &[0x81, 0x82];
/// A Topic Name that is forbidden: malformed, protocol error or Topic Name invalid.
const BAD_TOPIC: &[u8] = &[0x81, 0x82, 0x90];

/// One malformed input.
struct Case {
    /// What is wrong, with its spec id.
    name: &'static str,
    /// Protocol level of the CONNECT that precedes `bytes` (or of `bytes` itself).
    level: u8,
    /// `bytes` follow a successful CONNECT (true) or are the first thing sent (false).
    connected: bool,
    /// Sent verbatim.
    bytes: Vec<u8>,
    /// v5: the reasons allowed in the DISCONNECT (connected) or the refusing CONNACK (not
    /// connected; a CONNACK is optional there).
    reasons: &'static [u8],
}

/// A case sent instead of a valid CONNECT.
fn pre(name: &'static str, level: u8, bytes: Vec<u8>, reasons: &'static [u8]) -> Case {
    Case {
        name,
        level,
        connected: false,
        bytes,
        reasons,
    }
}

/// A case sent after a successful CONNECT.
fn post(name: &'static str, level: u8, bytes: Vec<u8>, reasons: &'static [u8]) -> Case {
    Case {
        name,
        level,
        connected: true,
        bytes,
        reasons,
    }
}

/// `p` with its first byte replaced.
fn with_first(mut p: Vec<u8>, first: u8) -> Vec<u8> {
    p[0] = first;
    p
}

/// `p` with the first occurrence of `from` replaced by `to` (same length).
fn patch(mut p: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = p
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    p[at..at + to.len()].copy_from_slice(to);
    p
}

/// Runs one case; panics describe the failure.
async fn run_case(addr: SocketAddr, i: usize, case: Case) {
    let level = case.level;
    let mut c = if case.connected {
        RawClient::connected(addr, level, &format!("victim{i}")).await
    } else {
        RawClient::connect(addr).await
    };
    // The broker may close before everything is written; that is fine.
    let _ = c.try_send(&case.bytes).await;
    if !case.connected {
        let got = c.expect_closed().await;
        assert!(
            got.len() <= 1,
            "more than a CONNACK before close: {got:02x?}"
        );
        if let Some((first, body)) = got.first() {
            assert_eq!(
                *first, CONNACK,
                "only a CONNACK may precede the close: {got:02x?}"
            );
            let ack = parse_connack(level, body);
            assert!(ack.reason != 0, "malformed CONNECT accepted: {ack:?}");
            if level == V5 && body.len() > 2 && !case.reasons.is_empty() {
                assert!(
                    case.reasons.contains(&ack.reason),
                    "CONNACK reason {:#04x}, expected one of {:02x?}",
                    ack.reason,
                    case.reasons
                );
            }
        }
    } else if level == V5 {
        c.expect_disconnect_in(case.reasons).await;
    } else {
        c.expect_disconnect_or_close(level, 0).await;
    }
}

/// The text of a task's panic.
fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into()),
        Err(e) => e.to_string(),
    }
}

/// Runs every case against one broker with bystanders; asserts all passed and the broker serves.
async fn run_cases(cases: Vec<Case>) {
    let broker = TestBroker::start().await;
    let addr = broker.addr;
    let mut sub = RawClient::connected(addr, V311, "bystander-sub").await;
    sub.subscribe(V311, "bystander/t", 1).await;
    let mut publ = RawClient::connected(addr, V311, "bystander-pub").await;
    let total = cases.len();
    let mut failures = Vec::new();
    for (i, case) in cases.into_iter().enumerate() {
        let name = format!("#{i} {} (level {})", case.name, case.level);
        match tokio::time::timeout(WAIT * 2, tokio::spawn(run_case(addr, i, case))).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{name}: {}", panic_text(e))),
            Err(_) => failures.push(format!("{name}: timed out")),
        }
        // Bystanders connected before the case still work.
        assert_round_trip(&mut publ, &mut sub, V311, "bystander/t").await;
    }
    // New clients are served.
    assert_broker_serves(addr, V311).await;
    assert_broker_serves(addr, V5).await;
    broker.stop().await;
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
