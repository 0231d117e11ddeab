//! Log lines for kernel events, in the original KernelSeal's wording.

use std::time::Instant;

use kernelseal_bpf::{AccessEvent, Decision, ExecEvent};
use tracing::{info, warn};

use crate::audit::{RateLimiter, Suppressed, Verdict, exe_of};

/// Binding names by kernel binding id (index + 1 in `secrets`).
pub type BindingNames = Vec<String>;

fn binding_name(names: &BindingNames, id: u32) -> &str {
    if id == 0 {
        return "-";
    }
    names
        .get(id as usize - 1)
        .map(String::as_str)
        .unwrap_or("?")
}

pub struct EventLog {
    pub names: BindingNames,
    limiter: RateLimiter,
    pub metrics: Option<std::sync::Arc<kernelseal_injector::Metrics>>,
    /// policy.mode, for the metrics' `mode` label.
    pub mode: &'static str,
}

impl EventLog {
    pub fn new(names: BindingNames) -> Self {
        EventLog {
            names,
            limiter: RateLimiter::default(),
            metrics: None,
            mode: "enforce",
        }
    }

    pub fn access(&mut self, ev: &AccessEvent) {
        // The agent's own refused read is its start-up self-test (once it
        // is the agent, the kernel lets it through unlogged): not an access
        // to count or to report as one.
        if ev.accessor_pid == std::process::id() && ev.decision != Decision::Allowed {
            info!(
                target_pid = ev.target_pid,
                kind = ev.kind.as_str(),
                "[OK] self-test: the kernel refused the agent's own {} read of its test process PID={}",
                ev.kind.as_str(),
                ev.target_pid
            );
            return;
        }
        if let Some(m) = &self.metrics {
            let labels = kernelseal_injector::AccessLabels {
                kind: ev.kind.as_str().to_string(),
                mode: self.mode.to_string(),
            };
            match ev.decision {
                Decision::Denied => m.access_blocked.get_or_create(&labels).inc(),
                _ => m.access_audit.get_or_create(&labels).inc(),
            };
        }
        let (summaries, verdict) = self.limiter.admit(ev, Instant::now());
        summaries.iter().for_each(log_suppressed);
        if verdict == Verdict::Suppress {
            return;
        }
        let kind = ev.kind.as_str();
        let exe = exe_of(ev.accessor_pid);
        let binding = binding_name(&self.names, ev.binding_id);
        macro_rules! line {
            ($lvl:ident, $($msg:tt)+) => {
                $lvl!(
                    accessor_pid = ev.accessor_pid, accessor_uid = ev.accessor_uid,
                    accessor_comm = %ev.accessor_comm, accessor_exe = %exe,
                    target_pid = ev.target_pid, target_tid = ev.target_tid,
                    target_comm = %ev.target_comm, binding = %binding,
                    kind, decision = ev.decision.as_str(),
                    $($msg)+
                )
            };
        }
        match ev.decision {
            // A file refusal has no target process: the owner is a delivery.
            Decision::Denied if ev.kind == kernelseal_bpf::AccessKind::SecretFile => line!(
                warn,
                "[LSM BLOCKED] PID={} attempted to open a secret file of delivery {} ({})",
                ev.accessor_pid,
                ev.binding_id,
                ev.accessor_comm
            ),
            // KernelSeal's own state: the accessor is all there is to name.
            Decision::Denied if ev.kind == kernelseal_bpf::AccessKind::State => line!(
                warn,
                "[LSM BLOCKED] PID={} ({}) attempted to change KernelSeal's own state (its maps, \
                 pins, bpffs or binary); not a trusted KernelSeal binary",
                ev.accessor_pid,
                ev.accessor_comm
            ),
            // Lock mode: what was attempted is all there is to name.
            Decision::Denied
                if let Some(what) = kernelseal_bpf::lock::attempted(ev.kind, ev.ptrace_mode) =>
            {
                line!(
                    warn,
                    "[LOCK BLOCKED] PID={} ({}, {exe}) attempted to {what}; the node is locked \
                     (policy.lock) until reboot",
                    ev.accessor_pid,
                    ev.accessor_comm
                )
            }
            Decision::Allowed if ev.kind == kernelseal_bpf::AccessKind::Handover => line!(
                warn,
                "[HANDOVER] PID={} ({}, {exe}) was admitted as a trusted KernelSeal build: the \
                 handover a stopping agent opened is used",
                ev.accessor_pid,
                ev.accessor_comm
            ),
            Decision::Denied => line!(
                warn,
                "[LSM BLOCKED] PID={} attempted {kind} access to PID={} ({})",
                ev.accessor_pid,
                ev.target_pid,
                ev.accessor_comm
            ),
            Decision::Audit => line!(
                warn,
                "[LSM AUDIT] PID={} {kind} access to PID={} ({}) would be blocked",
                ev.accessor_pid,
                ev.target_pid,
                ev.accessor_comm
            ),
            Decision::Allowed => line!(
                info,
                "[LSM ALLOW] PID={} {kind} access to PID={} ({}) allowed",
                ev.accessor_pid,
                ev.target_pid,
                ev.accessor_comm
            ),
        }
    }

    /// Reports suppressed counts of windows that ended (called on a timer).
    pub fn flush(&mut self) {
        self.limiter
            .expire(Instant::now())
            .iter()
            .for_each(log_suppressed);
    }

    pub fn exec(&self, ev: &ExecEvent) {
        if let Some(m) = &self.metrics {
            m.exec_events.inc();
        }
        let binding = binding_name(&self.names, ev.binding_id);
        info!(
            pid = ev.pid, ppid = ev.ppid, uid = ev.uid, comm = %ev.comm, file = %ev.filename,
            binary = ev.binary(), cgroup_id = ev.cgroup_id, binding = %binding,
            "[EXEC] PID={} PPID={} Comm={} File={} Binary={} CgroupID={}",
            ev.pid, ev.ppid, ev.comm, ev.filename, ev.binary(), ev.cgroup_id
        );
        if ev.binding_id != 0 && ev.protected {
            info!(pid = ev.pid, binding = %binding, "[PROTECT] PID {} marked as protected", ev.pid);
        }
    }
}

fn log_suppressed(s: &Suppressed) {
    warn!(
        accessor_pid = s.accessor_pid,
        target_pid = s.target_pid,
        kind = s.kind.as_str(),
        suppressed = s.count,
        "[LSM SUPPRESSED] {} more {} event(s) from PID={} on PID={} in the last {}s",
        s.count,
        s.kind.as_str(),
        s.accessor_pid,
        s.target_pid,
        crate::audit::WINDOW.as_secs()
    );
}
