//! `kernelseal webhook`: a mutating admission webhook that wraps annotated
//! pods, so that one annotation is all a user writes.
//!
//! # Design
//!
//! A review goes through three steps, each its own module:
//!
//! - [`annotations`] reads what the pod asks for (`kernelseal.io/inject`,
//!   `…/containers`, `…/on-error`, `…/timeout`, `…/token-audience`) and
//!   refuses a bad value naming the annotation;
//! - [`patch`] builds the JSON Patch that makes the pod what
//!   `deploy/examples/sidecar/app.yaml` is by hand: an init container
//!   copying the static wrapper into an in-memory volume, the wrapper in
//!   front of each selected container's command, the agent's socket
//!   directory read-only, the socket group, the pod's projected token for
//!   `identity: pod`, and `kernelseal.io/status: injected`;
//! - [`review`](mod@review) decodes the `AdmissionReview` (the pod as
//!   [`pod`] reads it: only the fields a patch depends on), decides whether the pod is
//!   one to touch (annotated or in a namespace that asks for it, not
//!   injected yet, not in the webhook's own namespace) and answers —
//!   `dryRun` reviews the same — never panicking on what it is sent.
//!
//! A container without `command` runs its image's ENTRYPOINT and CMD,
//! which only the image's registry knows: [`review()`] has [`images`] read
//! them (all of a pod's at once, each once, cached), then [`patch`] —
//! pure, without I/O — takes them from the answers and refuses the pod,
//! naming the image and what to do, when there is none.
//!
//! [`server`] serves reviews over HTTPS with a certificate [`tls`] reads
//! again whenever its files change.

#![forbid(unsafe_code)]

pub mod annotations;
pub mod images;
pub mod metrics;
pub mod patch;
pub mod pod;
pub mod review;
pub mod server;
pub mod tls;

pub use annotations::{AnnotationError, Injection};
pub use images::{
    ImageConfigs, LookupError, NoRegistry, PullContext, PullSecrets, PulledWith, Registry,
    RegistryConfig,
};
pub use patch::{Entrypoint, Entrypoints, PatchError, Patcher, Settings};
pub use review::{Trigger, review};
