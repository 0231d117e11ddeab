//! Opening the kernel gate at start: the checks that say why protection
//! cannot be had (privileges, the LSM list, a dynamic binary for lock mode),
//! the load or adoption of the programs, the self-test, and the lines that
//! tell the operator what the kernel now enforces.

use anyhow::{Context, anyhow};
use kernelseal_bpf::{BpfError, CommandTrust, ExecFilter, Gate, GateOptions, KernelPolicy, Origin};
use tracing::{info, warn};

use super::{AgentArgs, static_binary};
use crate::exit::Failure;

pub fn open_gate(
    policy: KernelPolicy,
    filter: ExecFilter,
    args: &AgentArgs,
) -> Result<Gate, Failure> {
    let pin_dir = args.pin_dir.as_path();
    let unenforceable = |msg: String| Failure::new(Failure::UNENFORCEABLE, anyhow!(msg));
    if let Err(why) = crate::caps::check_bpf_privileges() {
        return Err(unenforceable(format!("protection requested but {why}")));
    }
    if policy.lock() {
        // The command the gate may trust: checked before anything loads.
        let command = kernelseal_bpf::command_beside(std::path::Path::new("/proc/self/exe"));
        refuse_lock_on_dynamic_binary(command.as_deref()).map_err(unenforceable)?;
    }
    match kernelseal_bpf::kernel::active_lsms() {
        Some(list) if !list.iter().any(|l| l == "bpf") => {
            return Err(unenforceable(format!(
                "protection requested but the active LSM list is {:?}: without \"bpf\" BPF-LSM \
                 programs attach and never run. Fix: boot with lsm={},bpf",
                list.join(","),
                list.join(",")
            )));
        }
        Some(_) => {}
        None => warn!(
            "[WARN] /sys/kernel/security/lsm is unreadable (securityfs not mounted?); relying on \
             the start-up self-test"
        ),
    }
    let gate = Gate::open(GateOptions {
        layout_version: args.pin_layout_version,
        ..GateOptions::new(policy, filter, Some(pin_dir.to_path_buf()))
    })
    .map_err(|e| unenforceable(explain_load_failure(&e)))?;
    log_origin(&gate, pin_dir);
    log_command_trust(gate.command());
    info!("[OK] Exec monitor BPF programs loaded and attached");
    log_admitted_builds(&gate);
    log_lock(&gate, policy.lock());
    // Before the agent marks itself allowed: it is an ordinary accessor now.
    match crate::selftest::run(&gate, &policy) {
        Ok(what) => info!("[OK] self-test: {what}"),
        Err(why) => {
            return Err(unenforceable(format!(
                "enforcement self-test failed: {why}"
            )));
        }
    }
    let me = std::process::id();
    gate.marks()
        .protect_agent(me)
        .context("marking the agent itself")
        .map_err(Failure::runtime)?;
    info!("[ALLOW] PID {me} added to allowed list");
    Ok(gate)
}

/// Which programs enforce now, and whether they are new or adopted pins.
fn log_origin(gate: &Gate, pin_dir: &std::path::Path) {
    let ids: Vec<String> = gate
        .programs()
        .iter()
        .map(|p| format!("{}#{}", p.name, p.id))
        .collect();
    match gate.origin() {
        Origin::Loaded => info!(
            "[OK] LSM BPF programs loaded and attached: {}",
            ids.join(", ")
        ),
        Origin::Adopted => info!(
            "[OK] adopted the programs pinned under {}: {}",
            pin_dir.display(),
            ids.join(", ")
        ),
        Origin::Replaced => info!(
            "[OK] LSM BPF programs loaded and attached: {}; replaced the pinned programs of \
             another build after attaching",
            ids.join(", ")
        ),
        Origin::Upgraded { from } => info!(
            "[OK] LSM BPF programs loaded and attached: {}; replaced layout v{from} pins after attaching",
            ids.join(", ")
        ),
    }
}

/// Whether `kernelseal exec` from the command beside this binary is closed
/// to root before its mark.
fn log_command_trust(command: &CommandTrust) {
    match command {
        CommandTrust::Trusted(path) => info!(
            "[OK] trusted KernelSeal binaries: this one and the kernelseal command at {}",
            path.display()
        ),
        CommandTrust::NotAdmitted(path) => warn!(
            "[WARN] the kernelseal command at {} is not trusted: it is not the file trusted \
             when the pinned programs started, and only a fresh load or a handover (stop the \
             agent with SIGTERM, then start it) admits another; kernelseal exec from it is \
             guarded only from its mark",
            path.display()
        ),
        CommandTrust::Absent => {}
    }
}

/// A locked node runs KernelSeal's processes on their own binary's code
/// only: a dynamically linked agent would lock itself out of its restart,
/// and a dynamically linked `kernelseal` command beside it (trusted too)
/// could not start at all.
pub fn refuse_lock_on_dynamic_binary(command: Option<&std::path::Path>) -> Result<(), String> {
    let exe = std::path::Path::new("/proc/self/exe");
    let binaries = [("kernelseal-core", Some(exe)), ("kernelseal", command)];
    for (name, path) in binaries {
        let Some(path) = path else { continue };
        match static_binary::needs_interpreter(path) {
            Ok(false) => {}
            Ok(true) => {
                return Err(format!(
                    "policy.lock needs a statically linked {name} (a locked node lets \
                     KernelSeal's processes run only their own binary's code, never a dynamic \
                     loader or a library): build it with cargo xtask static (target/static/{name})"
                ));
            }
            Err(e) => {
                return Err(format!(
                    "policy.lock: cannot tell whether {name} ({}) is statically linked: {e}",
                    path.display()
                ));
            }
        }
    }
    Ok(())
}

/// What lock mode means on this node now; a crash kernel loaded before the
/// lock is the one way left to read memory without a reboot of our choosing.
fn log_lock(gate: &Gate, requested: bool) {
    if !gate.is_locked() {
        return;
    }
    if requested {
        info!(
            "[LOCK] the node is locked until reboot: no process but KernelSeal loads BPF \
             programs, kernel modules or kexec images or uses the kernel's lockdown \
             reasons; KernelSeal's policy and pins cannot change"
        );
    } else {
        warn!(
            "[LOCK] the node was locked by an earlier agent: the policy in the kernel \
             stands until reboot; this config's policy section is not applied"
        );
    }
    if std::fs::read_to_string("/sys/kernel/kexec_crash_loaded").is_ok_and(|v| v.trim() == "1") {
        warn!(
            "[LOCK] a crash kernel (kdump) was loaded before the lock: a kernel panic \
             boots it with all of memory readable; unload it (kexec -p -u) before \
             locking where that matters"
        );
    }
}

/// Builds the kernel admitted during handovers: each may change
/// KernelSeal's maps and pins, so the operator should know them.
fn log_admitted_builds(gate: &Gate) {
    match gate.admitted_builds() {
        Ok(builds) => {
            for b in builds {
                info!(
                    "[START] trusted KernelSeal build admitted during a handover: file {}:{} \
                     (inode {}), first run as PID {}",
                    b.dev >> 20,
                    b.dev & 0xfffff,
                    b.ino,
                    b.pid
                );
            }
        }
        Err(e) => warn!("[START] listing trusted KernelSeal builds failed: {e}"),
    }
}

/// Turns a load failure into the reason and the fix.
fn explain_load_failure(e: &BpfError) -> String {
    let lsms = kernelseal_bpf::kernel::active_lsms();
    let fix = match &lsms {
        Some(list) if !list.iter().any(|l| l == "bpf") => format!(
            "the active LSM list is {:?} and lacks \"bpf\": add it to the kernel command line, \
             e.g. lsm={},bpf, and reboot",
            list.join(","),
            list.join(",")
        ),
        None => "cannot read /sys/kernel/security/lsm (is securityfs mounted?); BPF-LSM needs \
                 \"bpf\" in the lsm= boot parameter"
            .to_string(),
        Some(_) if e.to_string().contains("Operation not permitted") => {
            "\"bpf\" is an active LSM but attaching was refused (EPERM): the runtime or sandbox \
             forbids BPF trampolines (lsm/fentry programs); run on the host or in a privileged \
             container with CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN"
                .to_string()
        }
        Some(_) => {
            "see the kernel's reason above; `kernelseal check` lists every requirement".to_string()
        }
    };
    format!(
        "protection requested but the kernel gate cannot load: {e}. Fix: {fix}. Refusing to run without enforcement (set policy.mode: disabled for local testing without protection)"
    )
}
