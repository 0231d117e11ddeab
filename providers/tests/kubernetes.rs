//! The Kubernetes provider against a stand-in API server that follows the
//! documented API: `GET /api/v1/namespaces/{ns}/secrets/{name}` with a
//! bearer token, `Secret` objects with base64 `data`, `Status` errors.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use kernelseal_providers::{
    Error, KubernetesProvider, KubernetesRef, KubernetesSettings, SecretProvider, SecretRef,
};
use serde_json::json;
use support::assert_err_clean;

const SA_TOKEN: &str = "kube-sa-token-abcdef0123456789";
const PASSWORD: &str = "pg-password-s3cr3t";
const OTHER: &str = "other-key-value-zz";

fn status(code: u16, reason: &str, message: String, name: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        axum::Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason,
            "details": {"name": name, "kind": "secrets"}, "code": code
        })),
    )
        .into_response()
}

async fn handle(State(hits): State<Arc<AtomicU64>>, uri: Uri, headers: HeaderMap) -> Response {
    hits.fetch_add(1, Ordering::Relaxed);
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {SA_TOKEN}")) {
        return status(401, "Unauthorized", "Unauthorized".into(), "");
    }
    let parts: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let ["api", "v1", "namespaces", ns, "secrets", name] = parts.as_slice() else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
            "",
        );
    };
    if *ns == "locked" {
        return status(
            403,
            "Forbidden",
            format!(
                "secrets \"{name}\" is forbidden: User \"system:serviceaccount:kernelseal:agent\" cannot get resource \"secrets\" in API group \"\" in the namespace \"{ns}\""
            ),
            name,
        );
    }
    if *ns == "broken" {
        return status(
            500,
            "InternalError",
            "etcdserver: request timed out".into(),
            name,
        );
    }
    if (*ns, *name) != ("db", "db-credentials") {
        return status(
            404,
            "NotFound",
            format!("secrets \"{name}\" not found"),
            name,
        );
    }
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    axum::Json(json!({
        "kind": "Secret", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": "48213", "uid": "u-1"},
        "type": "Opaque",
        "data": {"password": b64(PASSWORD), "other": b64(OTHER), "bin": "AAH/"}
    }))
    .into_response()
}

async fn standin() -> (String, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let app = Router::new().fallback(handle).with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, hits)
}

fn kubeconfig(dir: &tempfile::TempDir, server: &str, token: &str) -> std::path::PathBuf {
    let p = dir.path().join("kubeconfig");
    std::fs::write(
        &p,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {server}\nusers:\n- name: agent\n  user:\n    token: {token}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: agent\n    namespace: db\ncurrent-context: standin\n"
        ),
    )
    .unwrap();
    p
}

fn kref(ns: Option<&str>, name: &str, key: &str) -> SecretRef {
    SecretRef::Kubernetes(KubernetesRef {
        namespace: ns.map(str::to_string),
        name: name.into(),
        key: key.into(),
    })
}

#[tokio::test]
async fn secrets_through_a_kubeconfig() {
    support::init();
    let (addr, hits) = standin().await;
    let dir = tempfile::tempdir().unwrap();
    let p = KubernetesProvider::new(
        "k8s",
        KubernetesSettings {
            kubeconfig: Some(kubeconfig(&dir, &addr, SA_TOKEN)),
            ..KubernetesSettings::default()
        },
    );
    // Namespace from the kubeconfig context, and explicit.
    for r in [
        kref(None, "db-credentials", "password"),
        kref(Some("db"), "db-credentials", "password"),
    ] {
        let v = p.fetch(&r).await.unwrap();
        assert_eq!(v.expose_str(), Some(PASSWORD));
        assert_eq!(v.version(), Some("48213"));
        assert!(!format!("{v:?}").contains(PASSWORD));
    }
    let v = p
        .fetch(&kref(Some("db"), "db-credentials", "bin"))
        .await
        .unwrap();
    assert_eq!(v.expose_bytes(), &[0u8, 1, 255]);
    assert_eq!(hits.load(Ordering::Relaxed), 3);

    let secrets = [PASSWORD, OTHER, SA_TOKEN];
    // Key absent from the Secret.
    let e = p
        .fetch(&kref(Some("db"), "db-credentials", "nokey"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::KeyNotFound { .. }), "{e}");
    let t = e.to_string();
    assert!(
        t.contains("db/db-credentials") && t.contains("\"nokey\""),
        "{t}"
    );
    assert_err_clean(&e, &secrets);
    // 404 with namespace/name/key.
    let e = p
        .fetch(&kref(Some("db"), "missing", "password"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    let t = e.to_string();
    assert!(
        t.contains("Secret db/missing") && t.contains("password"),
        "{t}"
    );
    assert_err_clean(&e, &secrets);
    // RBAC 403 with namespace/name/key and the status, never the API
    // server's message (a `Status.message` can quote what it was sent).
    let e = p
        .fetch(&kref(Some("locked"), "db-credentials", "password"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Forbidden { .. }), "{e}");
    let t = e.to_string();
    assert!(
        t.contains("Secret locked/db-credentials")
            && t.contains("password")
            && t.contains("answered 403 permission denied")
            && !t.contains("cannot get resource"),
        "{t}"
    );
    assert_err_clean(&e, &secrets);
    // 5xx is retryable.
    let e = p.fetch(&kref(Some("broken"), "x", "k")).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
}

#[tokio::test]
async fn bad_token_and_unreachable_api() {
    support::init();
    let (addr, _) = standin().await;
    let dir = tempfile::tempdir().unwrap();
    let p = KubernetesProvider::new(
        "k8s",
        KubernetesSettings {
            kubeconfig: Some(kubeconfig(&dir, &addr, "wrong-token-77777777")),
            ..KubernetesSettings::default()
        },
    );
    let e = p
        .fetch(&kref(Some("db"), "db-credentials", "password"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Forbidden { .. }), "{e}");
    assert_err_clean(&e, &[PASSWORD, "wrong-token-77777777"]);

    let dir2 = tempfile::tempdir().unwrap();
    let dead = format!("http://127.0.0.1:{}", kernelseal_testkit::unused_port());
    let p = KubernetesProvider::new(
        "k8s",
        KubernetesSettings {
            kubeconfig: Some(kubeconfig(&dir2, &dead, SA_TOKEN)),
            ..KubernetesSettings::default()
        },
    );
    let e = p
        .fetch(&kref(Some("db"), "db-credentials", "password"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert_err_clean(&e, &[SA_TOKEN]);

    // A kubeconfig that does not exist: a settings error naming the field.
    let p = KubernetesProvider::new(
        "k8s",
        KubernetesSettings {
            kubeconfig: Some(dir.path().join("nope")),
            ..KubernetesSettings::default()
        },
    );
    let e = p.fetch(&kref(Some("db"), "x", "y")).await.unwrap_err();
    assert!(
        e.to_string().starts_with("providers.k8s.kubeconfig: "),
        "{e}"
    );
}
