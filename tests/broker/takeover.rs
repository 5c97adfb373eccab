//! Client-identifier takeover: a new connection with an existing client id replaces the old one.

use std::time::Duration;

use crate::harness::TestBroker;
use crate::probe::rumqttc_round_trip;
use crate::wire::*;

/// A CONNECT for `id`; persistent ones get a v5 Session Expiry of 300 s so the session outlives
/// the connection unambiguously.
fn conn(level: u8, id: &str, clean: bool) -> Connect {
    let c = Connect::new(level, id).clean(clean);
    if level == V5 && !clean {
        c.props(prop_u32(SESSION_EXPIRY, 300))
    } else {
        c
    }
}

/// [MQTT-3.1.4-2] (3.1.1) [MQTT-3.1.4-3] (5.0) A second connection with the same client id closes
/// the first (v5: DISCONNECT 0x8E Session taken over first); the new one works and so do the
/// other clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connection_with_same_id_closes_the_first() {
    let broker = TestBroker::start().await;
    for level in [V311, V5] {
        let topic = format!("bystander/{level}");
        let mut bystander = RawClient::connected(broker.addr, level, &format!("by{level}")).await;
        bystander.subscribe(level, &topic, 1).await;

        let id = format!("dup{level}");
        let (mut first, _) =
            RawClient::handshake(broker.addr, level, &conn(level, &id, true)).await;
        let (mut second, ack) =
            RawClient::handshake(broker.addr, level, &conn(level, &id, true)).await;
        assert!(!ack.session_present);
        first.expect_disconnect_or_close(level, 0x8E).await;

        second.ping().await;
        assert_round_trip(&mut second, &mut bystander, level, &topic).await;
        rumqttc_round_trip(broker.addr, level).await;
    }
    broker.stop().await;
}

/// [MQTT-3.1.2-5] [MQTT-3.2.2-3] Taking over with Clean Session/Start 0 resumes the session:
/// Session Present is 1 and the subscriptions made by the first connection deliver to the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_without_clean_start_inherits_the_session() {
    let broker = TestBroker::start().await;
    for level in [V311, V5] {
        let id = format!("heir{level}");
        let topic = format!("inherit/{level}");
        let (mut first, ack) =
            RawClient::handshake(broker.addr, level, &conn(level, &id, false)).await;
        assert!(!ack.session_present);
        first.subscribe(level, &topic, 1).await;

        let (mut second, ack) =
            RawClient::handshake(broker.addr, level, &conn(level, &id, false)).await;
        assert!(ack.session_present, "level {level}: {ack:?}");
        first.expect_disconnect_or_close(level, 0x8E).await;

        let mut publ = RawClient::connected(broker.addr, level, &format!("pub{level}")).await;
        assert_round_trip(&mut publ, &mut second, level, &topic).await;
    }
    broker.stop().await;
}

/// [MQTT-3.1.2-4] [MQTT-3.2.2-2] Taking over with Clean Session/Start 1 discards the session:
/// Session Present is 0 and the first connection's subscriptions are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_with_clean_start_discards_the_session() {
    let broker = TestBroker::start().await;
    for level in [V311, V5] {
        let id = format!("fresh{level}");
        let old_topic = format!("old/{level}");
        let new_topic = format!("new/{level}");
        let (mut first, _) =
            RawClient::handshake(broker.addr, level, &conn(level, &id, false)).await;
        first.subscribe(level, &old_topic, 1).await;

        let (mut second, ack) =
            RawClient::handshake(broker.addr, level, &conn(level, &id, true)).await;
        assert!(!ack.session_present, "level {level}: {ack:?}");
        first.expect_disconnect_or_close(level, 0x8E).await;
        second.subscribe(level, &new_topic, 1).await;

        // The old-topic message, if the subscription had survived, would arrive first.
        let mut publ = RawClient::connected(broker.addr, level, &format!("p{level}")).await;
        publ.send(&publish(level, &old_topic, 1, 1, b"old")).await;
        publ.recv_expect(PUBACK).await;
        assert_round_trip(&mut publ, &mut second, level, &new_topic).await;
        second.expect_silence(Duration::from_millis(300)).await;
    }
    broker.stop().await;
}

/// [MQTT-3.1.4-2] (3.1.1) [MQTT-3.1.4-3] (5.0) Five connections in a row with one client id: each
/// newcomer closes its predecessor, exactly the last one stays, and the broker keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_takeovers_leave_exactly_one_live_connection() {
    let broker = TestBroker::start().await;
    for level in [V311, V5] {
        let id = format!("churn{level}");
        let mut conns = Vec::new();
        for _ in 0..5 {
            conns.push(
                RawClient::handshake(broker.addr, level, &conn(level, &id, false))
                    .await
                    .0,
            );
        }
        let mut last = conns.pop().expect("five connections");
        for mut old in conns {
            old.expect_disconnect_or_close(level, 0x8E).await;
        }
        last.ping().await;
        rumqttc_round_trip(broker.addr, level).await;
    }
    broker.stop().await;
}
