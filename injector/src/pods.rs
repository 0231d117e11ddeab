//! Pod identity: the pod UID parsed from a caller's cgroup path, mapped to
//! the pod's namespace, labels, service account and container name by a
//! node-scoped pod list (`spec.nodeName`), cached and refreshed on a miss.

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

/// A miss lists again, but not more often than this: a caller with an
/// unknown UID must not turn into an API request storm.
const MIN_RELIST: Duration = Duration::from_secs(2);

pub struct PodIndex {
    api: Api<Pod>,
    node: String,
    state: Mutex<(HashMap<String, PodInfo>, Option<Instant>)>,
}

impl PodIndex {
    pub fn new(client: kube::Client, node: impl Into<String>) -> Self {
        PodIndex {
            api: Api::all(client),
            node: node.into(),
            state: Mutex::new((HashMap::new(), None)),
        }
    }

    async fn relist(&self) -> Result<HashMap<String, PodInfo>, InjectError> {
        let lp = ListParams::default().fields(&format!("spec.nodeName={}", self.node));
        let pods = self.api.list(&lp).await.map_err(|e| {
            InjectError::Identity(format!("listing the pods of node {}: {e}", self.node))
        })?;
        Ok(pods
            .items
            .iter()
            .filter_map(PodInfo::from_pod)
            .map(|p| (p.uid.clone(), p))
            .collect())
    }

    /// The pod with this UID on this node, listing again on a miss.
    pub async fn lookup(&self, uid: &str) -> Result<Option<PodInfo>, InjectError> {
        let mut st = self.state.lock().await;
        if let Some(p) = st.0.get(uid) {
            return Ok(Some(p.clone()));
        }
        if st.1.is_some_and(|t| t.elapsed() < MIN_RELIST) {
            return Ok(None);
        }
        st.0 = self.relist().await?;
        st.1 = Some(Instant::now());
        Ok(st.0.get(uid).cloned())
    }
}
