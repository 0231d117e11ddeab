//! The release: protect, verify, and only then hand over.

use std::sync::Arc;

use kernelseal_config::{Delivery as Kind, Naming};
use kernelseal_protocol::EnvVar;
use kernelseal_providers::{SecretRef, SecretValue};
use tracing::{info, warn};

use super::plan::RotationKey;
use super::{Occasion, Plan, Refusal, SECRETS_DIR_VAR};
use crate::error::InjectError;
use crate::files::{DeliveredFiles, next_owner_id};
use crate::identity::Caller;
use crate::protect::protect_caller;
use crate::rotate::{Live, LiveFiles};
use crate::select::PreparedBinding;
use crate::state::ServingState;

/// What the caller got.
pub(crate) struct Delivered {
    /// The names of the bindings it got.
    pub(crate) bindings: Vec<String>,
    /// For a wrapper to set; with files, [`SECRETS_DIR_VAR`] says where.
    pub(crate) env: Vec<EnvVar>,
    pub(crate) missing: Vec<String>,
    pub(crate) warnings: Vec<String>,
    /// False in `mode: disabled`.
    pub(crate) protected: bool,
}

/// Protects and verifies the caller, writes its files, tracks it for
/// rotations and counts the delivery.
pub(crate) fn release(
    state: &ServingState,
    caller: &Caller,
    occasion: Occasion<'_>,
    plan: Plan<'_>,
) -> Result<Delivered, Refusal> {
    // The owner id goes in the mark before any file exists, so the files
    // are guarded for this tree alone from the start.
    let owner_id = if plan.files.is_empty() {
        0
    } else {
        next_owner_id()
    };
    let protected = protect(state, caller, occasion, plan.selected[0].id, owner_id)?;
    let mut env = plan.env;
    let written = write_files(state, caller, owner_id, &plan.files)?;
    if let Some(w) = &written {
        env.push(EnvVar {
            name: SECRETS_DIR_VAR.into(),
            value: w.path().display().to_string(),
        });
    }
    track(
        state,
        caller,
        &plan.selected,
        &plan.rotation_keys,
        written.as_ref(),
    );
    let bindings: Vec<String> = plan.selected.iter().map(|b| b.name.clone()).collect();
    // Secrets delivered: env variables and file names (the directory
    // variable is a location, not a secret).
    let names: Vec<&str> = env
        .iter()
        .map(|v| v.name.as_str())
        .filter(|n| *n != SECRETS_DIR_VAR)
        .chain(plan.files.iter().map(|(n, _)| n.as_str()))
        .collect();
    state.metrics.secrets_injected.inc_by(names.len() as u64);
    occasion.injected(caller, &bindings, &names);
    Ok(Delivered {
        bindings,
        env,
        missing: plan.missing,
        warnings: plan.warnings,
        protected,
    })
}

/// Marks the caller with its binding and owner id and verifies it; in
/// `mode: disabled` there is no gate and the delivery goes on unprotected.
fn protect(
    state: &ServingState,
    caller: &Caller,
    occasion: Occasion<'_>,
    binding_id: u32,
    owner_id: u32,
) -> Result<bool, Refusal> {
    let pid = caller.pid;
    match &state.marks {
        Some(marks) => {
            protect_caller(marks, caller, binding_id, owner_id, state.enforce)?;
            occasion.protected(pid);
            Ok(true)
        }
        None => {
            warn!(
                pid,
                "[WARN] delivering to PID {pid} UNPROTECTED (mode disabled)"
            );
            Ok(false)
        }
    }
}

/// The caller's files, when it gets any.
fn write_files(
    state: &ServingState,
    caller: &Caller,
    owner_id: u32,
    files: &[(String, SecretValue)],
) -> Result<Option<Arc<DeliveredFiles>>, Refusal> {
    if files.is_empty() {
        return Ok(None);
    }
    let pid = caller.pid;
    let written = caller
        .pidfd
        .try_clone()
        .map_err(|source| InjectError::Pidfd { pid, source })
        .and_then(|pidfd| {
            state
                .file_store()?
                .deliver(pid, caller.uid, caller.gid, owner_id, files, pidfd)
        })
        .map_err(Refusal::Files)?;
    info!(
        pid,
        "[FILE] Secrets written to {} for PID {pid}",
        written.path().display()
    );
    Ok(Some(written))
}

/// Remembers a process delivered to, so rotations reach it: one entry per
/// binding, with its files when the binding delivers files.
fn track(
    state: &ServingState,
    caller: &Caller,
    selected: &[&PreparedBinding],
    rotation_keys: &[Vec<RotationKey>],
    written: Option<&Arc<DeliveredFiles>>,
) {
    for (b, keys) in selected.iter().zip(rotation_keys) {
        let pidfd = match caller.pidfd.try_clone() {
            Ok(p) => p,
            Err(e) => {
                warn!(
                    pid = caller.pid,
                    "[ROTATE] PID {} will not hear of rotations: {e}", caller.pid
                );
                return;
            }
        };
        let files = match (written, &state.files, b.delivery) {
            (Some(written), Some(store), Kind::File) => Some(LiveFiles {
                store: store.clone(),
                files: written.clone(),
                names: keys
                    .iter()
                    .map(|k| (k.key.clone(), k.name.clone()))
                    .collect(),
                parts: keys
                    .iter()
                    .filter_map(|k| Some((k.name.clone(), k.part.clone()?)))
                    .collect(),
                templates: b
                    .refs
                    .iter()
                    .filter_map(|(naming, r)| match (naming, r) {
                        (Naming::One(n), SecretRef::Template(t)) => Some((n.clone(), t.clone())),
                        _ => None,
                    })
                    .collect(),
            }),
            _ => None,
        };
        state.live.add(Live {
            pid: caller.pid,
            pidfd,
            binding: b.name.clone(),
            on_rotate: b.on_rotate.clone(),
            // One entry per ref, however many names it was expanded to.
            keys: keys
                .iter()
                .map(|k| k.key.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
            files,
        });
    }
}
