//! Privilege checks, so a missing capability is named instead of surfacing
//! as a bare EPERM from the bpf() syscall.

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set of a process (`self` or a PID).
fn effective_of(proc_dir: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{proc_dir}/status")).ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn effective() -> Option<u64> {
    effective_of("self")
}

/// `Err` says why process `pid` could not write the pinned maps with
/// bpf(2) itself: it lacks CAP_BPF and CAP_SYS_ADMIN, or holds them only
/// in another user namespace (where they give no power over BPF objects).
pub fn peer_may_write_maps(pid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let ns = |dir: &str| {
        std::fs::metadata(format!("/proc/{dir}/ns/user"))
            .map(|m| (m.dev(), m.ino()))
            .ok()
    };
    let theirs = ns(&pid.to_string()).ok_or("its user namespace cannot be read")?;
    if ns("self") != Some(theirs) {
        return Err("it runs in another user namespace".into());
    }
    let eff = effective_of(&pid.to_string()).ok_or("its capabilities cannot be read")?;
    if eff & (1u64 << CAP_BPF | 1u64 << CAP_SYS_ADMIN) == 0 {
        return Err("it has neither CAP_BPF nor CAP_SYS_ADMIN".into());
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_that_is_gone_may_not_write() {
        // PID 0 has no /proc entry.
        let why = peer_may_write_maps(0).unwrap_err();
        assert_eq!(why, "its user namespace cannot be read");
    }

    #[test]
    fn a_peer_is_judged_by_its_own_capabilities() {
        let eff = effective().unwrap();
        let capable = eff & (1u64 << CAP_BPF | 1u64 << CAP_SYS_ADMIN) != 0;
        let verdict = peer_may_write_maps(std::process::id());
        assert_eq!(verdict.is_ok(), capable, "{verdict:?} with CapEff {eff:#x}");
        if !capable {
            assert_eq!(
                verdict.unwrap_err(),
                "it has neither CAP_BPF nor CAP_SYS_ADMIN"
            );
        }
    }
}
