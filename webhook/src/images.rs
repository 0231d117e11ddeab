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
//! - **Pull secrets** (only when started with `--pull-secrets`, see
//!   [`PullSecrets`]): the pod's `imagePullSecrets` (its service account's
//!   included: the ServiceAccount admission plugin has added them before
//!   the webhook sees the pod) are read with `get` in the pod's namespace,
//!   and the credentials the kubelet would use for the image's registry
//!   ([`keyring`]) are tried in the kubelet's order; anonymous when none
//!   matches. Without the flag every lookup is anonymous, and a private
//!   image is refused saying how to enable them.
//! - **Cache and credentials**: an anonymous answer is shared by every
//!   pod; an answer read with a credential is kept under that credential
//!   (an HMAC of its user and password with a key of this process), so
//!   only a pod presenting the same credential gets it — a pod without
//!   it asks the registry itself and is refused as it would be. Secrets
//!   are kept [`pull_secrets::SECRET_TTL`] at most, wiped from memory when
//!   dropped, and never logged or shown in errors. Credentials go over
//!   plain HTTP only to the registries listed as insecure.
//!
//! Not done: the nodes' own credentials (their `config.json`, kubelet
//! credential provider plugins such as ECR's) are not the webhook's, so an
//! image only they may pull needs `command`; `identitytoken` and
//! `registrytoken` entries of a docker config are not read (nor are they by
//! the kubelet); `oci-client` keeps its own copy of a credential during a
//! lookup, not wiped; registry mirrors configured on the nodes are not
//! followed; a registry with a private CA is not trusted (only the
//! system's roots are); the manifest's size is not bounded by `oci-client`
//! (only the lookup's time is), the config's is
//! ([`registry::MAX_CONFIG_BYTES`]).
//!
//! The webhook fetches from whatever registry a pod names, as the kubelet
//! will: restrict its egress with a NetworkPolicy where that matters.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use kube::core::admission::AdmissionRequest;

use crate::patch::{Entrypoint, Entrypoints};
use crate::pod::Pod;

mod cache;
pub mod docker_config;
mod failure;
pub mod keyring;
pub mod pull_secrets;
mod references;
pub mod registry;

pub use pull_secrets::PullSecrets;
pub use registry::{Registry, RegistryConfig, RegistryError};

/// Reads the ENTRYPOINT and CMD of an image, for the pod `pull` describes.
#[async_trait::async_trait]
pub trait ImageConfigs: Send + Sync {
    async fn entrypoint(&self, image: &str, pull: &PullContext) -> Result<Entrypoint, LookupError>;
}

/// No lookup: containers without `command` are refused.
pub struct NoRegistry;

#[async_trait::async_trait]
impl ImageConfigs for NoRegistry {
    async fn entrypoint(
        &self,
        _image: &str,
        _pull: &PullContext,
    ) -> Result<Entrypoint, LookupError> {
        Err(LookupError::Disabled)
    }
}

/// What a pod's image lookups may authenticate with: its namespace and the
/// Secrets its `imagePullSecrets` names, in its order (names only: they
/// are read when a lookup needs them, and only with `--pull-secrets`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullContext {
    pub namespace: String,
    pub secret_names: Vec<String>,
}

impl PullContext {
    /// The reviewed pod's: the namespace of the request (the pod's own may
    /// be unset at creation), each secret name once.
    pub fn of(request: &AdmissionRequest<Pod>) -> PullContext {
        let pod = request.object.as_ref();
        let namespace = request
            .namespace
            .clone()
            .or_else(|| pod.and_then(|p| p.metadata.namespace.clone()))
            .unwrap_or_default();
        let mut secret_names: Vec<String> = Vec::new();
        let named = pod
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.image_pull_secrets.as_ref())
            .into_iter()
            .flatten()
            .map(|r| r.name.clone())
            .filter(|n| !n.is_empty());
        for name in named {
            if !secret_names.contains(&name) {
                secret_names.push(name);
            }
        }
        PullContext {
            namespace,
            secret_names,
        }
    }
}

/// Which credentials a refused lookup was made with, for the refusal to
/// say what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PulledWith {
    /// None: the webhook reads no pull secrets (no `--pull-secrets`).
    NotRead,
    /// None: no pull secret of the pod (these, maybe none) holds a
    /// credential for the registry.
    NoneMatched(Vec<String>),
    /// The credentials of these pull secrets, each refused.
    Secrets(Vec<String>),
}

impl PulledWith {
    fn refusal(&self, status: u16, registry: &str) -> String {
        let anonymous = format!(
            "refused an anonymous pull ({status}): the image is private, or does not exist: \
             give the pod an imagePullSecret for {registry}"
        );
        match self {
            PulledWith::NotRead => format!(
                "{anonymous}, and start the webhook with --pull-secrets (the chart's \
                 webhook.pullSecrets), which reads pods' pull secrets"
            ),
            PulledWith::NoneMatched(names) if names.is_empty() => {
                format!("{anonymous} (it has none)")
            }
            PulledWith::NoneMatched(names) => format!(
                "{anonymous} (none of its pull secrets {} holds a credential for it)",
                names.join(", ")
            ),
            PulledWith::Secrets(names) => format!(
                "refused the credentials of pull secret {} ({status}): a wrong user name or \
                 password, no access to this image, or no such image",
                names.join(", ")
            ),
        }
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
    #[error("{image}: registry {registry} {}", with.refusal(*status, registry))]
    Denied {
        image: String,
        registry: String,
        status: u16,
        with: PulledWith,
    },
    /// A pull secret of the pod could not be read or parsed (never says
    /// what it holds).
    #[error("pull secret {namespace}/{secret}: {why}")]
    PullSecret {
        namespace: String,
        secret: String,
        why: String,
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

/// Looks each distinct image up once, all at the same time, for the pod
/// `pull` describes.
pub async fn look_up_all(
    images: &dyn ImageConfigs,
    pull: &PullContext,
    wanted: impl IntoIterator<Item = String>,
) -> Resolved {
    let distinct: BTreeSet<String> = wanted.into_iter().collect();
    let answers = futures_util::future::join_all(distinct.iter().map(|image| async move {
        let answer = images
            .entrypoint(image, pull)
            .await
            .map_err(|e| e.to_string());
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
