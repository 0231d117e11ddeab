//! The pod index against the stand-in Kubernetes API server
//! (`kernelseal_testkit::kube_api`): `GET /api/v1/pods?fieldSelector=
//! spec.nodeName=…` with a bearer token, PodLists changed the way the
//! kubelet changes them.

use std::sync::Arc;
use std::time::Instant;

use kernelseal_injector::PodIndex;
use kernelseal_injector::pods::CONTAINER_RELIST;
use kernelseal_testkit::kube_api::{self, AGENT_TOKEN, KubeApi, NO_LIST_TOKEN};

const UID: &str = "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901";
const OTHER_NODE_UID: &str = "99999999-5f60-7182-93a4-b5c6d7e8f901";
const CID: &str = "3f0c6a9e5b1d4c2f8a7e6d5c4b3a29180f7e6d5c4b3a2918a7e6d5c4b3a29180";
const RESTARTED: &str = "8e1d2c3b4a5968778695a4b3c2d1e0f98e1d2c3b4a5968778695a4b3c2d1e0f9";
const NEVER: &str = "0000000000000000000000000000000000000000000000000000000000000bad";

async fn index(api: &KubeApi, token: &str) -> PodIndex {
    kernelseal_providers::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let kc = kube::config::Kubeconfig::read_from(api.kubeconfig(dir.path(), token)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    PodIndex::new(kube::Client::try_from(config).unwrap(), "node-a")
}

/// A pod of node-a (pg-0 in db, container `postgres`) and one of node-b.
async fn api_with_pods() -> KubeApi {
    let api = KubeApi::start().await;
    api.pods(|p| {
        p.add(kube_api::pod("db", "pg-0", UID, "node-a", &["postgres"]));
        p.add(kube_api::pod(
            "db",
            "pg-1",
            OTHER_NODE_UID,
            "node-b",
            &["postgres"],
        ));
    });
    api
}

#[tokio::test]
async fn resolves_pods_of_this_node_and_does_not_storm_the_api() {
    let api = api_with_pods().await;
    api.pods(|p| p.start_container(UID, "postgres", CID));
    let index = index(&api, AGENT_TOKEN).await;

    let pod = index.lookup(UID, Some(CID)).await.unwrap().expect("pod");
    assert_eq!(
        (
            pod.namespace.as_str(),
            pod.name.as_str(),
            pod.service_account.as_str()
        ),
        ("db", "pg-0", "pg-0")
    );
    assert_eq!(pod.labels.get("app").map(String::as_str), Some("pg-0"));
    assert_eq!(
        pod.containers.get(CID).map(String::as_str),
        Some("postgres"),
        "runtime prefix stripped"
    );
    assert_eq!(
        index.lookup(OTHER_NODE_UID, None).await.unwrap(),
        None,
        "another node's pod is not listed here"
    );

    // Cached: no second list for a known pod and container; an unknown UID
    // right after a list does not list again.
    assert!(index.lookup(UID, Some(CID)).await.unwrap().is_some());
    assert!(index.lookup(UID, None).await.unwrap().is_some());
    assert!(
        index
            .lookup("00000000-0000-0000-0000-000000000000", None)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(api.lists(), 1);
}

/// The real order of events: the pod is listed while its container is
/// still being created (no ID in its status), the wrapper in that container
/// asks before the kubelet publishes the ID, the ID appears; later the
/// container restarts with a new ID.
#[tokio::test]
async fn a_container_is_identified_though_its_id_came_after_the_pod_and_changed() {
    let api = api_with_pods().await;
    let index = index(&api, AGENT_TOKEN).await;

    let pod = index.lookup(UID, None).await.unwrap().expect("pod");
    assert!(pod.containers.is_empty(), "no ID published yet: {pod:?}");
    assert_eq!(api.lists(), 1);

    // The wrapper asks; the kubelet publishes the ID while the agent looks.
    api.after_next_list(|p| p.start_container(UID, "postgres", CID));
    let pod = index.lookup(UID, Some(CID)).await.unwrap().expect("pod");
    assert_eq!(
        pod.containers.get(CID).map(String::as_str),
        Some("postgres"),
        "{pod:?}"
    );
    assert!(api.lists() >= 3, "listed again until the ID showed");

    // `onRotate: restart`, or a crash: the same container, a new ID.
    api.pods(|p| p.restart_container(UID, "postgres", RESTARTED));
    let pod = index
        .lookup(UID, Some(RESTARTED))
        .await
        .unwrap()
        .expect("pod");
    assert_eq!(
        pod.containers.get(RESTARTED).map(String::as_str),
        Some("postgres"),
        "{pod:?}"
    );
    assert!(!pod.containers.contains_key(CID), "the old ID is gone");
}

/// A container the list never shows (an ID no pod has, or a kubelet far
/// behind): callers get the pod without it, and the node's API server sees
/// at most one list per CONTAINER_RELIST however many callers wait.
#[tokio::test]
async fn container_misses_share_their_lists_within_the_rate_bound() {
    let api = api_with_pods().await;
    api.pods(|p| p.start_container(UID, "postgres", CID));
    let index = Arc::new(index(&api, AGENT_TOKEN).await);
    assert!(index.lookup(UID, None).await.unwrap().is_some());
    let before = api.lists();

    let started = Instant::now();
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let index = index.clone();
            tokio::spawn(async move { index.lookup(UID, Some(NEVER)).await })
        })
        .collect();
    for c in callers {
        let pod = c
            .await
            .unwrap()
            .unwrap()
            .expect("the pod, without the container");
        assert!(!pod.containers.contains_key(NEVER));
        assert_eq!(
            pod.containers.get(CID).map(String::as_str),
            Some("postgres")
        );
    }
    let elapsed = started.elapsed();
    let lists = api.lists() - before;
    // List starts are CONTAINER_RELIST apart, so a span of `elapsed` holds
    // at most elapsed / CONTAINER_RELIST + 1 of them.
    let bound = (elapsed.as_millis() / CONTAINER_RELIST.as_millis()) as usize + 1;
    assert!(lists >= 1, "a miss lists again");
    assert!(
        lists <= bound,
        "{lists} lists in {elapsed:?} for 20 waiting callers (bound {bound})"
    );
}

/// The stand-in's authorization is the API server's: the agent's error
/// names the node and the status, never the token.
#[tokio::test]
async fn a_token_without_list_rights_is_an_error_naming_the_node() {
    let api = api_with_pods().await;
    for (token, want) in [
        (NO_LIST_TOKEN, "cannot list resource \"pods\""),
        ("not-a-token-of-this-cluster", "Unauthorized"),
    ] {
        let index = index(&api, token).await;
        let e = index.lookup(UID, None).await.unwrap_err().to_string();
        assert!(
            e.contains("listing the pods of node node-a") && e.contains(want),
            "{e}"
        );
        assert!(!e.contains(token), "{e}");
    }
    assert_eq!(api.lists(), 0);
}
