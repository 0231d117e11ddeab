//! Pod identity: the pod UID parsed from a caller's cgroup path, mapped to
//! the pod's namespace, labels, service account and container name by a
//! node-scoped pod list (`spec.nodeName`), cached and refreshed on a miss:
//! an unknown pod, or a known pod that does not show the caller's
//! container (not published yet, or restarted with a new ID).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use tokio::sync::Mutex;

use crate::error::InjectError;

/// What authorizes a caller in Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// container ID (hex, runtime prefix stripped) → container name
    pub containers: HashMap<String, String>,
}

impl PodInfo {
    fn from_pod(p: &Pod) -> Option<Self> {
        let meta = &p.metadata;
        let mut containers = HashMap::new();
        if let Some(status) = &p.status {
            let all = status
                .container_statuses
                .iter()
                .flatten()
                .chain(status.init_container_statuses.iter().flatten());
            for c in all {
                if let Some(id) = &c.container_id {
                    // "containerd://<hex>", "cri-o://<hex>", "docker://<hex>"
                    let hex = id.rsplit("://").next().unwrap_or(id);
                    containers.insert(hex.to_string(), c.name.clone());
                }
            }
        }
        Some(PodInfo {
            uid: meta.uid.clone()?,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            service_account: p
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
            containers,
        })
    }
}

/// An unknown pod UID lists again, but not more often than this: a caller
/// with a UID no pod has must not turn into an API request storm.
const MIN_RELIST: Duration = Duration::from_secs(2);
/// A known pod that lacks the caller's container lists again, node-wide,
/// no more often than this. The kubelet publishes a container's ID a
/// moment after the container starts (and a restarted container's new ID
/// likewise), so its first request often comes before its ID.
pub const CONTAINER_RELIST: Duration = Duration::from_millis(250);
/// How long one lookup waits for its container to appear in the list
/// before answering without it: a wrapper asks again when told to retry.
pub const CONTAINER_WAIT: Duration = Duration::from_secs(1);

/// The pods as last listed.
struct Cache {
    pods: HashMap<String, PodInfo>,
    /// When the last list was started, failed or not: every bound counts
    /// from it, so a failing API server is not asked more often either.
    listed: Option<Instant>,
}

pub struct PodIndex {
    api: Api<Pod>,
    node: String,
    /// The IAM roles of service accounts, for `identity: pod` reads of AWS.
    pub accounts: crate::service_accounts::ServiceAccountRoles,
    /// Held across a list: callers that need the same list wait for it
    /// and then read its result instead of listing again.
    cache: Mutex<Cache>,
}

impl PodIndex {
    pub fn new(client: kube::Client, node: impl Into<String>) -> Self {
        PodIndex {
            accounts: crate::service_accounts::ServiceAccountRoles::new(client.clone()),
            api: Api::all(client),
            node: node.into(),
            cache: Mutex::new(Cache {
                pods: HashMap::new(),
                listed: None,
            }),
        }
    }

    async fn relist(&self, cache: &mut Cache) -> Result<(), InjectError> {
        cache.listed = Some(Instant::now());
        let lp = ListParams::default().fields(&format!("spec.nodeName={}", self.node));
        let pods = self.api.list(&lp).await.map_err(|e| InjectError::PodList {
            node: self.node.clone(),
            source: Box::new(e),
        })?;
        cache.pods = pods
            .items
            .iter()
            .filter_map(PodInfo::from_pod)
            .map(|p| (p.uid.clone(), p))
            .collect();
        Ok(())
    }

    /// The pod with this UID on this node, listing again on a miss. With
    /// the caller's `container_id` (from its cgroup), a pod whose list
    /// entry lacks that container is listed again, for up to
    /// [`CONTAINER_WAIT`]: the answer then names the container when the
    /// kubelet published it meanwhile, and is the pod without it if not.
    pub async fn lookup(
        &self,
        uid: &str,
        container_id: Option<&str>,
    ) -> Result<Option<PodInfo>, InjectError> {
        let Some(pod) = self.pod(uid).await? else {
            return Ok(None);
        };
        let Some(id) = container_id.filter(|id| !pod.containers.contains_key(*id)) else {
            return Ok(Some(pod));
        };
        match tokio::time::timeout(CONTAINER_WAIT, self.await_container(uid, id)).await {
            Ok(found) => found,
            // Not published within the wait: the pod as last listed, when
            // no list is under way to block on.
            Err(_) => Ok(self
                .cache
                .try_lock()
                .ok()
                .and_then(|c| c.pods.get(uid).cloned())
                .or(Some(pod))),
        }
    }

    /// The pod from the cache; an unknown UID lists again at most every
    /// [`MIN_RELIST`].
    async fn pod(&self, uid: &str) -> Result<Option<PodInfo>, InjectError> {
        let mut cache = self.cache.lock().await;
        if let Some(p) = cache.pods.get(uid) {
            return Ok(Some(p.clone()));
        }
        if cache.listed.is_some_and(|t| t.elapsed() < MIN_RELIST) {
            return Ok(None);
        }
        self.relist(&mut cache).await?;
        Ok(cache.pods.get(uid).cloned())
    }

    /// Lists again until the pod shows the container, at most every
    /// [`CONTAINER_RELIST`] whoever asks; the caller bounds the wait.
    /// `None` when the pod left the list (deleted).
    async fn await_container(&self, uid: &str, id: &str) -> Result<Option<PodInfo>, InjectError> {
        loop {
            let mut cache = self.cache.lock().await;
            match cache.pods.get(uid) {
                None => return Ok(None),
                Some(p) if p.containers.contains_key(id) => return Ok(Some(p.clone())),
                Some(_) => {}
            }
            match cache.listed.map(|t| t + CONTAINER_RELIST) {
                Some(next) if next > Instant::now() => {
                    drop(cache);
                    tokio::time::sleep_until(next.into()).await;
                }
                _ => self.relist(&mut cache).await?,
            }
        }
    }
}
