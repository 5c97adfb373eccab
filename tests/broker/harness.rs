//! Starts a real broker in-process on an ephemeral port; every test gets its own.

use std::net::SocketAddr;
use std::time::Duration;

use tern::{Broker, Config};

/// How long a test waits for any single expected event before failing.
pub const WAIT: Duration = Duration::from_secs(5);

/// A broker bound to 127.0.0.1:0, shut down on [`TestBroker::stop`].
pub struct TestBroker {
    /// Where it listens.
    pub addr: SocketAddr,
    broker: Option<Broker>,
}

impl TestBroker {
    /// A broker with default settings.
    pub async fn start() -> TestBroker {
        Self::start_with(|_| {}).await
    }

    /// A broker with settings changed by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestBroker {
        let mut config = Config::default();
        config.listener.bind = "127.0.0.1".parse().expect("literal address");
        config.listener.port = 0;
        // In-process brokers share the test process: no HTTP listener (the binary's is tested
        // through a child process).
        config.http.enabled = false;
        tweak(&mut config);
        let broker = Broker::start(config).await.expect("broker starts");
        TestBroker {
            addr: broker.local_addr(),
            broker: Some(broker),
        }
    }

    /// The address of `[[listeners]]` entry `i`.
    pub fn listener_addr(&self, i: usize) -> std::net::SocketAddr {
        let broker = self.broker.as_ref().expect("broker running");
        broker.listener_addrs()[i].1
    }

    /// Port, for clients that take host and port separately.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Waits until exactly `n` connections are dormant (fails after [`WAIT`]).
    pub async fn wait_dormant(&self, n: usize) {
        let broker = self.broker.as_ref().expect("broker running");
        let deadline = tokio::time::Instant::now() + WAIT;
        while broker.dormant_connections() != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} connections dormant, expected {n}",
                broker.dormant_connections()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Every declared queue's figures, each taken at one instant.
    pub fn queue_figures(&self) -> Vec<tern::metrics::Backlog> {
        self.broker
            .as_ref()
            .map_or_else(Vec::new, Broker::queue_figures)
    }

    /// Every shared subscription group's figures, each taken at one instant.
    pub fn group_figures(&self) -> Vec<tern::metrics::Backlog> {
        self.broker
            .as_ref()
            .map_or_else(Vec::new, Broker::group_figures)
    }

    /// Connections dormant now.
    pub fn dormant(&self) -> usize {
        self.broker.as_ref().map_or(0, Broker::dormant_connections)
    }

    /// Graceful shutdown.
    pub async fn stop(mut self) {
        if let Some(b) = self.broker.take() {
            b.shutdown().await;
        }
    }
}
