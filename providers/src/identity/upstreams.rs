//! At most [`PER_UPSTREAM`] requests at once to one upstream (a Vault
//! address, an AWS region, the Kubernetes API), shared by every identity
//! that talks to it: per-identity providers each open their own
//! connections, and without a shared bound many identities (or one burst)
//! would open one connection per request until file descriptors ran out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Error as PError, SecretProvider, SecretRef, SecretValue};
use tokio::sync::Semaphore;

/// Requests at once to one upstream, over all callers and identities.
pub const PER_UPSTREAM: usize = 32;

/// Distinct upstreams remembered before unused ones are forgotten.
const MAX_UPSTREAMS: usize = 4096;

/// One semaphore per upstream, handed to every provider that talks to it.
pub struct Upstreams {
    per_upstream: usize,
    table: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Default for Upstreams {
    fn default() -> Self {
        Upstreams::new(PER_UPSTREAM)
    }
}

impl Upstreams {
    pub fn new(per_upstream: usize) -> Self {
        Upstreams {
            per_upstream: per_upstream.max(1),
            table: Mutex::new(HashMap::new()),
        }
    }

    /// The semaphore of `upstream` (e.g. `vault:https://vault:8200`).
    pub fn limit(&self, upstream: &str) -> Arc<Semaphore> {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = t.get(upstream) {
            return s.clone();
        }
        if t.len() >= MAX_UPSTREAMS {
            // Only semaphores no provider holds: dropping one in use
            // would let a new provider of that upstream bypass the bound.
            t.retain(|_, s| Arc::strong_count(s) > 1);
        }
        let s = Arc::new(Semaphore::new(self.per_upstream));
        t.insert(upstream.to_string(), s.clone());
        s
    }
}

/// A provider whose upstream calls (fetch, renew, authenticate) each hold
/// a permit of its upstream's semaphore.
pub struct Limited {
    inner: Arc<dyn SecretProvider>,
    limit: Arc<Semaphore>,
}

impl Limited {
    pub fn new(inner: Arc<dyn SecretProvider>, limit: Arc<Semaphore>) -> Self {
        Limited { inner, limit }
    }

    /// A permit, or none if the semaphore was closed (it never is; an
    /// unbounded call beats a made-up error).
    async fn permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.limit.acquire().await.ok()
    }
}

#[async_trait::async_trait]
impl SecretProvider for Limited {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn fetch(&self, reference: &SecretRef) -> Result<SecretValue, PError> {
        let _permit = self.permit().await;
        self.inner.fetch(reference).await
    }

    async fn authenticate(&self) -> Result<(), PError> {
        let _permit = self.permit().await;
        self.inner.authenticate().await
    }

    async fn renew(&self, value: &SecretValue) -> Result<Option<Duration>, PError> {
        let _permit = self.permit().await;
        self.inner.renew(value).await
    }
}
