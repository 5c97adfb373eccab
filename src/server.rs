//! The running broker: binds the listener, accepts connections (each served by its own task, so a
//! slow handshake never blocks accepting), enforces the connection limit, and shuts down cleanly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::broker::BrokerState;
use crate::config::Config;
use arc_swap::ArcSwap;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::config::{ExtraListener, IdentitySource, ListenerKind};
use crate::connection::{self, Dormitory, Limit};
use crate::transport::{self, Stream};
use crate::{http, metrics, sys};

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
    /// The store could not be opened.
    #[error("{0}")]
    Store(crate::store::StoreError),
    /// The password or ACL file could not be used.
    #[error("{0}")]
    Auth(crate::auth::AuthError),
    /// The epoll set for dormant connections could not be created.
    #[error("cannot create the epoll set for idle connections: {0}")]
    Dormitory(std::io::Error),
    /// A TLS listener's certificate or key could not be used.
    #[error("TLS listener on {addr}: {source}")]
    Tls {
        /// The listener's address.
        addr: SocketAddr,
        /// Why.
        source: crate::transport::TlsError,
    },
    /// The operations HTTP listener (`[http]`) could not be bound.
    #[error("cannot listen on {addr} for HTTP (metrics, health; keys http.bind, http.port, or http.enabled = false): {source}")]
    HttpBind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The Prometheus recorder could not be installed.
    #[error("cannot set up metrics: {0}")]
    Metrics(String),
}

/// A running broker. Call [`Broker::shutdown`] to stop it.
pub struct Broker {
    state: Arc<BrokerState>,
    local_addr: SocketAddr,
    extra_addrs: Vec<(ListenerKind, SocketAddr)>,
    /// Each TLS listener's settings and its acceptor, swapped when SIGHUP reloads the files.
    tls_listeners: Vec<(ExtraListener, Arc<ArcSwap<TlsAcceptor>>)>,
    /// `limits.max_connections`, across every listener.
    limit: Arc<Limit>,
    http_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    accept_task: JoinHandle<()>,
    http_task: Option<JoinHandle<()>>,
    dormitory: Dormitory,
    bridges: crate::bridge::Bridges,
}

impl Broker {
    /// Binds the configured listener and starts serving.
    pub async fn start(config: Config) -> Result<Broker, StartError> {
        let addr = config.listen_addr();
        let listener = bind(addr).map_err(|source| StartError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let limit = Limit::new(config.limits.max_connections, None);
        let mut extra = Vec::new();
        let mut tls_listeners = Vec::new();
        for l in &config.listeners {
            let addr = SocketAddr::new(l.bind, l.port);
            let listener = bind(addr).map_err(|source| StartError::Bind { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| StartError::Bind { addr, source })?;
            let transport = Transport::for_listener(l, &config, &limit)
                .map_err(|source| StartError::Tls { addr, source })?;
            if let Some(t) = &transport.tls {
                tls_listeners.push((l.clone(), Arc::clone(&t.acceptor)));
            }
            extra.push((l.kind, bound, listener, transport));
        }
        let (shutdown, shutdown_rx) = watch::channel(false);
        let http = match config.http.enabled {
            true => {
                let prometheus = metrics::install().map_err(StartError::Metrics)?;
                let http_addr = SocketAddr::new(config.http.bind, config.http.port);
                let started = http::start(http_addr, prometheus, shutdown_rx.clone())
                    .await
                    .map_err(|source| StartError::HttpBind {
                        addr: http_addr,
                        source,
                    })?;
                Some(started)
            }
            false => None,
        };
        let auth = crate::auth::Auth::new(&config).map_err(StartError::Auth)?;
        let state = BrokerState::open(config, auth).map_err(StartError::Store)?;
        warn_if_open(&state.config());
        let (dormitory, poll) = Dormitory::new().map_err(StartError::Dormitory)?;

        // A counter, not a JoinSet: no per-connection bookkeeping beyond one reference.
        let tasks = TaskTracker::new();
        tasks.spawn(dormitory.clone().run(
            poll,
            Arc::clone(&state),
            tasks.clone(),
            shutdown_rx.clone(),
        ));
        // Without a reader (no HTTP listener, no $SYS) nothing is counted until a reload turns
        // $SYS on.
        if state.config().sys.interval_secs > 0 || state.config().http.enabled {
            metrics::enable();
        }
        tokio::spawn(sys::run(Arc::clone(&state), shutdown_rx.clone()));
        let bridges = crate::bridge::Bridges::start(&state);
        let (http_addr, http_task) = match http {
            Some((addr, ops, task)) => {
                ops.set_ready(&state);
                (Some(addr), Some(task))
            }
            None => (None, None),
        };
        // Only once the store is read back (and /ready says so): clients connecting from now on
        // see their sessions.
        info!(address = %local_addr, version = env!("CARGO_PKG_VERSION"), "MQTT listener ready (tcp)");
        let ctx = Accept {
            state: Arc::clone(&state),
            refusals: Arc::new(Semaphore::new(MAX_REFUSING)),
            shutdown: shutdown_rx,
            dormitory: dormitory.clone(),
            tasks,
        };
        let mut extra_addrs = Vec::new();
        for (kind, bound, listener, transport) in extra {
            info!(address = %bound, kind = ?kind, "MQTT listener ready");
            extra_addrs.push((kind, bound));
            tokio::spawn(accept_more(listener, transport, ctx.clone()));
        }
        let accept_task = tokio::spawn(accept_loop(
            listener,
            Transport::tcp(&limit, state.config().listener.allow_anonymous),
            ctx,
        ));
        Ok(Broker {
            state,
            local_addr,
            extra_addrs,
            tls_listeners,
            limit,
            http_addr,
            shutdown,
            accept_task,
            http_task,
            dormitory,
            bridges,
        })
    }

    /// The address the MQTT listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Puts reloaded settings in force (SIGHUP); returns the keys that changed but need a
    /// restart (they keep their running values).
    pub fn reload(&self, config: crate::Config) -> Vec<&'static str> {
        if config.sys.interval_secs > 0 {
            metrics::enable();
        }
        self.limit.set_max(config.limits.max_connections);
        self.bridges.reload(&config.bridge);
        // Certificates and keys are read again from the same files: new handshakes use them,
        // connections already up keep theirs. A file that cannot be used keeps the old ones.
        for (l, acceptor) in &self.tls_listeners {
            match acceptor_for(l) {
                Ok(fresh) => {
                    acceptor.store(Arc::new(fresh));
                    info!(port = l.port, "TLS certificate and key reloaded");
                }
                Err(e) => {
                    warn!(port = l.port, error = %e, "TLS files not reloaded; the running ones stay")
                }
            }
        }
        if let Err(e) = self.state.auth().reload(&config) {
            tracing::error!(error = %e, "password and ACL files not reloaded; the running rules stay");
        } else if config.auth.password_file.is_some() || config.auth.acl_file.is_some() {
            info!("password and ACL files reloaded");
        }
        self.state.reload(config)
    }

    /// The addresses of the `[[listeners]]`, in order, with their kind.
    pub fn listener_addrs(&self) -> &[(ListenerKind, SocketAddr)] {
        &self.extra_addrs
    }

    /// The address of the operations HTTP listener, when `[http] enabled`.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Connections currently dormant (quiet, without a task; `limits.dormant_after_ms`).
    pub fn dormant_connections(&self) -> usize {
        self.dormitory.len()
    }

    /// Stops accepting, disconnects every client (v5: DISCONNECT 0x8B), waits for them to hand
    /// their sessions back, and flushes the store: at most `shutdown.grace_secs` in all.
    pub async fn shutdown(self) {
        let grace = Duration::from_secs(self.state.config().shutdown.grace_secs);
        let deadline = tokio::time::Instant::now() + grace;
        // Bridges first: their sessions are parked (and stored) before the store is flushed.
        self.bridges.shutdown().await;
        let _ = self.shutdown.send(true);
        if let Err(e) = self.accept_task.await {
            warn!(error = %e, "accept loop ended abnormally");
        }
        if let Some(flushed) = self.state.flush_store() {
            match tokio::time::timeout_at(deadline, flushed.wait()).await {
                Ok(Ok(())) => debug!("store flushed"),
                Ok(Err(e)) => warn!(error = %e, "store flush failed"),
                Err(_) => warn!("store not flushed within the shutdown grace period"),
            }
        }
        if let Some(t) = self.http_task {
            let _ = tokio::time::timeout_at(deadline, t).await;
        }
    }
}

/// Says loudly when anyone may connect and do anything.
fn warn_if_open(config: &Config) {
    let anonymous = crate::auth::allow_anonymous(config, config.listener.allow_anonymous)
        || config
            .listeners
            .iter()
            .any(|l| crate::auth::allow_anonymous(config, l.allow_anonymous));
    if anonymous && !crate::auth::authentication_configured(config) {
        warn!(
            acl = config.auth.acl_file.is_some(),
            "no authentication configured: any client may connect (set [auth] password_file, \
             or allow_anonymous = false; see README \"Securing Tern\")"
        );
    }
}

/// Connections the kernel may hold for us before we accept them. tokio's default (128) drops
/// SYNs during a reconnect storm of a few hundred devices, and each dropped one waits a second
/// or more to retry; the kernel caps this at `net.core.somaxconn`.
const BACKLOG: u32 = 1024;

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    // Accepted sockets inherit it on Linux: one setsockopt per listener, not per connection.
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The TLS acceptor for a `[[listeners]]` entry of kind `tls`, from its files.
fn acceptor_for(l: &ExtraListener) -> Result<TlsAcceptor, transport::TlsError> {
    let missing = |what| transport::TlsError::File {
        what,
        path: String::new(),
        message: "not configured".into(),
    };
    transport::tls_acceptor(
        l.cert
            .as_deref()
            .ok_or_else(|| missing("certificate chain"))?,
        l.key.as_deref().ok_or_else(|| missing("private key"))?,
        transport::ClientAuth {
            ca: l.client_ca.as_deref(),
            required: l.require_client_cert,
        },
        // Browsers and WebSocket libraries offer `http/1.1` and fail without it.
        if l.kind.is_ws() {
            &["http/1.1"]
        } else {
            &["mqtt"]
        },
    )
}

/// Connections over a limit that are still answered with a CONNACK (after their TLS and
/// WebSocket handshakes); beyond these, a flood is just closed.
const MAX_REFUSING: usize = 1024;

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

/// How one listener turns an accepted socket into a client's [`Stream`], and its limit.
#[derive(Clone)]
struct Transport {
    tls: Option<Tls>,
    ws: Option<Arc<Ws>>,
    /// Bounds the TLS handshake and WebSocket upgrade together.
    handshake_timeout: Duration,
    limit: Arc<Limit>,
    /// The listener's own `allow_anonymous`.
    allow_anonymous: Option<bool>,
}

impl Transport {
    /// The default listener's: plain TCP under the broker-wide limit.
    fn tcp(limit: &Arc<Limit>, allow_anonymous: Option<bool>) -> Transport {
        Transport {
            tls: None,
            ws: None,
            handshake_timeout: Duration::ZERO,
            limit: Arc::clone(limit),
            allow_anonymous,
        }
    }

    fn for_listener(
        l: &ExtraListener,
        config: &Config,
        limit: &Arc<Limit>,
    ) -> Result<Transport, transport::TlsError> {
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
                config: transport::ws::config(config.limits.max_packet_size),
            })
        });
        Ok(Transport {
            tls,
            ws,
            handshake_timeout: Duration::from_secs(l.handshake_timeout_secs),
            limit: Limit::new(
                l.max_connections.unwrap_or(usize::MAX),
                Some(Arc::clone(limit)),
            ),
            allow_anonymous: l.allow_anonymous,
        })
    }

    fn is_plain_tcp(&self) -> bool {
        self.tls.is_none() && self.ws.is_none()
    }

    /// The TLS handshake and WebSocket upgrade, as this listener needs, within its deadline;
    /// failures are counted and logged here.
    async fn establish(&self, stream: TcpStream, peer: SocketAddr) -> Option<Stream> {
        let deadline = tokio::time::Instant::now() + self.handshake_timeout;
        let mut stream = Stream::Tcp(stream);
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
            let upgrade = transport::ws::accept(stream, &ws.path, ws.config);
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
        Some(stream)
    }
}

/// What every accepted connection is started with, shared by all listeners.
#[derive(Clone)]
struct Accept {
    state: Arc<BrokerState>,
    /// Connections over a limit being answered ([`MAX_REFUSING`]).
    refusals: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
    dormitory: Dormitory,
    tasks: TaskTracker,
}

/// The default listener's loop; when it stops (shutdown) it tells every connection to say
/// goodbye and waits for them, at most `shutdown.grace_secs`.
async fn accept_loop(listener: TcpListener, transport: Transport, mut ctx: Accept) {
    accept_until_shutdown(&listener, &transport, &mut ctx).await;
    drop(listener);
    ctx.state.begin_shutdown();
    ctx.tasks.close();
    let grace = Duration::from_secs(ctx.state.config().shutdown.grace_secs);
    if tokio::time::timeout(grace, ctx.tasks.wait()).await.is_err() {
        warn!(
            remaining = ctx.tasks.len(),
            "connections still open after the shutdown grace period"
        );
    }
}

/// A `[[listeners]]` loop: accepts until shutdown (the default listener's loop does the rest).
async fn accept_more(listener: TcpListener, transport: Transport, mut ctx: Accept) {
    accept_until_shutdown(&listener, &transport, &mut ctx).await;
}

async fn accept_until_shutdown(listener: &TcpListener, transport: &Transport, ctx: &mut Accept) {
    loop {
        tokio::select! {
            _ = ctx.shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    metrics::connection_accepted();
                    spawn_connection(stream, peer, transport, ctx);
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

fn spawn_connection(stream: TcpStream, peer: SocketAddr, transport: &Transport, ctx: &Accept) {
    if cfg!(not(target_os = "linux")) {
        let _ = stream.set_nodelay(true);
    }
    let state = Arc::clone(&ctx.state);
    let Some(slot) = connection::Slot::take(&transport.limit) else {
        metrics::limit_hit("max_connections");
        debug!(%peer, "connection refused: max_connections reached");
        refuse(stream, peer, transport, ctx);
        return;
    };
    let (shutdown, dormitory) = (ctx.shutdown.clone(), ctx.dormitory.clone());
    if transport.is_plain_tcp() {
        let origin = connection::Origin {
            peer,
            cert_identity: None,
            allow_anonymous: transport.allow_anonymous,
        };
        ctx.tasks.spawn(connection::serve(
            Stream::Tcp(stream),
            origin,
            state,
            shutdown,
            dormitory,
            slot,
        ));
        return;
    }
    // The handshakes run here, in the connection's own task, by a deadline: a stalled or
    // plaintext client costs only itself.
    let mut stopping = ctx.shutdown.clone();
    let transport = transport.clone();
    ctx.tasks.spawn(async move {
        let stream = tokio::select! {
            s = transport.establish(stream, peer) => s,
            // Shutdown does not wait for a handshake.
            _ = stopping.changed() => None,
        };
        let Some(stream) = stream else {
            return;
        };
        let origin = connection::Origin {
            peer,
            cert_identity: transport
                .tls
                .as_ref()
                .and_then(|t| stream.peer_identity(t.identity)),
            allow_anonymous: transport.allow_anonymous,
        };
        connection::serve(stream, origin, state, shutdown, dormitory, slot).await;
    });
}

/// Answers a connection over a limit with CONNACK 0x97 (v5) / 0x03 (v3.1.1), after its TLS and
/// WebSocket handshakes, while fewer than [`MAX_REFUSING`] are being answered.
fn refuse(stream: TcpStream, peer: SocketAddr, transport: &Transport, ctx: &Accept) {
    let Ok(refusing) = Arc::clone(&ctx.refusals).try_acquire_owned() else {
        metrics::connection_closed();
        return;
    };
    let state = Arc::clone(&ctx.state);
    let transport = transport.clone();
    let mut stopping = ctx.shutdown.clone();
    ctx.tasks.spawn(async move {
        let stream = tokio::select! {
            s = transport.establish(stream, peer) => s,
            _ = stopping.changed() => None,
        };
        if let Some(stream) = stream {
            connection::refuse_busy(stream, state).await;
        }
        drop(refusing);
        metrics::connection_closed();
    });
}

#[cfg(test)]
mod tests {
    /// Every accepted connection has Nagle off (small acknowledgements go out at once), set
    /// once on the listener and inherited.
    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let listener = super::bind("127.0.0.1:0".parse().expect("address")).expect("bind");
        let addr = listener.local_addr().expect("address");
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (stream, _) = listener.accept().await.expect("accept");
        if cfg!(not(target_os = "linux")) {
            stream.set_nodelay(true).expect("nodelay");
        }
        assert!(stream.nodelay().expect("nodelay"));
    }
}
