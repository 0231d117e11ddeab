//! The Vault provider against a stand-in that follows Vault's documented
//! HTTP API: KV v1/v2 reads, kubernetes and approle logins, token
//! renew-self, lease renewal, `{"errors": [...]}` bodies, 403/404/5xx.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use kernelseal_providers::{
    Cache, CacheOptions, Error, KvEngine, SecretIdSource, SecretProvider, SecretRef, VaultAuth,
    VaultProvider, VaultRef, VaultSettings,
};
use kernelseal_testkit::unused_port;
use serde_json::{Value, json};
use support::assert_err_clean;

const JWT: &str = "jwt-eyJhbGciOi-standin-sa-token";
const ROLE_ID: &str = "role-id-1234";
const SECRET_ID: &str = "secret-id-5678-very-secret";
const STATIC_TOKEN: &str = "hvs.static-root-token-0001";
/// Every secret value and token the stand-in ever hands out contains one of these.
const NEVER_PRINTED: &[&str] = &[
    "kv2-api-key",
    "kv1-password",
    "dyn-pass",
    "hvs.standin",
    JWT,
    SECRET_ID,
    STATIC_TOKEN,
];

#[derive(Default)]
struct VState {
    tokens: HashMap<String, (Instant, bool)>,
    issued: u64,
    token_ttl: u64,
    token_renewable: bool,
    kv2: HashMap<String, Vec<Value>>,
    kv1: HashMap<String, Value>,
    logins: u64,
    renewals: u64,
    lease_renewals: u64,
    reads: u64,
    sealed: bool,
    namespaces: Vec<String>,
}

#[derive(Clone)]
struct Standin {
    s: Arc<Mutex<VState>>,
    addr: String,
}

impl Standin {
    async fn start(token_ttl: u64, token_renewable: bool) -> Standin {
        Standin::start_with(token_ttl, token_renewable, None).await
    }

    /// With `tls`, serves HTTPS with that acceptor.
    async fn start_with(
        token_ttl: u64,
        token_renewable: bool,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Standin {
        let mut st = VState {
            token_ttl,
            token_renewable,
            ..VState::default()
        };
        st.kv2.insert(
            "app".into(),
            vec![json!({"api_key": "kv2-api-key-v1", "user": "app"})],
        );
        st.kv1
            .insert("legacy/db".into(), json!({"password": "kv1-password-x"}));
        st.tokens.insert(
            STATIC_TOKEN.into(),
            (Instant::now() + Duration::from_secs(3600), false),
        );
        let s = Arc::new(Mutex::new(st));
        let app = Router::new().fallback(handle).with_state(s.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let addr = match tls {
            None => {
                tokio::spawn(async move { axum::serve(listener, app).await });
                format!("http://{local}")
            }
            Some(acceptor) => {
                let tls = TlsListener {
                    tcp: listener,
                    acceptor,
                };
                tokio::spawn(async move { axum::serve(tls, app).await });
                format!("https://{local}")
            }
        };
        Standin { s, addr }
    }

    fn with<R>(&self, f: impl FnOnce(&mut VState) -> R) -> R {
        f(&mut self.s.lock().unwrap())
    }

    fn settings(&self, auth: VaultAuth) -> VaultSettings {
        VaultSettings {
            address: self.addr.clone(),
            namespace: Some("team-a".into()),
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
}

fn errors(status: StatusCode, msgs: &[&str]) -> Response {
    (status, axum::Json(json!({ "errors": msgs }))).into_response()
}

fn ok(body: Value) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn issue(st: &mut VState) -> Value {
    st.issued += 1;
    let tok = format!("hvs.standin-{}", st.issued);
    st.tokens.insert(
        tok.clone(),
        (
            Instant::now() + Duration::from_secs(st.token_ttl),
            st.token_renewable,
        ),
    );
    json!({
        "request_id": "r", "lease_id": "", "renewable": false, "lease_duration": 0,
        "data": null, "wrap_info": null, "warnings": null,
        "auth": {"client_token": tok, "accessor": "acc", "policies": ["default", "app"],
                 "token_policies": ["default", "app"], "metadata": {"role": "app"},
                 "lease_duration": st.token_ttl, "renewable": st.token_renewable,
                 "entity_id": "e", "token_type": "service", "orphan": true}
    })
}

async fn handle(
    State(s): State<Arc<Mutex<VState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = s.lock().unwrap();
    if let Some(ns) = headers
        .get("X-Vault-Namespace")
        .and_then(|v| v.to_str().ok())
    {
        st.namespaces.push(ns.to_string());
    }
    if st.sealed {
        return errors(StatusCode::SERVICE_UNAVAILABLE, &["Vault is sealed"]);
    }
    let path = uri.path().to_string();
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    // Logins need no token.
    if method == Method::POST && path.starts_with("/v1/auth/") && path.ends_with("/login") {
        let mount = &path["/v1/auth/".len()..path.len() - "/login".len()];
        st.logins += 1;
        return match mount {
            "kubernetes" | "k8s-custom" => {
                let role = req["role"].as_str().unwrap_or("");
                if role != "app" {
                    return errors(
                        StatusCode::BAD_REQUEST,
                        &[&format!("invalid role name \"{role}\"")],
                    );
                }
                if req["jwt"].as_str() != Some(JWT) {
                    return errors(StatusCode::FORBIDDEN, &["permission denied"]);
                }
                ok(issue(&mut st))
            }
            "approle" => {
                if req["role_id"].as_str() != Some(ROLE_ID)
                    || req["secret_id"].as_str() != Some(SECRET_ID)
                {
                    return errors(StatusCode::BAD_REQUEST, &["invalid role or secret ID"]);
                }
                ok(issue(&mut st))
            }
            _ => errors(
                StatusCode::NOT_FOUND,
                &[&format!(
                    "no handler for route \"auth/{mount}/login\". route entry not found."
                )],
            ),
        };
    }
    let token = headers
        .get("X-Vault-Token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let valid = st
        .tokens
        .get(&token)
        .is_some_and(|(exp, _)| Instant::now() < *exp);
    if !valid {
        return errors(StatusCode::FORBIDDEN, &["permission denied"]);
    }
    match (method.as_str(), path.as_str()) {
        ("POST", "/v1/auth/token/renew-self") => {
            let (ttl, renewable) = (st.token_ttl, st.tokens[&token].1);
            if !renewable {
                return errors(StatusCode::BAD_REQUEST, &["lease is not renewable"]);
            }
            st.renewals += 1;
            st.tokens.insert(
                token.clone(),
                (Instant::now() + Duration::from_secs(ttl), true),
            );
            ok(
                json!({"auth": {"client_token": token, "lease_duration": ttl, "renewable": true, "policies": ["app"]},
                      "lease_id": "", "renewable": false, "lease_duration": 0, "data": null}),
            )
        }
        // The token's own properties (the token itself is not echoed here).
        ("GET", "/v1/auth/token/lookup-self") => ok(json!({"data": {
            "policies": ["default", "app"], "ttl": st.token_ttl, "renewable": st.tokens[&token].1}})),
        ("PUT", "/v1/sys/leases/renew") => {
            let id = req["lease_id"].as_str().unwrap_or("");
            if !id.starts_with("database/creds/app/") {
                return errors(StatusCode::BAD_REQUEST, &["lease not found"]);
            }
            st.lease_renewals += 1;
            ok(json!({"lease_id": id, "renewable": true, "lease_duration": 3600, "data": null}))
        }
        ("GET", "/v1/secret/data/forbidden") | ("GET", "/v1/forbidden/x") => {
            errors(StatusCode::FORBIDDEN, &["permission denied"])
        }
        ("GET", p) if p.starts_with("/v1/secret/data/") => {
            st.reads += 1;
            let key = &p["/v1/secret/data/".len()..];
            let Some(versions) = st.kv2.get(key) else {
                return errors(StatusCode::NOT_FOUND, &[]);
            };
            let want = uri
                .query()
                .and_then(|q| q.strip_prefix("version="))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(versions.len());
            let Some(data) = versions.get(want.wrapping_sub(1)) else {
                return errors(StatusCode::NOT_FOUND, &[]);
            };
            ok(
                json!({"request_id": "r", "lease_id": "", "renewable": false, "lease_duration": 0,
                "data": {"data": data, "metadata": {"created_time": "2026-01-01T00:00:00Z",
                    "custom_metadata": null, "deletion_time": "", "destroyed": false, "version": want}},
                "wrap_info": null, "warnings": null, "auth": null}),
            )
        }
        ("GET", p) if p.starts_with("/v1/kv1/") => {
            st.reads += 1;
            match st.kv1.get(&p["/v1/kv1/".len()..]) {
                Some(d) => ok(
                    json!({"request_id": "r", "lease_id": "", "renewable": false,
                    "lease_duration": 2764800, "data": d, "wrap_info": null, "warnings": null, "auth": null}),
                ),
                None => errors(StatusCode::NOT_FOUND, &[]),
            }
        }
        ("GET", "/v1/database/creds/app") => {
            st.reads += 1;
            let n = st.reads;
            ok(
                json!({"request_id": "r", "lease_id": format!("database/creds/app/lease{n}"),
                "renewable": true, "lease_duration": 3600,
                "data": {"username": format!("v-app-{n}"), "password": format!("dyn-pass-{n}")},
                "wrap_info": null, "warnings": null, "auth": null}),
            )
        }
        _ => errors(StatusCode::NOT_FOUND, &[]),
    }
}

fn write_file(dir: &tempfile::TempDir, name: &str, content: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, content).unwrap();
    p
}

fn kube_auth(dir: &tempfile::TempDir, role: &str) -> VaultAuth {
    VaultAuth::Kubernetes {
        role: role.into(),
        jwt_file: write_file(dir, "jwt", &format!("{JWT}\n")),
        mount: "kubernetes".into(),
    }
}

fn vref(path: &str, key: &str) -> VaultRef {
    VaultRef {
        provider: None,
        mount: None,
        path: path.into(),
        key: Some(key.into()),
        version: None,
        engine: None,
        ttl: None,
    }
}

#[tokio::test]
async fn kv2_and_kv1_with_kubernetes_login() {
    support::init();
    let v = Standin::start(3600, true).await;
    let dir = tempfile::tempdir().unwrap();
    let p = VaultProvider::new("vault-prod", v.settings(kube_auth(&dir, "app"))).unwrap();

    let r = SecretRef::Vault(vref("app", "api_key"));
    let got = p.fetch(&r).await.unwrap();
    assert_eq!(got.expose_str(), Some("kv2-api-key-v1"));
    assert_eq!(got.version(), Some("1"));
    assert_eq!(got.metadata().provider, "vault-prod");

    // A new version; pinning still reads the old one.
    v.with(|s| {
        s.kv2
            .get_mut("app")
            .unwrap()
            .push(json!({"api_key": "kv2-api-key-v2"}))
    });
    assert_eq!(
        p.fetch(&r).await.unwrap().expose_str(),
        Some("kv2-api-key-v2")
    );
    let pinned = SecretRef::Vault(VaultRef {
        version: Some(1),
        ..vref("app", "api_key")
    });
    let got = p.fetch(&pinned).await.unwrap();
    assert_eq!(
        (got.expose_str(), got.version()),
        (Some("kv2-api-key-v1"), Some("1"))
    );
    // The original schema's full API path (`secret/data/app`) works too.
    let full = SecretRef::Vault(vref("secret/data/app", "api_key"));
    assert_eq!(
        p.fetch(&full).await.unwrap().expose_str(),
        Some("kv2-api-key-v2")
    );

    // KV v1 on another mount, with its lease_duration as the cache hint.
    let kv1 = SecretRef::Vault(VaultRef {
        mount: Some("kv1".into()),
        engine: Some(KvEngine::V1),
        ..vref("legacy/db", "password")
    });
    let got = p.fetch(&kv1).await.unwrap();
    assert_eq!(got.expose_str(), Some("kv1-password-x"));
    assert_eq!(got.metadata().ttl, Some(Duration::from_secs(2764800)));

    // One login for all of it; every request carried the namespace.
    assert_eq!(v.with(|s| s.logins), 1);
    assert!(v.with(|s| s.namespaces.iter().all(|n| n == "team-a") && s.namespaces.len() >= 5));

    // Missing key, missing path, version pinning on kv1.
    let e = p
        .fetch(&SecretRef::Vault(vref("app", "nokey")))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::KeyNotFound { .. }), "{e}");
    assert!(
        e.to_string().contains("secret/app") && e.to_string().contains("nokey"),
        "{e}"
    );
    assert_err_clean(&e, NEVER_PRINTED);
    let e = p
        .fetch(&SecretRef::Vault(vref("nothere", "k")))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert_err_clean(&e, NEVER_PRINTED);
    let e = p
        .fetch(&SecretRef::Vault(VaultRef {
            version: Some(2),
            ..match &kv1 {
                SecretRef::Vault(x) => x.clone(),
                _ => unreachable!(),
            }
        }))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidRef { ref field, .. } if field == "vaultRef.version"),
        "{e}"
    );
    let e = p
        .fetch(&SecretRef::Vault(vref("../sys/x", "k")))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidRef { .. }), "{e}");
    // A path near HTTP's URI limit: refused before any request (vaultrs
    // would panic re-parsing the URL), and the ref stays usable.
    for len in [4_097, 65_532 - "http://127.0.0.1:1/secret/data/".len()] {
        let e = p
            .fetch(&SecretRef::Vault(vref(&"p".repeat(len), "k")))
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidRef { ref field, .. } if field == "vaultRef.path"),
            "{e}"
        );
    }
    // Forbidden path: one fresh login, then a clear 403 with Vault's text.
    let e = p
        .fetch(&SecretRef::Vault(vref("forbidden", "k")))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Forbidden { .. }), "{e}");
    assert!(e.to_string().contains("permission denied"), "{e}");
    assert_eq!(v.with(|s| s.logins), 2);
    assert_err_clean(&e, NEVER_PRINTED);
}

#[tokio::test]
async fn approle_login_and_bad_credentials() {
    support::init();
    let v = Standin::start(3600, true).await;
    let dir = tempfile::tempdir().unwrap();
    let auth = |sid: &str| VaultAuth::AppRole {
        role_id: ROLE_ID.into(),
        secret_id: SecretIdSource::File(write_file(&dir, "sid", sid)),
        mount: "approle".into(),
    };
    let p = VaultProvider::new("v", v.settings(auth(SECRET_ID))).unwrap();
    let r = SecretRef::Vault(vref("app", "user"));
    assert_eq!(p.fetch(&r).await.unwrap().expose_str(), Some("app"));

    let p = VaultProvider::new("v", v.settings(auth("wrong-secret-id-999"))).unwrap();
    let e = p.fetch(&r).await.unwrap_err();
    assert!(matches!(e, Error::Auth { .. }), "{e}");
    // The status, not Vault's errors text (see tests/echoes.rs).
    assert!(
        e.to_string().contains("Vault answered 400 bad request"),
        "{e}"
    );
    assert!(!e.to_string().contains("invalid role or secret ID"), "{e}");
    assert!(e.to_string().contains("providers.v"), "{e}");
    assert_err_clean(&e, &[NEVER_PRINTED, &["wrong-secret-id-999"]].concat());
}

#[tokio::test]
async fn wrong_role_is_a_clear_error() {
    support::init();
    let v = Standin::start(3600, true).await;
    let dir = tempfile::tempdir().unwrap();
    let p = VaultProvider::new("vault-prod", v.settings(kube_auth(&dir, "not-app"))).unwrap();
    let e = p
        .fetch(&SecretRef::Vault(vref("app", "api_key")))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::Auth { .. }), "{e}");
    assert!(
        text.contains("Vault answered 400 bad request") && text.contains("not-app"),
        "{text}"
    );
    assert!(text.contains("auth/kubernetes"), "{text}");
    assert!(!e.is_retryable());
    assert_err_clean(&e, NEVER_PRINTED);

    // A custom auth mount and a missing JWT file.
    let p = VaultProvider::new(
        "vault-prod",
        v.settings(VaultAuth::Kubernetes {
            role: "app".into(),
            jwt_file: dir.path().join("no-such-token"),
            mount: "k8s-custom".into(),
        }),
    )
    .unwrap();
    let e = p
        .fetch(&SecretRef::Vault(vref("app", "api_key")))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no-such-token"), "{e}");
    let p = VaultProvider::new(
        "vault-prod",
        v.settings(VaultAuth::Kubernetes {
            role: "app".into(),
            jwt_file: write_file(&dir, "jwt2", JWT),
            mount: "k8s-custom".into(),
        }),
    )
    .unwrap();
    assert!(
        p.fetch(&SecretRef::Vault(vref("app", "api_key")))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn token_expiry_and_revocation_lead_to_relogin() {
    support::init();
    // 1 s tokens that cannot be renewed: the provider must log in again.
    let v = Standin::start(1, false).await;
    let dir = tempfile::tempdir().unwrap();
    let p = VaultProvider::new("v", v.settings(kube_auth(&dir, "app"))).unwrap();
    let r = SecretRef::Vault(vref("app", "api_key"));
    p.fetch(&r).await.unwrap();
    assert_eq!(v.with(|s| s.logins), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    p.fetch(&r).await.unwrap();
    assert_eq!(
        v.with(|s| s.logins),
        2,
        "expired token replaced by a new login"
    );

    // Revoked server-side (403 on a token we think valid): one re-login.
    v.with(|s| {
        s.token_ttl = 3600;
        s.tokens.retain(|k, _| k == STATIC_TOKEN);
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let p = VaultProvider::new("v", v.settings(kube_auth(&dir, "app"))).unwrap();
    p.fetch(&r).await.unwrap();
    let before = v.with(|s| s.logins);
    v.with(|s| s.tokens.retain(|k, _| k == STATIC_TOKEN));
    assert_eq!(
        p.fetch(&r).await.unwrap().expose_str(),
        Some("kv2-api-key-v1")
    );
    assert_eq!(v.with(|s| s.logins), before + 1);
    assert!(support::logs().contains("getting a new token"));
    assert_no_token_in_logs();
}

#[tokio::test]
async fn renewable_token_is_renewed_not_replaced() {
    support::init();
    let v = Standin::start(1, true).await;
    let dir = tempfile::tempdir().unwrap();
    let p = VaultProvider::new("v", v.settings(kube_auth(&dir, "app"))).unwrap();
    let r = SecretRef::Vault(vref("app", "api_key"));
    p.fetch(&r).await.unwrap();
    // Past two thirds of the 1 s lease, before it ends.
    tokio::time::sleep(Duration::from_millis(750)).await;
    p.fetch(&r).await.unwrap();
    let (logins, renewals) = v.with(|s| (s.logins, s.renewals));
    assert_eq!(logins, 1);
    assert_eq!(renewals, 1);
    assert_no_token_in_logs();
}

#[tokio::test]
async fn static_token_file_and_forbidden() {
    support::init();
    let v = Standin::start(3600, true).await;
    let dir = tempfile::tempdir().unwrap();
    let good = VaultProvider::new(
        "v",
        v.settings(VaultAuth::TokenFile(write_file(&dir, "tok", STATIC_TOKEN))),
    )
    .unwrap();
    let r = SecretRef::Vault(vref("app", "api_key"));
    assert!(good.fetch(&r).await.is_ok());
    let bad = VaultProvider::new(
        "v",
        v.settings(VaultAuth::TokenFile(write_file(
            &dir,
            "tok2",
            "hvs.standin-bogus-token",
        ))),
    )
    .unwrap();
    let e = bad.fetch(&r).await.unwrap_err();
    assert!(matches!(e, Error::Forbidden { .. }), "{e}");
    assert!(e.to_string().contains("permission denied"));
    assert_err_clean(&e, NEVER_PRINTED);
}

#[tokio::test]
async fn dynamic_secret_lease_is_renewed_by_the_cache() {
    support::init();
    let v = Standin::start(3600, true).await;
    let dir = tempfile::tempdir().unwrap();
    let p = Arc::new(VaultProvider::new("v", v.settings(kube_auth(&dir, "app"))).unwrap());
    let r = SecretRef::Vault(VaultRef {
        mount: Some("database".into()),
        engine: Some(KvEngine::V1),
        ..vref("creds/app", "password")
    });
    let cache = Cache::new(
        p,
        CacheOptions {
            refresh_at: 0.0,
            ..CacheOptions::default()
        },
    );
    let got = cache.get(&r).await.unwrap();
    assert_eq!(got.expose_str(), Some("dyn-pass-1"));
    let lease = got.metadata().lease.clone().unwrap();
    assert!(lease.renewable && lease.id.starts_with("database/creds/app/"));
    assert_eq!(cache.refresh_due().await, 0, "renewed, not re-read");
    assert_eq!(v.with(|s| (s.lease_renewals, s.reads)), (1, 1));
    // Still the same credentials.
    assert_eq!(
        cache.get(&r).await.unwrap().expose_str(),
        Some("dyn-pass-1")
    );
}

#[tokio::test]
async fn server_down_and_sealed_retry_then_fail() {
    support::init();
    let dir = tempfile::tempdir().unwrap();
    let opts = CacheOptions {
        attempts: 3,
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        ..CacheOptions::default()
    };
    // Nothing listening.
    let mut s = Standin::start(3600, true)
        .await
        .settings(kube_auth(&dir, "app"));
    s.address = format!("http://127.0.0.1:{}", unused_port());
    let cache = Cache::new(Arc::new(VaultProvider::new("v", s).unwrap()), opts.clone());
    let r = SecretRef::Vault(vref("app", "api_key"));
    let e = cache.get(&r).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e}");
    assert_eq!(cache.upstream_calls(), 3);
    assert_err_clean(&e, NEVER_PRINTED);

    // Sealed: 503, retried, then reported by its status (never Vault's text).
    let v = Standin::start(3600, true).await;
    let p = Arc::new(VaultProvider::new("v", v.settings(kube_auth(&dir, "app"))).unwrap());
    p.fetch(&r).await.unwrap();
    v.with(|s| s.sealed = true);
    let cache = Cache::new(p, opts);
    let e = cache.get(&r).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("Vault answered 503 service unavailable"),
        "{e}"
    );
    assert_eq!(cache.upstream_calls(), 3);
    assert_err_clean(&e, NEVER_PRINTED);
}

#[tokio::test]
async fn tls_to_a_plain_http_server_is_a_tls_error() {
    support::init();
    let v = Standin::start(3600, true).await;
    let mut s = v.settings(VaultAuth::TokenEnv("KERNELSEAL_TEST_UNSET_TOKEN".into()));
    s.address = v.addr.replace("http://", "https://");
    s.auth = VaultAuth::TokenFile({
        let dir = tempfile::tempdir().unwrap();
        let p = write_file(&dir, "t", STATIC_TOKEN);
        std::mem::forget(dir);
        p
    });
    let p = VaultProvider::new("v", s).unwrap();
    let e = p
        .fetch(&SecretRef::Vault(vref("app", "api_key")))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Tls { .. }), "{e:?}");
    assert_err_clean(&e, NEVER_PRINTED);
    // A caCert that is not PEM is a settings error naming the field.
    let mut s = v.settings(VaultAuth::TokenEnv("X".into()));
    let dir = tempfile::tempdir().unwrap();
    s.ca_cert = Some(write_file(&dir, "ca.pem", "not a certificate"));
    let e = VaultProvider::new("vp", s).unwrap_err();
    assert!(e.to_string().starts_with("providers.vp.caCert: "), "{e}");
}

fn assert_no_token_in_logs() {
    support::assert_no_leak("", NEVER_PRINTED);
}

/// A TLS listener for axum: TCP accept, then the rustls handshake.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that refuses our certificate aborts the handshake.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A test CA and a server certificate for 127.0.0.1 signed by it.
fn test_pki() -> (String, tokio_rustls::TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kernelseal test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![
                CertificateDer::from(leaf.der().to_vec()),
                CertificateDer::from(ca_cert.der().to_vec()),
            ],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    (
        ca_cert.pem(),
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    )
}

#[tokio::test]
async fn https_with_ca_cert_unknown_ca_and_skip_verify() {
    support::init();
    let (ca_pem, acceptor) = test_pki();
    let v = Standin::start_with(3600, true, Some(acceptor)).await;
    assert!(v.addr.starts_with("https://"));
    let dir = tempfile::tempdir().unwrap();
    let ca = write_file(&dir, "ca.pem", &ca_pem);
    let token = VaultAuth::TokenFile(write_file(&dir, "tok", STATIC_TOKEN));
    let r = SecretRef::Vault(vref("app", "api_key"));

    // caCert: verified against the test CA.
    let mut s = v.settings(token.clone());
    s.ca_cert = Some(ca);
    let got = VaultProvider::new("v", s).unwrap().fetch(&r).await.unwrap();
    assert_eq!(got.expose_str(), Some("kv2-api-key-v1"));

    // No caCert: the system roots do not know the CA.
    let e = VaultProvider::new("v", v.settings(token.clone()))
        .unwrap()
        .fetch(&r)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Tls { .. }), "{e:?}");
    assert!(e.to_string().contains("caCert"), "{e}");
    assert_err_clean(&e, NEVER_PRINTED);

    // tlsSkipVerify: accepted, with a warning.
    let mut s = v.settings(token);
    s.tls_skip_verify = true;
    let got = VaultProvider::new("v-insecure", s)
        .unwrap()
        .fetch(&r)
        .await
        .unwrap();
    assert_eq!(got.expose_str(), Some("kv2-api-key-v1"));
    assert!(support::logs().contains("tlsSkipVerify is set"));
}

#[tokio::test]
async fn authenticate_asks_vault_now() {
    support::init();
    let v = Standin::start(3600, true).await;
    let dir = tempfile::tempdir().unwrap();
    // A login method: every check is a fresh login, even with a token in
    // hand (it says nothing about whether the JWT is still accepted).
    let p = VaultProvider::new("v", v.settings(kube_auth(&dir, "app"))).unwrap();
    p.authenticate().await.unwrap();
    p.authenticate().await.unwrap();
    assert_eq!(v.with(|s| s.logins), 2);
    // The token of the last check serves reads: no further login.
    p.fetch(&SecretRef::Vault(vref("app", "api_key")))
        .await
        .unwrap();
    assert_eq!(v.with(|s| s.logins), 2);

    // A JWT Vault does not accept: a refusal, not an outage.
    let bad_dir = tempfile::tempdir().unwrap();
    std::fs::write(bad_dir.path().join("jwt"), "not-the-jwt").unwrap();
    let bad = VaultProvider::new(
        "v",
        v.settings(VaultAuth::Kubernetes {
            role: "app".into(),
            jwt_file: bad_dir.path().join("jwt"),
            mount: "kubernetes".into(),
        }),
    )
    .unwrap();
    let e = bad.authenticate().await.unwrap_err();
    assert!(matches!(e, Error::Auth { .. }), "{e}");
    assert!(!e.is_availability());

    // A static token: lookup-self.
    let good = VaultProvider::new(
        "v",
        v.settings(VaultAuth::TokenFile(write_file(&dir, "tok", STATIC_TOKEN))),
    )
    .unwrap();
    good.authenticate().await.unwrap();
    let bogus = VaultProvider::new(
        "v",
        v.settings(VaultAuth::TokenFile(write_file(
            &dir,
            "tok2",
            "hvs.standin-bogus-token",
        ))),
    )
    .unwrap();
    let e = bogus.authenticate().await.unwrap_err();
    assert!(
        matches!(e, Error::Auth { .. }) && e.to_string().contains("token refused"),
        "{e}"
    );
    assert_err_clean(&e, &["hvs.standin-bogus-token", STATIC_TOKEN]);

    // Sealed: the check could not be made, which is not a refusal.
    v.with(|s| s.sealed = true);
    let e = good.authenticate().await.unwrap_err();
    assert!(e.is_availability(), "{e}");
}
