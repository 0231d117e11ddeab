//! Per-pod identities for remote sources: a Vault kubernetes login and an
//! AWS web identity with the pod's own service-account token, so every pod
//! reads exactly what its own identity may read.
//!
//! One [`Slot`] per (settings, namespace, service account): pods that share
//! a service account share its Vault/AWS permissions, so they share one
//! provider and one cache. A cached value is served to a pod only when its
//! own current token was accepted upstream within the cache TTL: each
//! token (by fingerprint) is admitted by a fresh login
//! ([`SecretProvider::authenticate`]) and re-checked once the TTL has
//! passed, so a garbage token for the same service account is refused
//! rather than served the cache, and a revoked identity stops being served
//! within one TTL. The provider of the last admitted token serves the
//! slot's upstream reads (the older tokens may expire).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use aws_credential_types::provider::SharedCredentialsProvider;
use kernelseal_providers::{
    AwsProvider, AwsSettings, Cache, CacheOptions, Error as PError, InlineJwt, KvEngine,
    SecretProvider, SecretRef, SecretValue, VaultAuth, VaultProvider, VaultSettings,
};
use secrecy::ExposeSecret;
use tokio::time::Instant;

use crate::error::Error;
use crate::limits::{Limited, Upstreams};
use crate::params::{AwsParams, VaultParams};
use crate::web_identity::PodWebIdentity;

/// More slots than this and the table is cleared: a bound on memory when
/// many service accounts come and go; the cost is one fresh login each.
const MAX_SLOTS: usize = 4096;

/// Tokens remembered per slot (a node runs at most a few hundred pods).
const MAX_TOKENS: usize = 1024;

/// Builds a provider holding one token, for its check.
type Builder<'a> = Box<dyn FnOnce() -> Arc<dyn SecretProvider> + Send + 'a>;

/// The provider of the slot's last admitted token, replaceable under the
/// slot's cache.
struct Swap {
    kind: &'static str,
    current: RwLock<Option<Arc<dyn SecretProvider>>>,
}

impl Swap {
    fn current(&self) -> Result<Arc<dyn SecretProvider>, PError> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| PError::Auth {
                provider: self.kind.into(),
                message: "no service-account token of this identity has been accepted".into(),
            })
    }
}

#[async_trait::async_trait]
impl SecretProvider for Swap {
    fn kind(&self) -> &'static str {
        self.kind
    }

    async fn fetch(&self, reference: &SecretRef) -> Result<SecretValue, PError> {
        self.current()?.fetch(reference).await
    }

    async fn renew(&self, value: &SecretValue) -> Result<Option<Duration>, PError> {
        self.current()?.renew(value).await
    }
}

/// One identity's provider and cache.
pub struct Slot {
    swap: Arc<Swap>,
    cache: Cache,
    /// Token fingerprint → when the upstream last accepted it. Kept past
    /// the TTL so that a refusal of a once-accepted token is recognised.
    accepted: Mutex<HashMap<Vec<u8>, Instant>>,
    /// One check at a time: the objects of one Mount arrive together and
    /// must cost one login, not one each.
    checking: tokio::sync::Mutex<()>,
    /// How long an acceptance lets a token be served from the cache.
    accept_for: Duration,
    /// The upstream's bound on requests at once, shared with every slot
    /// and Mount that talks to it.
    limit: Arc<tokio::sync::Semaphore>,
}

impl Slot {
    fn new(
        kind: &'static str,
        opts: &CacheOptions,
        limit: Arc<tokio::sync::Semaphore>,
    ) -> Arc<Slot> {
        let swap = Arc::new(Swap {
            kind,
            current: RwLock::new(None),
        });
        // The cache's reads and renewals (its background refresh too) each
        // hold a permit of the upstream.
        let limited = Arc::new(Limited::new(swap.clone(), limit.clone()));
        let cache = Cache::new(limited, opts.clone());
        Arc::new(Slot {
            swap,
            cache,
            accepted: Mutex::new(HashMap::new()),
            checking: tokio::sync::Mutex::new(()),
            accept_for: opts.default_ttl,
            limit,
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Instant>> {
        self.accepted.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn accepted_recently(&self, fp: &[u8]) -> bool {
        self.table()
            .get(fp)
            .is_some_and(|at| at.elapsed() < self.accept_for)
    }

    /// Lets `fp`'s token be served, and its provider serve the slot.
    fn accept(&self, fp: Vec<u8>, provider: Arc<dyn SecretProvider>) {
        let mut t = self.table();
        if t.len() >= MAX_TOKENS && !t.contains_key(&fp) {
            let ttl = self.accept_for;
            t.retain(|_, at| at.elapsed() < ttl);
            if t.len() >= MAX_TOKENS {
                t.clear();
            }
        }
        t.insert(fp, Instant::now());
        drop(t);
        *self.swap.current.write().unwrap_or_else(|p| p.into_inner()) = Some(provider);
    }

    /// The upstream refused this identity: nothing it vouched for is
    /// served again until a token passes a fresh check.
    fn revoke(&self) {
        self.table().clear();
        *self.swap.current.write().unwrap_or_else(|p| p.into_inner()) = None;
        self.cache.clear();
    }

    /// Admits the token with fingerprint `fp`: at once when it was
    /// accepted within the TTL, else after `build()`'s provider (holding
    /// that token) passes a fresh upstream check.
    async fn admit(
        &self,
        fp: &[u8],
        build: impl FnOnce() -> Result<Arc<dyn SecretProvider>, PError>,
    ) -> Result<(), PError> {
        if self.accepted_recently(fp) {
            return Ok(());
        }
        let _one = self.checking.lock().await;
        if self.accepted_recently(fp) {
            return Ok(());
        }
        // Always a new provider: one that logged in earlier holds a Vault
        // token (or STS credentials) that proves nothing about today.
        let provider = build()?;
        let login = Limited::new(provider.clone(), self.limit.clone());
        match login.authenticate().await {
            Ok(()) => {
                self.accept(fp.to_vec(), provider);
                Ok(())
            }
            Err(e) => {
                if !e.is_availability() && self.table().contains_key(fp) {
                    tracing::warn!(provider = self.swap.kind, error = %e, "a token accepted before was refused; dropping this identity's cached values");
                    self.revoke();
                }
                Err(e)
            }
        }
    }

    /// The value of `r` for an admitted token.
    pub async fn get(&self, r: &SecretRef) -> Result<SecretValue, PError> {
        let out = self.cache.get(r).await;
        if let Err(PError::Auth { .. }) = &out {
            // The slot's login was refused during the read (the cache
            // already dropped the entry): every token is checked afresh.
            self.table().clear();
        }
        out
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
    upstreams: Arc<Upstreams>,
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
) -> Arc<Slot> {
    let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = t.get(&key) {
        return s.clone();
    }
    if t.len() >= MAX_SLOTS {
        t.clear();
    }
    let s = make();
    t.insert(key, s.clone());
    s
}

impl Identities {
    pub fn new(opts: CacheOptions, upstreams: Arc<Upstreams>) -> Self {
        Identities {
            opts,
            upstreams,
            vault: Mutex::new(HashMap::new()),
            aws: Mutex::new(HashMap::new()),
        }
    }

    /// The Vault slot of `subject`, once `token` is accepted by a Vault
    /// kubernetes login (within the TTL). `object` names the Mount's object
    /// in a refusal.
    pub async fn vault(
        &self,
        p: &VaultParams,
        subject: &Subject,
        token: &secrecy::SecretBox<str>,
        object: &str,
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
                timeout: Duration::from_secs(10),
                cache_ttl: None,
            };
            Ok(Arc::new(VaultProvider::new(&name, settings)?))
        };
        let slot = slot_for(&self.vault, (p.clone(), subject.clone()), || {
            let limit = self.upstreams.limit(&format!("vault:{}", p.address));
            Slot::new("vault", &self.opts, limit)
        });
        slot.admit(&fp, build).await.map_err(|e| match e {
            PError::Settings { .. } => Error::Parameter {
                parameter: "vaultAddress".into(),
                message: e.to_string(),
            },
            source => Error::Fetch {
                object: object.to_string(),
                source,
            },
        })?;
        Ok(slot)
    }

    /// The AWS slot of `subject`: web identity with `token` for `roleArn`
    /// once STS accepts the token (within the TTL), or (token `None`) the
    /// node's own credential chain.
    pub async fn aws(
        &self,
        p: &AwsParams,
        subject: &Subject,
        token: Option<&secrecy::SecretBox<str>>,
        object: &str,
    ) -> Result<Arc<Slot>, Error> {
        let settings = AwsSettings {
            region: p.region.clone(),
            failover_region: p.failover_region.clone(),
            timeout: Duration::from_secs(10),
            ..AwsSettings::default()
        };
        let name = format!("aws@{}/{}", subject.namespace, subject.service_account);
        let (fp, build): (Vec<u8>, Builder) = match (token, &p.role_arn) {
            (Some(t), Some(arn)) => {
                let (arn, jwt) = (arn.clone(), t.expose_secret());
                let session = session_name(subject);
                let region = p.region.clone();
                (
                    fingerprint(jwt),
                    Box::new(move || {
                        let creds = PodWebIdentity::new(arn, jwt, session, region);
                        Arc::new(AwsProvider::with_credentials(
                            &name,
                            settings,
                            SharedCredentialsProvider::new(creds),
                        )) as Arc<dyn SecretProvider>
                    }),
                )
            }
            // No pod token: the node's identity, nothing of the pod's to check.
            _ => (
                Vec::new(),
                Box::new(move || {
                    Arc::new(AwsProvider::new("aws-node", settings)) as Arc<dyn SecretProvider>
                }),
            ),
        };
        let slot = slot_for(&self.aws, (p.clone(), subject.clone()), || {
            let region = p.region.as_deref().unwrap_or("default");
            Slot::new(
                "aws",
                &self.opts,
                self.upstreams.limit(&format!("aws:{region}")),
            )
        });
        slot.admit(&fp, || Ok(build()))
            .await
            .map_err(|source| Error::Fetch {
                object: object.to_string(),
                source,
            })?;
        Ok(slot)
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
