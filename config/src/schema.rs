use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::expand::Naming;
use crate::identity::Identity;
use crate::policy::Policy;
use crate::secret_ref::SecretRef;
use crate::source_path;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_version")]
    pub version: String,
    #[serde(default)]
    pub policy: Policy,
    /// Named provider instances (`vault`, `aws`, `kubernetes`).
    #[serde(default)]
    pub providers: BTreeMap<String, Spanned<ProviderSpec>>,
    #[serde(default, deserialize_with = "source_path::bindings")]
    pub secrets: Vec<Spanned<Binding>>,
    #[serde(default)]
    pub monitoring: Monitoring,
    /// How callers of the agent socket are identified in Kubernetes.
    #[serde(default)]
    pub pod_identity: PodIdentityMode,
}

/// `podIdentity`: whether the agent resolves callers to pods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodIdentityMode {
    /// Every caller must resolve to a pod on this node, or gets nothing.
    Required,
    /// Pods when running in Kubernetes, host identity (uid, cgroup) otherwise.
    #[default]
    Preferred,
    /// Host identity only; pod selectors match nobody.
    Disabled,
}

impl PodIdentityMode {
    /// The config's spelling, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            PodIdentityMode::Required => "required",
            PodIdentityMode::Preferred => "preferred",
            PodIdentityMode::Disabled => "disabled",
        }
    }
}

fn default_version() -> String {
    "v1".to_string()
}

/// One entry of `providers:`. The provider-specific settings are kept as
/// written and interpreted by the providers crate, which owns their schema.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderSpec {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub settings: BTreeMap<String, serde_json::Value>,
}

/// A binding: which processes get which secrets.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Binding {
    pub name: String,
    #[serde(default)]
    pub selector: Selector,
    #[serde(default, deserialize_with = "source_path::secret_refs")]
    pub secret_refs: Vec<Spanned<SecretRefSpec>>,
    #[serde(default)]
    pub delivery: Delivery,
    #[serde(default)]
    pub on_rotate: Option<OnRotate>,
    /// Whose login reads the binding's Vault and AWS secrets.
    #[serde(default)]
    pub identity: Identity,
}

/// Which processes a binding applies to. Every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    /// Basename of the executed file (not `comm`, which the process can set).
    pub binary: Option<String>,
    /// Exact path of the executed file.
    pub path: Option<String>,
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
    pub container: Option<String>,
    pub uid: Option<u32>,
    pub cgroup_path: Option<String>,
}

/// How secrets reach the process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    #[default]
    Env,
    File,
}

/// What to do with an env-delivered process when a secret changes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum OnRotate {
    None,
    Restart,
    Signal(String),
}

/// One entry of a binding's `secretRefs`: its source, which names exactly
/// one kind (see `source.rs`), and the name or names it is delivered under
/// (`name`, `keys: all` or `jmesPath`; see `entry.rs` and `expand.rs`).
#[derive(Debug, Clone)]
pub struct SecretRefSpec {
    pub naming: Naming,
    pub source: Spanned<SecretRef>,
}

/// The `monitoring:` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Monitoring {
    pub enabled: bool,
    pub metrics_port: u16,
    pub log_level: String,
    pub log_format: LogFormat,
}

impl Default for Monitoring {
    fn default() -> Self {
        Monitoring {
            enabled: true,
            metrics_port: 9090,
            log_level: "info".to_string(),
            log_format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}
