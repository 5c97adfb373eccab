//! HTTPS for the operations listener (`[http] cert` and `key`): TLS handshakes run in tasks of
//! their own, so a client that stalls its handshake holds up no one else's request. The files
//! are loaded again when they change on disk (`cert_watch_secs`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Time a client has to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes completed and not yet taken by the server.
const READY: usize = 64;

/// The acceptor for `cert` and `key`: TLS 1.2 and 1.3, ALPN `http/1.1`, no client certificates.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, crate::transport::TlsError> {
    crate::transport::tls_acceptor(
        cert,
        key,
        crate::transport::ClientAuth {
            ca: None,
            ca_dir: None,
            required: false,
        },
        &["http/1.1"],
        crate::config::TlsVersion::Tls12,
    )
}

/// Swaps a new acceptor into `target` whenever `[http] cert` or `key` change on disk.
pub fn watch_files(
    config: &crate::config::HttpConfig,
    target: &Arc<ArcSwap<TlsAcceptor>>,
    shutdown: &watch::Receiver<bool>,
) {
    let (Some(cert), Some(key)) = (config.cert.clone(), config.key.clone()) else {
        return;
    };
    if config.cert_watch_secs == 0 {
        return;
    }
    crate::transport::watch_tls_files(
        "http".to_string(),
        vec![cert.clone(), key.clone()],
        Duration::from_secs(config.cert_watch_secs),
        move || acceptor(&cert, &key),
        Arc::clone(target),
        shutdown.clone(),
    );
}

/// A listener handing the HTTP server connections whose TLS handshake is done.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `listener` until `shutdown` flips, handshaking with what `acceptor` holds
    /// at each accept.
    pub fn new(
        listener: TcpListener,
        acceptor: Arc<ArcSwap<TlsAcceptor>>,
        mut shutdown: watch::Receiver<bool>,
    ) -> TlsListener {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(READY);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = shutdown.changed() => return,
                };
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: try again shortly.
                        tracing::warn!(error = %e, "HTTPS accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.load_full(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTPS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "HTTPS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { ready, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The acceptor stopped (shutdown): nothing more will come; the server's graceful
            // shutdown ends it.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
