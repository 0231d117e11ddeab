//! Facts about the running kernel that decide whether enforcement is possible.

use aya::Btf;

/// The LSM hooks KernelSeal attaches, by program (C function) name. Each
/// exists on every kernel with BPF-LSM that KernelSeal supports (5.19+ for
/// task storage on every hook used here).
pub const LSM_PROGRAMS: [&str; 19] = [
    "file_open",
    "ptrace_access_check",
    // Kernels >= 6.15 let perfmon-capable callers read environ/maps after
    // ptrace_access_check refused (may_access_mm); this refuses that too.
    "capable",
    "task_alloc",
    "bprm_check_security",
    "bprm_committing_creds",
    "perf_event_alloc",
    "cred_prepare",
    "inode_link",
    "inode_rename",
    // KernelSeal's own state: its maps, pins and bpffs.
    "bpf_map",
    "inode_unlink",
    "sb_umount",
    // Lock mode (policy.lock): code into the kernel, its ways into memory.
    "bpf",
    "bpf_prog_load",
    "kernel_read_file",
    "kernel_load_data",
    "locked_down",
    "mmap_file",
];

pub fn btf() -> Result<Btf, crate::BpfError> {
    Btf::from_sys_fs().map_err(|e| crate::BpfError::NoBtf {
        reason: e.to_string(),
    })
}

/// (major, minor) of the running kernel.
pub fn version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Whether this kernel lets perfmon-capable callers read environ/maps after
/// ptrace_access_check refused (may_access_mm, 6.15+): only then does the
/// capable program have a refusal to carry over.
pub fn has_perfmon_fallback() -> bool {
    version().is_some_and(|v| v >= (6, 15))
}

/// The active LSM list from securityfs, if it is mounted.
pub fn active_lsms() -> Option<Vec<String>> {
    let text = std::fs::read_to_string("/sys/kernel/security/lsm").ok()?;
    Some(text.trim().split(',').map(str::to_string).collect())
}
