//! Protect, verify, check for a debugger: the one gate before any release.

use kernelseal_bpf::{BpfError, Marks, tracer_of};
use tracing::warn;

use crate::identity::Caller;

/// Why the caller was not protected, or must not have its secrets. The
/// text is the reason given to the caller; it never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum ProtectError {
    #[error("cannot protect the caller: {0}")]
    Mark(#[source] BpfError),
    #[error("cannot check the caller for a debugger: {0}")]
    TracerCheck(#[source] BpfError),
    #[error("{}; detach it and start again", traced_text(*.pid, *.tid, *.tracer_pid))]
    Traced { pid: u32, tid: u32, tracer_pid: u32 },
}

fn traced_text(pid: u32, tid: u32, tracer_pid: u32) -> String {
    format!(
        "PID {pid} is being traced (thread {tid} by PID {tracer_pid}): a debugger attached \
         before protection could read the secrets"
    )
}

/// Marks `caller` (its whole tree from now on), reads the mark back, then
/// refuses if a debugger was already attached: the gate stops new `ptrace`
/// attaches, not a tracer that attached before the mark, and such a tracer
/// can still read memory with `PTRACE_PEEKDATA`. In `audit` the tracer is
/// logged and the delivery goes on, as every other audit finding does.
///
/// Left open: an attach whose LSM check passed just before the mark and
/// that links the tracer just after this scan (`ptrace_attach` checks, then
/// links under another lock): a window of a few instructions.
pub(crate) fn protect_caller(
    marks: &Marks,
    caller: &Caller,
    binding_id: u32,
    owner_id: u32,
    enforce: bool,
) -> Result<(), ProtectError> {
    let pid = caller.pid;
    marks
        .protect_pidfd(&caller.pidfd, pid, binding_id, owner_id)
        .map_err(ProtectError::Mark)?;
    let tracer = tracer_of(pid, std::os::fd::AsFd::as_fd(&caller.pidfd))
        .map_err(ProtectError::TracerCheck)?;
    let Some(t) = tracer else {
        return Ok(());
    };
    let what = traced_text(pid, t.tid, t.tracer_pid);
    if enforce {
        warn!(
            pid,
            tracer = t.tracer_pid,
            "[INJECT] refusing PID {pid}: {what}"
        );
        return Err(ProtectError::Traced {
            pid,
            tid: t.tid,
            tracer_pid: t.tracer_pid,
        });
    }
    warn!(
        pid,
        tracer = t.tracer_pid,
        "[AUDIT] {what}; delivering anyway (mode audit)"
    );
    Ok(())
}
