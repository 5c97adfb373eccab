//! The running broker: binds the listeners, accepts connections (each served by its own task, so a
//! slow handshake never blocks accepting), enforces the connection limits, and shuts down cleanly.
//! What a listener does below MQTT (PROXY header, TLS, WebSocket upgrade) is its
//! [`Transport`]'s.

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
use crate::connection::OverLimit;
use arc_swap::ArcSwap;
use tokio_rustls::TlsAcceptor;

use crate::config::{ExtraListener, ListenerKind};
use crate::connection::{self, Dormitory, Limit};
use crate::transport::{self, Stream, Transport};
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
    /// The thread that answers connections over a limit could not be started.
    #[error("cannot start the thread that refuses connections over a limit: {0}")]
    Refuser(std::io::Error),
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
    /// The operations HTTP listener (`[http]`) could not start: its address, its admin token
    /// or its TLS files.
    #[error("{0}")]
    Http(crate::http::HttpError),
    /// No MQTT listener at all: `[listener] enabled = false` and no `[[listeners]]`.
    #[error("no MQTT listener: [listener] is turned off and [[listeners]] is empty")]
    NoListener,
    /// Cluster mode: the node could not join its cluster.
    #[error("[cluster]: {0}")]
    Cluster(crate::cluster::ClusterError),
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
    /// Binds the configured listeners and starts serving.
    pub async fn start(config: Config) -> Result<Broker, StartError> {
        let listener = match config.listener.enabled {
            true => {
                let addr = config.listen_addr();
                let listener = bind(addr).map_err(|source| StartError::Bind { addr, source })?;
                let bound = listener
                    .local_addr()
                    .map_err(|source| StartError::Bind { addr, source })?;
                Some((listener, bound))
            }
            false => None,
        };
        let limit = Limit::broker(config.limits.max_connections);
        let mut extra = Vec::new();
        let mut tls_listeners = Vec::new();
        for (index, l) in config.listeners.iter().enumerate() {
            let addr = SocketAddr::new(l.bind, l.port);
            let listener = bind(addr).map_err(|source| StartError::Bind { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| StartError::Bind { addr, source })?;
            let transport = Transport::for_listener(l, config.limits.max_packet_size)
                .map_err(|source| StartError::Tls { addr, source })?;
            if let Some(acceptor) = transport.reloadable_acceptor() {
                tls_listeners.push((l.clone(), Arc::clone(acceptor)));
            }
            let accepting = Listener {
                limit: Limit::listener(
                    l.kind,
                    u16::try_from(index + 1).unwrap_or(u16::MAX),
                    l.max_connections.unwrap_or(usize::MAX),
                    &limit,
                ),
                transport,
                allow_anonymous: l.allow_anonymous,
                connect_rate: Arc::default(),
            };
            extra.push((l.kind, bound, listener, accepting));
        }
        let local_addr = match (&listener, extra.first()) {
            (Some((_, bound)), _) | (None, Some((_, bound, _, _))) => *bound,
            (None, None) => return Err(StartError::NoListener),
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        for (l, acceptor) in &tls_listeners {
            watch_certificates(l, acceptor, &shutdown_rx);
        }
        let http = match config.http.enabled {
            true => {
                let prometheus = metrics::install().map_err(StartError::Metrics)?;
                let started = http::start(&config.http, prometheus, shutdown_rx.clone())
                    .await
                    .map_err(StartError::Http)?;
                Some(started)
            }
            false => None,
        };
        let auth = crate::auth::Auth::new(&config).map_err(StartError::Auth)?;
        let state = BrokerState::open(config, auth).map_err(StartError::Store)?;
        let cluster = state.config().cluster.clone();
        if cluster.enabled {
            // Joined before the first client is accepted (and before /ready says so): the
            // retained messages are mirrored and the node's interest is known to its peers.
            let joined = crate::cluster::Cluster::join(&cluster)
                .await
                .map_err(StartError::Cluster)?;
            joined.start(&state).await.map_err(StartError::Cluster)?;
            info!(node = %joined.node(), cluster = %cluster.name, "joined the cluster");
        }
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
        if listener.is_some() {
            info!(address = %local_addr, version = env!("CARGO_PKG_VERSION"), "MQTT listener ready (tcp)");
        }
        let ctx = Accept {
            state: Arc::clone(&state),
            refusals: Arc::new(Semaphore::new(MAX_REFUSING)),
            refuser: connection::Refuser::start(Arc::clone(&state)).map_err(StartError::Refuser)?,
            shutdown: shutdown_rx,
            dormitory: dormitory.clone(),
            tasks,
        };
        // Connections name their listener by its place: 0 the default one, then [[listeners]].
        let mut views = Vec::new();
        if let Some((_, bound)) = &listener {
            views.push(crate::broker::ListenerView {
                index: 0,
                name: crate::connection::listener_name(ListenerKind::Tcp, bound.port()),
                kind: ListenerKind::Tcp,
                address: *bound,
                cert: None,
            });
        }
        let configured = state.config().listeners.clone();
        for (i, (l, (kind, bound, _, _))) in configured.iter().zip(&extra).enumerate() {
            views.push(crate::broker::ListenerView {
                index: u16::try_from(i + 1).unwrap_or(u16::MAX),
                name: crate::connection::listener_name(*kind, bound.port()),
                kind: *kind,
                address: *bound,
                cert: l.cert.clone().filter(|_| kind.is_tls()),
            });
        }
        state.set_listeners(views);
        let mut extra_addrs = Vec::new();
        for (kind, bound, listener, accepting) in extra {
            info!(address = %bound, kind = ?kind, "MQTT listener ready");
            extra_addrs.push((kind, bound));
            tokio::spawn(accept_more(listener, Arc::new(accepting), ctx.clone()));
        }
        let default = Listener {
            transport: Transport::tcp(&state.config().listener),
            limit: Arc::clone(&limit),
            allow_anonymous: state.config().listener.allow_anonymous,
            connect_rate: Arc::default(),
        };
        let listener = listener.map(|(l, _)| l);
        let accept_task = tokio::spawn(accept_loop(listener, Arc::new(default), ctx));
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

    /// The address the MQTT listener (`[listener]`) is bound to (useful with port 0); with
    /// `[listener] enabled = false`, the first `[[listeners]]` entry's.
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
            match transport::acceptor_for(l) {
                Ok(fresh) => {
                    acceptor.store(Arc::new(fresh));
                    info!(port = l.port, "TLS certificate and key reloaded");
                }
                Err(e) => {
                    warn!(port = l.port, error = %e, "TLS files not reloaded; the running ones stay")
                }
            }
        }
        let a = &config.auth;
        if let Err(e) = self.state.auth().reload(&config) {
            tracing::error!(error = %e, "password and ACL files not reloaded; the running rules stay");
        } else if a.password_file.is_some() || a.acl_file.is_some() {
            info!("password and ACL files reloaded");
        } else if a.jwt.is_some() || a.http.is_some() {
            info!("authentication rules ([auth.jwt], [auth.http]) reloaded");
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

    /// Each declared queue's figures, taken at one instant per queue (what `/metrics` shows
    /// as the `tern_queue_…` series).
    pub fn queue_figures(&self) -> Vec<crate::metrics::Backlog> {
        self.state.queue_figures()
    }

    /// Each shared subscription group's figures (the `tern_shared_group_…` series).
    pub fn group_figures(&self) -> Vec<crate::metrics::Backlog> {
        self.state.group_figures()
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
        if let Some(remote) = self.state.remote() {
            let _ = tokio::time::timeout_at(deadline, remote.leave()).await;
        }
        if let Some(t) = self.http_task {
            let _ = tokio::time::timeout_at(deadline, t).await;
        }
    }
}

/// Loads a TLS listener's files again whenever they change on disk (`cert_watch_secs`).
fn watch_certificates(
    l: &ExtraListener,
    acceptor: &Arc<ArcSwap<TlsAcceptor>>,
    shutdown: &watch::Receiver<bool>,
) {
    if l.cert_watch_secs == 0 {
        return;
    }
    let paths = [&l.cert, &l.key, &l.client_ca, &l.client_ca_dir]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let listener = l.clone();
    transport::watch_tls_files(
        format!("{}:{}", l.kind.as_str(), l.port),
        paths,
        Duration::from_secs(l.cert_watch_secs),
        move || transport::acceptor_for(&listener),
        Arc::clone(acceptor),
        shutdown.clone(),
    );
}

/// Says loudly when anyone may connect and do anything.
fn warn_if_open(config: &Config) {
    let anonymous = (config.listener.enabled
        && crate::auth::allow_anonymous(config, config.listener.allow_anonymous))
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

/// Connections over a limit that are still answered with a CONNACK (after their TLS and
/// WebSocket handshakes); beyond these, a flood is just closed.
const MAX_REFUSING: usize = 1024;

/// One listener as its accept loop sees it: how its sockets become streams, the limit its
/// connections count against, and its own `allow_anonymous`.
struct Listener {
    transport: Transport,
    /// Its own limit within the broker's, or the broker's itself (the default listener).
    limit: Arc<Limit>,
    allow_anonymous: Option<bool>,
    /// Its own CONNECT rate bucket (`limits.max_connect_rate` is per listener).
    connect_rate: Arc<connection::ConnectRate>,
}

impl Listener {
    /// Whether a CONNECT arriving now would find no token in this listener's bucket (asked
    /// without taking one: the connection's own check, once its CONNECT is read, takes it).
    fn connect_rate_exhausted(&self, state: &BrokerState) -> bool {
        let limits = &state.config().limits;
        self.connect_rate.exhausted(
            limits.max_connect_rate,
            limits.connect_burst,
            std::time::Instant::now(),
        )
    }
}

/// What every accepted connection is started with, shared by all listeners.
#[derive(Clone)]
struct Accept {
    state: Arc<BrokerState>,
    /// Connections over a limit being answered ([`MAX_REFUSING`]).
    refusals: Arc<Semaphore>,
    /// Plain TCP connections over a limit are answered on its thread.
    refuser: connection::Refuser,
    shutdown: watch::Receiver<bool>,
    dormitory: Dormitory,
    tasks: TaskTracker,
}

/// The default listener's loop (or, with it turned off, a wait for shutdown); when it stops it
/// tells every connection to say goodbye and waits for them, at most `shutdown.grace_secs`.
async fn accept_loop(listener: Option<TcpListener>, accepting: Arc<Listener>, mut ctx: Accept) {
    match &listener {
        Some(l) => accept_until_shutdown(l, &accepting, &mut ctx).await,
        None => {
            let _ = ctx.shutdown.changed().await;
        }
    }
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
async fn accept_more(listener: TcpListener, accepting: Arc<Listener>, mut ctx: Accept) {
    accept_until_shutdown(&listener, &accepting, &mut ctx).await;
}

async fn accept_until_shutdown(
    listener: &TcpListener,
    accepting: &Arc<Listener>,
    ctx: &mut Accept,
) {
    loop {
        tokio::select! {
            _ = ctx.shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    metrics::connection_accepted(accepting.transport.kind());
                    spawn_connection(stream, peer, accepting, ctx);
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

fn spawn_connection(stream: TcpStream, peer: SocketAddr, accepting: &Arc<Listener>, ctx: &Accept) {
    if cfg!(not(target_os = "linux")) {
        let _ = stream.set_nodelay(true);
    }
    let plain = accepting.transport.is_plain_tcp();
    if plain && accepting.connect_rate_exhausted(&ctx.state) {
        // Off the worker threads: a storm's refusals do not queue ahead of connected clients.
        ctx.refuser.refuse(
            stream,
            peer,
            OverLimit::ConnectRate,
            accepting.transport.kind(),
        );
        return;
    }
    let state = Arc::clone(&ctx.state);
    let Some(slot) = connection::Slot::take(&accepting.limit) else {
        debug!(%peer, "connection refused: max_connections reached");
        if plain {
            ctx.refuser.refuse(
                stream,
                peer,
                OverLimit::Connections,
                accepting.transport.kind(),
            );
        } else {
            metrics::limit_hit("max_connections");
            refuse(stream, peer, accepting, ctx);
        }
        return;
    };
    let (shutdown, dormitory) = (ctx.shutdown.clone(), ctx.dormitory.clone());
    if accepting.transport.is_plain_tcp() {
        let origin = connection::Origin {
            peer,
            cert_identity: None,
            allow_anonymous: accepting.allow_anonymous,
            connect_rate: Arc::clone(&accepting.connect_rate),
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
    let accepting = Arc::clone(accepting);
    ctx.tasks.spawn(async move {
        let established = tokio::select! {
            s = accepting.transport.establish(stream, peer) => s,
            // Shutdown does not wait for a handshake.
            _ = stopping.changed() => None,
        };
        let Some(established) = established else {
            return;
        };
        // The one place a connection's address comes from: a PROXY header's, if the listener
        // reads one, for the logs, the login delay and the admin API alike.
        let origin = connection::Origin {
            peer: established.peer,
            cert_identity: established.cert_identity,
            allow_anonymous: accepting.allow_anonymous,
            connect_rate: Arc::clone(&accepting.connect_rate),
        };
        let stream = established.stream;
        connection::serve(stream, origin, state, shutdown, dormitory, slot).await;
    });
}

/// Answers a connection over a limit with CONNACK 0x97 (v5) / 0x03 (v3.1.1), after its TLS and
/// WebSocket handshakes, while fewer than [`MAX_REFUSING`] are being answered.
fn refuse(stream: TcpStream, peer: SocketAddr, accepting: &Arc<Listener>, ctx: &Accept) {
    let kind = accepting.transport.kind();
    let Ok(refusing) = Arc::clone(&ctx.refusals).try_acquire_owned() else {
        metrics::connection_closed(kind);
        return;
    };
    let state = Arc::clone(&ctx.state);
    let accepting = Arc::clone(accepting);
    let mut stopping = ctx.shutdown.clone();
    ctx.tasks.spawn(async move {
        let stream = tokio::select! {
            s = accepting.transport.establish(stream, peer) => s,
            _ = stopping.changed() => None,
        };
        if let Some(established) = stream {
            connection::refuse_over_limit(established.stream, state, OverLimit::Connections).await;
        }
        drop(refusing);
        metrics::connection_closed(kind);
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
