//! `delivery: file` for processes the kernel marked at exec (no wrapper).
//!
//! The kernel matches an exec by file name alone; that protects the process
//! but authorizes nothing. Files are written only for bindings whose whole
//! selector matches the process (uid, cgroupPath, pod), as for a wrapper's
//! request, and only for bindings that name a program (`binary`/`path`):
//! a process that did not ask gets nothing from bindings that would answer
//! any caller. Env bindings cannot be delivered after exec.

use std::collections::BTreeMap;

use kernelseal_config::Delivery as Kind;
use tracing::{info, warn};

use crate::identity::Caller;
use crate::pod_identity::pod_identity;
use crate::select::{PreparedBinding, matches};
use crate::server::{Delivery, track};

pub async fn deliver_on_exec(d: &Delivery, pid: u32, filename: &str) {
    if d.bindings.iter().all(|b| b.delivery != Kind::File) {
        return;
    }
    if already_delivered(d, pid) {
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
    let pods = match pod_identity(&caller, d).await {
        Ok(p) => p,
        Err((why, _)) => {
            warn!(
                pid,
                "[FILE] no secret files for PID {pid} ({filename}): {why}"
            );
            d.metrics.secrets_denied.inc();
            return;
        }
    };
    let selected: Vec<&PreparedBinding> = d
        .bindings
        .iter()
        .filter(|b| {
            b.delivery == Kind::File
                && names_a_program(b)
                && matches(b, &caller, filename, pods.caller())
        })
        .collect();
    if selected.is_empty() {
        info!(
            pid,
            "[FILE] PID {pid} ({filename}) was marked at exec by name, but no file binding's \
             whole selector matches it: no files"
        );
        return;
    }
    let mut owner_of_name: BTreeMap<&str, &str> = BTreeMap::new();
    for b in &selected {
        for (name, _) in &b.refs {
            if let Some(other) = owner_of_name.insert(name, &b.name)
                && other != b.name
            {
                warn!(
                    pid,
                    "[FILE] no files for PID {pid}: {name} is delivered by both binding {other:?} \
                     and {:?}: a config error",
                    b.name
                );
                d.metrics.secrets_denied.inc();
                return;
            }
        }
    }
    let mut files = Vec::new();
    for b in &selected {
        for (name, sref) in &b.refs {
            match d.cache.get(sref).await {
                Ok(v) => files.push((name.clone(), v)),
                Err(e) => {
                    warn!(
                        pid,
                        "[FILE] {name} of binding {} for PID {pid} failed: {e}", b.name
                    );
                    d.metrics.secrets_denied.inc();
                }
            }
        }
    }
    if files.is_empty() {
        return;
    }
    let owner_id = crate::files::next_owner_id();
    if let Some(marks) = &d.marks
        && let Err(why) =
            crate::protect::protect_caller(marks, &caller, selected[0].id, owner_id, d.enforce)
    {
        warn!(pid, "[FILE] not writing secrets for PID {pid}: {why}");
        d.metrics.secrets_denied.inc();
        return;
    }
    let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    let result = caller
        .pidfd
        .try_clone()
        .map_err(|e| crate::InjectError::Identity(e.to_string()))
        .and_then(|fd| {
            d.file_store()?
                .deliver(pid, caller.uid, caller.gid, owner_id, &files, fd)
        });
    match result {
        Ok(written) => {
            track(d, &caller, &selected, Some(&written));
            d.metrics.secrets_injected.inc_by(names.len() as u64);
            info!(
                pid,
                "[FILE] Secrets written to {} for PID {pid}",
                written.path().display()
            );
            info!(
                pid,
                "[INJECT] Secrets injected into PID {pid}: [{}]",
                names.join(", ")
            );
        }
        Err(e) => warn!(pid, "[FILE] writing secrets for PID {pid} failed: {e}"),
    }
}

fn names_a_program(b: &PreparedBinding) -> bool {
    b.selector.binary.is_some() || b.selector.path.is_some()
}

/// The wrapper's request already wrote this process's files and put their
/// owner id in its mark (kept across the exec); a second delivery would
/// replace them under the app. The mark is checked too, so a reused PID
/// whose old owner's cleanup is still pending is not mistaken for it.
fn already_delivered(d: &Delivery, pid: u32) -> bool {
    let Some(owner_id) = d.files.as_ref().and_then(|f| f.owner_of(pid)) else {
        return false;
    };
    match &d.marks {
        Some(marks) => marks
            .state(pid)
            .ok()
            .flatten()
            .is_some_and(|m| m.owner_id == owner_id),
        None => true,
    }
}
