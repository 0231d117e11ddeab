//! `k8sSecret` objects through a stand-in Kubernetes API server (as in
//! `providers/tests/kubernetes.rs`): always read from the pod's own
//! namespace, whatever the provider's default namespace.

mod support;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use support::{Server, assert_clean, attributes, request};
use tonic::Code;

type Seen = Arc<Mutex<Vec<String>>>;

async fn handle(State(seen): State<Seen>, uri: Uri) -> Response {
    seen.lock().unwrap().push(uri.path().to_string());
    if uri.path() == "/api/v1/namespaces/shop/secrets/db" {
        // "pg-password-csi" in base64.
        return axum::Json(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "shop", "resourceVersion": "41"},
            "data": {"password": "cGctcGFzc3dvcmQtY3Np"}}))
        .into_response();
    }
    (
        StatusCode::NOT_FOUND,
        axum::Json(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "secrets \"db\" not found", "reason": "NotFound", "code": 404}),
        ),
    )
        .into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_secret_from_the_pods_namespace_only() {
    support::init();
    let seen: Seen = Arc::default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", l.local_addr().unwrap());
    let app = Router::new().fallback(handle).with_state(seen.clone());
    tokio::spawn(async move { axum::serve(l, app).await });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: s\n  cluster:\n    server: {server}\nusers:\n- name: u\n  user:\n    token: provider-sa-token-0000\ncontexts:\n- name: s\n  context:\n    cluster: s\n    user: u\n    namespace: kernelseal\ncurrent-context: s\n"
        ),
    )
    .unwrap();
    let config = format!(
        "version: v1\nproviders:\n  cluster:\n    type: kubernetes\n    kubeconfig: {}\n    namespace: kernelseal\n",
        kubeconfig.display()
    );
    let loaded = kernelseal_config::parse_str(&config, "test").unwrap();
    let registry = kernelseal_providers::Registry::from_config(&loaded.config).unwrap();
    let mut s = Server::start_with(registry, &dir.path().join("k")).await;

    let objects = "- objectName: password\n  k8sSecret: db\n  k8sKey: password\n";
    let r = s
        .client
        .mount(request(attributes(objects, &[], &[])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.files[0].contents, b"pg-password-csi");
    assert_eq!(
        *seen.lock().unwrap(),
        ["/api/v1/namespaces/shop/secrets/db"]
    );

    // Another namespace cannot be named: the name is a plain Secret name.
    let e = s
        .client
        .mount(request(attributes(
            "- objectName: x\n  k8sSecret: kube-system/db\n  k8sKey: password\n",
            &[],
            &[],
        )))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("object x: k8sSecret:"),
        "{}",
        e.message()
    );

    // A missing key names the object; no value, no token in the message.
    let e = s
        .client
        .mount(request(attributes(
            "- objectName: y\n  k8sSecret: db\n  k8sKey: user\n",
            &[],
            &[],
        )))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().starts_with("object y: "), "{}", e.message());
    assert_clean(
        &format!("{e:?}"),
        &["pg-password-csi", "provider-sa-token-0000"],
    );
    s.stop().await;
}
