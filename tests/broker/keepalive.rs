//! Keep-alive enforcement and the v5 Server Keep Alive.

use std::time::{Duration, Instant};

use crate::harness::TestBroker;
use crate::wire::*;

/// [MQTT-3.1.2-24] A client with Keep Alive 1 s that sends nothing is disconnected after about
/// 1.5 s (not before 1 s; v5: DISCONNECT 0x8D Keep Alive timeout first) and, the connection having
/// failed, its Will is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_closed_after_one_and_a_half_keepalives_and_will_published() {
    let broker = TestBroker::start().await;
    for level in [V311, V5] {
        let will_topic = format!("will/silent/{level}");
        let mut watcher = RawClient::connected(broker.addr, level, &format!("watch{level}")).await;
        watcher.subscribe(level, &will_topic, 0).await;

        let conn = Connect::new(level, &format!("silent{level}"))
            .keepalive(1)
            .will(Will::new(&will_topic, b"gone"));
        let (mut silent, _) = RawClient::handshake(broker.addr, level, &conn).await;
        let start = Instant::now();
        silent.expect_disconnect_or_close(level, 0x8D).await;
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1000),
            "level {level}: closed too early: {took:?}"
        );
        assert!(
            took <= Duration::from_millis(3500),
            "level {level}: closed too late: {took:?}"
        );

        let will = watcher.recv_publish(level).await;
        assert_eq!(will.topic, will_topic);
        assert_eq!(will.payload, b"gone");
        watcher.ping().await;
    }
    broker.stop().await;
}

/// [MQTT-3.1.2-24] [MQTT-3.12.4-1] A client with Keep Alive 1 s that sends PINGREQ every 500 ms
/// stays connected well past 1.5 s, and every PINGREQ gets a PINGRESP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinging_client_stays_connected() {
    let broker = TestBroker::start().await;
    let mut clients = Vec::new();
    for level in [V311, V5] {
        let conn = Connect::new(level, &format!("pinger{level}")).keepalive(1);
        clients.push((
            level,
            RawClient::handshake(broker.addr, level, &conn).await.0,
        ));
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3500) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (_, c) in &mut clients {
            c.ping().await;
        }
    }
    broker.stop().await;
}

/// [MQTT-3.1.2-24] Any control packet counts as activity, not only PINGREQ: a client publishing
/// QoS 0 every 500 ms with Keep Alive 1 s stays connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_client_stays_connected() {
    let broker = TestBroker::start().await;
    for level in [V311, V5] {
        let conn = Connect::new(level, &format!("busy{level}")).keepalive(1);
        let (mut c, _) = RawClient::handshake(broker.addr, level, &conn).await;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(2500) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            c.send(&publish(level, "busy/t", 0, 0, b"tick")).await;
        }
        c.ping().await;
    }
    broker.stop().await;
}

/// [MQTT-3.2.2-21] [MQTT-3.2.2-22] (5.0) With `max_keepalive` = 10, a v5 client asking for 60 or
/// for 0 (none) is told Server Keep Alive 10; one asking for 5 keeps 5 (no property, or 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_server_keep_alive_caps_requested_keepalive() {
    let broker = TestBroker::start_with(|c| c.limits.max_keepalive = 10).await;
    for (asked, told) in [
        (60u16, Some(10u32)),
        (0, Some(10)),
        (11, Some(10)),
        (5, None),
    ] {
        let conn = Connect::new(V5, &format!("ka{asked}")).keepalive(asked);
        let (mut c, ack) = RawClient::handshake(broker.addr, V5, &conn).await;
        let got = ack.prop(SERVER_KEEP_ALIVE).map(PropValue::int);
        match told {
            Some(v) => assert_eq!(got, Some(v), "asked {asked}: {ack:?}"),
            None => assert!(
                got.is_none() || got == Some(u32::from(asked)),
                "asked {asked}: {ack:?}"
            ),
        }
        c.ping().await;
    }
    broker.stop().await;
}

/// [MQTT-3.2.2-21] (5.0) The Server Keep Alive is enforced: `max_keepalive` = 1, a silent client
/// that asked for 60 s is disconnected with 0x8D within a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_server_keep_alive_is_enforced() {
    let broker = TestBroker::start_with(|c| c.limits.max_keepalive = 1).await;
    let conn = Connect::new(V5, "capped").keepalive(60);
    let (mut c, ack) = RawClient::handshake(broker.addr, V5, &conn).await;
    assert_eq!(ack.prop(SERVER_KEEP_ALIVE).map(PropValue::int), Some(1));
    let start = Instant::now();
    c.expect_disconnect(0x8D).await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1000),
        "closed too early: {took:?}"
    );
    assert!(
        took <= Duration::from_millis(3500),
        "closed too late: {took:?}"
    );
    broker.stop().await;
}

/// (3.1.1, Mosquitto's behaviour) With `max_keepalive` = 10, a v3.1.1 client asking for a longer
/// Keep Alive is refused with CONNACK 0x02 and closed; one asking for 10 or less is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_keepalive_above_maximum_is_refused() {
    let broker = TestBroker::start_with(|c| c.limits.max_keepalive = 10).await;
    let mut c = RawClient::connect(broker.addr).await;
    c.send(&Connect::new(V311, "toolong").keepalive(60).build())
        .await;
    assert_eq!(c.expect_closed().await, vec![(CONNACK, vec![0x00, 0x02])]);
    for ok in [10u16, 5] {
        let conn = Connect::new(V311, &format!("ok{ok}")).keepalive(ok);
        let (mut c, _) = RawClient::handshake(broker.addr, V311, &conn).await;
        c.ping().await;
    }
    broker.stop().await;
}

/// [MQTT-3.1.2-24] Keep Alive 0 turns the mechanism off, and the CONNECT deadline
/// (`connect_timeout_secs` = 1) ends once CONNECT is processed: a connected client with Keep Alive
/// 0 that stays silent for 2.5 s is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_zero_client_is_never_timed_out() {
    let broker = TestBroker::start_with(|c| c.limits.connect_timeout_secs = 1).await;
    let mut clients = Vec::new();
    for level in [V311, V5] {
        let conn = Connect::new(level, &format!("forever{level}")).keepalive(0);
        let (c, ack) = RawClient::handshake(broker.addr, level, &conn).await;
        assert!(ack.prop(SERVER_KEEP_ALIVE).is_none(), "{ack:?}");
        clients.push(c);
    }
    for c in &mut clients {
        c.expect_silence(Duration::from_millis(2500)).await;
        c.ping().await;
    }
    broker.stop().await;
}
