//! Per-pod identities for remote sources: a Vault kubernetes login and an
//! AWS web identity with the pod's own service-account token, so every pod
//! reads exactly what its own identity may read.
//!
//! One [`Slot`] per (settings, namespace, service account): pods that share
//! a service account share its Vault/AWS permissions, so they share one
//! provider and one cache. The driver sends a fresh token on every Mount;
//! when it differs from the one the slot logged in with, the slot swaps in
//! a provider built with the new token (the old one's token may expire).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use aws_credential_types::provider::SharedCredentialsProvider;
use kernelseal_providers::{
    AwsProvider, AwsSettings, Cache, CacheOptions, Error as PError, InlineJwt, KvEngine,
    SecretProvider, SecretRef, SecretValue, VaultAuth, VaultProvider, VaultSettings,
};
use secrecy::ExposeSecret;

use crate::error::Error;
use crate::params::{AwsParams, VaultParams};
use crate::web_identity::PodWebIdentity;

/// More slots than this and the table is cleared: a bound on memory when
/// many service accounts come and go; the cost is one fresh login each.
const MAX_SLOTS: usize = 4096;

/// Builds a slot's provider, only when the slot needs a new one.
type Builder = Box<dyn FnOnce() -> Arc<dyn SecretProvider>>;

/// A provider that can be replaced under its cache.
struct Swap {
    kind: &'static str,
    current: RwLock<(Vec<u8>, Arc<dyn SecretProvider>)>,
}

#[async_trait::async_trait]
impl SecretProvider for Swap {
    fn kind(&self) -> &'static str {
        self.kind
    }

    async fn fetch(&self, reference: &SecretRef) -> Result<SecretValue, PError> {
        let p = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone();
        p.fetch(reference).await
    }

    async fn renew(&self, value: &SecretValue) -> Result<Option<std::time::Duration>, PError> {
        let p = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone();
        p.renew(value).await
    }
}

/// One identity's provider and cache.
pub struct Slot {
    swap: Arc<Swap>,
    pub cache: Cache,
}

impl Slot {
    fn new(
        kind: &'static str,
        fingerprint: Vec<u8>,
        provider: Arc<dyn SecretProvider>,
        opts: &CacheOptions,
    ) -> Arc<Slot> {
        let swap = Arc::new(Swap {
            kind,
            current: RwLock::new((fingerprint, provider)),
        });
        let cache = Cache::new(swap.clone(), opts.clone());
        Arc::new(Slot { swap, cache })
    }

    fn has(&self, fingerprint: &[u8]) -> bool {
        self.swap
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            == fingerprint
    }

    fn update(&self, fingerprint: Vec<u8>, build: impl FnOnce() -> Arc<dyn SecretProvider>) {
        let mut cur = self.swap.current.write().unwrap_or_else(|p| p.into_inner());
        if cur.0 != fingerprint {
            *cur = (fingerprint, build());
        }
    }
}

/// Who asks: the pod's namespace and service account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    pub namespace: String,
    pub service_account: String,
}

/// All per-identity slots.
pub struct Identities {
    opts: CacheOptions,
    vault: Mutex<HashMap<(VaultParams, Subject), Arc<Slot>>>,
    aws: Mutex<HashMap<(AwsParams, Subject), Arc<Slot>>>,
}

fn fingerprint(token: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

fn slot_for<K: std::hash::Hash + Eq>(
    table: &Mutex<HashMap<K, Arc<Slot>>>,
    key: K,
    make: impl FnOnce() -> Arc<Slot>,
) -> (Arc<Slot>, bool) {
    let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = t.get(&key) {
        return (s.clone(), false);
    }
    if t.len() >= MAX_SLOTS {
        t.clear();
    }
    let s = make();
    t.insert(key, s.clone());
    (s, true)
}

impl Identities {
    pub fn new(opts: CacheOptions) -> Self {
        Identities {
            opts,
            vault: Mutex::new(HashMap::new()),
            aws: Mutex::new(HashMap::new()),
        }
    }

    /// The Vault slot of `subject`, logged in (lazily) with `token`.
    pub fn vault(
        &self,
        p: &VaultParams,
        subject: &Subject,
        token: &secrecy::SecretBox<str>,
    ) -> Result<Arc<Slot>, Error> {
        let fp = fingerprint(token.expose_secret());
        let name = format!("vault@{}/{}", subject.namespace, subject.service_account);
        let build = || -> Result<Arc<dyn SecretProvider>, PError> {
            let settings = VaultSettings {
                address: p.address.clone(),
                namespace: p.namespace.clone(),
                ca_cert: None,
                tls_skip_verify: false,
                mount: "secret".into(),
                kv_version: KvEngine::V2,
                auth: VaultAuth::KubernetesJwt {
                    role: p.role.clone(),
                    jwt: InlineJwt::new(token.expose_secret()),
                    mount: p.mount_path.clone(),
                },
                timeout: std::time::Duration::from_secs(10),
                cache_ttl: None,
            };
            Ok(Arc::new(VaultProvider::new(&name, settings)?))
        };
        let as_err = |e: PError| Error::Parameter {
            parameter: "vaultAddress".into(),
            message: e.to_string(),
        };
        let key = (p.clone(), subject.clone());
        // The common case: same identity, same token. Building a provider
        // (an HTTP client) on every Mount would cost more than the Mount.
        let existing = self
            .vault
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some(slot) = existing
            && slot.has(&fp)
        {
            return Ok(slot);
        }
        let provider = build().map_err(as_err)?;
        let (slot, fresh) = slot_for(&self.vault, key, || {
            Slot::new("vault", fp.clone(), provider.clone(), &self.opts)
        });
        if !fresh {
            slot.update(fp, || provider);
        }
        Ok(slot)
    }

    /// The AWS slot of `subject`: web identity with `token` for `roleArn`,
    /// or (token `None`) the node's own credential chain.
    pub fn aws(
        &self,
        p: &AwsParams,
        subject: &Subject,
        token: Option<&secrecy::SecretBox<str>>,
    ) -> Arc<Slot> {
        let settings = AwsSettings {
            region: p.region.clone(),
            failover_region: p.failover_region.clone(),
            timeout: std::time::Duration::from_secs(10),
            ..AwsSettings::default()
        };
        let name = format!("aws@{}/{}", subject.namespace, subject.service_account);
        let (fp, build): (Vec<u8>, Builder) = match (token, &p.role_arn) {
            (Some(t), Some(arn)) => {
                let creds = PodWebIdentity::new(
                    arn.clone(),
                    t.expose_secret(),
                    session_name(subject),
                    p.region.clone(),
                );
                let name = name.clone();
                (
                    fingerprint(t.expose_secret()),
                    Box::new(move || {
                        Arc::new(AwsProvider::with_credentials(
                            &name,
                            settings,
                            SharedCredentialsProvider::new(creds),
                        )) as Arc<dyn SecretProvider>
                    }),
                )
            }
            _ => (
                Vec::new(),
                Box::new(move || {
                    Arc::new(AwsProvider::new("aws-node", settings)) as Arc<dyn SecretProvider>
                }),
            ),
        };
        let mut build = Some(build);
        let (slot, fresh) = slot_for(&self.aws, (p.clone(), subject.clone()), || {
            let b = build.take().expect("builder used once");
            Slot::new("aws", fp.clone(), b(), &self.opts)
        });
        if !fresh && let Some(b) = build {
            slot.update(fp, b);
        }
        slot
    }
}

/// An STS session name from the pod's identity (`[\w+=,.@-]`, ≤ 64).
fn session_name(s: &Subject) -> String {
    let raw = format!("kernelseal-{}-{}", s.namespace, s.service_account);
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect()
}
