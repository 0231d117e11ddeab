//! The pod index against a stand-in Kubernetes API server that follows
//! `GET /api/v1/pods?fieldSelector=spec.nodeName=…` (a PodList).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use kernelseal_injector::PodIndex;

const UID: &str = "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901";
const CID: &str = "3f0c6a9e5b1d4c2f8a7e6d5c4b3a29180f7e6d5c4b3a2918a7e6d5c4b3a29180";

#[derive(Default)]
struct Seen {
    lists: AtomicUsize,
    selector: std::sync::Mutex<String>,
}

async fn pods(
    State(seen): State<Arc<Seen>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Json<serde_json::Value> {
    seen.lists.fetch_add(1, Ordering::SeqCst);
    *seen.selector.lock().unwrap() = q.get("fieldSelector").cloned().unwrap_or_default();
    Json(serde_json::json!({
        "apiVersion": "v1",
        "kind": "PodList",
        "metadata": { "resourceVersion": "100" },
        "items": [{
            "metadata": { "name": "pg-0", "namespace": "db", "uid": UID, "labels": { "app": "pg" } },
            "spec": { "serviceAccountName": "pg", "nodeName": "node-a", "containers": [{ "name": "postgres", "image": "pg" }] },
            "status": { "containerStatuses": [{
                "name": "postgres", "containerID": format!("containerd://{CID}"),
                "image": "pg", "imageID": "x", "ready": true, "restartCount": 0
            }] }
        }]
    }))
}

#[tokio::test]
async fn resolves_pods_of_this_node_and_does_not_storm_the_api() {
    kernelseal_providers::install_crypto_provider();
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/api/v1/pods", get(pods))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{ server: \"http://{addr}\" }}\nusers:\n- name: u\n  user: {{ token: node-agent-token }}\ncontexts:\n- name: x\n  context: {{ cluster: c, user: u }}\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let index = PodIndex::new(kube::Client::try_from(config).unwrap(), "node-a");

    let pod = index.lookup(UID).await.unwrap().expect("pod found");
    assert_eq!(
        (
            pod.namespace.as_str(),
            pod.name.as_str(),
            pod.service_account.as_str()
        ),
        ("db", "pg-0", "pg")
    );
    assert_eq!(pod.labels.get("app").map(String::as_str), Some("pg"));
    assert_eq!(
        pod.containers.get(CID).map(String::as_str),
        Some("postgres"),
        "runtime prefix stripped"
    );
    assert_eq!(*seen.selector.lock().unwrap(), "spec.nodeName=node-a");

    // Cached: no second list for a known pod; an unknown UID right after a
    // list does not list again.
    assert!(index.lookup(UID).await.unwrap().is_some());
    assert!(
        index
            .lookup("00000000-0000-0000-0000-000000000000")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(seen.lists.load(Ordering::SeqCst), 1);
}
