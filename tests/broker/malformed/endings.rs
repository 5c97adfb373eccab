//! Connections that end badly or oddly (half a packet, garbage, the forms of DISCONNECT): the
//! will goes or not as the spec says, and the broker keeps serving.

use super::*;

/// A client that sends half a packet and then drops the connection: the broker discards the
/// fragment, publishes the client's Will (the connection closed without DISCONNECT) and keeps
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame_then_close_publishes_will_and_broker_survives() {
    let broker = TestBroker::start().await;
    for level in [V311, V5] {
        let will_topic = format!("will/trunc/{level}");
        let mut watcher = RawClient::connected(broker.addr, level, &format!("w{level}")).await;
        watcher.subscribe(level, &will_topic, 0).await;
        for cut in [1usize, 2, 5] {
            let conn = Connect::new(level, &format!("trunc{level}-{cut}"))
                .will(Will::new(&will_topic, format!("cut{cut}").as_bytes()));
            let (mut c, _) = RawClient::handshake(broker.addr, level, &conn).await;
            let full = publish(level, "trunc/t", 1, 1, &[b'p'; 100]);
            c.send(&full[..cut]).await;
            drop(c);
            let will = watcher.recv_publish(level).await;
            assert_eq!(will.topic, will_topic);
            assert_eq!(will.payload, format!("cut{cut}").as_bytes());
        }
        // A truncated CONNECT, then close.
        let mut c = RawClient::connect(broker.addr).await;
        let full = connect(level, "halfconnect");
        c.send(&full[..full.len() / 2]).await;
        drop(c);
        assert_broker_serves(broker.addr, level).await;
    }
    broker.stop().await;
}

/// Pseudo-random garbage (fixed seed), as the first bytes or after a CONNECT, followed by a
/// half-close: each connection ends within the timeout and the broker keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_garbage_never_kills_the_broker() {
    let broker = TestBroker::start().await;
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut sub = RawClient::connected(broker.addr, V311, "g-sub").await;
    sub.subscribe(V311, "g/t", 1).await;
    let mut publ = RawClient::connected(broker.addr, V311, "g-pub").await;
    for i in 0..40 {
        let len = 1 + (next() % 300) as usize;
        let mut garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let level = if i % 2 == 0 { V311 } else { V5 };
        let mut c = if i % 4 < 2 {
            RawClient::connect(broker.addr).await
        } else {
            // A plausible first byte makes the garbage reach the packet decoders.
            garbage[0] = [PUBLISH, SUBSCRIBE, UNSUBSCRIBE, PUBREL, 0x32][i % 5];
            RawClient::connected(broker.addr, level, &format!("garbage{i}")).await
        };
        let _ = c.try_send(&garbage).await;
        c.shutdown_write().await;
        let _ = tokio::time::timeout(WAIT, c.expect_closed())
            .await
            .unwrap_or_else(|_| panic!("garbage #{i} {garbage:02x?}: connection never closed"));
        assert_round_trip(&mut publ, &mut sub, V311, "g/t").await;
    }
    assert_broker_serves(broker.addr, V5).await;
    broker.stop().await;
}

/// [MQTT-3.14.4-3] A normal DISCONNECT (`E0 00`, valid in 3.1.1 and 5.0: reason 0x00 may be
/// omitted) ends the connection without error and discards the Will.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_disconnect_e000_discards_the_will() {
    let broker = TestBroker::start().await;
    for level in [V311, V5] {
        let will_topic = format!("will/normal/{level}");
        let mut watcher = RawClient::connected(broker.addr, level, &format!("nw{level}")).await;
        watcher.subscribe(level, &will_topic, 0).await;
        let conn = Connect::new(level, &format!("leaver{level}"))
            .will(Will::new(&will_topic, b"should not appear"));
        let (mut c, _) = RawClient::handshake(broker.addr, level, &conn).await;
        c.send(&disconnect()).await;
        let got = c.expect_closed().await;
        assert!(
            got.is_empty(),
            "level {level}: answered a normal DISCONNECT with {got:02x?}"
        );
        // Proof that nothing was published: the next message on the will topic is ours.
        let mut publ = RawClient::connected(broker.addr, level, &format!("np{level}")).await;
        assert_round_trip(&mut publ, &mut watcher, level, &will_topic).await;
    }
    broker.stop().await;
}

/// [MQTT-3.14.2-1] (5.0) DISCONNECT with reason 0x04 (Disconnect with Will Message) publishes the
/// Will; the server does not answer with a DISCONNECT of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_disconnect_with_will_message_publishes_the_will() {
    let broker = TestBroker::start().await;
    let mut watcher = RawClient::connected(broker.addr, V5, "watch").await;
    watcher.subscribe(V5, "will/04", 0).await;
    let conn = Connect::new(V5, "leaver").will(Will::new("will/04", b"bye"));
    let (mut c, _) = RawClient::handshake(broker.addr, V5, &conn).await;
    c.send(&disconnect_v5(0x04, &[])).await;
    let got = c.expect_closed().await;
    assert!(got.is_empty(), "{got:02x?}");
    let will = watcher.recv_publish(V5).await;
    assert_eq!(
        (will.topic.as_str(), will.payload.as_slice()),
        ("will/04", &b"bye"[..])
    );
    broker.stop().await;
}
