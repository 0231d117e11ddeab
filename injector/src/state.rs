//! What the delivery side serves from: the bindings of the config in force
//! and what a delivery needs besides, swapped whole on reload.

use std::sync::Arc;

use kernelseal_bpf::Marks;
use kernelseal_providers::Cache;
use tokio::sync::RwLock;

use crate::error::{FilesProblem, InjectError};
use crate::select::PreparedBinding;

/// The serving state of one config: read by every delivery, replaced whole
/// by a reload.
pub struct ServingState {
    pub bindings: Vec<PreparedBinding>,
    pub cache: Cache,
    /// Reads of bindings with `identity: pod`, as the calling pod.
    pub pod_reads: Arc<kernelseal_providers::identity::PodReads>,
    /// `None` in `mode: disabled`: secrets are delivered unprotected.
    pub marks: Option<Arc<Marks>>,
    /// `policy.mode: enforce`: a traced caller is refused, not just logged.
    pub enforce: bool,
    pub metrics: Arc<crate::Metrics>,
    /// Processes delivered to, for rotation (outlives a reload).
    pub live: Arc<crate::LiveSet>,
    /// Where `delivery: file` bindings write: `None` until a config with
    /// such a binding opened the secrets directory.
    pub files: Option<Arc<crate::FileStore>>,
    /// Dropped with this state: stops its rotation watcher.
    pub stop_watch: Option<tokio::sync::oneshot::Sender<()>>,
    /// `None` when pod identity is disabled or not available here.
    pub pods: Option<Arc<crate::PodIndex>>,
    pub pod_identity: kernelseal_config::PodIdentityMode,
}

impl ServingState {
    /// The file store, for a `delivery: file` binding.
    pub(crate) fn file_store(&self) -> Result<&Arc<crate::FileStore>, InjectError> {
        self.files.as_ref().ok_or_else(|| InjectError::Files {
            path: "(none)".into(),
            problem: FilesProblem::Refused(
                "no secrets directory is open: the config had no delivery: file binding",
            ),
        })
    }
}

/// The state in force, for the socket server and the exec-time delivery.
pub type Shared = Arc<RwLock<Arc<ServingState>>>;
