//! Images' ENTRYPOINT and CMD, read from their registries, for containers
//! without `command`.
//!
//! [`Registry`] speaks the OCI distribution API (through `oci-client`):
//!
//! - **References** are completed as the kubelet completes them (Docker's
//!   normalisation): `nginx` is `docker.io/library/nginx:latest`, served by
//!   `index.docker.io`; a reference with both a tag and a digest is looked
//!   up by its digest, as it is pulled.
//! - **Platform**: an image index is resolved to a `linux` image of the
//!   webhook's own architecture, else `linux/amd64`, else the first `linux`
//!   image it lists. The pod is not scheduled yet, so its node's platform
//!   is unknown; a cluster whose nodes mix architectures, running an image
//!   whose ENTRYPOINT differs between them (rare), should set `command`.
//! - **Cache**: a digest's answer is kept for good (its content cannot
//!   change), a tag's for [`RegistryConfig::tag_ttl`] (it can be pushed
//!   again) and the digest a tag resolved to is kept as that digest's;
//!   each bounded by [`RegistryConfig::capacity`], the least recently used
//!   making room. Failures are not kept. Lookups of one reference under
//!   way at once make one request.
//! - **Transport**: HTTPS, verified against the system's roots; plain HTTP
//!   only to the registries listed in [`RegistryConfig::insecure`]. One
//!   lookup, every request included, lasts at most
//!   [`RegistryConfig::timeout`].
//! - **Failures** name the image and what failed ([`LookupError`]); the
//!   review then fails, and the webhook's `failurePolicy` decides.
//!
//! Not done yet: pulls are anonymous — neither the pod's
//! `imagePullSecrets`, nor its service account's, nor the nodes'
//! credential providers are used, so a private image is refused (401/403)
//! and its containers need `command`; registry mirrors configured on the
//! nodes are not followed; a registry with a private CA is not trusted
//! (only the system's roots are); the manifest's size is not bounded by
//! `oci-client` (only the lookup's time is), the config's is
//! ([`registry::MAX_CONFIG_BYTES`]).
//!
//! The webhook fetches from whatever registry a pod names, as the kubelet
//! will: restrict its egress with a NetworkPolicy where that matters.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::patch::{Entrypoint, Entrypoints};

mod cache;
mod failure;
pub mod registry;

pub use registry::{Registry, RegistryConfig, RegistryError};

/// Reads the ENTRYPOINT and CMD of an image.
#[async_trait::async_trait]
pub trait ImageConfigs: Send + Sync {
    async fn entrypoint(&self, image: &str) -> Result<Entrypoint, LookupError>;
}

/// No lookup: containers without `command` are refused.
pub struct NoRegistry;

#[async_trait::async_trait]
impl ImageConfigs for NoRegistry {
    async fn entrypoint(&self, _image: &str) -> Result<Entrypoint, LookupError> {
        Err(LookupError::Disabled)
    }
}

/// Why an image's ENTRYPOINT could not be read. `image` is the reference
/// as looked up (completed: `docker.io/library/nginx:latest`), `registry`
/// the host spoken to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("{image:?} is not an image reference: {why}")]
    Reference { image: String, why: String },
    #[error("{image}: registry {registry} could not be reached: {why}")]
    Unreachable {
        image: String,
        registry: String,
        why: String,
    },
    #[error("{image}: registry {registry} did not answer within {}s", after.as_secs_f32())]
    TimedOut {
        image: String,
        registry: String,
        after: Duration,
    },
    #[error(
        "{image}: registry {registry} refused an anonymous pull ({status}): the image is \
         private or does not exist, and this webhook uses no pull credentials yet"
    )]
    Denied {
        image: String,
        registry: String,
        status: u16,
    },
    #[error("{image}: registry {registry} has no such image (404: {why})")]
    NotFound {
        image: String,
        registry: String,
        why: String,
    },
    #[error("{image}: registry {registry} failed: {why}")]
    Failed {
        image: String,
        registry: String,
        why: String,
    },
    #[error("{image} is not a container image: {why}")]
    NotAnImage { image: String, why: String },
    #[error("this webhook does not look images up")]
    Disabled,
}

/// Looks each distinct image up once, all at the same time.
pub async fn look_up_all(
    images: &dyn ImageConfigs,
    wanted: impl IntoIterator<Item = String>,
) -> Resolved {
    let distinct: BTreeSet<String> = wanted.into_iter().collect();
    let answers = futures_util::future::join_all(distinct.iter().map(|image| async move {
        let answer = images.entrypoint(image).await.map_err(|e| e.to_string());
        (image.clone(), answer)
    }))
    .await;
    Resolved(answers.into_iter().collect())
}

/// Images looked up, for [`crate::patch::wrap`]: the answer, or why there
/// is none.
#[derive(Debug, Clone, Default)]
pub struct Resolved(pub HashMap<String, Result<Entrypoint, String>>);

impl Entrypoints for Resolved {
    fn lookup(&self, image: &str) -> Result<Entrypoint, String> {
        self.0
            .get(image)
            .cloned()
            .unwrap_or_else(|| Err("the image was not looked up".into()))
    }
}
