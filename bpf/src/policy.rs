//! The policy as the kernel programs see it: the config's `policy:`
//! switches as parsed (one type from the file to the map), plus what only
//! the running node knows.

use kernelseal_config::{Mode, Policy};

use crate::abi::{self, RawPolicy};

/// What the agent writes into the policy map. Changing it takes effect on
/// the next access, no reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelPolicy {
    /// `policy:` of the config.
    pub switches: Policy,
    /// The running kernel has the perfmon fallback of 6.15
    /// ([`crate::kernel::has_perfmon_fallback`]); not a config switch.
    pub perfmon_fallback: bool,
    /// Kernel dev_t ([`crate::kernel_dev`]) of the tmpfs that holds
    /// delivered files; 0 makes the programs check every tmpfs open.
    pub secrets_dev: u64,
}

impl KernelPolicy {
    /// The config's switches on this node.
    pub fn new(switches: Policy, secrets_dev: u64) -> Self {
        KernelPolicy {
            switches,
            perfmon_fallback: crate::kernel::has_perfmon_fallback(),
            secrets_dev,
        }
    }

    /// A policy under which the programs refuse nothing and report nothing
    /// (no access events; exec events only for an empty filter): for probes.
    pub fn inert() -> Self {
        KernelPolicy {
            switches: Policy {
                mode: Mode::Disabled,
                block_environ: false,
                block_mem: false,
                block_maps: false,
                block_ptrace: false,
                block_perf: false,
                allow_self_read: true,
                audit_all: false,
                kernel_binary_filter: true,
                inherit_protection: false,
                lock: false,
            },
            perfmon_fallback: false,
            secrets_dev: 0,
        }
    }

    pub fn mode(&self) -> Mode {
        self.switches.mode
    }

    /// policy.lock: written last, then the map is frozen until reboot.
    pub fn lock(&self) -> bool {
        self.switches.lock
    }

    /// This policy without the lock: what the programs enforce while they
    /// are being attached (a locked policy would refuse the attaching).
    pub fn unlocked(mut self) -> Self {
        self.switches.lock = false;
        self
    }

    pub fn to_raw(self) -> RawPolicy {
        let p = &self.switches;
        let mode = match p.mode {
            Mode::Disabled => abi::MODE_DISABLED,
            Mode::Audit => abi::MODE_AUDIT,
            Mode::Enforce => abi::MODE_ENFORCE,
        };
        let mut flags = 0;
        for (on, bit) in [
            (p.block_environ, abi::POLICY_BLOCK_ENVIRON),
            (p.block_mem, abi::POLICY_BLOCK_MEM),
            (p.block_maps, abi::POLICY_BLOCK_MAPS),
            (p.block_ptrace, abi::POLICY_BLOCK_PTRACE),
            (p.block_perf, abi::POLICY_BLOCK_PERF),
            (self.perfmon_fallback, abi::POLICY_PERFMON_FALLBACK),
            (p.allow_self_read, abi::POLICY_ALLOW_SELF_READ),
            (p.audit_all, abi::POLICY_AUDIT_ALL),
            (p.inherit_protection, abi::POLICY_INHERIT),
            (p.kernel_binary_filter, abi::POLICY_EXEC_FILTER),
            (p.lock, abi::POLICY_LOCK),
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
            switches: Policy {
                mode: Mode::Audit,
                allow_self_read: false,
                kernel_binary_filter: false,
                ..KernelPolicy::inert().switches
            },
            ..KernelPolicy::inert()
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
            switches: Policy {
                block_environ: true,
                mode: Mode::Enforce,
                ..all_off.switches
            },
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
            switches: Policy {
                inherit_protection: true,
                ..all_off.switches
            },
            ..all_off
        };
        assert_eq!(inherit.to_raw().flags, abi::POLICY_INHERIT);
        let locked = KernelPolicy {
            switches: Policy {
                lock: true,
                ..all_off.switches
            },
            ..all_off
        };
        assert_eq!(locked.to_raw().flags, abi::POLICY_LOCK);
        assert_eq!(locked.unlocked().to_raw().flags, 0);
    }
}
