use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::policy::Policy;

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
    #[serde(default)]
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
    #[serde(default)]
    pub secret_refs: Vec<Spanned<SecretRefSpec>>,
    #[serde(default)]
    pub delivery: Delivery,
    #[serde(default)]
    pub on_rotate: Option<OnRotate>,
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

/// One secret of a binding: the name it is delivered under and its source.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRefSpec {
    pub name: String,
    pub source: Spanned<SourceSpec>,
}

/// A source as written. Exactly one field must be set; validation turns it
/// into a [`crate::Source`].
#[derive(Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceSpec {
    /// A literal value. Useful for tests; keep real secrets out of config files.
    pub value: Option<String>,
    pub env_ref: Option<String>,
    pub file_ref: Option<FileRef>,
    pub secret_key_ref: Option<SecretKeyRef>,
    pub vault_ref: Option<VaultRef>,
    pub aws_ref: Option<AwsRef>,
}

// A literal `value` is a secret: never print it.
impl std::fmt::Debug for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceSpec")
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .field("env_ref", &self.env_ref)
            .field("file_ref", &self.file_ref)
            .field("secret_key_ref", &self.secret_key_ref)
            .field("vault_ref", &self.vault_ref)
            .field("aws_ref", &self.aws_ref)
            .finish()
    }
}

/// `fileRef: /path` or `fileRef: { path: /path, jsonKey: k }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRef {
    Path(String),
    Detailed {
        path: String,
        json_key: Option<String>,
        /// How often the file is re-read for rotation, e.g. `30s` (default:
        /// the cache's 5 minutes).
        ttl: Option<String>,
    },
}

/// The mapping form of `fileRef`, strict like every other section: a
/// misspelt `jsonKey` must not silently deliver the whole file.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct FileRefSpec {
    path: String,
    json_key: Option<String>,
    ttl: Option<String>,
}

impl<'de> Deserialize<'de> for FileRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FileRefVisitor;
        impl<'de> serde::de::Visitor<'de> for FileRefVisitor {
            type Value = FileRef;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a path, or a mapping with path, jsonKey, ttl")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FileRef, E> {
                Ok(FileRef::Path(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<FileRef, A::Error> {
                let s =
                    FileRefSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(FileRef::Detailed {
                    path: s.path,
                    json_key: s.json_key,
                    ttl: s.ttl,
                })
            }
        }
        deserializer.deserialize_any(FileRefVisitor)
    }
}

impl FileRef {
    pub fn path(&self) -> &str {
        match self {
            FileRef::Path(p) | FileRef::Detailed { path: p, .. } => p,
        }
    }
    pub fn json_key(&self) -> Option<&str> {
        match self {
            FileRef::Path(_) => None,
            FileRef::Detailed { json_key, .. } => json_key.as_deref(),
        }
    }
    pub fn ttl(&self) -> Option<&str> {
        match self {
            FileRef::Path(_) => None,
            FileRef::Detailed { ttl, .. } => ttl.as_deref(),
        }
    }
}

/// A key of a Kubernetes Secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
    pub namespace: Option<String>,
}

/// A key of a Vault KV secret. `path` is relative to `mount`; the provider
/// adds KV v2's `data/`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VaultRef {
    pub provider: Option<String>,
    pub mount: Option<String>,
    pub path: String,
    pub key: String,
    pub version: Option<u64>,
    pub engine: Option<VaultEngine>,
    /// Per-ref cache TTL override, e.g. `30s`, `5m`.
    pub ttl: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VaultEngine {
    Kv1,
    Kv2,
}

/// A secret in AWS Secrets Manager.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsRef {
    pub provider: Option<String>,
    pub secret_id: String,
    pub json_key: Option<String>,
    pub version_id: Option<String>,
    pub version_stage: Option<String>,
    pub ttl: Option<String>,
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
