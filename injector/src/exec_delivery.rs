//! `delivery: file` for processes the kernel marked at exec (no wrapper):
//! the delivery of [`crate::deliver`] for [`Occasion::Exec`], whose
//! outcome is logged since nobody asked.
//!
//! The kernel matches an exec by file name alone; that protects the process
//! but authorizes nothing. Files are written only for bindings whose whole
//! selector matches the process (uid, cgroupPath, pod), as for a wrapper's
//! request, and only for bindings that name a program. Env bindings cannot
//! be delivered after exec.

use kernelseal_config::Delivery as Kind;
use tracing::{info, warn};

use crate::deliver::{Occasion, Refusal, deliver};
use crate::identity::Caller;
use crate::state::ServingState;

pub async fn deliver_on_exec(state: &ServingState, pid: u32, filename: &str) {
    if state.bindings.iter().all(|b| b.delivery != Kind::File) {
        return;
    }
    if already_delivered(state, pid) {
        info!(
            pid,
            "[FILE] PID {pid} already has its files (written for its wrapper request)"
        );
        return;
    }
    let Ok(pidfd) = kernelseal_bpf::pidfd_open(pid) else {
        return; // already gone
    };
    let Some(caller) = Caller::of_process(pid, pidfd) else {
        return;
    };
    if let Err(refusal) = deliver(state, &caller, Occasion::Exec { filename }).await {
        report(state, pid, filename, &refusal);
    }
}

/// Logs why a process marked at exec got no files, and counts a denial
/// where it was due files it did not get (a failed write is only logged).
fn report(state: &ServingState, pid: u32, filename: &str, refusal: &Refusal) {
    let why = refusal.reason();
    let denied = match refusal {
        Refusal::NoBinding { .. } => {
            info!(
                pid,
                "[FILE] PID {pid} ({filename}) was marked at exec by name, but no file binding's \
                 whole selector matches it: no files"
            );
            false
        }
        // Each secret that could not be fetched was logged and counted.
        Refusal::NothingFetched => false,
        Refusal::Files(e) => {
            warn!(pid, "[FILE] writing secrets for PID {pid} failed: {e}");
            false
        }
        Refusal::PodIdentity(_) => {
            warn!(
                pid,
                "[FILE] no secret files for PID {pid} ({filename}): {why}"
            );
            true
        }
        Refusal::Protect(_) => {
            warn!(pid, "[FILE] not writing secrets for PID {pid}: {why}");
            true
        }
        Refusal::SharedName { .. }
        | Refusal::NameTwice { .. }
        | Refusal::Unresolved { .. }
        | Refusal::AsPod { .. } => {
            warn!(pid, "[FILE] no files for PID {pid}: {why}");
            true
        }
    };
    if denied {
        state.metrics.secrets_denied.inc();
    }
}

/// The wrapper's request already wrote this process's files and put their
/// owner id in its mark (kept across the exec); a second delivery would
/// replace them under the app. The mark is checked too, so a reused PID
/// whose old owner's cleanup is still pending is not mistaken for it.
fn already_delivered(state: &ServingState, pid: u32) -> bool {
    let Some(owner_id) = state.files.as_ref().and_then(|f| f.owner_of(pid)) else {
        return false;
    };
    match &state.marks {
        Some(marks) => marks
            .state(pid)
            .ok()
            .flatten()
            .is_some_and(|m| m.owner_id == owner_id),
        None => true,
    }
}
