//! Vault objects through a stand-in that follows Vault's documented API
//! (kubernetes login `{role, jwt}`, KV v2/v1 reads, `{"errors": [...]}`),
//! as in `providers/tests/vault.rs`: every pod logs in with its own token.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use kernelseal_csi::LocalPolicy;
use serde_json::{Value, json};
use support::{Server, assert_clean, attributes, request};
use tonic::Code;

const WEB_JWT: &str = "eyJ.web-pod-token-for-vault.sig";
const WEB_JWT_2: &str = "eyJ.web-pod-token-rotated.sig";
const CUSTOM_JWT: &str = "eyJ.web-pod-token-custom-aud.sig";
const OTHER_JWT: &str = "eyJ.other-sa-token.sig";
const NEVER: &[&str] = &[
    "vault-db-password",
    "kv1-legacy",
    WEB_JWT,
    WEB_JWT_2,
    OTHER_JWT,
    "hvs.csi",
];

#[derive(Default)]
struct VState {
    tokens: HashMap<String, String>,
    logins: Vec<String>,
    reads: u64,
    /// Access revoked: every login and read is answered 403.
    refuse_all: bool,
    /// Reads fail with 503 (sealed, overloaded).
    reads_down: bool,
}

const MIB: usize = 1024 * 1024;

/// A KV v2 answer of 64 MiB, streamed without a length.
fn huge() -> Response {
    let head = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from_static(
        br#"{"data":{"data":{"blob":""#,
    ))]);
    let tail = futures_util::stream::iter(
        (0..64).map(|_| Ok::<_, std::convert::Infallible>(Bytes::from(vec![b'A'; MIB]))),
    );
    use futures_util::StreamExt;
    Response::new(axum::body::Body::from_stream(head.chain(tail)))
}

type Shared = Arc<Mutex<VState>>;

fn errors(status: StatusCode, msgs: &[&str]) -> Response {
    (status, axum::Json(json!({ "errors": msgs }))).into_response()
}

async fn handle(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = s.lock().unwrap();
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = uri.path();
    if st.refuse_all {
        return errors(StatusCode::FORBIDDEN, &["permission denied"]);
    }
    if method == Method::POST && path == "/v1/auth/kubernetes/login" {
        let jwt = req["jwt"].as_str().unwrap_or("").to_string();
        if req["role"] != "web-role" {
            return errors(StatusCode::BAD_REQUEST, &["invalid role name"]);
        }
        // Vault's TokenReview: only the web service account is bound to the role.
        if ![WEB_JWT, WEB_JWT_2, CUSTOM_JWT].contains(&jwt.as_str()) {
            return errors(StatusCode::FORBIDDEN, &["permission denied"]);
        }
        st.logins.push(jwt.clone());
        let tok = format!("hvs.csi-{}", st.logins.len());
        st.tokens.insert(tok.clone(), jwt);
        return (
            StatusCode::OK,
            axum::Json(json!({"auth": {"client_token": tok, "lease_duration": 3600, "renewable": true,
                                       "policies": ["web"]}, "lease_id": "", "lease_duration": 0, "renewable": false, "data": null})),
        )
            .into_response();
    }
    let token = headers
        .get("X-Vault-Token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !st.tokens.contains_key(token) {
        return errors(StatusCode::FORBIDDEN, &["permission denied"]);
    }
    if st.reads_down {
        return errors(StatusCode::SERVICE_UNAVAILABLE, &["Vault is sealed"]);
    }
    match path {
        // A KV v1 read whose lease_duration asks for a 1 s cache TTL.
        "/v1/kv1/short" => {
            st.reads += 1;
            (StatusCode::OK, axum::Json(json!({"data": {"value": "short-lived-value-1"}, "lease_duration": 1, "lease_id": "", "renewable": false}))).into_response()
        }
        "/v1/secret/data/huge" => huge(),
        "/v1/secret/data/app/db" => {
            st.reads += 1;
            (StatusCode::OK, axum::Json(json!({"data": {"data": {"password": "vault-db-password-1"},
                "metadata": {"version": 3, "created_time": "2026-01-01T00:00:00Z"}}, "lease_duration": 0, "lease_id": "", "renewable": false}))).into_response()
        }
        "/v1/kv1/legacy" => {
            st.reads += 1;
            (StatusCode::OK, axum::Json(json!({"data": {"value": "kv1-legacy-value"}, "lease_duration": 0, "lease_id": "", "renewable": false}))).into_response()
        }
        _ => errors(StatusCode::NOT_FOUND, &[]),
    }
}

async fn standin() -> (String, Shared) {
    let s: Shared = Arc::default();
    let app = Router::new().fallback(handle).with_state(s.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (addr, s)
}

const OBJECTS: &str = "- objectName: db/password\n  vaultPath: secret/data/app/db\n  vaultKey: password\n- objectName: legacy\n  vaultPath: kv1/legacy\n  vaultKey: value\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_login_as_the_pod() {
    let (addr, st) = standin().await;
    let keys = tempfile::tempdir().unwrap();
    let mut s = Server::start(LocalPolicy::default(), &keys.path().join("k")).await;
    let params = [("vaultAddress", addr.as_str()), ("roleName", "web-role")];
    let req = request(attributes(
        OBJECTS,
        &params,
        &[("vault", WEB_JWT), ("other-aud", "x")],
    ));
    let r = s.client.mount(req.clone()).await.unwrap().into_inner();
    assert_eq!(r.files[0].path, "db/password");
    assert_eq!(r.files[0].contents, b"vault-db-password-1");
    assert_eq!(r.files[1].contents, b"kv1-legacy-value");
    assert_eq!(st.lock().unwrap().logins, [WEB_JWT]);
    assert_eq!(st.lock().unwrap().reads, 2);

    // Remote sources come from the cache: no new login, no new read.
    let again = s.client.mount(req).await.unwrap().into_inner();
    assert_eq!(again.object_version, r.object_version);
    assert_eq!(st.lock().unwrap().reads, 2);

    // The driver sends a fresh token: same identity, so the cache serves
    // it, but only once Vault has accepted that token (one login, no read).
    let rotated = request(attributes(OBJECTS, &params, &[("vault", WEB_JWT_2)]));
    let r3 = s.client.mount(rotated).await.unwrap().into_inner();
    assert_eq!(r3.object_version, r.object_version);
    assert_eq!(st.lock().unwrap().logins, [WEB_JWT, WEB_JWT_2]);
    assert_eq!(st.lock().unwrap().reads, 2);

    // Another service account gets its own login, and Vault refuses it:
    // the web pod's cached values are not served to it.
    let mut attrs: Value =
        serde_json::from_str(&attributes(OBJECTS, &params, &[("vault", OTHER_JWT)])).unwrap();
    attrs["csi.storage.k8s.io/serviceAccount.name"] = "other".into();
    let e = s
        .client
        .mount(request(attrs.to_string()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().starts_with("object db/password: "),
        "{}",
        e.message()
    );
    assert!(
        e.message().contains("authentication failed"),
        "{}",
        e.message()
    );
    assert_clean(&format!("{e:?}"), NEVER);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_audience_parameter_picks_the_token() {
    let (addr, st) = standin().await;
    let keys = tempfile::tempdir().unwrap();
    let mut s = Server::start(LocalPolicy::default(), &keys.path().join("k")).await;
    let params = [
        ("vaultAddress", addr.as_str()),
        ("roleName", "web-role"),
        ("audience", "custom-aud"),
    ];
    let req = request(attributes(
        OBJECTS,
        &params,
        &[("vault", WEB_JWT), ("custom-aud", CUSTOM_JWT)],
    ));
    s.client.mount(req).await.unwrap();
    assert_eq!(st.lock().unwrap().logins, [CUSTOM_JWT]);
    // Missing token for the configured audience: refused before any call.
    let req = request(attributes(OBJECTS, &params, &[("vault", WEB_JWT)]));
    let e = s.client.mount(req).await.unwrap_err();
    assert!(e.message().contains("\"custom-aud\""), "{}", e.message());
    assert_clean(&format!("{e:?}"), NEVER);
    s.stop().await;
}

const SHORT: &str = "- objectName: short\n  vaultPath: kv1/short\n  vaultKey: value\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_access_is_refused_not_served_stale() {
    let (addr, st) = standin().await;
    let keys = tempfile::tempdir().unwrap();
    let mut s = Server::start(LocalPolicy::default(), &keys.path().join("k")).await;
    let params = [("vaultAddress", addr.as_str()), ("roleName", "web-role")];
    let req = request(attributes(SHORT, &params, &[("vault", WEB_JWT)]));
    let r = s.client.mount(req.clone()).await.unwrap().into_inner();
    assert_eq!(r.files[0].contents, b"short-lived-value-1");

    // Past the entry's 1 s TTL, Vault refuses the read and a fresh login.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    st.lock().unwrap().refuse_all = true;
    let e = s.client.mount(req.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().starts_with("object short: ") && e.message().contains("authentication failed"),
        "{}",
        e.message()
    );
    assert_clean(&format!("{e:?}"), &["short-lived-value", WEB_JWT]);

    // The entry is gone: an outage afterwards cannot bring the value back.
    {
        let mut v = st.lock().unwrap();
        v.refuse_all = false;
        v.reads_down = true;
    }
    let e = s.client.mount(req).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_clean(&format!("{e:?}"), &["short-lived-value", WEB_JWT]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_token_is_refused_not_served_the_cache() {
    let (addr, st) = standin().await;
    let keys = tempfile::tempdir().unwrap();
    let mut s = Server::start(LocalPolicy::default(), &keys.path().join("k")).await;
    let params = [("vaultAddress", addr.as_str()), ("roleName", "web-role")];
    let good = request(attributes(OBJECTS, &params, &[("vault", WEB_JWT)]));
    let r = s.client.mount(good.clone()).await.unwrap().into_inner();

    // Same namespace and service account, a token Vault does not accept.
    const GARBAGE: &str = "eyJ.not-a-real-token.sig";
    let bad = request(attributes(OBJECTS, &params, &[("vault", GARBAGE)]));
    let e = s.client.mount(bad).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("authentication failed"),
        "{}",
        e.message()
    );
    assert_clean(
        &format!("{e:?}"),
        &[GARBAGE, "vault-db-password", "kv1-legacy"],
    );

    // The real pod is unaffected: still served from the cache, no new
    // login, no new read.
    let again = s.client.mount(good).await.unwrap().into_inner();
    assert_eq!(again.object_version, r.object_version);
    assert_eq!(st.lock().unwrap().logins, [WEB_JWT]);
    assert_eq!(st.lock().unwrap().reads, 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_answer_is_resource_exhausted() {
    let (addr, _st) = standin().await;
    let keys = tempfile::tempdir().unwrap();
    let mut s = Server::start(LocalPolicy::default(), &keys.path().join("k")).await;
    let params = [("vaultAddress", addr.as_str()), ("roleName", "web-role")];
    let objects = "- objectName: blob\n  vaultPath: secret/data/huge\n  vaultKey: blob\n";
    let req = request(attributes(objects, &params, &[("vault", WEB_JWT)]));
    let e = s.client.mount(req).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().starts_with("object blob: ")
            && e.message().contains(&format!(
                "more than {} bytes, the maximum secret size",
                kernelseal_providers::MAX_ANSWER_BYTES
            )),
        "{}",
        e.message()
    );
    s.stop().await;
}
