//! Session lifetime: v3.1.1 Clean Session, v5 Clean Start with Session Expiry Interval (including
//! changes in DISCONNECT), Session Present, subscriptions kept and messages queued while offline.
//! Resend of inflight messages on resume is in publish_qos.rs; takeover in takeover.rs.

use std::time::Duration;

use crate::harness::TestBroker;
use crate::support::*;
use crate::wire::*;

/// Sends DISCONNECT (v5: with `props`) and waits for the broker to close the connection, so the
/// session state change is done before the test goes on.
async fn disconnect_and_wait(mut c: RawClient, v: u8, props: &[u8]) {
    if v == V5 && !props.is_empty() {
        c.send(&disconnect_v5(0, props)).await;
    } else {
        c.send(&disconnect()).await;
    }
    c.expect_closed().await;
}

/// Connects with `connect` and returns the client and Session Present.
async fn connect_with(b: &TestBroker, v: u8, connect: Connect) -> (RawClient, bool) {
    let (c, ack) = RawClient::handshake(b.addr, v, &connect).await;
    (c, ack.session_present)
}

/// A v5 CONNECT with Clean Start `clean` and, when `Some`, a Session Expiry Interval.
fn v5_connect(id: &str, clean: bool, expiry: Option<u32>) -> Connect {
    let c = Connect::new(V5, id).clean(clean);
    match expiry {
        Some(e) => c.props(prop_u32(SESSION_EXPIRY, e)),
        None => c,
    }
}

/// [MQTT-3.2.2-1] [MQTT-3.2.2-2] [MQTT-3.2.2-3] (v3.1.1) Session Present is 0 with Clean Session 1,
/// 1 when a stored session is resumed with Clean Session 0, 0 when none is stored; Clean Session 1
/// discards the stored session [MQTT-3.1.2-6].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_session_present_follows_clean_session() {
    let b = TestBroker::start().await;
    let v = V311;
    let (c, sp) = connect_with(&b, v, Connect::new(v, "cs").clean(true)).await;
    assert!(!sp, "clean session");
    disconnect_and_wait(c, v, &[]).await;
    let (c, sp) = connect_with(&b, v, Connect::new(v, "cs").clean(false)).await;
    assert!(!sp, "clean session 1 left nothing behind");
    disconnect_and_wait(c, v, &[]).await;
    let (c, sp) = connect_with(&b, v, Connect::new(v, "cs").clean(false)).await;
    assert!(sp, "stored session resumed");
    disconnect_and_wait(c, v, &[]).await;
    let (c, sp) = connect_with(&b, v, Connect::new(v, "cs").clean(true)).await;
    assert!(!sp, "clean session 1 always reports 0");
    disconnect_and_wait(c, v, &[]).await;
    let (_c, sp) = connect_with(&b, v, Connect::new(v, "cs").clean(false)).await;
    assert!(!sp, "clean session 1 discarded the stored session");
    b.stop().await;
}

/// [MQTT-3.2.2-2] [MQTT-3.2.2-3] [MQTT-3.1.2-4] [MQTT-3.1.2-5] (v5) Session Present reflects
/// whether a session was resumed; Clean Start 1 discards it; Session Expiry 0 (or absent) ends the
/// session when the connection closes [MQTT-3.1.2-23].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_session_present_follows_clean_start_and_expiry() {
    let b = TestBroker::start().await;
    let v = V5;
    let (c, sp) = connect_with(&b, v, v5_connect("cs5", false, None)).await;
    assert!(!sp, "no stored session");
    disconnect_and_wait(c, v, &[]).await;
    let (c, sp) = connect_with(&b, v, v5_connect("cs5", false, Some(300))).await;
    assert!(
        !sp,
        "expiry 0 (absent) ended the previous session at disconnect"
    );
    disconnect_and_wait(c, v, &[]).await;
    let (c, sp) = connect_with(&b, v, v5_connect("cs5", false, Some(300))).await;
    assert!(sp, "session with expiry 300 resumed");
    disconnect_and_wait(c, v, &[]).await;
    let (c, sp) = connect_with(&b, v, v5_connect("cs5", true, Some(300))).await;
    assert!(!sp, "Clean Start discards it");
    disconnect_and_wait(c, v, &[]).await;
    let (c, sp) = connect_with(&b, v, v5_connect("cs5", false, Some(0))).await;
    assert!(sp, "the clean-started session (expiry 300) was kept");
    disconnect_and_wait(c, v, &[]).await;
    let (_c, sp) = connect_with(&b, v, v5_connect("cs5", false, Some(0))).await;
    assert!(!sp, "expiry 0 ended it");
    b.stop().await;
}

/// [MQTT-3.1.2-4] (v3.1.1) / [MQTT-3.1.2-23] (v5) A persistent session keeps its subscriptions and
/// queues QoS 1 and QoS 2 messages while offline, delivered in order on resume; QoS 0 messages are
/// not queued by default (the spec allows either).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_keeps_subscriptions_and_queues_qos1_qos2() {
    let b = TestBroker::start().await;
    for v in VERSIONS {
        let id = format!("keep{v}");
        let topic = format!("keep/{v}");
        let (mut c, _) = connect_persistent(b.addr, v, &id, true).await;
        if v == V311 {
            // A clean v3 session is never stored; start the persistent one now.
            disconnect_and_wait(c, v, &[]).await;
            c = connect_persistent(b.addr, v, &id, false).await.0;
        }
        sub_all(&mut c, v, &[&topic], 2).await;
        disconnect_and_wait(c, v, &[]).await;

        let mut publ = RawClient::connected(b.addr, v, &format!("p{v}")).await;
        pub_msg(&mut publ, v, &topic, 0, b"q0").await;
        pub_msg(&mut publ, v, &topic, 1, b"q1").await;
        pub_msg(&mut publ, v, &topic, 2, b"q2").await;
        pub_msg(&mut publ, v, &topic, 1, b"q1-again").await;

        let (mut c, sp) = connect_persistent(b.addr, v, &id, false).await;
        assert!(sp, "{}: session present", vname(v));
        // No SUBSCRIBE: the stored subscription delivers the fence too.
        pub_msg(&mut publ, v, &topic, 1, b"fence").await;
        let got = collect_until(&mut c, v, b"fence").await;
        assert_eq!(payloads(&got), ["q1", "q2", "q1-again"], "{}", vname(v));
        let qos: Vec<u8> = got.iter().map(|r| r.qos).collect();
        assert_eq!(qos, [1, 2, 1], "{}", vname(v));
    }
    b.stop().await;
}

/// With `session.queue_qos0_offline = true` QoS 0 messages are queued for an offline session too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_queued_offline_when_configured() {
    let b = TestBroker::start_with(|c| c.session.queue_qos0_offline = true).await;
    for v in VERSIONS {
        let id = format!("q0{v}");
        let topic = format!("q0/{v}");
        let (mut c, _) = connect_persistent(b.addr, v, &id, false).await;
        sub_all(&mut c, v, &[&topic], 1).await;
        disconnect_and_wait(c, v, &[]).await;
        let mut publ = RawClient::connected(b.addr, v, &format!("p{v}")).await;
        pub_msg(&mut publ, v, &topic, 0, b"zero").await;
        pub_msg(&mut publ, v, &topic, 1, b"one").await;
        let (mut c, sp) = connect_persistent(b.addr, v, &id, false).await;
        assert!(sp);
        pub_msg(&mut publ, v, &topic, 1, b"fence").await;
        let got = collect_until(&mut c, v, b"fence").await;
        assert_eq!(payloads(&got), ["zero", "one"], "{}", vname(v));
        assert_eq!(got[0].qos, 0);
    }
    b.stop().await;
}

/// [MQTT-3.1.2-6] (v3.1.1) A clean session's subscriptions do not survive the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_clean_session_subscriptions_not_kept() {
    let b = TestBroker::start().await;
    let v = V311;
    let mut c = RawClient::connected(b.addr, v, "gone").await;
    sub_all(&mut c, v, &["gone/t"], 1).await;
    disconnect_and_wait(c, v, &[]).await;
    let mut c = RawClient::connected(b.addr, v, "gone").await;
    sub_all(&mut c, v, &["gone/fence"], 1).await;
    let mut publ = RawClient::connected(b.addr, v, "p").await;
    pub_msg(&mut publ, v, "gone/t", 1, b"old-sub").await;
    pub_msg(&mut publ, v, "gone/fence", 1, b"fence").await;
    assert!(collect_until(&mut c, v, b"fence").await.is_empty());
    b.stop().await;
}

/// [MQTT-3.1.2-23] (v5 3.1.2.11.2) A session with Session Expiry N seconds survives a short
/// disconnection but is gone N seconds after the connection closes: Session Present 0, no
/// subscriptions, no queued messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_session_expires_after_interval() {
    let b = TestBroker::start().await;
    let v = V5;
    let (mut c, _) = connect_with(&b, v, v5_connect("exp", true, Some(1))).await;
    sub_all(&mut c, v, &["exp/t"], 1).await;
    disconnect_and_wait(c, v, &[]).await;
    let (c, sp) = connect_with(&b, v, v5_connect("exp", false, Some(1))).await;
    assert!(sp, "resumed within the interval");
    disconnect_and_wait(c, v, &[]).await;

    let mut publ = RawClient::connected(b.addr, v, "p").await;
    pub_msg(&mut publ, v, "exp/t", 1, b"queued").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let (mut c, sp) = connect_with(&b, v, v5_connect("exp", false, Some(1))).await;
    assert!(!sp, "expired session is gone");
    sub_all(&mut c, v, &["exp/fence"], 1).await;
    pub_msg(&mut publ, v, "exp/t", 1, b"after").await;
    pub_msg(&mut publ, v, "exp/fence", 1, b"fence").await;
    let got = collect_until(&mut c, v, b"fence").await;
    assert!(
        got.is_empty(),
        "no queued messages, no subscription: {got:?}"
    );
    b.stop().await;
}

/// v5 3.1.2.11.2: Session Expiry 0xFFFFFFFF means the session does not expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_session_expiry_max_does_not_expire() {
    let b = TestBroker::start().await;
    let v = V5;
    let (mut c, _) = connect_with(&b, v, v5_connect("forever", true, Some(u32::MAX))).await;
    sub_all(&mut c, v, &["forever/t"], 1).await;
    disconnect_and_wait(c, v, &[]).await;
    let mut publ = RawClient::connected(b.addr, v, "p").await;
    pub_msg(&mut publ, v, "forever/t", 1, b"kept").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (mut c, sp) = connect_with(&b, v, v5_connect("forever", false, Some(u32::MAX))).await;
    assert!(sp);
    assert_eq!(recv_acked(&mut c, v).await.payload, b"kept");
    b.stop().await;
}

/// (v5 3.14.2.2.2) A DISCONNECT may change a non-zero Session Expiry: lowering it
/// to 0 ends the session at once; raising it keeps the session longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_disconnect_changes_session_expiry() {
    let b = TestBroker::start().await;
    let v = V5;
    let (c, _) = connect_with(&b, v, v5_connect("chg", true, Some(300))).await;
    disconnect_and_wait(c, v, &prop_u32(SESSION_EXPIRY, 0)).await;
    let (c, sp) = connect_with(&b, v, v5_connect("chg", false, Some(1))).await;
    assert!(!sp, "DISCONNECT set expiry 0: session ended");

    disconnect_and_wait(c, v, &prop_u32(SESSION_EXPIRY, 300)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_c, sp) = connect_with(&b, v, v5_connect("chg", false, Some(1))).await;
    assert!(
        sp,
        "DISCONNECT raised expiry 1 -> 300: session kept past 1 s"
    );
    b.stop().await;
}

/// [MQTT-3.14.2-2] If CONNECT had Session Expiry 0, a non-zero Session Expiry in DISCONNECT is a
/// Protocol Error: the server answers DISCONNECT 0x82 and the session still ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_disconnect_raising_zero_session_expiry_is_protocol_error() {
    let b = TestBroker::start().await;
    let v = V5;
    let (mut c, _) = connect_with(&b, v, v5_connect("zero", true, None)).await;
    c.send(&disconnect_v5(0, &prop_u32(SESSION_EXPIRY, 60)))
        .await;
    c.expect_disconnect(0x82).await;
    let (_c, sp) = connect_with(&b, v, v5_connect("zero", false, Some(60))).await;
    assert!(!sp, "no session was kept");
    b.stop().await;
}
