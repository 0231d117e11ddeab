//! Providers per identity: one [`Slot`] per (settings, namespace, service
//! account) — the CSI provider's per-pod logins, and the agent's reads as
//! the calling pod. Pods that share a service account share its Vault/AWS
//! permissions, so they share one provider and one cache. A cached value
//! is served for a token only when that token was accepted upstream within
//! the cache TTL: each token (by [`fingerprint`]) is admitted by a fresh
//! login ([`SecretProvider::authenticate`]) and re-checked once the TTL
//! has passed, so a garbage token for the same service account is refused
//! rather than served the cache, and a revoked identity stops being served
//! within one TTL. The provider of the last admitted token serves the
//! slot's upstream reads (the older tokens may expire).

mod logins;
mod pod_reads;
mod upstreams;
mod web_identity;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

pub use logins::{aws_as_pod, session_name, vault_as_pod};
pub use pod_reads::{LoginKind, PodChange, PodLogin, PodProvider, PodReads};
pub use upstreams::{Limited, PER_UPSTREAM, Upstreams};
pub use web_identity::PodWebIdentity;

use crate::{Cache, CacheOptions, Error as PError, SecretProvider, SecretRef, SecretValue};

/// More slots than this and the table is cleared: a bound on memory when
/// many service accounts come and go; the cost is one fresh login each.
const MAX_SLOTS: usize = 4096;

/// Tokens remembered per slot (a node runs at most a few hundred pods).
const MAX_TOKENS: usize = 1024;

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
    pub fn new(
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
    pub async fn admit(
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

    /// The slot's version changes (as its cache reports them), with its
    /// values refreshed in the background as the agent's own cache is, so
    /// that rotations of values read as a pod are seen while the pods run.
    pub(crate) fn follow_changes(&self) -> tokio::sync::broadcast::Receiver<crate::VersionChange> {
        self.cache.spawn_refresher();
        self.cache.subscribe()
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

/// What tells tokens apart without keeping them: SHA-256.
pub fn fingerprint(token: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

/// The slots of one kind of upstream, by key (settings and [`Subject`]),
/// bounded by [`MAX_SLOTS`].
pub struct Slots<K> {
    table: Mutex<HashMap<K, Arc<Slot>>>,
}

impl<K: std::hash::Hash + Eq> Default for Slots<K> {
    fn default() -> Self {
        Slots {
            table: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: std::hash::Hash + Eq> Slots<K> {
    /// The slot of `key`, made by `make` the first time.
    pub fn get_or_make(&self, key: K, make: impl FnOnce() -> Arc<Slot>) -> Arc<Slot> {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
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
}
