//! The operations listener (`[http]`, default 127.0.0.1:9883): `GET /metrics` in Prometheus text
//! format, `GET /health` (the process answers) and `GET /ready` (the MQTT listener is bound and
//! the store read back: 503 until then; in cluster mode also 503 while the node cannot write to
//! JetStream). It starts before the store is read back, so an
//! orchestrator can tell a long recovery from a dead process.

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
use crate::metrics;

/// How often histograms are compacted, so they do not grow between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// What the handlers read; the broker fills it in once it is up.
pub struct Ops {
    prometheus: PrometheusHandle,
    state: OnceLock<Arc<BrokerState>>,
    ready: AtomicBool,
}

impl Ops {
    /// The broker is up: `/ready` answers 200 and `/metrics` includes its gauges.
    pub fn set_ready(&self, state: &Arc<BrokerState>) {
        let _ = self.state.set(Arc::clone(state));
        self.ready.store(true, Ordering::Release);
    }
}

/// Binds `addr` and serves until `shutdown` flips; returns the bound address, the shared state
/// to mark ready, and the server's task.
pub async fn start(
    addr: SocketAddr,
    prometheus: PrometheusHandle,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, Arc<Ops>, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let ops = Arc::new(Ops {
        prometheus,
        state: OnceLock::new(),
        ready: AtomicBool::new(false),
    });
    let app = axum::Router::new()
        .route("/metrics", get(scrape))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .with_state(Arc::clone(&ops));
    let upkeep = ops.prometheus.clone();
    let task = tokio::spawn(async move {
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
    });
    tracing::info!(url = %format!("http://{local}/metrics"), "HTTP listener ready (metrics, health)");
    Ok((local, ops, task))
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
        let (addr, ops, _task) = super::start("127.0.0.1:0".parse().unwrap(), prometheus, rx)
            .await
            .unwrap();
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
