//! What one listener does below MQTT to each socket it accepts: nothing (plain TCP), a TLS
//! handshake, a WebSocket upgrade, or both, all within one deadline and in the connection's own
//! task, so a stalled or plaintext client costs only itself; before them, if the listener says
//! so, the PROXY protocol header that names the real client. Knows nothing of connection
//! limits or MQTT; failures are counted and logged here and the socket is dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::debug;

use super::{proxy, tls_acceptor, ws, ClientAuth, Stream, TlsError};
use crate::config::{ExtraListener, IdentitySource, ListenerConfig, ListenerKind};
use crate::metrics;

/// A TLS listener's acceptor (swapped by a reload) and where client identities come from.
#[derive(Clone)]
struct Tls {
    acceptor: Arc<ArcSwap<TlsAcceptor>>,
    identity: IdentitySource,
}

/// A WebSocket listener's path and frame settings.
struct Ws {
    path: String,
    config: WebSocketConfig,
}

/// A listener's PROXY protocol settings (`proxy_protocol = true`).
#[derive(Clone, Copy)]
struct Proxy {
    /// Bounds the header alone, before the handshakes' own deadline starts.
    header_timeout: Duration,
    /// Whether a certificate common name in the header is a verified identity.
    trust_identity: bool,
}

/// How one listener turns an accepted socket into a client's [`Stream`]. Cheap to clone (a
/// handshake task takes a clone).
#[derive(Clone)]
pub struct Transport {
    kind: ListenerKind,
    tls: Option<Tls>,
    ws: Option<Arc<Ws>>,
    proxy: Option<Proxy>,
    /// Bounds the TLS handshake and WebSocket upgrade together.
    handshake_timeout: Duration,
}

/// A connection ready for MQTT, and who is at the other end.
pub struct Established {
    /// The client's byte stream.
    pub stream: Stream,
    /// The client's address: the socket's peer, or the one a PROXY header named.
    pub peer: SocketAddr,
    /// The identity in the client's verified certificate (this listener's own TLS, or a
    /// trusted PROXY header's), from where the listener says (`identity_as_username`).
    pub cert_identity: Option<String>,
}

impl Transport {
    /// The default listener's: plain TCP, with a PROXY header first if it says so.
    pub fn tcp(l: &ListenerConfig) -> Transport {
        Transport {
            kind: ListenerKind::Tcp,
            tls: None,
            ws: None,
            proxy: l.proxy_protocol.then(|| Proxy {
                header_timeout: Duration::from_secs(l.proxy_header_timeout_secs),
                trust_identity: false,
            }),
            handshake_timeout: Duration::ZERO,
        }
    }

    /// A `[[listeners]]` entry's, with its TLS files read now; WebSocket frames are bounded a
    /// little above `max_packet_size`.
    pub fn for_listener(l: &ExtraListener, max_packet_size: u32) -> Result<Transport, TlsError> {
        let tls = match l.kind.is_tls() {
            true => Some(Tls {
                acceptor: Arc::new(ArcSwap::from_pointee(acceptor_for(l)?)),
                identity: l.identity_as_username,
            }),
            false => None,
        };
        let ws = l.kind.is_ws().then(|| {
            Arc::new(Ws {
                path: l.path.clone(),
                config: ws::config(max_packet_size),
            })
        });
        Ok(Transport {
            kind: l.kind,
            tls,
            ws,
            proxy: l.proxy_protocol.then(|| Proxy {
                header_timeout: Duration::from_secs(l.proxy_header_timeout_secs),
                trust_identity: l.proxy_trust_tls_identity,
            }),
            handshake_timeout: Duration::from_secs(l.handshake_timeout_secs),
        })
    }

    /// What the listener speaks below MQTT (the `listener` label of connection metrics).
    pub fn kind(&self) -> ListenerKind {
        self.kind
    }

    /// The TLS acceptor a reload swaps when the certificate files change; `None` without TLS.
    pub fn reloadable_acceptor(&self) -> Option<&Arc<ArcSwap<TlsAcceptor>>> {
        self.tls.as_ref().map(|t| &t.acceptor)
    }

    /// Whether an accepted socket is the client's stream as it is (no header to read, no
    /// handshake to run).
    pub fn is_plain_tcp(&self) -> bool {
        self.tls.is_none() && self.ws.is_none() && self.proxy.is_none()
    }

    /// The PROXY header, TLS handshake and WebSocket upgrade, as this listener needs, each
    /// within its deadline; failures are counted and logged here.
    pub async fn establish(&self, stream: TcpStream, peer: SocketAddr) -> Option<Established> {
        let mut tcp = stream;
        let mut peer = peer;
        let mut proxied_identity = None;
        if let Some(proxy) = &self.proxy {
            let read = proxy::read_header(&mut tcp);
            match tokio::time::timeout(proxy.header_timeout, read).await {
                Ok(Ok(header)) => {
                    if let Some(client) = header.source {
                        debug!(%peer, %client, "PROXY header names the client");
                        peer = client;
                    }
                    proxied_identity = header.verified_cn.filter(|_| proxy.trust_identity);
                }
                Ok(Err(e)) => {
                    metrics::proxy_header_failed(e.reason());
                    debug!(%peer, error = %e, "PROXY header refused");
                    return None;
                }
                Err(_) => {
                    metrics::proxy_header_failed("timeout");
                    debug!(%peer, "PROXY header timed out");
                    return None;
                }
            }
        }
        let deadline = tokio::time::Instant::now() + self.handshake_timeout;
        let mut stream = Stream::Tcp(tcp);
        if let Some(tls) = &self.tls {
            let tcp = stream.into_tcp().ok()?;
            match tokio::time::timeout_at(deadline, tls.acceptor.load().accept(tcp)).await {
                Ok(Ok(s)) => stream = Stream::Tls(Box::new(s)),
                Ok(Err(e)) => {
                    metrics::tls_handshake_failed("error");
                    debug!(%peer, error = %e, "TLS handshake failed");
                    return None;
                }
                Err(_) => {
                    metrics::tls_handshake_failed("timeout");
                    debug!(%peer, "TLS handshake timed out");
                    return None;
                }
            }
        }
        if let Some(ws) = &self.ws {
            let upgrade = ws::accept(stream, &ws.path, ws.config);
            match tokio::time::timeout_at(deadline, upgrade).await {
                Ok(Ok(s)) => stream = Stream::Ws(Box::new(s)),
                Ok(Err(e)) => {
                    metrics::ws_upgrade_failed("error");
                    debug!(%peer, error = %e, "WebSocket upgrade refused");
                    return None;
                }
                Err(_) => {
                    metrics::ws_upgrade_failed("timeout");
                    debug!(%peer, "WebSocket upgrade timed out");
                    return None;
                }
            }
        }
        // A certificate this listener verified itself comes before one the balancer vouches for.
        let cert_identity = self
            .tls
            .as_ref()
            .and_then(|t| stream.peer_identity(t.identity))
            .or(proxied_identity);
        Some(Established {
            stream,
            peer,
            cert_identity,
        })
    }
}

/// The TLS acceptor for a `[[listeners]]` entry of kind `tls` or `wss`, from its files (at start
/// and again on reload).
pub fn acceptor_for(l: &ExtraListener) -> Result<TlsAcceptor, TlsError> {
    let missing = |what| TlsError::File {
        what,
        path: String::new(),
        message: "not configured".into(),
    };
    tls_acceptor(
        l.cert
            .as_deref()
            .ok_or_else(|| missing("certificate chain"))?,
        l.key.as_deref().ok_or_else(|| missing("private key"))?,
        ClientAuth {
            ca: l.client_ca.as_deref(),
            ca_dir: l.client_ca_dir.as_deref(),
            required: l.require_client_cert,
        },
        // Browsers and WebSocket libraries offer `http/1.1` and fail without it.
        if l.kind.is_ws() {
            &["http/1.1"]
        } else {
            &["mqtt"]
        },
        l.min_tls_version,
    )
}
