//! Prometheus metrics of the CSI provider and the health endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::Error;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// Counters and the Mount latency histogram.
pub struct Metrics {
    registry: Registry,
    pub mounts: Family<OutcomeLabel, Counter>,
    pub objects: Counter,
    pub duration: Histogram,
    /// gRPC connections open now.
    pub connections: Gauge,
    /// gRPC connections closed at accept: `max_connections` were open.
    pub connections_refused: Counter,
    pub ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kernelseal_csi");
        let mounts = Family::<OutcomeLabel, Counter>::default();
        let objects = Counter::default();
        // 1 ms … ~16 s: cache hits sit at the bottom, remote logins higher.
        let duration = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.001, 2.0, 15,
        ));
        registry.register("mounts", "Mount calls by outcome", mounts.clone());
        registry.register(
            "objects",
            "Objects returned by successful mounts",
            objects.clone(),
        );
        registry.register(
            "mount_duration_seconds",
            "Mount handling time",
            duration.clone(),
        );
        let connections = Gauge::default();
        let connections_refused = Counter::default();
        registry.register("connections", "gRPC connections open", connections.clone());
        registry.register(
            "connections_refused",
            "gRPC connections closed at accept because the maximum were open",
            connections_refused.clone(),
        );
        Metrics {
            registry,
            mounts,
            objects,
            duration,
            connections,
            connections_refused,
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Binds the health endpoint; done before serving so that a taken port
/// fails the start instead of leaving the provider without probes.
pub async fn bind_health(addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Serve {
            what: format!("health endpoint {addr}"),
            message: e.to_string(),
        })
}

/// Serves `/healthz`, `/ready` and `/metrics` until `shutdown` resolves.
pub async fn serve_health(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    use axum::routing::get;
    let addr = listener.local_addr().ok();
    let serve_err = |message: String| Error::Serve {
        what: format!("health endpoint {addr:?}"),
        message,
    };
    let m_ready = metrics.clone();
    let m_metrics = metrics;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/ready",
            get(move || {
                let ready = m_ready.ready.load(Ordering::Relaxed);
                async move {
                    if ready {
                        (axum::http::StatusCode::OK, "ready\n")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let text = m_metrics.encode();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| serve_err(e.to_string()))
}
