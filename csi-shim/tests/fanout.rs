//! Fan-out bounds (issue 13, item 6): a Vault stand-in on 127.0.0.1 that
//! follows Vault's API (kubernetes login, then reads with the token it
//! issued) counts the requests it is serving at once and the TCP
//! connections open to it.
//!
//! Each request is held until more requests than the bound under test are
//! in flight, or a short while has passed: without the bound the burst
//! overlaps for certain, with it the count never passes the bound.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use kernelseal_csi::LocalPolicy;
use kernelseal_csi::limits::{PER_MOUNT, PER_UPSTREAM};
use serde_json::{Value, json};
use support::{Server, attributes, request};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The provider keeps at most this many idle connections per Vault.
const POOL_IDLE: usize = 8;
/// How long a request waits for the others before it is answered.
const HOLD: Duration = Duration::from_millis(50);

#[derive(Default)]
struct Counts {
    /// Requests being served now, and the most seen at once.
    in_flight: tokio::sync::watch::Sender<usize>,
    max_in_flight: AtomicUsize,
    /// TCP connections open now.
    open: AtomicUsize,
    /// Bound under test: a request is held until more than this are in flight.
    hold_until: AtomicUsize,
    /// Vault tokens issued by logins.
    tokens: Mutex<Vec<String>>,
}

type Shared = Arc<Counts>;

/// Decrements the in-flight count when the request ends, however it ends.
struct InFlight(Shared);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|n| *n -= 1);
    }
}

async fn handle(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut rx = s.in_flight.subscribe();
    s.in_flight.send_modify(|n| *n += 1);
    let _guard = InFlight(s.clone());
    let now = *s.in_flight.borrow();
    s.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let bound = s.hold_until.load(Ordering::SeqCst);
    let _ = tokio::time::timeout(HOLD, rx.wait_for(|n| *n > bound)).await;

    let path = uri.path();
    if method == Method::POST && path == "/v1/auth/kubernetes/login" {
        let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let jwt = req["jwt"].as_str().unwrap_or("");
        if req["role"] != "web-role" || !jwt.starts_with("eyJ.pod-token-") {
            return (
                StatusCode::FORBIDDEN,
                axum::Json(json!({"errors": ["permission denied"]})),
            )
                .into_response();
        }
        let mut tokens = s.tokens.lock().unwrap();
        let tok = format!("hvs.fanout-{}", tokens.len());
        tokens.push(tok.clone());
        return axum::Json(json!({"auth": {"client_token": tok, "lease_duration": 3600,
            "renewable": true, "policies": ["web"]}}))
        .into_response();
    }
    let token = headers
        .get("X-Vault-Token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !s.tokens.lock().unwrap().iter().any(|t| t == token) {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"errors": ["permission denied"]})),
        )
            .into_response();
    }
    match path.strip_prefix("/v1/secret/data/") {
        Some(name) => axum::Json(
            json!({"data": {"data": {"value": format!("value-of-{name}")},
            "metadata": {"version": 1}}}),
        )
        .into_response(),
        None => (StatusCode::NOT_FOUND, axum::Json(json!({"errors": []}))).into_response(),
    }
}

/// A TCP stream that counts itself open until dropped.
struct Counted {
    inner: tokio::net::TcpStream,
    counts: Shared,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.counts.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct CountingListener {
    inner: tokio::net::TcpListener,
    counts: Shared,
}

impl axum::serve::Listener for CountingListener {
    type Io = Counted;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Counted, std::net::SocketAddr) {
        loop {
            if let Ok((inner, addr)) = self.inner.accept().await {
                self.counts.open.fetch_add(1, Ordering::SeqCst);
                let counts = self.counts.clone();
                return (Counted { inner, counts }, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

async fn standin(hold_until: usize) -> (String, Shared) {
    let s: Shared = Arc::default();
    s.hold_until.store(hold_until, Ordering::SeqCst);
    let app = Router::new().fallback(handle).with_state(s.clone());
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", inner.local_addr().unwrap());
    let listener = CountingListener {
        inner,
        counts: s.clone(),
    };
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, s)
}

fn objects(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "- objectName: o{i}\n  vaultPath: secret/data/{prefix}/o{i}\n  vaultKey: value\n"
            )
        })
        .collect()
}

/// A Mount request of `n` Vault objects for service account `sa`.
fn vault_mount(
    addr: &str,
    sa: &str,
    prefix: &str,
    n: usize,
) -> kernelseal_csi::proto::MountRequest {
    let params = [("vaultAddress", addr), ("roleName", "web-role")];
    let token = format!("eyJ.pod-token-{sa}.sig");
    let mut attrs: Value = serde_json::from_str(&attributes(
        &objects(prefix, n),
        &params,
        &[("vault", &token)],
    ))
    .unwrap();
    attrs["csi.storage.k8s.io/serviceAccount.name"] = sa.into();
    request(attrs.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mount_fetches_a_bounded_number_at_once_in_order() {
    let (addr, counts) = standin(PER_MOUNT).await;
    let keys = tempfile::tempdir().unwrap();
    let mut s = Server::start(LocalPolicy::default(), &keys.path().join("k")).await;
    let n = kernelseal_csi::params::MAX_OBJECTS;
    let r = s
        .client
        .mount(vault_mount(&addr, "web", "one", n))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.files.len(), n);
    for (i, f) in r.files.iter().enumerate() {
        assert_eq!(f.path, format!("o{i}"));
        assert_eq!(f.contents, format!("value-of-one/o{i}").as_bytes());
    }
    let max = counts.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= PER_MOUNT, "{max} requests at once from one Mount");
    assert!(max > 1, "the objects were fetched one at a time");

    // The connections the burst opened are not all kept.
    assert!(
        support::eventually(|| counts.open.load(Ordering::SeqCst) <= POOL_IDLE).await,
        "{} connections still open to Vault",
        counts.open.load(Ordering::SeqCst)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounts_of_several_identities_share_the_upstream_bound() {
    let (addr, counts) = standin(PER_UPSTREAM).await;
    let keys = tempfile::tempdir().unwrap();
    let s = Server::start(LocalPolicy::default(), &keys.path().join("k")).await;
    // Four pods of four service accounts: four logins, four providers,
    // and up to 4 × PER_MOUNT fetches wanting to run at once.
    let mounts = ["a", "b", "c", "d"].map(|sa| {
        let mut client = s.client.clone();
        let req = vault_mount(&addr, sa, sa, 64);
        tokio::spawn(async move { client.mount(req).await })
    });
    for (m, sa) in mounts.into_iter().zip(["a", "b", "c", "d"]) {
        let r = m.await.unwrap().unwrap().into_inner();
        assert_eq!(r.files.len(), 64);
        assert_eq!(
            r.files[63].contents,
            format!("value-of-{sa}/o63").as_bytes()
        );
    }
    assert_eq!(counts.tokens.lock().unwrap().len(), 4);
    let max = counts.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= PER_UPSTREAM, "{max} requests at once to one Vault");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_over_the_object_cap_is_refused_before_any_request() {
    let (addr, counts) = standin(0).await;
    let keys = tempfile::tempdir().unwrap();
    let mut s = Server::start(LocalPolicy::default(), &keys.path().join("k")).await;
    let e = s
        .client
        .mount(vault_mount(&addr, "web", "big", 2000))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert_eq!(
        e.message(),
        "parameter objects: 2000 objects, over the limit of 256 per SecretProviderClass; split them over several classes"
    );
    assert_eq!(counts.max_in_flight.load(Ordering::SeqCst), 0);
    s.stop().await;
}
