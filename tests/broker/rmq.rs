//! rumqttc clients (v4 = MQTT 3.1.1, v5) whose event loops run in a task and forward every event to
//! a channel, so tests can wait for CONNACK, SUBACK and PUBLISH with a timeout. rumqttc completes
//! the QoS 1/2 acknowledgement flows itself.
#![allow(dead_code)]

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::harness::WAIT;

/// An MQTT 3.1.1 rumqttc client.
pub struct V4 {
    /// The request handle.
    pub client: rumqttc::AsyncClient,
    rx: mpsc::UnboundedReceiver<rumqttc::Event>,
    task: JoinHandle<()>,
}

impl V4 {
    /// Connects to 127.0.0.1:`port` with a clean session and waits for CONNACK.
    pub async fn connect(port: u16, id: &str) -> V4 {
        V4::connect_with(rumqttc::MqttOptions::new(id, "127.0.0.1", port)).await
    }

    /// Connects over TLS to 127.0.0.1:`port`, trusting the PEM CA `ca` (ALPN `mqtt`), with an
    /// optional client certificate and key (PEM).
    pub async fn connect_tls(
        port: u16,
        id: &str,
        ca: Vec<u8>,
        client_auth: Option<(Vec<u8>, Vec<u8>)>,
    ) -> V4 {
        let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
        opts.set_transport(rumqttc::Transport::tls(
            ca,
            client_auth,
            Some(vec![b"mqtt".to_vec()]),
        ));
        V4::connect_with(opts).await
    }

    /// Connects over a WebSocket to `url` (`ws://127.0.0.1:PORT/mqtt`, or `wss://` trusting
    /// the PEM CA `ca`, with an optional client certificate and key).
    pub async fn connect_ws(url: &str, id: &str, tls: Option<WsTls>) -> V4 {
        V4::connect_with(ws_options(url, id, tls)).await
    }

    /// Connects with `opts` and waits for CONNACK.
    pub async fn connect_with(mut opts: rumqttc::MqttOptions) -> V4 {
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_inflight(100);
        let (client, mut el) = rumqttc::AsyncClient::new(opts, 1000);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(ev) = el.poll().await {
                if tx.send(ev).is_err() {
                    break;
                }
            }
        });
        let mut c = V4 { client, rx, task };
        c.wait_for(|p| matches!(p, rumqttc::Packet::ConnAck(_)))
            .await;
        c
    }

    /// The next incoming packet matching `pred`, skipping others (bounded by [`WAIT`]).
    pub async fn wait_for(
        &mut self,
        mut pred: impl FnMut(&rumqttc::Packet) -> bool,
    ) -> rumqttc::Packet {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .expect("timed out waiting for a packet")
                .expect("rumqttc event loop ended");
            if let rumqttc::Event::Incoming(p) = ev {
                if pred(&p) {
                    return p;
                }
            }
        }
    }

    /// Subscribes and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: rumqttc::QoS) {
        self.client.subscribe(filter, qos).await.expect("queued");
        self.wait_for(|p| matches!(p, rumqttc::Packet::SubAck(_)))
            .await;
    }

    /// The next PUBLISH.
    pub async fn next_publish(&mut self) -> rumqttc::Publish {
        match self
            .wait_for(|p| matches!(p, rumqttc::Packet::Publish(_)))
            .await
        {
            rumqttc::Packet::Publish(p) => p,
            _ => unreachable!("filtered"),
        }
    }
}

impl Drop for V4 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// rumqttc's MQTT 5 packet type.
pub use rumqttc::v5::mqttbytes::v5::Packet as P5;
/// rumqttc's MQTT 5 QoS.
pub use rumqttc::v5::mqttbytes::QoS as Q5;

/// An MQTT 5 rumqttc client.
pub struct V5 {
    /// The request handle.
    pub client: rumqttc::v5::AsyncClient,
    rx: mpsc::UnboundedReceiver<rumqttc::v5::Event>,
    task: JoinHandle<()>,
}

impl V5 {
    /// Connects to 127.0.0.1:`port` with Clean Start and waits for CONNACK.
    pub async fn connect(port: u16, id: &str) -> V5 {
        V5::connect_with(rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port)).await
    }

    /// Connects over a WebSocket to `url` (`ws://127.0.0.1:PORT/mqtt`).
    pub async fn connect_ws(url: &str, id: &str) -> V5 {
        let mut opts = rumqttc::v5::MqttOptions::new(id, url, 0);
        opts.set_transport(rumqttc::Transport::Ws);
        V5::connect_with(opts).await
    }

    /// Connects with `opts` and waits for CONNACK.
    pub async fn connect_with(mut opts: rumqttc::v5::MqttOptions) -> V5 {
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut el) = rumqttc::v5::AsyncClient::new(opts, 1000);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(ev) = el.poll().await {
                if tx.send(ev).is_err() {
                    break;
                }
            }
        });
        let mut c = V5 { client, rx, task };
        c.wait_for(|p| matches!(p, P5::ConnAck(_))).await;
        c
    }

    /// The next incoming packet matching `pred`, skipping others (bounded by [`WAIT`]).
    pub async fn wait_for(&mut self, mut pred: impl FnMut(&P5) -> bool) -> P5 {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .expect("timed out waiting for a packet")
                .expect("rumqttc event loop ended");
            if let rumqttc::v5::Event::Incoming(p) = ev {
                if pred(&p) {
                    return p;
                }
            }
        }
    }

    /// Subscribes and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: Q5) {
        self.client.subscribe(filter, qos).await.expect("queued");
        self.wait_for(|p| matches!(p, P5::SubAck(_))).await;
    }

    /// The next PUBLISH.
    pub async fn next_publish(&mut self) -> rumqttc::v5::mqttbytes::v5::Publish {
        match self.wait_for(|p| matches!(p, P5::Publish(_))).await {
            P5::Publish(p) => p,
            _ => unreachable!("filtered"),
        }
    }
}

impl Drop for V5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// For `wss://`: the PEM CA to trust, and an optional client certificate and key (PEM).
pub type WsTls = (Vec<u8>, Option<(Vec<u8>, Vec<u8>)>);

/// rumqttc options for a WebSocket connection to `url` (the port is taken from it).
pub fn ws_options(url: &str, id: &str, tls: Option<WsTls>) -> rumqttc::MqttOptions {
    let mut opts = rumqttc::MqttOptions::new(id, url, 0);
    opts.set_transport(match tls {
        None => rumqttc::Transport::Ws,
        Some((ca, client_auth)) => rumqttc::Transport::wss(ca, client_auth, None),
    });
    opts
}
