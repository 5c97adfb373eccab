//! Persistent sessions across `kill -9`: subscriptions, wills, and expiry that counts the time
//! Tern was down.

use super::*;

/// Persistent sessions and their subscriptions survive `kill -9`: a v3.1.1 clean-session-0
/// client killed while connected and a v5 client with Session Expiry that disconnected both
/// reconnect to Session Present = 1 and receive what is published to their subscriptions (v5
/// with its Subscription Identifier); an unsubscribed filter stays gone; a clean session is not
/// kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_sessions_and_subscriptions_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ChildBroker::start(dir.path(), true, "process");
    let (mut v3, present) = connect_persistent(broker.addr, V311, "dev3", false).await;
    assert!(!present);
    sub_all(&mut v3, V311, &["cmd/3/#", "old/3"], 1).await;
    v3.send(&unsubscribe(V311, 9, &["old/3"], &[])).await;
    v3.recv_expect(UNSUBACK).await;
    let (mut v5, _) = connect_persistent(broker.addr, V5, "dev5", false).await;
    v5.send(&subscribe(
        V5,
        3,
        &[("cmd/5/+", 2)],
        &prop_varint(SUBSCRIPTION_ID, 7),
    ))
    .await;
    v5.recv_expect(SUBACK).await;
    v5.send(&disconnect()).await;
    let mut clean = RawClient::connected(broker.addr, V311, "clean3").await;
    sub_all(&mut clean, V311, &["cmd/#"], 1).await;
    // v3 is still connected: the kill is its connection's end too.
    broker.kill9();

    let broker = ChildBroker::start(dir.path(), true, "process");
    let (mut v3, present) = connect_persistent(broker.addr, V311, "dev3", false).await;
    assert!(present, "v3.1.1 session lost");
    let (mut v5, present) = connect_persistent(broker.addr, V5, "dev5", false).await;
    assert!(present, "v5 session lost");
    let (_, present) = connect_persistent(broker.addr, V311, "clean3", false).await;
    assert!(!present, "a clean session was kept");

    let mut publ = RawClient::connected(broker.addr, V5, "pub").await;
    pub_msg(&mut publ, V5, "old/3", 1, b"unsubscribed").await;
    pub_msg(&mut publ, V5, "cmd/3/a", 1, b"to v3").await;
    pub_msg(&mut publ, V5, "cmd/5/a", 2, b"to v5").await;
    let r = recv_acked(&mut v3, V311).await;
    assert_eq!(
        (r.topic.as_str(), r.payload.as_slice()),
        ("cmd/3/a", &b"to v3"[..])
    );
    let r = recv_acked(&mut v5, V5).await;
    assert_eq!(r.payload, b"to v5");
    assert_eq!(r.qos, 2);
    assert_eq!(
        all_props(&r.props, SUBSCRIPTION_ID),
        vec![PropValue::Varint(7)]
    );
    expect_nothing(&mut v3).await;
    broker.kill9();
}

/// Wills survive `kill -9` the way the spec orders them: a crash closes every connection, so
/// after the restart a v3.1.1 persistent client's will is published at once, a v5 will whose
/// session ends before its delay is published when the session ends, and one with a long delay
/// waits. A will published once is not published again after another restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wills_of_persistent_sessions_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ChildBroker::start(dir.path(), true, "fsync");
    let (mut w, _) = connect_persistent(broker.addr, V5, "watcher", false).await;
    sub_all(&mut w, V5, &["wills/#"], 1).await;
    w.send(&disconnect()).await;
    // QoS 1 wills: the watcher is offline when they are published, and QoS 0 is not queued
    // for offline sessions.
    let mut w3 = Will::new("wills/3", b"v3 gone");
    w3.qos = 1;
    let c3 = persistent_connect(V311, "dying3", false).will(w3);
    let (_d3, _) = RawClient::handshake(broker.addr, V311, &c3).await;
    let mut long = Will::new("wills/long", b"later");
    long.qos = 1;
    long.props = prop_u32(WILL_DELAY, 1000);
    let c5 = persistent_connect(V5, "dying5", false).will(long);
    let (_d5, _) = RawClient::handshake(broker.addr, V5, &c5).await;
    let mut short = Will::new("wills/short", b"session ended");
    short.qos = 1;
    short.props = prop_u32(WILL_DELAY, 100);
    let cs = Connect::new(V5, "short")
        .clean(false)
        .props(prop_u32(SESSION_EXPIRY, 1))
        .will(short);
    let (_ds, _) = RawClient::handshake(broker.addr, V5, &cs).await;
    // Session records are written without waiting, in order with every other store write: a
    // SUBACK of a persistent session, which waits for its own write, comes after them.
    let (mut probe, _) = connect_persistent(broker.addr, V5, "probe", false).await;
    sub_all(&mut probe, V5, &["probe"], 1).await;
    broker.kill9();

    let broker = ChildBroker::start(dir.path(), true, "fsync");
    let (mut w, present) = connect_persistent(broker.addr, V5, "watcher", false).await;
    assert!(present);
    let first = recv_acked(&mut w, V5).await;
    assert_eq!(
        (first.topic.as_str(), first.payload.as_slice()),
        ("wills/3", &b"v3 gone"[..])
    );
    let second = recv_acked(&mut w, V5).await;
    assert_eq!(second.topic, "wills/short", "a will due at session end");
    expect_nothing(&mut w).await;
    w.send(&disconnect()).await;
    broker.kill9();

    let broker = ChildBroker::start(dir.path(), true, "fsync");
    let (mut w, _) = connect_persistent(broker.addr, V5, "watcher", false).await;
    let mut fence = RawClient::connected(broker.addr, V5, "fence").await;
    pub_msg(&mut fence, V5, "wills/fence", 0, b"fence").await;
    assert!(
        collect_until(&mut w, V5, b"fence").await.is_empty(),
        "a will published twice"
    );
    broker.kill9();
}

/// Session expiry counts the time Tern was down: after a restart, a session whose Session Expiry
/// Interval ran out while Tern was stopped is gone with its queue (Session Present = 0, nothing
/// delivered, nothing left in the store), and a longer one is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_that_expire_while_tern_is_down_are_gone_with_their_queues() {
    const SHORT_SECS: u32 = 2;
    let dir = tempfile::tempdir().unwrap();
    let broker = ChildBroker::start(dir.path(), true, "fsync");
    for (id, expiry) in [("short", SHORT_SECS), ("long", 3600)] {
        let connect = Connect::new(V5, id)
            .clean(true)
            .props(prop_u32(SESSION_EXPIRY, expiry));
        let (mut c, _) = RawClient::handshake(broker.addr, V5, &connect).await;
        sub_all(&mut c, V5, &["e/#"], 1).await;
        c.send(&disconnect()).await;
    }
    let mut publ = RawClient::connected(broker.addr, V5, "epub").await;
    for i in 0..5u8 {
        pub_msg(&mut publ, V5, "e/x", 1, &[b'0' + i]).await;
    }
    broker.kill9();
    // Let the short session's expiry run out while Tern is down (counted from its disconnect).
    let stopped = std::time::Instant::now();
    std::thread::sleep(
        Duration::from_secs(u64::from(SHORT_SECS) + 1).saturating_sub(stopped.elapsed()),
    );

    let broker = ChildBroker::start(dir.path(), true, "fsync");
    let resume = |id: &str| {
        Connect::new(V5, id)
            .clean(false)
            .props(prop_u32(SESSION_EXPIRY, 3600))
    };
    let (mut long, present) = RawClient::handshake(broker.addr, V5, &resume("long")).await;
    assert!(present.session_present, "the long session was lost");
    let mut fence = RawClient::connected(broker.addr, V5, "efence").await;
    pub_msg(&mut fence, V5, "e/fence", 0, b"fence").await;
    assert_eq!(
        payloads(&collect_until(&mut long, V5, b"fence").await),
        vec!["0", "1", "2", "3", "4"]
    );
    settle(&mut long, V5).await;
    let (mut short, ack) = RawClient::handshake(broker.addr, V5, &resume("short")).await;
    assert!(!ack.session_present, "an expired session came back");
    pub_msg(&mut fence, V5, "e/fence", 0, b"fence2").await;
    expect_nothing(&mut short).await;
    settle(&mut short, V5).await;
    broker.kill9();
    // Its queue went with it: only the fresh "short" session (no messages) is left besides
    // "long", whose messages were acknowledged.
    let (code, out) = store_check(dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("queued deliveries:     0"), "{out}");
    assert!(out.contains("stored messages:       0"), "{out}");
}
