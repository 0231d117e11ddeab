//! Protect, verify, check for a debugger: the one gate before any release.

use kernelseal_bpf::{Marks, tracer_of};
use tracing::warn;

use crate::identity::Caller;

/// Marks `caller` (its whole tree from now on), reads the mark back, then
/// refuses if a debugger was already attached: the gate stops new `ptrace`
/// attaches, not a tracer that attached before the mark, and such a tracer
/// can still read memory with `PTRACE_PEEKDATA`. In `audit` the tracer is
/// logged and the delivery goes on, as every other audit finding does.
///
/// Left open: an attach whose LSM check passed just before the mark and
/// that links the tracer just after this scan (`ptrace_attach` checks, then
/// links under another lock): a window of a few instructions.
///
/// The error is the reason to give the caller; it never holds a secret.
pub(crate) fn protect_caller(
    marks: &Marks,
    caller: &Caller,
    binding_id: u32,
    owner_id: u32,
    enforce: bool,
) -> Result<(), String> {
    let pid = caller.pid;
    marks
        .protect_pidfd(&caller.pidfd, pid, binding_id, owner_id)
        .map_err(|e| format!("cannot protect the caller: {e}"))?;
    let tracer = tracer_of(pid, std::os::fd::AsFd::as_fd(&caller.pidfd))
        .map_err(|e| format!("cannot check the caller for a debugger: {e}"))?;
    let Some(t) = tracer else {
        return Ok(());
    };
    let what = format!(
        "PID {pid} is being traced (thread {} by PID {}): a debugger attached before \
         protection could read the secrets",
        t.tid, t.tracer_pid
    );
    if enforce {
        warn!(
            pid,
            tracer = t.tracer_pid,
            "[INJECT] refusing PID {pid}: {what}"
        );
        return Err(format!("{what}; detach it and start again"));
    }
    warn!(
        pid,
        tracer = t.tracer_pid,
        "[AUDIT] {what}; delivering anyway (mode audit)"
    );
    Ok(())
}
