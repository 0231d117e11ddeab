//! Facts about the running kernel that decide whether enforcement is possible.

use aya::Btf;
use aya_obj::btf::BtfKind;

/// The LSM hooks KernelSeal attaches, by program (C function) name.
pub const LSM_PROGRAMS: [&str; 6] = [
    "file_open",
    "ptrace_access_check",
    "task_alloc",
    "bprm_check_security",
    "bprm_committing_creds",
    "file_post_open",
];

/// `file_post_open` exists from 6.9; older kernels do not need it (the
/// perfmon READ fallback it closes arrived in 6.15).
pub const POST_OPEN_HOOK: &str = "file_post_open";

pub fn btf() -> Result<Btf, crate::BpfError> {
    Btf::from_sys_fs().map_err(|e| crate::BpfError::NoBtf {
        reason: e.to_string(),
    })
}

/// Whether the kernel has an LSM hook, judged by its `bpf_lsm_<hook>` BTF function.
pub fn has_lsm_hook(btf: &Btf, hook: &str) -> bool {
    btf.id_by_type_name_kind(&format!("bpf_lsm_{hook}"), BtfKind::Func)
        .is_ok()
}

/// The active LSM list from securityfs, if it is mounted.
pub fn active_lsms() -> Option<Vec<String>> {
    let text = std::fs::read_to_string("/sys/kernel/security/lsm").ok()?;
    Some(text.trim().split(',').map(str::to_string).collect())
}
