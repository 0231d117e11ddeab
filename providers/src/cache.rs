//! A caching layer over any provider: TTL, single-flight, bounded retries
//! with backoff and jitter, a per-call timeout, serve-stale-on-error, and a
//! refresh task that publishes version changes.
//!
//! Serving stale bridges only *availability* failures
//! ([`Error::is_availability`]: timeouts, connection errors, 5xx, 429).
//! Any other failure is the upstream's answer (401/403/404, a refused
//! login, a malformed or oversized body): the entry is dropped and the
//! caller gets the error, so revoked access is never served from memory.
//!
//! Every upstream fetch runs in its own spawned task and hands its outcome
//! to all waiters through a `watch` channel: concurrent asks for one ref
//! share one upstream call, and a caller that gives up (dropped future) does
//! not cancel the fetch for the others.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::SecretProvider;
use crate::error::Error;
use crate::reference::SecretRef;
use crate::value::{HeldLease, SecretValue};

/// Tuning of a [`Cache`].
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// TTL when neither the ref nor the provider gives one.
    pub default_ttl: Duration,
    /// How long past expiry a value may still be served when re-fetching
    /// fails. Zero disables serve-stale.
    pub max_stale: Duration,
    /// Attempts per fetch (1 = no retry); only retryable errors are retried.
    pub attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Bound on one upstream attempt.
    pub call_timeout: Duration,
    /// Fraction of the TTL after which the refresh task re-fetches.
    pub refresh_at: f64,
    /// How often the refresh task looks for due entries.
    pub refresh_interval: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            default_ttl: Duration::from_secs(300),
            max_stale: Duration::from_secs(3600),
            attempts: 3,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            call_timeout: Duration::from_secs(15),
            refresh_at: 0.8,
            refresh_interval: Duration::from_secs(1),
        }
    }
}

/// A version change seen on refresh or re-fetch.
#[derive(Debug, Clone)]
pub struct VersionChange {
    /// The ref's cache key (its text form).
    pub key: String,
    pub reference: SecretRef,
    pub old_version: Option<String>,
    pub new_version: Option<String>,
}

type Outcome = Option<Result<SecretValue, Error>>;

/// Upper bound on any TTL (about ten years).
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 86400);

struct Entry {
    reference: SecretRef,
    value: SecretValue,
    ttl: Duration,
    expires: Instant,
    refresh_at: Instant,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    inflight: HashMap<String, watch::Receiver<Outcome>>,
    versions: HashMap<String, watch::Sender<Option<String>>>,
}

struct Inner {
    provider: Arc<dyn SecretProvider>,
    opts: CacheOptions,
    state: Mutex<State>,
    changes: broadcast::Sender<VersionChange>,
    upstream_calls: AtomicU64,
}

/// The cache. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("opts", &self.inner.opts)
            .field("entries", &self.inner.lock().entries.len())
            .finish()
    }
}

impl Cache {
    /// The provider this cache reads through. Whoever needs it after the
    /// cache (a lease's renewal and revocation outlive a config reload)
    /// holds it instead of a clone of the cache, whose refresher runs as
    /// long as any clone lives.
    pub fn provider(&self) -> Arc<dyn SecretProvider> {
        self.inner.provider.clone()
    }

    pub fn new(provider: Arc<dyn SecretProvider>, opts: CacheOptions) -> Self {
        let (changes, _) = broadcast::channel(256);
        Cache {
            inner: Arc::new(Inner {
                provider,
                opts,
                state: Mutex::new(State::default()),
                changes,
                upstream_calls: AtomicU64::new(0),
            }),
        }
    }

    /// The value of `r`: from the cache while fresh, else fetched once for
    /// all concurrent askers.
    pub async fn get(&self, r: &SecretRef) -> Result<SecretValue, Error> {
        let Some(key) = r.cache_key() else {
            // Literals: nothing to cache or share.
            return self.inner.provider.fetch(r).await;
        };
        let rx = {
            let mut st = self.inner.lock();
            if let Some(e) = st.entries.get(&key)
                && Instant::now() < e.expires
            {
                return Ok(e.value.clone());
            }
            Inner::start(&self.inner, &mut st, key, r)
        };
        wait(rx, r).await
    }

    /// Reads together the refs among `refs` that are neither cached fresh
    /// nor being fetched, so that their provider can batch them (SSM's
    /// `GetParameters`); what it gets is stored as [`Cache::get`] would.
    /// Failures are left for `get`, which retries and reports them. Not
    /// single-flight: a `get` meanwhile may read one of them again.
    pub async fn prefetch<'a>(&self, refs: impl IntoIterator<Item = &'a SecretRef>) {
        // Refs are cloned only once known to be missing: on a warm cache a
        // delivery pays one lock and a lookup per ref, nothing more.
        let missing: Vec<(String, SecretRef)> = {
            let st = self.inner.lock();
            let now = Instant::now();
            let mut out: Vec<(String, SecretRef)> = Vec::new();
            for r in refs {
                let Some(key) = r.cache_key() else { continue };
                let fresh = st.entries.get(&key).is_some_and(|e| now < e.expires);
                if !fresh && !st.inflight.contains_key(&key) && out.iter().all(|(k, _)| *k != key) {
                    out.push((key, r.clone()));
                }
            }
            out
        };
        if missing.len() < 2 {
            return;
        }
        let group: Vec<SecretRef> = missing.iter().map(|(_, r)| r.clone()).collect();
        self.inner.upstream_calls.fetch_add(1, Ordering::Relaxed);
        let fetched = tokio::time::timeout(
            self.inner.opts.call_timeout,
            self.inner.provider.fetch_many(&group),
        )
        .await;
        for ((key, r), v) in missing.iter().zip(fetched.unwrap_or_default()) {
            if let Ok(v) = v {
                self.inner.store(key, r, v);
            }
        }
    }

    /// Upstream attempts made so far (retries included).
    pub fn upstream_calls(&self) -> u64 {
        self.inner.upstream_calls.load(Ordering::Relaxed)
    }

    /// All version changes, for every ref.
    pub fn subscribe(&self) -> broadcast::Receiver<VersionChange> {
        self.inner.changes.subscribe()
    }

    /// The current version of one ref, updated on every change.
    pub fn watch(&self, r: &SecretRef) -> Option<watch::Receiver<Option<String>>> {
        let key = r.cache_key()?;
        let mut st = self.inner.lock();
        let current = st
            .entries
            .get(&key)
            .and_then(|e| e.value.metadata().version.clone());
        Some(
            st.versions
                .entry(key)
                .or_insert_with(|| watch::channel(current).0)
                .subscribe(),
        )
    }

    /// Drops the cached value of `r`.
    pub fn invalidate(&self, r: &SecretRef) {
        if let Some(key) = r.cache_key() {
            self.inner.lock().entries.remove(&key);
        }
    }

    /// Drops every cached value (in-flight fetches still finish).
    pub fn clear(&self) {
        self.inner.lock().entries.clear();
    }

    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Re-fetches (or renews the lease of) every entry past its refresh
    /// point, evicts entries stale beyond `max_stale`, and returns how many
    /// entries it refreshed. The refresh task calls this periodically.
    pub async fn refresh_due(&self) -> usize {
        Inner::refresh_due(&self.inner).await
    }

    /// Starts the refresh task. It stops when the last `Cache` clone is
    /// dropped or the handle is aborted.
    pub fn spawn_refresher(&self) -> JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let every = self.inner.opts.refresh_interval;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { break };
                Inner::refresh_due(&inner).await;
            }
        })
    }
}

async fn wait(mut rx: watch::Receiver<Outcome>, r: &SecretRef) -> Result<SecretValue, Error> {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone().unwrap_or_else(|| Err(abandoned(r))),
        Err(_) => Err(abandoned(r)),
    }
}

fn abandoned(r: &SecretRef) -> Error {
    Error::Unavailable {
        reference: r.to_string(),
        what: "fetch task".into(),
        message: "ended without a result (runtime shutting down?)".into(),
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins the in-flight fetch of `key` or starts one.
    fn start(
        this: &Arc<Inner>,
        st: &mut State,
        key: String,
        r: &SecretRef,
    ) -> watch::Receiver<Outcome> {
        if let Some(rx) = st.inflight.get(&key) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(None);
        st.inflight.insert(key.clone(), rx.clone());
        let inner = Arc::clone(this);
        let r = r.clone();
        tokio::spawn(async move {
            let out = inner.fetch_and_store(&key, &r).await;
            inner.lock().inflight.remove(&key);
            let _ = tx.send(Some(out));
        });
        rx
    }

    async fn fetch_and_store(&self, key: &str, r: &SecretRef) -> Result<SecretValue, Error> {
        match self.fetch_with_retries(r).await {
            Ok(v) => {
                self.store(key, r, v.clone());
                Ok(v)
            }
            Err(e) if !e.is_availability() => {
                // The upstream answered, and the answer is no (revoked
                // access, a deleted secret, a login refused) or unusable:
                // what was cached is no longer vouched for by anyone, so it
                // is dropped rather than kept for a later outage to revive.
                if self.lock().entries.remove(key).is_some() {
                    tracing::warn!(reference = %r, error = %e, "fetch refused; dropped the cached value");
                }
                Err(e)
            }
            Err(e) => {
                let mut st = self.lock();
                let now = Instant::now();
                if let Some(ent) = st.entries.get_mut(key) {
                    // The refresh task tries again after a pause, not on
                    // every tick while the backend is down.
                    ent.refresh_at = now + self.opts.backoff_max.max(Duration::from_secs(5));
                    let late = now.saturating_duration_since(ent.expires);
                    if late <= self.opts.max_stale && !self.opts.max_stale.is_zero() {
                        tracing::warn!(reference = %r, error = %e, stale_for = ?late, "fetch failed; serving the previous value");
                        return Ok(ent.value.clone());
                    }
                }
                Err(e)
            }
        }
    }

    async fn fetch_with_retries(&self, r: &SecretRef) -> Result<SecretValue, Error> {
        let attempts = self.opts.attempts.max(1);
        let mut attempt = 1;
        loop {
            self.upstream_calls.fetch_add(1, Ordering::Relaxed);
            let out =
                match tokio::time::timeout(self.opts.call_timeout, self.provider.fetch(r)).await {
                    Ok(out) => out,
                    Err(_) => Err(Error::Timeout {
                        reference: r.to_string(),
                        after: self.opts.call_timeout,
                    }),
                };
            match out {
                Err(e) if e.is_retryable() && attempt < attempts => {
                    let delay = self.backoff(attempt);
                    tracing::debug!(reference = %r, error = %e, attempt, ?delay, "fetch failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Exponential backoff with "equal jitter": half fixed, half random, so
    /// that agents restarted together do not retry in lockstep.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .opts
            .backoff_base
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(self.opts.backoff_max);
        let half = exp / 2;
        let rand = RandomState::new().hash_one(attempt) % 1000;
        half + half.mul_f64(rand as f64 / 1000.0)
    }

    fn ttl_for(&self, r: &SecretRef, v: &SecretValue) -> Duration {
        let mut ttl = r
            .ttl()
            .or(v.metadata().ttl)
            .unwrap_or(self.opts.default_ttl);
        if let Some(lease) = &v.metadata().lease
            && !lease.duration.is_zero()
        {
            ttl = ttl.min(lease.duration);
        }
        ttl
    }

    fn store(&self, key: &str, r: &SecretRef, v: SecretValue) {
        let ttl = self.ttl_for(r, &v);
        self.put(key, r, v, ttl);
    }

    fn put(&self, key: &str, r: &SecretRef, v: SecretValue, ttl: Duration) {
        // A TTL from a server or a config (`ttl: 99999999d`) must not
        // overflow the clock.
        let ttl = ttl.min(MAX_TTL);
        let fraction = if (0.0..=1.0).contains(&self.opts.refresh_at) {
            self.opts.refresh_at
        } else {
            0.8
        };
        let now = Instant::now();
        let new_version = v.metadata().version.clone();
        let mut st = self.lock();
        let old = st.entries.insert(
            key.to_string(),
            Entry {
                reference: r.clone(),
                value: v.clone(),
                ttl,
                expires: now + ttl,
                refresh_at: now + ttl.mul_f64(fraction),
            },
        );
        let changed = match &old {
            None => false,
            Some(o) => {
                o.value.metadata().version != new_version
                    || (new_version.is_none() && !o.value.same_content(&v))
            }
        };
        if let Some(tx) = st.versions.get(key) {
            tx.send_if_modified(|cur| {
                let differ = *cur != new_version;
                if differ {
                    cur.clone_from(&new_version);
                }
                differ
            });
        }
        drop(st);
        if changed {
            let old_version = old.and_then(|o| o.value.metadata().version.clone());
            tracing::info!(reference = %r, ?old_version, ?new_version, "secret version changed");
            let _ = self.changes.send(VersionChange {
                key: key.to_string(),
                reference: r.clone(),
                old_version,
                new_version,
            });
        }
    }

    async fn refresh_due(this: &Arc<Inner>) -> usize {
        let now = Instant::now();
        let due: Vec<(String, SecretRef, SecretValue, Duration)> = {
            let mut st = this.lock();
            let max_stale = this.opts.max_stale;
            st.entries
                .retain(|_, e| now.saturating_duration_since(e.expires) <= max_stale);
            st.entries
                .iter()
                .filter(|(k, e)| now >= e.refresh_at && !st.inflight.contains_key(*k))
                .map(|(k, e)| (k.clone(), e.reference.clone(), e.value.clone(), e.ttl))
                .collect()
        };
        let mut waits = Vec::new();
        for (key, r, value, ttl) in due {
            let renewable = value.metadata().lease.as_ref().is_some_and(|l| l.renewable);
            if renewable {
                // Renewing keeps the same dynamic credentials; re-reading
                // would mint new ones.
                match this.provider.renew(&value).await {
                    Ok(Some(d)) if !d.is_zero() => {
                        tracing::debug!(reference = %r, lease = ?d, "lease renewed");
                        this.put(&key, &r, value, ttl.min(d));
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(reference = %r, error = %e, "lease renewal failed; fetching anew");
                    }
                }
            }
            let rx = {
                let mut st = this.lock();
                Inner::start(this, &mut st, key, &r)
            };
            waits.push((rx, r));
        }
        let n = waits.len();
        for (rx, r) in waits {
            if let Err(e) = wait(rx, &r).await {
                tracing::warn!(reference = %r, error = %e, "refresh failed");
            }
        }
        n
    }
}

#[async_trait::async_trait]
impl SecretProvider for Cache {
    fn kind(&self) -> &'static str {
        self.inner.provider.kind()
    }

    async fn fetch(&self, reference: &SecretRef) -> Result<SecretValue, Error> {
        self.get(reference).await
    }

    async fn authenticate(&self) -> Result<(), Error> {
        self.inner.provider.authenticate().await
    }

    async fn renew(&self, value: &SecretValue) -> Result<Option<Duration>, Error> {
        self.inner.provider.renew(value).await
    }

    async fn renew_held(&self, held: &HeldLease) -> Result<Option<Duration>, Error> {
        self.inner.provider.renew_held(held).await
    }

    async fn revoke_held(&self, held: &HeldLease) -> Result<(), Error> {
        self.inner.provider.revoke_held(held).await
    }
}
