//! Privilege checks, so a missing capability is named instead of surfacing
//! as a bare EPERM from the bpf() syscall.

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set of this process.
fn effective() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// `Err` names what is missing to load and attach BPF-LSM programs.
pub fn check_bpf_privileges() -> Result<(), String> {
    let Some(eff) = effective() else {
        return Err("cannot read the capability set from /proc/self/status".into());
    };
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    Err(format!(
        "loading BPF-LSM programs needs root or CAP_BPF + CAP_PERFMON (+ CAP_SYS_ADMIN to \
         attach); running as uid {euid} without them: run as root, or grant the \
         capabilities (e.g. securityContext.capabilities.add: [BPF, PERFMON, SYS_ADMIN])"
    ))
}
