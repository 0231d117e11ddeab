use serde::Deserialize;

/// What the kernel programs do when a protected process is accessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No protection; secrets are still delivered (local testing only).
    Disabled,
    /// Accesses are allowed and logged.
    Audit,
    /// Accesses are refused and logged. The default: fail closed.
    #[default]
    Enforce,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Disabled => "disabled",
            Mode::Audit => "audit",
            Mode::Enforce => "enforce",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `policy:` section. Defaults are the original KernelSeal's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Policy {
    pub mode: Mode,
    pub block_environ: bool,
    pub block_mem: bool,
    pub block_maps: bool,
    pub block_ptrace: bool,
    /// Perf events that could sample a protected process's memory or
    /// registers (not in the original KernelSeal).
    pub block_perf: bool,
    pub allow_self_read: bool,
    pub audit_all: bool,
    pub kernel_binary_filter: bool,
    pub inherit_protection: bool,
    /// Lock mode: until reboot, no process but KernelSeal loads code into
    /// the kernel or opens its ways into memory, and KernelSeal's policy
    /// and pins cannot change (not in the original KernelSeal).
    pub lock: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            mode: Mode::Enforce,
            block_environ: true,
            block_mem: true,
            block_maps: false,
            block_ptrace: true,
            block_perf: true,
            allow_self_read: true,
            audit_all: false,
            kernel_binary_filter: true,
            inherit_protection: true,
            lock: false,
        }
    }
}
