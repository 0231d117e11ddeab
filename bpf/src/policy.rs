//! The policy as the kernel programs see it.

use crate::abi::{self, RawPolicy};

/// `policy.mode` of the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelMode {
    Disabled,
    Audit,
    Enforce,
}

/// The switches of `policy:`, as one value the agent writes into the
/// policy map. Changing it takes effect on the next access, no reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelPolicy {
    pub mode: KernelMode,
    pub block_environ: bool,
    pub block_mem: bool,
    pub block_maps: bool,
    pub block_ptrace: bool,
    /// blockPerf: perf events that could sample a protected process.
    pub block_perf: bool,
    /// The running kernel has the perfmon fallback of 6.15
    /// ([`crate::kernel::has_perfmon_fallback`]); not a config switch.
    pub perfmon_fallback: bool,
    pub allow_self_read: bool,
    pub audit_all: bool,
    pub inherit_protection: bool,
    /// kernelBinaryFilter: exec events only for configured binaries.
    pub exec_filter: bool,
    /// Kernel dev_t ([`crate::kernel_dev`]) of the tmpfs that holds
    /// delivered files; 0 makes the programs check every tmpfs open.
    pub secrets_dev: u64,
    /// policy.lock: written last, then the map is frozen until reboot.
    pub lock: bool,
}

impl KernelPolicy {
    /// A policy under which the programs refuse nothing and report nothing
    /// (no access events; exec events only for an empty filter): for probes.
    pub fn inert() -> Self {
        KernelPolicy {
            mode: KernelMode::Disabled,
            block_environ: false,
            block_mem: false,
            block_maps: false,
            block_ptrace: false,
            block_perf: false,
            perfmon_fallback: false,
            allow_self_read: true,
            audit_all: false,
            inherit_protection: false,
            exec_filter: true,
            secrets_dev: 0,
            lock: false,
        }
    }

    /// This policy without the lock: what the programs enforce while they
    /// are being attached (a locked policy would refuse the attaching).
    pub fn unlocked(self) -> Self {
        KernelPolicy {
            lock: false,
            ..self
        }
    }

    pub fn to_raw(self) -> RawPolicy {
        let mode = match self.mode {
            KernelMode::Disabled => abi::MODE_DISABLED,
            KernelMode::Audit => abi::MODE_AUDIT,
            KernelMode::Enforce => abi::MODE_ENFORCE,
        };
        let mut flags = 0;
        for (on, bit) in [
            (self.block_environ, abi::POLICY_BLOCK_ENVIRON),
            (self.block_mem, abi::POLICY_BLOCK_MEM),
            (self.block_maps, abi::POLICY_BLOCK_MAPS),
            (self.block_ptrace, abi::POLICY_BLOCK_PTRACE),
            (self.block_perf, abi::POLICY_BLOCK_PERF),
            (self.perfmon_fallback, abi::POLICY_PERFMON_FALLBACK),
            (self.allow_self_read, abi::POLICY_ALLOW_SELF_READ),
            (self.audit_all, abi::POLICY_AUDIT_ALL),
            (self.inherit_protection, abi::POLICY_INHERIT),
            (self.exec_filter, abi::POLICY_EXEC_FILTER),
            (self.lock, abi::POLICY_LOCK),
        ] {
            if on {
                flags |= bit;
            }
        }
        RawPolicy {
            mode,
            flags,
            secrets_dev: self.secrets_dev,
        }
    }
}

/// Whether the policy pinned under `pin_dir` (this build's layout) is
/// locked: for commands that change marks without a gate of their own.
/// `false` when nothing is pinned there.
pub fn pinned_policy_locked(pin_dir: &std::path::Path) -> Result<bool, crate::BpfError> {
    let path = crate::PinLayout::new(pin_dir).map(crate::gate::POLICY_MAP);
    if !path.exists() {
        return Ok(false);
    }
    let data = aya::maps::MapData::from_pin(&path).map_err(|e| crate::BpfError::Adopt {
        dir: pin_dir.display().to_string(),
        reason: format!("policy map: {e}"),
    })?;
    let raw = crate::gate::read_policy_map(&aya::maps::Map::Array(data))?;
    Ok(raw.flags & abi::POLICY_LOCK != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_map_one_to_one() {
        let all_off = KernelPolicy {
            mode: KernelMode::Audit,
            block_environ: false,
            block_mem: false,
            block_maps: false,
            block_ptrace: false,
            block_perf: false,
            perfmon_fallback: false,
            allow_self_read: false,
            audit_all: false,
            inherit_protection: false,
            exec_filter: false,
            secrets_dev: 0,
            lock: false,
        };
        assert_eq!(
            all_off.to_raw(),
            RawPolicy {
                mode: abi::MODE_AUDIT,
                flags: 0,
                secrets_dev: 0,
            }
        );
        let env_only = KernelPolicy {
            block_environ: true,
            mode: KernelMode::Enforce,
            ..all_off
        };
        assert_eq!(
            env_only.to_raw(),
            RawPolicy {
                mode: abi::MODE_ENFORCE,
                flags: abi::POLICY_BLOCK_ENVIRON,
                secrets_dev: 0,
            }
        );
        let inherit = KernelPolicy {
            inherit_protection: true,
            ..all_off
        };
        assert_eq!(inherit.to_raw().flags, abi::POLICY_INHERIT);
        let locked = KernelPolicy {
            lock: true,
            ..all_off
        };
        assert_eq!(locked.to_raw().flags, abi::POLICY_LOCK);
        assert_eq!(locked.unlocked().to_raw().flags, 0);
    }
}
