//! `type: kubernetes`: which cluster and namespace.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::fields::Obj;
use crate::error::Error;

pub(super) const KUBERNETES_KEYS: &[&str] = &["kubeconfig", "context", "namespace", "cacheTtl"];

/// `type: kubernetes`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KubernetesSettings {
    /// A kubeconfig file; without it: in-cluster service account, then `KUBECONFIG`/`~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// Namespace for refs that name none.
    pub namespace: Option<String>,
    pub cache_ttl: Option<Duration>,
}

impl KubernetesSettings {
    pub fn parse(provider: &str, settings: &BTreeMap<String, Value>) -> Result<Self, Error> {
        let mut o = Obj::root(provider, settings);
        o.only(KUBERNETES_KEYS)?;
        let kubeconfig = o.string("kubeconfig")?.map(PathBuf::from);
        let context = o.string("context")?;
        let namespace = o.string("namespace")?;
        let cache_ttl = o.duration("cacheTtl")?;
        o.finish()?;
        Ok(KubernetesSettings {
            kubeconfig,
            context,
            namespace,
            cache_ttl,
        })
    }
}
