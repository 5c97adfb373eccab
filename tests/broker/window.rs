//! A window as large as MQTT allows: a persistent session drains 60,000 queued QoS 1 messages
//! through an outbound window of 65,535, every one arriving once and in order (the session's
//! flows are found by packet id; ids wrap and stay unique).

use rumqttc::{MqttOptions, Packet, QoS};

use crate::harness::TestBroker;
use crate::rmq::V4;
use crate::support::*;
use crate::wire::*;

const MESSAGES: u32 = 60_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_thousand_queued_drain_through_a_full_size_window() {
    let broker = TestBroker::start_with(|c| {
        c.limits.max_inflight_messages = u16::MAX;
        c.limits.max_queued_messages = 100_000;
    })
    .await;
    // The session subscribes, then goes offline.
    let (mut sub, _) = connect_persistent(broker.addr, V311, "drain-big", false).await;
    sub_all(&mut sub, V311, &["big/t"], 1).await;
    sub.send(&disconnect()).await;
    sub.expect_closed().await;

    // 60,000 QoS 1 messages queued for it, each numbered; all acknowledged, so all queued.
    let mut publ = V4::connect(broker.port(), "drain-big-pub").await;
    let client = publ.client.clone();
    let publishing = tokio::spawn(async move {
        for n in 0..MESSAGES {
            client
                .publish("big/t", QoS::AtLeastOnce, false, n.to_be_bytes().to_vec())
                .await
                .unwrap();
        }
    });
    for _ in 0..MESSAGES {
        publ.wait_for(|p| matches!(p, Packet::PubAck(_))).await;
    }
    publishing.await.unwrap();

    // Back with the session: every message once, in order (rumqttc acknowledges each).
    let mut opts = MqttOptions::new("drain-big", "127.0.0.1", broker.port());
    opts.set_clean_session(false);
    let mut back = V4::connect_with(opts).await;
    for n in 0..MESSAGES {
        let p = back.next_publish().await;
        assert_eq!(
            p.payload.as_ref(),
            n.to_be_bytes(),
            "message {n}: once, in order"
        );
        assert!(!p.dup, "message {n} sent once");
    }
    // Nothing more: a probe published now is the next thing that arrives.
    publ.client
        .publish("big/t", QoS::AtLeastOnce, false, b"end".to_vec())
        .await
        .unwrap();
    assert_eq!(back.next_publish().await.payload.as_ref(), b"end");
    broker.stop().await;
}
