//! KernelSeal secret providers.
//!
//! A [`SecretRef`] (built from a config `source:`) is resolved by a
//! [`SecretProvider`] into a [`SecretValue`] held in zeroizing memory. The
//! [`Registry`] builds the named provider instances of the config's
//! `providers:` map and dispatches each ref to its provider; [`Cache`] adds
//! TTL, single-flight, retries, serve-stale and a refresh task with
//! version-change notifications over any provider.
//!
//! Residual copies: HTTP and SDK libraries keep their own buffers (response
//! bodies, parsed JSON). This crate takes the value out of them at once,
//! wipes the JSON trees it parsed itself and drops the rest promptly; the
//! libraries' socket buffers are outside its reach.

mod aws;
mod aws_sdk;
pub mod beneath;
mod cache;
mod check;
mod env;
mod error;
mod expand;
mod file;
pub mod identity;
mod json;
mod kubernetes;
mod limit;
mod reference;
mod registry;
mod settings;
mod ssm;
mod template;
mod upstream;
mod value;
mod vault;

pub use aws::AwsProvider;
pub use cache::{Cache, CacheOptions, VersionChange};
pub use check::{CheckedValue, RefCheck, check_config, check_with};
pub use env::EnvProvider;
pub use error::{Error, FileProblem};
pub use expand::{Expanded, expand, select_part};
pub use file::FileProvider;
pub use kernelseal_secretmem::Backing;
pub use kubernetes::KubernetesProvider;
pub use limit::{MAX_ANSWER_BYTES, MAX_VALUE_BYTES};
pub use reference::{
    AwsRef, KubernetesRef, KvEngine, SecretRef, SsmPathRef, SsmRef, TemplateRef, VaultRef,
};
pub use registry::Registry;
pub use settings::{
    AwsSettings, DEFAULT_SA_TOKEN, InlineJwt, KubernetesSettings, PodAuth, ProviderSettings,
    STS_AUDIENCE, SecretIdSource, VaultAuth, VaultSettings, known_settings,
};
pub use ssm::{SsmParameter, SsmPath};
pub use template::{Fetched, TEMPLATE_PROVIDER, fetch_and_render, render as render_template};
pub use upstream::aws_error_code;
pub use value::{HeldLease, Lease, Metadata, SecretValue, content_tag, secret_memory};
pub use vault::VaultProvider;

use std::time::Duration;

/// Something that resolves refs into values.
#[async_trait::async_trait]
pub trait SecretProvider: Send + Sync {
    /// The provider type (`env`, `file`, `kubernetes`, `vault`, `aws`, or a
    /// registry's `registry`).
    fn kind(&self) -> &'static str;

    /// Fetches one secret.
    async fn fetch(&self, reference: &SecretRef) -> Result<SecretValue, Error>;

    /// Fetches several; the default asks one at a time, in order.
    async fn fetch_many(&self, refs: &[SecretRef]) -> Vec<Result<SecretValue, Error>> {
        let mut out = Vec::with_capacity(refs.len());
        for r in refs {
            out.push(self.fetch(r).await);
        }
        out
    }

    /// Asks the upstream, now, whether this provider's credentials are
    /// accepted (a fresh login, a token lookup, an STS exchange), without
    /// reading a secret. A cache shared by several callers uses it to check
    /// each caller's own credentials before serving it a cached value. The
    /// default has no credentials of its own to check.
    async fn authenticate(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Renews the lease of a value fetched earlier, returning the new lease
    /// duration, or `None` when the value has no renewable lease (then the
    /// caller re-fetches instead).
    async fn renew(&self, _value: &SecretValue) -> Result<Option<Duration>, Error> {
        Ok(None)
    }

    /// Renews a lease this provider issued, held on after its value (see
    /// [`HeldLease`]): the duration granted, or `None` when it cannot be
    /// renewed.
    async fn renew_held(&self, _held: &HeldLease) -> Result<Option<Duration>, Error> {
        Ok(None)
    }

    /// Revokes a lease this provider issued: its credentials stop working.
    /// The default has no leases to revoke.
    async fn revoke_held(&self, _held: &HeldLease) -> Result<(), Error> {
        Ok(())
    }
}

/// What a batched read left out (`None`), fetched one at a time, in the
/// refs' order: the end of every [`SecretProvider::fetch_many`] that
/// batches only some refs.
pub(crate) async fn fetch_rest<P: SecretProvider + ?Sized>(
    p: &P,
    refs: &[SecretRef],
    got: Vec<Option<Result<SecretValue, Error>>>,
) -> Vec<Result<SecretValue, Error>> {
    let mut done = Vec::with_capacity(refs.len());
    for (r, v) in refs.iter().zip(got) {
        done.push(match v {
            Some(v) => v,
            None => p.fetch(r).await,
        });
    }
    done
}

/// Installs aws-lc-rs as the process's rustls crypto provider. rustls panics
/// on first use when more than one provider is compiled in and none is
/// installed; the AWS SDK forces aws-lc-rs, so it is the one. Idempotent:
/// call it at the start of the binary and of every test binary; the
/// providers that open TLS connections call it too.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: either way one is set.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}
