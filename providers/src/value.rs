//! `SecretValue`: secret bytes in zeroizing memory plus metadata.
//!
//! The bytes live in the process's secret-memory pool (`kernelseal-secretmem`:
//! `memfd_secret` where the kernel offers it, else locked memory left out
//! of core dumps) behind an `Arc`, so cache hits and clones share one
//! buffer and it is wiped when the last holder drops it. There is no
//! `Display`, and `Debug` shows metadata only; the content is reached only
//! through the `expose_*` methods, which are easy to grep for in review.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use kernelseal_secretmem::{Backing, SealedBytes};
use zeroize::Zeroizing;

/// A fetched secret.
#[derive(Clone)]
pub struct SecretValue {
    bytes: Arc<SealedBytes>,
    meta: Metadata,
}

/// What is known about a value besides its content. Nothing here is secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The ref it was fetched for, as text (`vaultRef vault-prod:secret/app#api_key`).
    pub source: String,
    /// The provider instance name (`vault-prod`, `env`, `file`…).
    pub provider: String,
    /// Version as the source knows it: Vault metadata version, AWS VersionId,
    /// Kubernetes resourceVersion, file mtime + content tag. Where the source
    /// has no version, a keyed content tag (see [`content_tag`]).
    pub version: Option<String>,
    pub fetched_at: SystemTime,
    /// A lease the source attached (Vault dynamic secrets).
    pub lease: Option<Lease>,
    /// How long the provider advises caching this value (provider `cacheTtl`,
    /// Vault `lease_duration`); the cache takes the smallest applicable TTL.
    pub ttl: Option<Duration>,
}

/// A Vault lease. The id is not a credential on its own (it needs a token).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    pub id: String,
    pub duration: Duration,
    pub renewable: bool,
}

/// A lease held for someone after the value it came with is gone: what
/// renewing or revoking it takes, and nothing secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldLease {
    /// The provider instance that issued it.
    pub provider: String,
    /// The ref it was read for, as text (for errors and logs).
    pub reference: String,
    pub lease: Lease,
}

impl HeldLease {
    /// The lease of `value`, if it came with one.
    pub fn of(value: &SecretValue) -> Option<HeldLease> {
        let meta = value.metadata();
        meta.lease.clone().map(|lease| HeldLease {
            provider: meta.provider.clone(),
            reference: meta.source.clone(),
            lease,
        })
    }
}

impl SecretValue {
    /// Copies bytes that are already in a zeroizing buffer (wiped when the
    /// caller's copy drops) into secret memory.
    pub fn new(bytes: Zeroizing<Vec<u8>>, meta: Metadata) -> Self {
        let sealed = kernelseal_secretmem::seal(&bytes);
        if let Some(backing) = kernelseal_secretmem::POOL.unreported_backing() {
            report_backing(backing);
        }
        SecretValue {
            bytes: Arc::new(sealed),
            meta,
        }
    }

    /// What holds the bytes (`None` for an empty value).
    pub fn backing(&self) -> Option<Backing> {
        self.bytes.backing()
    }

    /// The secret bytes. Every call site is a place the secret leaves this type.
    pub fn expose_bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    /// The secret as UTF-8 text, or `None` when it is binary.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(self.bytes.as_slice()).ok()
    }

    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    pub fn version(&self) -> Option<&str> {
        self.meta.version.as_deref()
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of `key` in this value's JSON object (a key-less read of a
    /// Vault secret), as the value of `reference`. Its lease stays with
    /// this value: one read, one lease, however many keys are taken.
    pub fn select_key(
        &self,
        key: &str,
        reference: &crate::SecretRef,
    ) -> Result<SecretValue, crate::Error> {
        let source = reference.to_string();
        let field = format!("{}.key", reference.kind());
        let what = format!("the answer for {}", self.meta.source);
        let bytes = crate::json::select_key(self.expose_bytes(), key, &source, &field, &what)?;
        let mut meta = self.meta.clone();
        meta.source = source;
        meta.lease = None;
        Ok(SecretValue::new(bytes, meta))
    }

    /// Whether two values hold the same bytes (constant time in the length).
    pub fn same_content(&self, other: &SecretValue) -> bool {
        let (a, b) = (self.expose_bytes(), other.expose_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Maps the secret-memory pool's first block and says what memory values
/// will be held in, for a start-up line; later steps down (the kernel or
/// `RLIMIT_MEMLOCK` refusing more secret memory) are logged as they happen.
pub fn secret_memory() -> Option<Backing> {
    let probe = kernelseal_secretmem::seal(&[0]);
    let _ = kernelseal_secretmem::POOL.unreported_backing();
    probe.backing()
}

fn report_backing(backing: Backing) {
    if backing != Backing::SecretMemory {
        tracing::warn!(
            "[MEMORY] secret values are held in {}: no (more) secret memory could be mapped",
            backing.describe()
        );
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretValue")
            .field("bytes", &"<redacted>")
            .field("meta", &self.meta)
            .finish()
    }
}

impl Metadata {
    pub fn new(source: impl Into<String>, provider: impl Into<String>) -> Self {
        Metadata {
            source: source.into(),
            provider: provider.into(),
            version: None,
            fetched_at: SystemTime::now(),
            lease: None,
            ttl: None,
        }
    }
}

/// A version tag for content that has no version of its own (env, literal,
/// file, Vault KV v1): HMAC-SHA256 under a key drawn at process start,
/// truncated. A plain hash would let anyone who sees the version test
/// guesses of a low-entropy secret; the keyed tag changes only when the
/// content does, within one process.
pub fn content_tag(bytes: &[u8]) -> String {
    use aws_lc_rs::hmac;
    static KEY: OnceLock<hmac::Key> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        let mut k = Zeroizing::new([0u8; 32]);
        // A failing system RNG leaves the key zero; tags stay stable, only
        // weaker. Not worth refusing to serve secrets over.
        let _ = aws_lc_rs::rand::fill(&mut k[..]);
        hmac::Key::new(hmac::HMAC_SHA256, &k[..])
    });
    let tag = hmac::sign(key, bytes);
    let hex: String = tag.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("h:{hex}")
}
