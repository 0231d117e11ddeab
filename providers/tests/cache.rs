//! The cache layer over a counting provider, on tokio's paused clock so
//! that TTLs and backoff are exact without real waiting.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use kernelseal_providers::{
    AwsRef, Cache, CacheOptions, Error, Metadata, SecretProvider, SecretRef, SecretValue,
};
use zeroize::Zeroizing;

#[derive(Default)]
struct Counting {
    calls: AtomicU64,
    version: AtomicU64,
    /// Fail this many calls from now (retryable).
    fail_next: AtomicU32,
    /// Fail every call (retryable) while set.
    down: AtomicBool,
    /// Answer with a non-retryable NotFound.
    missing: AtomicBool,
    /// Refuse access, as a backend does once access is revoked (403).
    refuse: AtomicBool,
    /// Answer with a server-side error (HTTP 503).
    server_error: AtomicBool,
    delay_ms: AtomicU64,
    advised_ttl_s: AtomicU64,
}

#[async_trait::async_trait]
impl SecretProvider for Counting {
    fn kind(&self) -> &'static str {
        "counting"
    }
    async fn fetch(&self, r: &SecretRef) -> Result<SecretValue, Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(self.delay_ms.load(Ordering::SeqCst))).await;
        if self.missing.load(Ordering::SeqCst) {
            return Err(Error::NotFound {
                reference: r.to_string(),
                what: "thing".into(),
                message: String::new(),
            });
        }
        if self.refuse.load(Ordering::SeqCst) {
            return Err(Error::Forbidden {
                reference: r.to_string(),
                what: "thing".into(),
                message: "permission denied".into(),
            });
        }
        if self.server_error.load(Ordering::SeqCst) {
            return Err(Error::Upstream {
                reference: r.to_string(),
                status: Some(503),
                message: "sealed".into(),
            });
        }
        if self.down.load(Ordering::SeqCst)
            || self
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(Error::Unavailable {
                reference: r.to_string(),
                what: "counting backend".into(),
                message: "connection refused".into(),
            });
        }
        let v = self.version.load(Ordering::SeqCst);
        let mut m = Metadata::new(r.to_string(), "counting");
        m.version = Some(v.to_string());
        let ttl = self.advised_ttl_s.load(Ordering::SeqCst);
        m.ttl = (ttl > 0).then(|| Duration::from_secs(ttl));
        Ok(SecretValue::new(
            Zeroizing::new(format!("cached-secret-{v}").into_bytes()),
            m,
        ))
    }
}

fn aref(id: &str, ttl: Option<Duration>) -> SecretRef {
    SecretRef::Aws(AwsRef {
        provider: None,
        secret_id: id.into(),
        json_key: None,
        version_id: None,
        version_stage: None,
        ttl,
    })
}

fn opts() -> CacheOptions {
    CacheOptions {
        default_ttl: Duration::from_secs(10),
        max_stale: Duration::from_secs(60),
        attempts: 3,
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        call_timeout: Duration::from_secs(5),
        refresh_at: 0.8,
        refresh_interval: Duration::from_secs(1),
    }
}

fn setup(o: CacheOptions) -> (Arc<Counting>, Cache) {
    support::init();
    let p = Arc::new(Counting::default());
    (p.clone(), Cache::new(p, o))
}

#[tokio::test(start_paused = true)]
async fn thousand_concurrent_asks_make_one_upstream_call() {
    let (p, cache) = setup(opts());
    p.delay_ms.store(500, Ordering::SeqCst);
    let r = aref("one", None);
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (c, r) = (cache.clone(), r.clone());
            tokio::spawn(async move { c.get(&r).await })
        })
        .collect();
    for t in tasks {
        let v = t.await.unwrap().unwrap();
        assert_eq!(v.expose_str(), Some("cached-secret-0"));
    }
    assert_eq!(p.calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.upstream_calls(), 1);
    for _ in 0..1000 {
        cache.get(&r).await.unwrap();
    }
    assert_eq!(p.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn ttl_default_provider_advice_and_per_ref_override() {
    let (p, cache) = setup(opts());
    let r = aref("ttl", None);
    cache.get(&r).await.unwrap();
    tokio::time::advance(Duration::from_secs(9)).await;
    cache.get(&r).await.unwrap();
    assert_eq!(
        p.calls.load(Ordering::SeqCst),
        1,
        "fresh within the 10 s default"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    cache.get(&r).await.unwrap();
    assert_eq!(p.calls.load(Ordering::SeqCst), 2, "expired after 10 s");

    // The provider advises 3 s.
    p.advised_ttl_s.store(3, Ordering::SeqCst);
    let r2 = aref("advised", None);
    cache.get(&r2).await.unwrap();
    tokio::time::advance(Duration::from_secs(4)).await;
    cache.get(&r2).await.unwrap();
    assert_eq!(p.calls.load(Ordering::SeqCst), 4);

    // A per-ref ttl beats the provider's advice.
    let r3 = aref("override", Some(Duration::from_secs(30)));
    cache.get(&r3).await.unwrap();
    tokio::time::advance(Duration::from_secs(20)).await;
    cache.get(&r3).await.unwrap();
    assert_eq!(p.calls.load(Ordering::SeqCst), 5);

    // An absurd TTL is clamped, not a clock overflow.
    let huge = aref("huge", Some(Duration::from_secs(u64::MAX)));
    cache.get(&huge).await.unwrap();
    cache.get(&huge).await.unwrap();
    assert_eq!(p.calls.load(Ordering::SeqCst), 6);
    let calls_before_literals = p.calls.load(Ordering::SeqCst);

    // Literals are never cached.
    let lit = SecretRef::literal("lit-value");
    let v = cache.get(&lit).await.unwrap();
    assert_eq!(
        v.expose_str(),
        Some("cached-secret-0"),
        "counting provider answers"
    );
    cache.get(&lit).await.unwrap();
    assert_eq!(p.calls.load(Ordering::SeqCst), calls_before_literals + 2);
}

#[tokio::test(start_paused = true)]
async fn retries_with_backoff_then_succeed_or_give_up() {
    let (p, cache) = setup(opts());
    p.fail_next.store(2, Ordering::SeqCst);
    let v = cache.get(&aref("flaky", None)).await.unwrap();
    assert_eq!(v.expose_str(), Some("cached-secret-0"));
    assert_eq!(p.calls.load(Ordering::SeqCst), 3);

    p.down.store(true, Ordering::SeqCst);
    let e = cache.get(&aref("down", None)).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }));
    assert_eq!(p.calls.load(Ordering::SeqCst), 6, "3 attempts, bounded");

    // Not retryable: one call.
    p.down.store(false, Ordering::SeqCst);
    p.missing.store(true, Ordering::SeqCst);
    let e = cache.get(&aref("missing", None)).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }));
    assert_eq!(p.calls.load(Ordering::SeqCst), 7);
}

#[tokio::test(start_paused = true)]
async fn per_call_timeout() {
    let (p, cache) = setup(CacheOptions {
        attempts: 2,
        ..opts()
    });
    p.delay_ms.store(60_000, Ordering::SeqCst);
    let e = cache.get(&aref("slow", None)).await.unwrap_err();
    assert!(
        matches!(e, Error::Timeout { after, .. } if after == Duration::from_secs(5)),
        "{e}"
    );
    assert_eq!(p.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn serves_stale_on_error_within_bound() {
    let (p, cache) = setup(opts());
    let r = aref("stale", None);
    cache.get(&r).await.unwrap();
    p.down.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(11)).await;
    let v = cache.get(&r).await.unwrap();
    assert_eq!(v.expose_str(), Some("cached-secret-0"));
    assert!(support::logs().contains("serving the previous value"));
    // The refresh task backs off instead of hammering a down backend.
    let calls = p.calls.load(Ordering::SeqCst);
    assert_eq!(cache.refresh_due().await, 0);
    assert_eq!(p.calls.load(Ordering::SeqCst), calls);
    // Past expiry + max_stale: the error comes through.
    tokio::time::advance(Duration::from_secs(61)).await;
    let e = cache.get(&r).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }));
    support::assert_err_clean(&e, &["cached-secret"]);

    // max_stale = 0 disables serving stale.
    let (p, cache) = setup(CacheOptions {
        max_stale: Duration::ZERO,
        ..opts()
    });
    cache.get(&r).await.unwrap();
    p.down.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(cache.get(&r).await.is_err());
    support::assert_no_leak("", &["cached-secret"]);
}

#[tokio::test(start_paused = true)]
async fn refresh_publishes_version_changes() {
    let (p, cache) = setup(opts());
    let r = aref("rotating", None);
    let mut all = cache.subscribe();
    let mut one = cache.watch(&r).unwrap();
    cache.get(&r).await.unwrap();
    assert_eq!(one.borrow_and_update().as_deref(), Some("0"));

    // Not due yet (80% of 10 s).
    tokio::time::advance(Duration::from_secs(7)).await;
    assert_eq!(cache.refresh_due().await, 0);
    // Due, same version: no notification.
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(cache.refresh_due().await, 1);
    assert!(all.try_recv().is_err());

    // Rotated upstream: the refresh task notices and publishes.
    p.version.store(1, Ordering::SeqCst);
    let task = cache.spawn_refresher();
    let change = tokio::time::timeout(Duration::from_secs(30), all.recv())
        .await
        .expect("a change within 30 s of paused time")
        .unwrap();
    assert_eq!(change.key, r.to_string());
    assert_eq!(change.old_version.as_deref(), Some("0"));
    assert_eq!(change.new_version.as_deref(), Some("1"));
    one.changed().await.unwrap();
    assert_eq!(one.borrow().as_deref(), Some("1"));
    assert_eq!(
        cache.get(&r).await.unwrap().expose_str(),
        Some("cached-secret-1")
    );
    task.abort();
    support::assert_no_leak(&format!("{change:?}"), &["cached-secret"]);
}

#[tokio::test(start_paused = true)]
async fn an_authoritative_refusal_drops_the_entry_instead_of_serving_it() {
    let (p, cache) = setup(opts());
    let r = aref("revoked", None);
    cache.get(&r).await.unwrap();
    // Expired, and the backend now says no: the caller gets the refusal,
    // not the value, and the entry is gone.
    tokio::time::advance(Duration::from_secs(11)).await;
    p.refuse.store(true, Ordering::SeqCst);
    let e = cache.get(&r).await.unwrap_err();
    assert!(matches!(e, Error::Forbidden { .. }), "{e:?}");
    assert_eq!(cache.len(), 0);
    assert!(support::logs().contains("fetch refused; dropped the cached value"));
    // A later outage cannot bring the revoked value back.
    p.refuse.store(false, Ordering::SeqCst);
    p.down.store(true, Ordering::SeqCst);
    let e = cache.get(&r).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    support::assert_err_clean(&e, &["cached-secret"]);

    // The same through the refresh task: a refusal on refresh drops the
    // entry at once, before it expires.
    p.down.store(false, Ordering::SeqCst);
    let r2 = aref("revoked-on-refresh", None);
    cache.get(&r2).await.unwrap();
    tokio::time::advance(Duration::from_secs(9)).await;
    p.refuse.store(true, Ordering::SeqCst);
    assert_eq!(cache.refresh_due().await, 1);
    assert_eq!(cache.len(), 0);
    assert!(cache.get(&r2).await.is_err());

    // A secret deleted upstream (404) is dropped too.
    p.refuse.store(false, Ordering::SeqCst);
    let r3 = aref("deleted", None);
    cache.get(&r3).await.unwrap();
    tokio::time::advance(Duration::from_secs(11)).await;
    p.missing.store(true, Ordering::SeqCst);
    let e = cache.get(&r3).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    assert_eq!(cache.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn availability_failures_still_serve_stale() {
    let (p, cache) = setup(opts());
    let r = aref("sealed", None);
    cache.get(&r).await.unwrap();
    tokio::time::advance(Duration::from_secs(11)).await;
    // A 5xx is an outage, not an answer: the previous value bridges it.
    p.server_error.store(true, Ordering::SeqCst);
    let v = cache.get(&r).await.unwrap();
    assert_eq!(v.expose_str(), Some("cached-secret-0"));
    assert_eq!(cache.len(), 1);
}

#[test]
fn which_errors_are_availability_failures() {
    let r = "r".to_string();
    let up = |status| Error::Upstream {
        reference: r.clone(),
        status,
        message: String::new(),
    };
    for e in [
        Error::Unavailable {
            reference: r.clone(),
            what: "x".into(),
            message: "connection refused".into(),
        },
        Error::Timeout {
            reference: r.clone(),
            after: Duration::from_secs(1),
        },
        up(Some(500)),
        up(Some(503)),
        up(Some(429)),
    ] {
        assert!(e.is_availability(), "{e:?}");
    }
    for e in [
        Error::Forbidden {
            reference: r.clone(),
            what: "x".into(),
            message: String::new(),
        },
        Error::Auth {
            provider: "v".into(),
            message: "login refused".into(),
        },
        Error::NotFound {
            reference: r.clone(),
            what: "x".into(),
            message: String::new(),
        },
        Error::TooLarge {
            reference: r.clone(),
            what: "x".into(),
            limit: 1,
        },
        up(Some(401)),
        up(Some(400)),
        up(None),
    ] {
        assert!(!e.is_availability(), "{e:?}");
    }
}
