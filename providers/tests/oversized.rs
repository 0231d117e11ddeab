//! Hostile upstreams on 127.0.0.1 that answer an authorised request with a
//! 64 MiB body, streamed chunk by chunk (no length), or announced with a
//! `Content-Length`: every provider refuses it with `Error::TooLarge`
//! after reading about `MAX_ANSWER_BYTES`, instead of buffering it all.

mod support;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use http_body::Frame;
use kernelseal_providers::{
    AwsProvider, AwsRef, AwsSettings, Error, KubernetesProvider, KubernetesRef, KubernetesSettings,
    KvEngine, MAX_ANSWER_BYTES, SecretProvider, SecretRef, VaultAuth, VaultProvider, VaultRef,
    VaultSettings,
};

const MIB: usize = 1024 * 1024;
/// The answer's size: far over the bound, small enough for a test.
const CHUNKS: usize = 64;
const VAULT_TOKEN: &str = "hvs.oversized-standin-token";
const KUBE_TOKEN: &str = "kube-sa-token-oversized-0123";

/// A body of `prefix` then `CHUNKS` MiB of `A`, counting the chunks it
/// was asked for: a reader that stops early leaves most of them unasked.
struct Huge {
    prefix: Option<&'static [u8]>,
    left: usize,
    produced: Arc<AtomicUsize>,
}

impl http_body::Body for Huge {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(p) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(p)))));
        }
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        self.produced.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'A'; MIB])))))
    }
}

#[derive(Clone, Default)]
struct Standin {
    produced: Arc<AtomicUsize>,
    /// Announce the length (refused before reading) instead of streaming.
    declare_length: bool,
}

impl Standin {
    fn huge(&self, prefix: &'static [u8], content_type: &'static str) -> Response {
        let body = Huge {
            prefix: Some(prefix),
            left: CHUNKS,
            produced: self.produced.clone(),
        };
        let mut r = Response::new(axum::body::Body::new(body));
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static(content_type));
        if self.declare_length {
            let len = prefix.len() + CHUNKS * MIB;
            r.headers_mut().insert("content-length", len.into());
        }
        r
    }
}

/// Vault's KV v2 read with `X-Vault-Token`; anything else is 403, as Vault.
async fn vault(State(s): State<Standin>, uri: Uri, headers: HeaderMap) -> Response {
    if headers.get("x-vault-token").and_then(|v| v.to_str().ok()) != Some(VAULT_TOKEN) {
        return (StatusCode::FORBIDDEN, r#"{"errors":["permission denied"]}"#).into_response();
    }
    if uri.path() != "/v1/secret/data/app" {
        return (StatusCode::NOT_FOUND, r#"{"errors":[]}"#).into_response();
    }
    s.huge(br#"{"data":{"data":{"k":""#, "application/json")
}

/// The API server's Secret GET with a bearer token; else a 401 `Status`.
async fn kube(State(s): State<Standin>, uri: Uri, headers: HeaderMap) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {KUBE_TOKEN}"))
    {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#,
        )
            .into_response();
    }
    if uri.path() != "/api/v1/namespaces/db/secrets/big" {
        return StatusCode::NOT_FOUND.into_response();
    }
    s.huge(
        br#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"big"},"data":{"k":""#,
        "application/json",
    )
}

/// Secrets Manager's JSON 1.1 `GetSecretValue`: a SigV4-signed POST with
/// the access key in the credential scope; anything else is refused.
async fn aws(State(s): State<Standin>, headers: HeaderMap) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok());
    if !auth.starts_with("AWS4-HMAC-SHA256 Credential=testing/") {
        return (
            StatusCode::BAD_REQUEST,
            [("x-amzn-errortype", "UnrecognizedClientException")],
            r#"{"__type":"UnrecognizedClientException","message":"The security token included in the request is invalid."}"#,
        )
            .into_response();
    }
    if target != Some("secretsmanager.GetSecretValue") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    s.huge(
        br#"{"ARN":"arn:aws:secretsmanager:us-east-1:1:secret:big","Name":"big","SecretString":""#,
        "application/x-amz-json-1.1",
    )
}

async fn serve(app: Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    addr
}

/// The refusal names the upstream and the bound; the reader stopped long
/// before the end (socket buffers hold a few MiB at most).
fn assert_refused(e: &Error, s: &Standin, upstream: &str) {
    assert!(
        matches!(e, Error::TooLarge { limit, .. } if *limit == MAX_ANSWER_BYTES),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(text.contains(upstream), "{text}");
    assert!(
        text.contains(&format!("more than {MAX_ANSWER_BYTES} bytes")),
        "{text}"
    );
    let produced = s.produced.load(Ordering::SeqCst);
    assert!(
        produced < CHUNKS / 2,
        "{produced} MiB were sent: the body was read to its end"
    );
}

fn vault_provider(addr: &str, dir: &tempfile::TempDir) -> VaultProvider {
    let token = dir.path().join("token");
    std::fs::write(&token, VAULT_TOKEN).unwrap();
    VaultProvider::new(
        "vault-hostile",
        VaultSettings {
            address: addr.to_string(),
            namespace: None,
            ca_cert: None,
            tls_skip_verify: false,
            mount: "secret".into(),
            kv_version: KvEngine::V2,
            auth: VaultAuth::TokenFile(token),
            pod_auth: Default::default(),
            timeout: Duration::from_secs(30),
            cache_ttl: None,
        },
    )
    .unwrap()
}

fn vault_ref() -> SecretRef {
    SecretRef::Vault(VaultRef {
        provider: None,
        mount: None,
        path: "app".into(),
        key: Some("k".into()),
        version: None,
        engine: None,
        ttl: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_refuses_an_oversized_streamed_answer() {
    support::init();
    let s = Standin::default();
    let addr = serve(Router::new().fallback(vault).with_state(s.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let e = vault_provider(&addr, &dir)
        .fetch(&vault_ref())
        .await
        .unwrap_err();
    assert_refused(&e, &s, &format!("Vault at {addr}"));
    assert!(!e.is_retryable() && !e.is_availability(), "{e:?}");
    support::assert_err_clean(&e, &[VAULT_TOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_refuses_an_announced_oversized_answer_before_reading_it() {
    support::init();
    let s = Standin {
        declare_length: true,
        ..Standin::default()
    };
    let addr = serve(Router::new().fallback(vault).with_state(s.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let e = vault_provider(&addr, &dir)
        .fetch(&vault_ref())
        .await
        .unwrap_err();
    assert_refused(&e, &s, "Vault at");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_refuses_an_oversized_streamed_answer() {
    support::init();
    let s = Standin::default();
    let addr = serve(Router::new().fallback(kube).with_state(s.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: s\n  cluster:\n    server: {addr}\nusers:\n- name: u\n  user:\n    token: {KUBE_TOKEN}\ncontexts:\n- name: s\n  context:\n    cluster: s\n    user: u\n    namespace: db\ncurrent-context: s\n"
        ),
    )
    .unwrap();
    let p = KubernetesProvider::new(
        "k8s-hostile",
        KubernetesSettings {
            kubeconfig: Some(kubeconfig),
            ..KubernetesSettings::default()
        },
    );
    let r = SecretRef::Kubernetes(KubernetesRef {
        namespace: Some("db".into()),
        name: "big".into(),
        key: "k".into(),
    });
    let e = p.fetch(&r).await.unwrap_err();
    assert_refused(&e, &s, "Kubernetes API");
    support::assert_err_clean(&e, &[KUBE_TOKEN]);

    // Ordinary answers still go through the bounded reader: a refusal is
    // still the API's Status.
    let other = SecretRef::Kubernetes(KubernetesRef {
        namespace: Some("db".into()),
        name: "small".into(),
        key: "k".into(),
    });
    let e = p.fetch(&other).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_refuses_an_oversized_streamed_answer() {
    support::init();
    let s = Standin::default();
    let addr = serve(Router::new().fallback(aws).with_state(s.clone())).await;
    let settings = AwsSettings {
        region: Some("us-east-1".into()),
        failover_region: None,
        endpoints: BTreeMap::from([("us-east-1".to_string(), addr.clone())]),
        profile: None,
        timeout: Duration::from_secs(30),
        cache_ttl: None,
        ..AwsSettings::default()
    };
    let creds =
        SharedCredentialsProvider::new(Credentials::new("testing", "testing", None, None, "test"));
    let p = AwsProvider::with_credentials("aws-hostile", settings, creds);
    let r = SecretRef::Aws(AwsRef {
        provider: None,
        secret_id: "big".into(),
        json_key: None,
        version_id: None,
        version_stage: None,
        ttl: None,
    });
    let e = p.fetch(&r).await.unwrap_err();
    assert_refused(&e, &s, "AWS Secrets Manager in us-east-1");
}
