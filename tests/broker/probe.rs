//! Health probes through an independent client (rumqttc): "the broker still serves normal flows".
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::WAIT;
use crate::wire::{rand_suffix, V5};

/// A fresh rumqttc client (v4 for any level but [`V5`], v5 otherwise) subscribes to a unique topic
/// at QoS 1, publishes to it and receives its own message, all within [`WAIT`].
pub async fn rumqttc_round_trip(addr: SocketAddr, level: u8) {
    let id = format!("rq{}", rand_suffix());
    let topic = format!("rq/{id}");
    let run = async {
        if level == V5 {
            v5_round_trip(addr, &id, &topic).await
        } else {
            v4_round_trip(addr, &id, &topic).await
        }
    };
    tokio::time::timeout(WAIT, run)
        .await
        .unwrap_or_else(|_| panic!("rumqttc (level {level}) round trip timed out"));
}

async fn v4_round_trip(addr: SocketAddr, id: &str, topic: &str) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    let (client, mut el) = AsyncClient::new(opts, 10);
    client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    loop {
        match el.poll().await.expect("rumqttc v4 connection failed") {
            Event::Incoming(Packet::SubAck(_)) => client
                .publish(topic, QoS::AtLeastOnce, false, b"probe".to_vec())
                .await
                .unwrap(),
            Event::Incoming(Packet::Publish(p)) if p.topic == topic => break,
            _ => {}
        }
    }
    client.disconnect().await.unwrap();
    drain(async { while el.poll().await.is_ok() {} }).await;
}

async fn v5_round_trip(addr: SocketAddr, id: &str, topic: &str) {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    let (client, mut el) = AsyncClient::new(opts, 10);
    client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    loop {
        match el.poll().await.expect("rumqttc v5 connection failed") {
            Event::Incoming(Packet::SubAck(_)) => client
                .publish(topic, QoS::AtLeastOnce, false, b"probe".to_vec())
                .await
                .unwrap(),
            Event::Incoming(Packet::Publish(p)) if p.topic.as_ref() == topic.as_bytes() => break,
            _ => {}
        }
    }
    client.disconnect().await.unwrap();
    drain(async { while el.poll().await.is_ok() {} }).await;
}

/// Lets a client flush its DISCONNECT; returns as soon as its event loop ends.
async fn drain(f: impl std::future::Future<Output = ()>) {
    let _ = tokio::time::timeout(Duration::from_millis(500), f).await;
}
