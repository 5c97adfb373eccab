//! Bridges between brokers on loopback: forwarding both ways with prefixes at every QoS, the
//! link's state in `$SYS`, no loops when two brokers bridge the same topics both ways, and
//! store-and-forward while the remote is away.

use rumqttc::QoS;
use tern::config::{BridgeConfig, Direction, TopicRule};

use crate::harness::TestBroker;
use crate::rmq::V4;

/// A bridge named `name` to `port` with `topics` (everything else at its default).
pub fn bridge(name: &str, port: u16, topics: Vec<TopicRule>) -> BridgeConfig {
    let toml = format!(
        "name = \"{name}\"\naddresses = [\"127.0.0.1:{port}\"]\nreconnect_min_ms = 50\nreconnect_max_ms = 500\ntopics = []\n"
    );
    let mut b: BridgeConfig = toml::from_str(&toml).unwrap();
    b.topics = topics;
    b
}

pub fn rule(pattern: &str, direction: Direction, qos: u8, local: &str, remote: &str) -> TopicRule {
    TopicRule {
        pattern: pattern.into(),
        direction,
        qos,
        local_prefix: local.into(),
        remote_prefix: remote.into(),
    }
}

/// Waits until the bridge `name` of the broker on `port` reports its link up in `$SYS`.
pub async fn wait_connected(port: u16, name: &str) {
    let mut probe = V4::connect(port, &format!("probe-{name}")).await;
    let topic = format!("$SYS/broker/connection/{name}/state");
    probe.subscribe(&topic, QoS::AtMostOnce).await;
    loop {
        let p = probe.next_publish().await;
        if p.topic == topic && &p.payload[..] == b"1" {
            return;
        }
    }
}

/// Edge and cloud: QoS 0, 1 and 2 out under a remote prefix, and commands in from under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_both_ways_with_prefixes() {
    for protocol in ["5", "3.1.1"] {
        let cloud = TestBroker::start().await;
        let mut b = bridge(
            "edge1",
            cloud.port(),
            vec![
                rule("sensors/#", Direction::Out, 2, "", "site/edge1/"),
                rule("cmd/#", Direction::In, 2, "local/", "site/edge1/"),
            ],
        );
        b.protocol = protocol.into();
        let edge = TestBroker::start_with(|c| c.bridge.push(b)).await;
        wait_connected(edge.port(), "edge1").await;
        let mut cloud_sub = V4::connect(cloud.port(), "cloud-sub").await;
        cloud_sub.subscribe("site/#", QoS::ExactlyOnce).await;
        let mut edge_sub = V4::connect(edge.port(), "edge-sub").await;
        edge_sub.subscribe("local/cmd/#", QoS::ExactlyOnce).await;
        let device = V4::connect(edge.port(), "device").await;
        for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
            .into_iter()
            .enumerate()
        {
            device
                .client
                .publish(format!("sensors/{i}"), qos, false, vec![i as u8])
                .await
                .unwrap();
            let got = cloud_sub.next_publish().await;
            assert_eq!(got.topic, format!("site/edge1/sensors/{i}"), "v{protocol}");
            assert_eq!(got.qos, qos);
        }
        let app = V4::connect(cloud.port(), "app").await;
        app.client
            .publish("site/edge1/cmd/reboot", QoS::AtLeastOnce, false, "now")
            .await
            .unwrap();
        let got = edge_sub.next_publish().await;
        assert_eq!(got.topic, "local/cmd/reboot");
        assert_eq!(&got.payload[..], b"now");
        edge.stop().await;
        cloud.stop().await;
    }
}
