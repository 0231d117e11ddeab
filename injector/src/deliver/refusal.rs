//! Why a caller gets nothing.

use kernelseal_protocol::NO_BINDING;

use super::as_pod::AsPodRefusal;
use crate::error::InjectError;
use crate::pod_identity::PodRequired;
use crate::protect::ProtectError;

/// Why a delivery stopped, between or within its steps. Its text
/// ([`Refusal::reason`]) is what a wrapper is told; it never holds a
/// secret.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error(transparent)]
    PodIdentity(#[from] PodRequired),
    /// The caller as the selectors saw it; `pod`: its pod and container,
    /// when pod identity looked.
    #[error("{NO_BINDING}: PID {pid} ({program}, uid {uid}{pod})")]
    NoBinding {
        pid: u32,
        uid: u32,
        program: String,
        pod: String,
        retry: bool,
    },
    /// The same name from two bindings: which value wins would be
    /// arbitrary.
    #[error("{name} is delivered by both binding {first:?} and {second:?}: a config error")]
    SharedName {
        name: String,
        first: String,
        second: String,
    },
    /// The same name twice from one binding: an expanded key and another
    /// entry's name (or key).
    #[error(
        "{name} is delivered twice by binding {binding:?} (an expanded key and another entry): a \
         config error"
    )]
    NameTwice { name: String, binding: String },
    /// `failures`: every secret the request could not get so far, and
    /// why; `retry` when one of them was an upstream that could not be
    /// asked (down, timed out, 5xx), not one that said no.
    #[error("no secret of binding {binding:?} could be resolved: {failures}")]
    Unresolved {
        binding: String,
        failures: String,
        retry: bool,
    },
    /// A process marked at exec for which no file could be fetched.
    #[error("no secret could be fetched")]
    NothingFetched,
    /// A binding with `identity: pod` cannot read as the caller's pod.
    #[error("binding {binding:?} reads as the pod (identity: pod): {why}")]
    AsPod {
        binding: String,
        #[source]
        why: Box<AsPodRefusal>,
    },
    #[error(transparent)]
    Protect(#[from] ProtectError),
    #[error("writing the secret files failed: {0}")]
    Files(#[source] InjectError),
}

impl Refusal {
    pub(crate) fn reason(&self) -> String {
        self.to_string()
    }

    /// Whether the same request may succeed later: a pod the node's list
    /// does not show yet, a provider that may answer again, a write that
    /// may succeed again. A config error or a caller that cannot be
    /// protected stays as it is.
    pub(crate) fn retry(&self) -> bool {
        match self {
            Refusal::PodIdentity(p) => p.retry(),
            Refusal::NoBinding { retry, .. } => *retry,
            Refusal::AsPod { why, .. } => why.retry(),
            Refusal::SharedName { .. } | Refusal::NameTwice { .. } | Refusal::Protect(_) => false,
            Refusal::Unresolved { retry, .. } => *retry,
            Refusal::NothingFetched | Refusal::Files(_) => true,
        }
    }
}
