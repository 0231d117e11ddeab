//! The HTTPS server: `POST /mutate` and `POST /mutate-namespace` answer
//! reviews; `/healthz`, `/ready` and `/metrics` are for the kubelet and
//! Prometheus. Every review is one log line (namespace, pod or owner,
//! decision, time) and counted; a body over [`MAX_BODY`] or slower than
//! [`READ_TIMEOUT`] is refused without reading on.
//!
//! Stopping ([`serve_until`]) is graceful, because with `failurePolicy:
//! Fail` a review that finds no webhook fails a pod's creation: `/ready`
//! turns 503 at once, reviews go on being answered for a delay while the
//! Service's endpoints drop this pod, then no connection is accepted and
//! those open finish the review under way (at most [`READ_TIMEOUT`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::images::ImageConfigs;
use crate::metrics::Metrics;
use crate::patch::Patcher;
use crate::review::{Decision, ReviewError, Subject, Trigger, review};
use crate::tls::ReloadingCert;

/// Largest review accepted. The API server sends the whole pod; 3 MiB is
/// over etcd's object limit (1.5 MiB) twice.
pub const MAX_BODY: usize = 3 * 1024 * 1024;
/// Time to receive a request's head and body, and to finish a TLS
/// handshake.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What every review needs.
pub struct Webhook {
    /// How pods are wrapped.
    pub patcher: Patcher,
    /// Pods here are never touched (the webhook's own).
    pub own_namespace: String,
    /// Where images' ENTRYPOINT and CMD are read.
    pub images: Box<dyn ImageConfigs>,
    pub metrics: Metrics,
    /// Set once stopping: `/ready` answers 503.
    pub stopping: AtomicBool,
}

impl Webhook {
    /// A webhook serving from the start. `metrics` are those `images`
    /// counts its lookups in, if it does.
    pub fn new(
        patcher: Patcher,
        own_namespace: String,
        images: Box<dyn ImageConfigs>,
        metrics: Metrics,
    ) -> Self {
        Webhook {
            patcher,
            own_namespace,
            images,
            metrics,
            stopping: AtomicBool::new(false),
        }
    }
}

/// Serves `listener` over TLS with `cert` until the process ends.
pub async fn serve(listener: TcpListener, cert: Arc<ReloadingCert>, webhook: Arc<Webhook>) {
    serve_until(
        listener,
        cert,
        webhook,
        std::future::pending(),
        Duration::ZERO,
    )
    .await
}

/// Serves until `stop` resolves, then stops as the module says, answering
/// for `delay` more; returns once every connection is closed or after
/// [`READ_TIMEOUT`].
pub async fn serve_until(
    listener: TcpListener,
    cert: Arc<ReloadingCert>,
    webhook: Arc<Webhook>,
    stop: impl Future<Output = ()>,
    delay: Duration,
) {
    let app = router(webhook.clone());
    let acceptor = TlsAcceptor::from(Arc::new(cert.server_config()));
    let open = GracefulShutdown::new();
    accept_until(&listener, &acceptor, &app, &open, stop).await;
    webhook.stopping.store(true, Ordering::SeqCst);
    tracing::info!(
        "[WEBHOOK] stopping: not ready; answering for {}s more",
        delay.as_secs_f32()
    );
    accept_until(&listener, &acceptor, &app, &open, tokio::time::sleep(delay)).await;
    drop(listener);
    let connections = open.count();
    tracing::info!("[WEBHOOK] no longer accepting; closing {connections} connection(s)");
    match tokio::time::timeout(READ_TIMEOUT, open.shutdown()).await {
        Ok(()) => tracing::info!("[WEBHOOK] stopped"),
        Err(_) => tracing::warn!(
            "[WEBHOOK] stopped with connections still open after {}s",
            READ_TIMEOUT.as_secs()
        ),
    }
}

/// Serves any `app` with the webhook's TLS and connection handling until
/// the process ends (the benchmark's floor serves a constant answer this
/// way).
pub async fn serve_router(listener: TcpListener, cert: Arc<ReloadingCert>, app: Router) {
    let acceptor = TlsAcceptor::from(Arc::new(cert.server_config()));
    let open = GracefulShutdown::new();
    accept_until(&listener, &acceptor, &app, &open, std::future::pending()).await
}

/// Accepts connections, each served by a task of its own, until `until`
/// resolves.
async fn accept_until(
    listener: &TcpListener,
    acceptor: &TlsAcceptor,
    app: &Router,
    open: &GracefulShutdown,
    until: impl Future<Output = ()>,
) {
    tokio::pin!(until);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut until => return,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("[WEBHOOK] accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // An answer leaves in more than one segment (TLS records, head and
        // body); with Nagle's algorithm the later ones wait for the API
        // server's delayed ACK, 40 ms on Linux.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("[WEBHOOK] TCP_NODELAY on the connection from {peer}: {e}");
        }
        let (acceptor, app, watcher) = (acceptor.clone(), app.clone(), open.watcher());
        tokio::spawn(async move { connection(tcp, peer, acceptor, app, watcher).await });
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    watcher: Watcher,
) {
    let tls = match tokio::time::timeout(READ_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!("[WEBHOOK] TLS handshake with {peer} failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!("[WEBHOOK] TLS handshake with {peer} timed out");
            return;
        }
    };
    let service = TowerToHyperService::new(app);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT);
    let served = watcher.watch(builder.serve_connection(TokioIo::new(tls), service));
    if let Err(e) = served.await {
        tracing::debug!("[WEBHOOK] connection from {peer} ended: {e}");
    }
}

fn router(webhook: Arc<Webhook>) -> Router {
    Router::new()
        .route("/mutate", post(mutate_annotated))
        .route("/mutate-namespace", post(mutate_namespace))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(webhook)
}

async fn ready(State(w): State<Arc<Webhook>>) -> Response {
    if w.stopping.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response()
    } else {
        "ready\n".into_response()
    }
}

async fn metrics(State(w): State<Arc<Webhook>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        w.metrics.render(),
    )
        .into_response()
}

async fn mutate_annotated(State(w): State<Arc<Webhook>>, req: Request) -> Response {
    mutate(&w, Trigger::Annotation, req).await
}

async fn mutate_namespace(State(w): State<Arc<Webhook>>, req: Request) -> Response {
    mutate(&w, Trigger::Namespace, req).await
}

/// The body, whole, within the size and time bounds.
async fn body_of(req: Request) -> Result<Bytes, (StatusCode, String)> {
    let body: Body = req.into_body();
    match tokio::time::timeout(READ_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(_)) => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the review is over {MAX_BODY} bytes, or its body broke off"),
        )),
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the review did not arrive within {}s",
                READ_TIMEOUT.as_secs()
            ),
        )),
    }
}

async fn mutate(w: &Webhook, trigger: Trigger, req: Request) -> Response {
    let started = Instant::now();
    let body = match body_of(req).await {
        Ok(b) => b,
        Err((status, why)) => {
            w.metrics.observe("error", started.elapsed());
            tracing::warn!("[WEBHOOK] review refused: {why}");
            return (status, why).into_response();
        }
    };
    match review(
        &body,
        trigger,
        &w.own_namespace,
        &w.patcher,
        w.images.as_ref(),
    )
    .await
    {
        Ok(r) => {
            let label = match &r.decision {
                Decision::Patched(_) => "patched",
                Decision::Skipped(_) => "skipped",
                Decision::Refused(_) => "refused",
            };
            w.metrics.observe(label, started.elapsed());
            log_review(&r.subject, &r.decision, label, started.elapsed());
            ([(header::CONTENT_TYPE, "application/json")], r.into_json()).into_response()
        }
        Err(e) => {
            w.metrics.observe("error", started.elapsed());
            tracing::warn!("[WEBHOOK] review failed: {e}");
            let status = match e {
                ReviewError::Lookup(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            (status, e.to_string()).into_response()
        }
    }
}

/// One line per review: who, what was decided, how long it took.
fn log_review(s: &Subject, decision: &Decision, label: &str, took: Duration) {
    let (ns, pod, us) = (&s.namespace, &s.name, took.as_micros());
    match decision {
        Decision::Patched(c) => tracing::info!(
            namespace = %ns, pod = %pod, decision = label, dry_run = s.dry_run,
            "[WEBHOOK] {ns}/{pod}: wrapped {} ({us} us)", c.join(", ")
        ),
        Decision::Skipped(why) => tracing::info!(
            namespace = %ns, pod = %pod, decision = label, dry_run = s.dry_run,
            "[WEBHOOK] {ns}/{pod}: left alone: {why} ({us} us)"
        ),
        Decision::Refused(why) => tracing::info!(
            namespace = %ns, pod = %pod, decision = label, dry_run = s.dry_run,
            "[WEBHOOK] {ns}/{pod}: refused: {why} ({us} us)"
        ),
    }
}
