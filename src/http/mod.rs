//! The operations listener (`[http]`, default 127.0.0.1:9883): `GET /metrics` in Prometheus text
//! format, `GET /health` (the process answers) and `GET /ready` (the MQTT listener is bound and
//! the store read back: 503 until then; in cluster mode also 503 while the node cannot write to
//! JetStream). It starts before the store is read back, so an orchestrator can tell a long
//! recovery from a dead process.
//!
//! With a token configured (`admin_token_file` or `admin_token_env`) it also serves the admin
//! API under `/api/v1/` ([`admin`]) and the status page at `/`, which uses only that API. Plain
//! HTTP, or HTTPS with `[http] cert` and `key`.

mod admin;
mod tls;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::broker::BrokerState;
use crate::config::HttpConfig;
use crate::metrics;

/// How often histograms are compacted, so they do not grow between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The status page, embedded at compile time: no files to install, no build step.
const STATUS_PAGE: &str = include_str!("status.html");

/// Why the HTTP listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound.
    #[error("cannot listen on {addr} for HTTP (metrics, health; keys http.bind, http.port, or http.enabled = false): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The admin token could not be read.
    #[error("[http] {key}: {message}")]
    Token {
        /// `admin_token_file` or `admin_token_env`.
        key: &'static str,
        /// What is wrong, naming the file or variable.
        message: String,
    },
    /// `[http] cert`/`key` unusable.
    #[error("[http] cert/key: {0}")]
    Tls(#[from] crate::transport::TlsError),
}

/// What the handlers read; the broker fills it in once it is up.
pub struct Ops {
    prometheus: PrometheusHandle,
    state: OnceLock<Arc<BrokerState>>,
    ready: AtomicBool,
    /// The admin API's bearer token; `None`: the API is off.
    token: Option<admin::Token>,
}

impl Ops {
    /// The broker is up: `/ready` answers 200 and `/metrics` includes its gauges.
    pub fn set_ready(&self, state: &Arc<BrokerState>) {
        let _ = self.state.set(Arc::clone(state));
        self.ready.store(true, Ordering::Release);
    }
}

/// Binds `[http]` and serves until `shutdown` flips; returns the bound address, the shared
/// state to mark ready, and the server's task.
pub async fn start(
    config: &HttpConfig,
    prometheus: PrometheusHandle,
    shutdown: watch::Receiver<bool>,
) -> Result<(SocketAddr, Arc<Ops>, JoinHandle<()>), HttpError> {
    let token = admin::Token::load(config)?;
    let acceptor = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        _ => None,
    };
    let addr = SocketAddr::new(config.bind, config.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { addr, source })?;
    if token.is_some() && acceptor.is_none() && !local.ip().is_loopback() {
        tracing::warn!(address = %local, "the admin API is served over plain HTTP beyond loopback (allow_plaintext_admin): its token crosses the network in clear text");
    }
    let admin_on = token.is_some();
    let ops = Arc::new(Ops {
        prometheus,
        state: OnceLock::new(),
        ready: AtomicBool::new(false),
        token,
    });
    let app = axum::Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(scrape))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .nest("/api/v1", admin::routes())
        .with_state(Arc::clone(&ops));
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let task = match acceptor {
        Some(acceptor) => {
            let acceptor = Arc::new(arc_swap::ArcSwap::from_pointee(acceptor));
            tls::watch_files(config, &acceptor, &shutdown);
            let tls = tls::TlsListener::new(listener, acceptor, shutdown.clone());
            serve(tls, app, shutdown, ops.prometheus.clone())
        }
        None => serve(listener, app, shutdown, ops.prometheus.clone()),
    };
    tracing::info!(
        url = %format!("{scheme}://{local}/"),
        admin_api = admin_on,
        "HTTP listener ready (metrics, health, status page)"
    );
    Ok((local, ops, task))
}

/// Serves `app` on `listener` until `shutdown` flips, compacting histograms meanwhile.
fn serve<L>(
    listener: L,
    app: axum::Router,
    mut shutdown: watch::Receiver<bool>,
    upkeep: PrometheusHandle,
) -> JoinHandle<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.changed().await;
            })
            .into_future();
        tokio::pin!(server);
        loop {
            tokio::select! {
                r = &mut server => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "HTTP listener failed");
                    }
                    return;
                }
                _ = tick.tick() => upkeep.run_upkeep(),
            }
        }
    })
}

/// The status page: static, so it is served whether or not the API is on (it says which).
async fn status_page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STATUS_PAGE,
    )
}

async fn scrape(State(ops): State<Arc<Ops>>) -> impl IntoResponse {
    metrics::sync();
    let mut backlog = String::new();
    if let Some(state) = ops.state.get() {
        metrics::set_snapshot(&state.snapshot());
        backlog = state.render_backlog();
    }
    let mut body = ops.prometheus.render();
    body.push_str(&backlog);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

async fn ready(State(ops): State<Arc<Ops>>) -> impl IntoResponse {
    if !ops.ready.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n");
    }
    // Cluster mode: a node that cannot write to JetStream cannot acknowledge QoS 1/2 messages
    // or take CONNECTs; a load balancer should send clients elsewhere.
    let quorum = ops
        .state
        .get()
        .and_then(|s| s.remote())
        .is_none_or(|r| r.healthy());
    if quorum {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no JetStream quorum\n")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn status(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out.split_whitespace().nth(1).unwrap().to_string()
    }

    /// `/health` answers from the start; `/ready` only once the broker is up (503 while the store
    /// is being read back).
    #[tokio::test]
    async fn ready_only_once_the_broker_is_up() {
        let prometheus = crate::metrics::install().unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let config = crate::config::HttpConfig {
            port: 0,
            ..Default::default()
        };
        let (addr, ops, _task) = super::start(&config, prometheus, rx).await.unwrap();
        assert_eq!(status(addr, "/health").await, "200");
        assert_eq!(status(addr, "/ready").await, "503");
        let state = std::sync::Arc::new(crate::broker::BrokerState::new(
            crate::config::Config::default(),
        ));
        ops.set_ready(&state);
        assert_eq!(status(addr, "/ready").await, "200");
        assert_eq!(status(addr, "/metrics").await, "200");
    }
}
