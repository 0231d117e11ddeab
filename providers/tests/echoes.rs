//! Hostile upstreams on 127.0.0.1 whose error answers echo the credential
//! they were sent: whole, in pieces, base64-encoded, and (Kubernetes) in a
//! `Status.message`. No piece of it may reach our errors or logs. Also: a
//! Vault value over the per-value bound, and a Kubernetes 429 that must be
//! reported as the API's answer, not as our call timeout.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use kernelseal_providers::{
    Cache, CacheOptions, Error, KubernetesProvider, KubernetesRef, KubernetesSettings, KvEngine,
    MAX_VALUE_BYTES, SecretProvider, SecretRef, VaultAuth, VaultProvider, VaultRef, VaultSettings,
};
use serde_json::{Value, json};

/// The pod's login JWT the Vault stand-in echoes back.
const JWT: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6Imhvc3RpbGUifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6c2hvcDp3ZWIifQ.c2lnbmF0dXJlLWhvc3RpbGUtMDEyMzQ1";
/// The Vault token it hands out, then echoes.
const VAULT_TOKEN: &str = "hvs.CAESIHostileEchoToken0123456789abcdefXYZ";
/// The Kubernetes API bearer token it echoes.
const KUBE_TOKEN: &str = "kube-bearer-Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA-echo";

/// The ways a body can carry `secret`: whole, split in three, base64 (both
/// alphabets), and as a Kubernetes-style quoted header.
fn echoes(secret: &str) -> Vec<String> {
    let third = secret.len() / 3;
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    vec![
        format!("token {secret} is not valid"),
        format!(
            "parts: [{}] [{}] [{}]",
            &secret[..third],
            &secret[third..2 * third],
            &secret[2 * third..]
        ),
        format!("b64 {b64} / {b64url}"),
        format!("Authorization: \"Bearer {secret}\""),
    ]
}

/// Every 8-byte window of `secret` and of its base64 forms: none may appear.
fn fragments(secret: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    [secret.to_string(), b64, b64url]
        .iter()
        .flat_map(|s| {
            s.as_bytes()
                .windows(8)
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn assert_clean(e: &Error, secret: &str) {
    let text = format!("{e} {e:?}");
    let logs = support::logs();
    for f in fragments(secret) {
        assert!(!text.contains(&f), "{f:?} of the credential in: {text}");
        assert!(!logs.contains(&f), "{f:?} of the credential in the logs");
    }
}

fn vault_errors(status: StatusCode, secret: &str) -> Response {
    (status, axum::Json(json!({ "errors": echoes(secret) }))).into_response()
}

/// Vault that logs in role `app` (and echoes the JWT for any other role),
/// and answers reads of `secret/data/{path}` by the path's name.
async fn vault(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path();
    if method == Method::POST && path == "/v1/auth/kubernetes/login" {
        let b: Value = serde_json::from_slice(&body).unwrap_or_default();
        if b["jwt"] != JWT {
            return vault_errors(StatusCode::FORBIDDEN, "not-the-pod-jwt");
        }
        if b["role"] != "app" {
            return vault_errors(StatusCode::BAD_REQUEST, JWT);
        }
        return axum::Json(json!({"auth": {
            "client_token": VAULT_TOKEN, "lease_duration": 3600, "renewable": false
        }}))
        .into_response();
    }
    let token = headers.get("x-vault-token").and_then(|v| v.to_str().ok());
    if token != Some(VAULT_TOKEN) {
        return vault_errors(StatusCode::FORBIDDEN, "unknown-token");
    }
    if path == "/v1/auth/token/lookup-self" {
        return vault_errors(StatusCode::FORBIDDEN, VAULT_TOKEN);
    }
    let kv = |v: Value| {
        axum::Json(json!({"data": {"data": v, "metadata": {"version": 1}}})).into_response()
    };
    match path.strip_prefix("/v1/secret/data/") {
        Some("forbidden") => vault_errors(StatusCode::FORBIDDEN, VAULT_TOKEN),
        Some("missing") => vault_errors(StatusCode::NOT_FOUND, VAULT_TOKEN),
        Some("teapot") => vault_errors(StatusCode::IM_A_TEAPOT, VAULT_TOKEN),
        Some("sealed") => vault_errors(StatusCode::SERVICE_UNAVAILABLE, VAULT_TOKEN),
        Some("limit") => kv(json!({"v": "x".repeat(MAX_VALUE_BYTES)})),
        Some("over") => kv(json!({"v": "x".repeat(MAX_VALUE_BYTES + 1)})),
        _ => vault_errors(StatusCode::NOT_FOUND, "no-such-path"),
    }
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn vault_settings(addr: &str, auth: VaultAuth) -> VaultSettings {
    VaultSettings {
        address: addr.to_string(),
        namespace: None,
        ca_cert: None,
        tls_skip_verify: false,
        mount: "secret".into(),
        kv_version: KvEngine::V2,
        auth,
        pod_auth: Default::default(),
        timeout: Duration::from_secs(5),
        cache_ttl: None,
    }
}

fn jwt_auth(role: &str) -> VaultAuth {
    VaultAuth::KubernetesJwt {
        role: role.into(),
        jwt: kernelseal_providers::InlineJwt::new(JWT),
        mount: "kubernetes".into(),
    }
}

fn vref(path: &str) -> SecretRef {
    SecretRef::Vault(VaultRef {
        provider: None,
        mount: None,
        path: path.into(),
        key: Some("v".into()),
        version: None,
        engine: None,
        ttl: None,
    })
}

#[tokio::test]
async fn vault_error_bodies_never_reach_errors_or_logs() {
    support::init();
    let addr = serve(Router::new().fallback(vault)).await;

    // A refused login whose body quotes the pod's JWT.
    let p = VaultProvider::new("hostile", vault_settings(&addr, jwt_auth("other"))).unwrap();
    let e = p.fetch(&vref("forbidden")).await.unwrap_err();
    assert!(matches!(e, Error::Auth { .. }), "{e:?}");
    assert!(
        e.to_string().contains("Vault answered 400 bad request"),
        "{e}"
    );
    assert_clean(&e, JWT);

    // Reads whose bodies quote the Vault token, for every status class.
    let p = VaultProvider::new("hostile", vault_settings(&addr, jwt_auth("app"))).unwrap();
    for (path, want) in [
        ("forbidden", "Vault answered 403 permission denied"),
        ("missing", "not found"),
        ("teapot", "HTTP 418: request refused"),
        ("sealed", "Vault answered 503 service unavailable"),
    ] {
        let e = p.fetch(&vref(path)).await.unwrap_err();
        assert!(e.to_string().contains(want), "{path}: {e}");
        assert_clean(&e, VAULT_TOKEN);
    }

    // lookup-self of a static token, answered with the token quoted.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, VAULT_TOKEN).unwrap();
    let p =
        VaultProvider::new("hostile", vault_settings(&addr, VaultAuth::TokenFile(file))).unwrap();
    let e = p.authenticate().await.unwrap_err();
    assert!(matches!(e, Error::Auth { .. }), "{e:?}");
    assert_clean(&e, VAULT_TOKEN);
}

#[tokio::test]
async fn vault_value_over_the_value_bound_is_refused() {
    support::init();
    let addr = serve(Router::new().fallback(vault)).await;
    let p = VaultProvider::new("big", vault_settings(&addr, jwt_auth("app"))).unwrap();
    let v = p.fetch(&vref("limit")).await.unwrap();
    assert_eq!(v.expose_bytes().len(), MAX_VALUE_BYTES);
    let e = p.fetch(&vref("over")).await.unwrap_err();
    assert!(
        matches!(e, Error::ValueTooLarge { limit, .. } if limit == MAX_VALUE_BYTES),
        "{e:?}"
    );
    assert!(!e.is_availability(), "{e}");
}

fn kube_status(code: u16, reason: &str, message: String) -> Response {
    let mut resp = (
        StatusCode::from_u16(code).unwrap(),
        axum::Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code
        })),
    )
        .into_response();
    if code == 429 {
        // The API server's advice; kube's retry layer used to wait it out.
        resp.headers_mut()
            .insert("retry-after", "60".parse().unwrap());
    }
    resp
}

/// A Kubernetes API whose every error `Status` quotes the bearer token.
async fn kube(uri: Uri, headers: HeaderMap) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if bearer != format!("Bearer {KUBE_TOKEN}") {
        return kube_status(401, "Unauthorized", "Unauthorized".into());
    }
    let quoted = echoes(KUBE_TOKEN).join(" ");
    let name = uri
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    match name.as_str() {
        "forbidden" => kube_status(
            403,
            "Forbidden",
            format!("secrets \"{name}\" is forbidden: User with {quoted} cannot get resource"),
        ),
        "missing" => kube_status(
            404,
            "NotFound",
            format!("secrets \"{name}\" not found; {quoted}"),
        ),
        "invalid" => kube_status(422, "Invalid", quoted),
        "broken" => kube_status(500, "InternalError", quoted),
        "busy" => kube_status(429, "TooManyRequests", quoted),
        _ => kube_status(404, "NotFound", "not found".into()),
    }
}

fn kube_provider(dir: &tempfile::TempDir, server: &str) -> KubernetesProvider {
    let p = dir.path().join("kubeconfig");
    std::fs::write(
        &p,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: s\n  cluster:\n    server: {server}\nusers:\n- name: u\n  user:\n    token: {KUBE_TOKEN}\ncontexts:\n- name: s\n  context:\n    cluster: s\n    user: u\n    namespace: db\ncurrent-context: s\n"
        ),
    )
    .unwrap();
    KubernetesProvider::new(
        "k8s",
        KubernetesSettings {
            kubeconfig: Some(p),
            ..KubernetesSettings::default()
        },
    )
}

fn kref(name: &str) -> SecretRef {
    SecretRef::Kubernetes(KubernetesRef {
        namespace: Some("db".into()),
        name: name.into(),
        key: "password".into(),
    })
}

#[tokio::test]
async fn kubernetes_status_messages_never_reach_errors_or_logs() {
    support::init();
    let addr = serve(Router::new().fallback(kube)).await;
    let dir = tempfile::tempdir().unwrap();
    let p = kube_provider(&dir, &addr);
    for (name, want) in [
        ("forbidden", "Kubernetes API answered 403 permission denied"),
        ("missing", "Kubernetes API answered 404 not found"),
        (
            "invalid",
            "Kubernetes API answered 422 unprocessable request",
        ),
        (
            "broken",
            "Kubernetes API answered 500 internal server error",
        ),
    ] {
        let e = p.fetch(&kref(name)).await.unwrap_err();
        assert!(e.to_string().contains(want), "{name}: {e}");
        assert_clean(&e, KUBE_TOKEN);
    }
}

#[tokio::test]
async fn kubernetes_429_is_an_answer_not_a_timeout() {
    support::init();
    let addr = serve(Router::new().fallback(kube)).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(
        Arc::new(kube_provider(&dir, &addr)),
        CacheOptions {
            attempts: 1,
            call_timeout: Duration::from_secs(3),
            ..CacheOptions::default()
        },
    );
    let e = cache.get(&kref("busy")).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert!(e.is_availability(), "{e}");
    assert!(
        e.to_string()
            .contains("Kubernetes API answered 429 too many requests"),
        "{e}"
    );
    assert_clean(&e, KUBE_TOKEN);
}
