//! What the delivery side serves from: the bindings of the config in force
//! and what a delivery needs besides, swapped whole on reload.

use std::sync::Arc;

use kernelseal_bpf::Marks;
use kernelseal_providers::{Cache, HeldLease};
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
    /// Processes holding leases of dynamic secrets (outlives a reload).
    pub leases: Arc<crate::LeaseTable>,
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
    /// Hands the leases read for `caller` to the lease table: one holder
    /// per binding, told of its lease's end per that binding's `onRotate`.
    pub(crate) fn hold_leases(
        &self,
        caller: &crate::Caller,
        leases: Vec<(String, HeldLease)>,
        selected: &[&crate::PreparedBinding],
    ) {
        if leases.is_empty() {
            return;
        }
        let start_time = crate::identity::start_time(caller.pid).unwrap_or_default();
        // Read through the PID: it names the caller only while the caller
        // lives. Gone already, its leases have nobody to serve.
        if !kernelseal_bpf::pidfd_alive(std::os::fd::AsFd::as_fd(&caller.pidfd)) {
            self.revoke_unused(leases);
            return;
        }
        for b in selected {
            let binding = &b.name;
            let mine: Vec<HeldLease> = leases
                .iter()
                .filter(|(b, _)| b == binding)
                .map(|(_, l)| l.clone())
                .collect();
            if mine.is_empty() {
                continue;
            }
            let pidfd = match caller.pidfd.try_clone() {
                Ok(fd) => fd,
                Err(e) => {
                    tracing::warn!(
                        pid = caller.pid,
                        "[LEASE] cannot watch PID {} for its exit ({e}): its leases are revoked now",
                        caller.pid
                    );
                    self.revoke_unused(mine.into_iter().map(|l| (binding.clone(), l)).collect());
                    continue;
                }
            };
            self.leases.hold(
                crate::Holder {
                    pid: caller.pid,
                    start_time,
                    pidfd,
                    binding: binding.clone(),
                    on_rotate: b.on_rotate.clone(),
                    leases: mine,
                },
                self.lease_provider(),
            );
        }
    }

    /// Revokes the leases of a delivery that did not happen.
    pub(crate) fn revoke_unused(&self, leases: Vec<(String, HeldLease)>) {
        self.leases.revoke_unused(
            leases.into_iter().map(|(_, l)| l).collect(),
            self.lease_provider(),
        );
    }

    /// What renews and revokes leases: the providers of this config, not
    /// its cache (held by a lease's task, a cache clone would keep a
    /// replaced config's cache refreshing as long as the process lives).
    pub fn lease_provider(&self) -> Arc<dyn kernelseal_providers::SecretProvider> {
        self.cache.provider()
    }

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
