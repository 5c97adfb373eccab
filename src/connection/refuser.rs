//! Refusals off the worker threads. A reconnect storm over `limits.max_connect_rate` (or past
//! `max_connections`) brings thousands of connections a second that are only to be told no;
//! answered on the broker's worker threads, each one's accept, CONNECT read, CONNACK and close
//! queues ahead of the connected clients' messages, and their latency tail grows with the
//! storm (benches/connect-storm.sh measured the pair's p99 at about 15x idle with the limit
//! on). Plain TCP connections the accept loop already knows will be refused are handed, as
//! sockets, to one thread of their own (its own runtime and reactor), which reads each CONNECT
//! for its version, answers v5 0x9F Connection rate exceeded or 0x97 Quota exceeded, v3.1.1
//! 0x03 Server unavailable, and closes. The operating system then shares the cores between
//! that thread and the workers, and a woken worker no longer waits behind the storm's tasks.
//! TLS and WebSocket connections are refused where they are (their handshakes come first).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, warn};

use super::refuse_over_limit;
use crate::broker::BrokerState;
use crate::config::ListenerKind;
use crate::metrics;
use crate::transport::Stream;

/// Why a connection is refused before it is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverLimit {
    /// `limits.max_connect_rate`: v5 CONNACK 0x9F.
    ConnectRate,
    /// `max_connections`: v5 CONNACK 0x97.
    Connections,
}

/// Sockets waiting for the refusing thread, at most; beyond them a flood is just closed.
const QUEUED: usize = 4096;
/// Refusals in progress at once on that thread (each waits for a CONNECT, at most the
/// connect timeout).
const IN_PROGRESS: usize = 1024;

/// The handle the accept loops give refused sockets to. Cheap to clone; the thread ends when
/// the last handle is gone (the broker stopped accepting).
#[derive(Clone)]
pub struct Refuser {
    tx: mpsc::Sender<(std::net::TcpStream, SocketAddr, OverLimit, ListenerKind)>,
}

impl Refuser {
    /// Starts the refusing thread for `state`'s broker.
    pub fn start(state: Arc<BrokerState>) -> std::io::Result<Refuser> {
        let (tx, rx) = mpsc::channel(QUEUED);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("tern-refuser".into())
            .spawn(move || runtime.block_on(serve(rx, state)))?;
        Ok(Refuser { tx })
    }

    /// Answers `stream` (an accepted plain TCP connection) on the refusing thread; if that
    /// thread is behind by [`QUEUED`] sockets, closes it at once. Counted either way.
    pub fn refuse(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        why: OverLimit,
        kind: ListenerKind,
    ) {
        count(why);
        let queued = stream
            .into_std()
            .map(|s| self.tx.try_send((s, peer, why, kind)).is_ok());
        if !matches!(queued, Ok(true)) {
            debug!(%peer, ?why, "connection closed unanswered: refusals are behind");
            metrics::connection_closed(kind);
        }
    }
}

fn count(why: OverLimit) {
    metrics::limit_hit(match why {
        OverLimit::ConnectRate => "max_connect_rate",
        OverLimit::Connections => "max_connections",
    });
}

/// The refusing thread's loop: each socket in a task of its own, [`IN_PROGRESS`] at a time.
async fn serve(
    mut rx: mpsc::Receiver<(std::net::TcpStream, SocketAddr, OverLimit, ListenerKind)>,
    state: Arc<BrokerState>,
) {
    let slots = Arc::new(Semaphore::new(IN_PROGRESS));
    while let Some((socket, peer, why, kind)) = rx.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            match tokio::net::TcpStream::from_std(socket) {
                Ok(stream) => {
                    debug!(%peer, ?why, "CONNECT refused over a limit");
                    refuse_over_limit(Stream::Tcp(stream), state, why).await;
                }
                Err(e) => warn!(%peer, error = %e, "a refused connection could not be answered"),
            }
            metrics::connection_closed(kind);
            drop(slot);
        });
    }
}
