//! Mount: validate the request, fetch every object, and answer with all of
//! them or none.

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use kernelseal_providers::{
    AwsRef, Cache, CacheOptions, KubernetesRef, KvEngine, Registry, SecretRef, SecretValue, SsmRef,
    TemplateRef, VaultRef,
};
use prost::Message;
use zeroize::{Zeroize, Zeroizing};

use crate::error::Error;
use crate::identity::Identities;
use crate::limits::{Limited, PER_MOUNT, Upstreams};
use crate::params::{
    AWS_AUDIENCE, Encoding, MountAttributes, Object, ObjectSource, ParamMemo, parse_attributes,
    parse_permission,
};
use crate::proto::{File, MountRequest, MountResponse, ObjectVersion};
use crate::version::VersionKey;
use kernelseal_providers::identity::Subject;

/// The driver's default gRPC receive limit.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// What local sources may be read: off unless a flag allows them, because
/// they are the provider's own environment and the node's files.
#[derive(Debug, Clone, Default)]
pub struct LocalPolicy {
    /// `env` objects only for variables starting with one of these.
    pub env_prefixes: Vec<String>,
    /// `file` objects only under one of these (canonical) directories,
    /// read beneath them following no symlink.
    pub file_dirs: Vec<PathBuf>,
    /// `awsSecretId` without `roleArn` uses the node's credential chain.
    pub aws_node_credentials: bool,
}

/// The Mount logic, independent of gRPC.
pub struct Mounter {
    registry: Arc<Registry>,
    cache: Cache,
    identities: Identities,
    key: VersionKey,
    policy: LocalPolicy,
    memo: ParamMemo,
}

/// A successful Mount, with what the log line needs.
pub struct Mounted {
    pub response: MountResponse,
    pub pod: String,
}

impl Mounter {
    pub fn new(registry: Registry, key: VersionKey, mut policy: LocalPolicy) -> Self {
        // Canonical, as the object paths are compared resolved; the read
        // itself then follows no symlink below them (fetch_beneath).
        policy.file_dirs = policy
            .file_dirs
            .iter()
            .map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.clone()))
            .collect();
        let registry = Arc::new(registry);
        let upstreams = Arc::new(Upstreams::default());
        let opts = CacheOptions::default();
        // Through the registry's cache go only Kubernetes Secrets.
        let kubernetes = Limited::new(registry.clone(), upstreams.limit("kubernetes"));
        Mounter {
            cache: Cache::new(Arc::new(kubernetes), opts.clone()),
            registry,
            identities: Identities::new(opts, upstreams),
            key,
            policy,
            memo: ParamMemo::default(),
        }
    }

    /// Handles one request. `Err` carries the pod (if known) for the log.
    pub async fn mount(&self, req: &MountRequest) -> Result<Mounted, (String, Error)> {
        let attrs =
            parse_attributes(&req.attributes, &self.memo).map_err(|e| ("-".to_string(), e))?;
        let pod = format!("{}/{}", attrs.pod.namespace, attrs.pod.name);
        for w in attrs.warnings() {
            tracing::warn!(pod = %pod, "{w}");
        }
        self.mount_parsed(req, &attrs)
            .await
            .map(|response| Mounted {
                response,
                pod: pod.clone(),
            })
            .map_err(|e| (pod, e))
    }

    async fn mount_parsed(
        &self,
        req: &MountRequest,
        attrs: &MountAttributes,
    ) -> Result<MountResponse, Error> {
        let default_mode = parse_permission(&req.permission)?;
        // Every object is checked before anything is fetched: a bad object
        // late in the list must not cost upstream calls.
        for o in &attrs.params().objects {
            self.check_allowed(o, attrs)?;
        }
        let mut files = Vec::with_capacity(attrs.params().objects.len());
        let mut versions = Vec::with_capacity(attrs.params().objects.len());
        // Concurrently, so a first Mount of several remote objects costs a
        // few upstream round trips, not one per object; at most PER_MOUNT at
        // once (and each upstream bounds all Mounts together), results in
        // the objects' order. The first failure ends the Mount and stops
        // starting fetches.
        use futures_util::StreamExt as _;
        let objects = &attrs.params().objects;
        // Futures made up front (they start when polled): a closure over
        // `&Object` here trips rustc's higher-ranked Send check.
        let fetches: Vec<_> = objects.iter().map(|o| self.fetch(o, attrs)).collect();
        let mut fetching = futures_util::stream::iter(fetches).buffered(PER_MOUNT);
        let mut fetched = Vec::with_capacity(objects.len());
        while let Some(value) = fetching.next().await {
            fetched.push(value?);
        }
        // Templates last: they are rendered over the others' values.
        for (o, value) in objects.iter().zip(&fetched) {
            let rendered;
            let value = match value {
                Some(v) => v,
                None => {
                    rendered = render(o, objects, &fetched)?;
                    &rendered
                }
            };
            let contents = decode(o, value.expose_bytes())?;
            versions.push(ObjectVersion {
                id: o.name.clone(),
                version: self
                    .key
                    .version(&attrs.pod.namespace, &o.canonical, &contents),
            });
            files.push(File {
                path: o.name.clone(),
                mode: o.mode.unwrap_or(default_mode) as i32,
                contents: contents.to_vec(),
            });
        }
        let mut response = MountResponse {
            object_version: versions,
            error: None,
            files,
        };
        let size = response.encoded_len();
        if size > MAX_RESPONSE_BYTES {
            response.files.iter_mut().for_each(|f| f.contents.zeroize());
            return Err(Error::TooLarge {
                size,
                limit: MAX_RESPONSE_BYTES,
            });
        }
        Ok(response)
    }

    fn check_allowed(&self, o: &Object, attrs: &MountAttributes) -> Result<(), Error> {
        let refuse = |message: String| Error::Refused {
            object: o.name.clone(),
            message,
        };
        match &o.source {
            // One answer for every reason (see local.rs).
            ObjectSource::Env { .. } | ObjectSource::File { .. } => {
                crate::local::check(&self.policy, o)
                    .map_err(|reason| crate::local::refusal(o, &pod_of(attrs), &reason))?;
            }
            ObjectSource::Vault { .. } => {
                let v = attrs
                    .params()
                    .vault
                    .as_ref()
                    .ok_or_else(|| refuse("vaultAddress missing".into()))?;
                if !attrs.pod.tokens.contains_key(&v.audience) {
                    return Err(Error::MissingToken {
                        object: o.name.clone(),
                        message: format!(
                            "no service-account token for audience {:?} in csi.storage.k8s.io/serviceAccount.tokens; add it to the CSIDriver's tokenRequests",
                            v.audience
                        ),
                    });
                }
            }
            // What it reads is checked as the objects it names.
            ObjectSource::Template { .. } => {}
            ObjectSource::Aws { .. } | ObjectSource::Ssm { .. } => {
                match &attrs.params().aws.role_arn {
                    Some(_) if !attrs.pod.tokens.contains_key(AWS_AUDIENCE) => {
                        return Err(Error::MissingToken {
                            object: o.name.clone(),
                            message: format!(
                                "no service-account token for audience {AWS_AUDIENCE:?} in csi.storage.k8s.io/serviceAccount.tokens; add it to the CSIDriver's tokenRequests"
                            ),
                        });
                    }
                    None if !self.policy.aws_node_credentials => {
                        return Err(refuse(
                        "parameter roleArn is missing, and the node's AWS credentials are off (--allow-aws-node-credentials)".into(),
                    ));
                    }
                    _ => {}
                }
            }
            ObjectSource::K8sSecret { .. } => {
                if attrs.pod.namespace.is_empty() {
                    return Err(refuse(
                        "the pod's namespace (csi.storage.k8s.io/pod.namespace) is missing".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `r` read with the pod's AWS identity (`roleArn`, its
    /// `sts.amazonaws.com` token), or the node's where the flag allows.
    async fn fetch_as_pod_on_aws(
        &self,
        o: &Object,
        attrs: &MountAttributes,
        subject: &Subject,
        r: &SecretRef,
    ) -> Result<SecretValue, Error> {
        let p = &attrs.params().aws;
        let token = p
            .role_arn
            .as_ref()
            .and_then(|_| attrs.pod.tokens.get(AWS_AUDIENCE));
        let slot = self.identities.aws(p, subject, token, &o.name).await?;
        slot.get(r).await.map_err(|source| Error::Fetch {
            object: o.name.clone(),
            source,
        })
    }

    /// The object's value; `None` for a template, rendered once the other
    /// objects are fetched.
    async fn fetch(
        &self,
        o: &Object,
        attrs: &MountAttributes,
    ) -> Result<Option<SecretValue>, Error> {
        if let ObjectSource::Template { .. } = o.source {
            return Ok(None);
        }
        self.fetch_source(o, attrs).await.map(Some)
    }

    async fn fetch_source(
        &self,
        o: &Object,
        attrs: &MountAttributes,
    ) -> Result<SecretValue, Error> {
        let fail = |source| Error::Fetch {
            object: o.name.clone(),
            source,
        };
        let subject = Subject {
            namespace: attrs.pod.namespace.clone(),
            service_account: attrs.pod.service_account.clone(),
        };
        match &o.source {
            // Local sources: read again on every Mount, so rotation shows
            // at once; one answer for every failure (see local.rs).
            ObjectSource::Env { .. } | ObjectSource::File { .. } => {
                crate::local::fetch(&self.registry, &self.policy, o)
                    .await
                    .map_err(|reason| crate::local::refusal(o, &pod_of(attrs), &reason))
            }
            // Only the pod's own namespace: a class cannot name another.
            ObjectSource::K8sSecret { name, key } => self
                .cache
                .get(&SecretRef::Kubernetes(KubernetesRef {
                    namespace: Some(attrs.pod.namespace.clone()),
                    name: name.clone(),
                    key: key.clone(),
                }))
                .await
                .map_err(fail),
            ObjectSource::Vault { path, key, version } => {
                let v = attrs
                    .params()
                    .vault
                    .as_ref()
                    .ok_or_else(|| Error::Parameter {
                        parameter: "vaultAddress".into(),
                        message: "missing".into(),
                    })?;
                let token =
                    attrs
                        .pod
                        .tokens
                        .get(&v.audience)
                        .ok_or_else(|| Error::MissingToken {
                            object: o.name.clone(),
                            message: format!("no token for audience {:?}", v.audience),
                        })?;
                let slot = self.identities.vault(v, &subject, token, &o.name).await?;
                slot.get(&SecretRef::Vault(vault_ref(path, key, *version)))
                    .await
                    .map_err(fail)
            }
            ObjectSource::Aws {
                secret_id,
                json_key,
                version_stage,
                version_id,
            } => {
                let r = SecretRef::Aws(AwsRef {
                    provider: None,
                    secret_id: secret_id.clone(),
                    json_key: json_key.clone(),
                    version_id: version_id.clone(),
                    version_stage: version_stage.clone(),
                    ttl: None,
                });
                self.fetch_as_pod_on_aws(o, attrs, &subject, &r).await
            }
            ObjectSource::Ssm {
                name,
                with_decryption,
            } => {
                let r = SecretRef::Ssm(SsmRef {
                    provider: None,
                    name: name.clone(),
                    with_decryption: *with_decryption,
                    ttl: None,
                });
                self.fetch_as_pod_on_aws(o, attrs, &subject, &r).await
            }
            ObjectSource::Template { .. } => unreachable!("templates are rendered, not fetched"),
        }
    }
}

/// A template object rendered over the values of the objects its
/// `templateRefs` name (checked to exist and to be fetched objects when
/// the class was parsed).
fn render(
    o: &Object,
    objects: &[Object],
    fetched: &[Option<SecretValue>],
) -> Result<SecretValue, Error> {
    let ObjectSource::Template { text, refs } = &o.source else {
        unreachable!("only templates are rendered");
    };
    let mut values = std::collections::BTreeMap::new();
    for (name, target) in refs {
        let value = objects
            .iter()
            .zip(fetched)
            .find(|(t, _)| t.name == *target)
            .and_then(|(_, v)| v.clone());
        if let Some(v) = value {
            values.insert(name.clone(), v);
        }
    }
    let template = TemplateRef {
        text: text.clone(),
        refs: Default::default(),
    };
    kernelseal_providers::render_template(
        &template,
        &format!("template object {}", o.name),
        &values,
    )
    .map_err(|source| Error::Fetch {
        object: o.name.clone(),
        source,
    })
}

/// `namespace/name` of the pod, as the log lines name it.
fn pod_of(attrs: &MountAttributes) -> String {
    format!("{}/{}", attrs.pod.namespace, attrs.pod.name)
}

/// `vaultPath` is Vault's API path, as in the Vault CSI provider:
/// `{mount}/data/{path}` is a KV v2 read, anything else a generic (KV v1,
/// dynamic secret) read of `{mount}/{path}`.
fn vault_ref(path: &str, key: &str, version: Option<u64>) -> VaultRef {
    let (mount, rest) = path.split_once('/').unwrap_or((path, ""));
    let (engine, rest) = match rest.strip_prefix("data/") {
        Some(r) => (KvEngine::V2, r),
        None => (KvEngine::V1, rest),
    };
    VaultRef {
        provider: None,
        mount: Some(mount.to_string()),
        path: rest.to_string(),
        key: Some(key.to_string()),
        version,
        engine: Some(engine),
        ttl: None,
    }
}

fn decode(o: &Object, bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    let bad = |encoding: &str| Error::Encoding {
        object: o.name.clone(),
        encoding: encoding.into(),
    };
    match o.encoding {
        Encoding::Utf8 => Ok(Zeroizing::new(bytes.to_vec())),
        Encoding::Base64 => {
            let text: Vec<u8> = bytes
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            let text = Zeroizing::new(text);
            base64::engine::general_purpose::STANDARD
                .decode(&*text)
                .map(Zeroizing::new)
                .map_err(|_| bad("base64"))
        }
        Encoding::Hex => {
            let t: Zeroizing<Vec<u8>> = Zeroizing::new(
                bytes
                    .iter()
                    .copied()
                    .filter(|b| !b.is_ascii_whitespace())
                    .collect(),
            );
            if !t.len().is_multiple_of(2) {
                return Err(bad("hex"));
            }
            let mut out = Zeroizing::new(Vec::with_capacity(t.len() / 2));
            for pair in t.chunks(2) {
                let hi = (pair[0] as char).to_digit(16).ok_or_else(|| bad("hex"))?;
                let lo = (pair[1] as char).to_digit(16).ok_or_else(|| bad("hex"))?;
                out.push((hi * 16 + lo) as u8);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_paths() {
        let r = vault_ref("secret/data/app/db", "k", None);
        assert_eq!(
            (r.mount.as_deref(), r.path.as_str(), r.engine),
            (Some("secret"), "app/db", Some(KvEngine::V2))
        );
        let r = vault_ref("database/creds/app", "password", None);
        assert_eq!(
            (r.mount.as_deref(), r.path.as_str(), r.engine),
            (Some("database"), "creds/app", Some(KvEngine::V1))
        );
    }
}
