//! Reloading the config (SIGHUP, or the file changed on disk): a config
//! that fails any check changes nothing; a good one's policy and exec
//! filter are swapped in the running gate (marks stay), then its bindings
//! in the serving state.

use std::path::Path;

use kernelseal_bpf::{Gate, KernelPolicy};
use kernelseal_config::{Config, Mode};
use tracing::{error, info, warn};

use super::exec_filter;
use crate::event_log::EventLog;

/// The config file as it is now, when it loads and passes every check
/// ([`kernelseal_injector::check_config`]); otherwise `None`, logged, and
/// nothing of it is applied.
pub fn load_checked(path: &Path) -> Option<Config> {
    let loaded = kernelseal_config::load_file(path)
        .map_err(|e| e.to_string())
        .and_then(|l| {
            kernelseal_injector::check_config(&l.config)
                .map(|()| l.config)
                .map_err(|e| e.to_string())
        });
    match loaded {
        Ok(config) => Some(config),
        Err(e) => {
            error!("[CONFIG] reload failed, keeping the current policy: {e}");
            None
        }
    }
}

/// Swaps a checked config's policy and exec filter into the running gate,
/// and says whether its bindings may follow: only when the kernel's exec
/// filter now numbers the bindings as the config does (a filter entry is a
/// binding's position), or when there is no gate to disagree.
pub fn apply_policy(
    config: &Config,
    secrets_dev: u64,
    gate: Option<&mut Gate>,
    log: &mut EventLog,
) -> bool {
    let policy = KernelPolicy::new(config.policy, secrets_dev);
    let Some(gate) = gate else {
        warn!("[CONFIG] the agent started in mode=disabled; restart it to enforce");
        return true;
    };
    if policy.mode() == Mode::Disabled {
        warn!(
            "[CONFIG] switching a running gate to mode=disabled needs a restart; policy and \
             bindings kept"
        );
        return false;
    }
    let (filter, names) = match exec_filter(config) {
        Ok(f) => f,
        Err(e) => {
            error!("[CONFIG] reload failed, keeping the current policy: {e}");
            return false;
        }
    };
    // The policy first: if it fails, nothing changed. A locked node keeps
    // its policy until reboot, but its bindings may still change.
    if gate.is_locked() {
        warn!("[CONFIG] the node is locked: the policy in the kernel stays");
    } else {
        // Locking by reload takes the same check as locking at start.
        if policy.lock()
            && let Err(why) =
                super::gate_start::refuse_lock_on_dynamic_binary(gate.trusted_command())
        {
            error!("[CONFIG] reload failed, keeping the current policy: {why}");
            return false;
        }
        if let Err(e) = gate.set_policy(policy) {
            error!("[CONFIG] applying the new policy failed: {e}; bindings kept");
            return false;
        }
    }
    // Marks live in the kernel and are untouched: running processes stay
    // protected across a reload.
    if let Err(e) = gate.set_filter(filter) {
        error!("[CONFIG] applying the new exec filter failed: {e}; bindings kept");
        return false;
    }
    log.names = names;
    log_filter(config);
    log_policy(config);
    true
}

pub fn log_policy(config: &Config) {
    let p = &config.policy;
    info!(
        "[CONFIG] Policy configured: mode={}, environ={}, mem={}, maps={}, ptrace={}, selfRead={}, auditAll={}, inherit={}, perf={}",
        p.mode,
        p.block_environ,
        p.block_mem,
        p.block_maps,
        p.block_ptrace,
        p.allow_self_read,
        p.audit_all,
        p.inherit_protection,
        p.block_perf
    );
}

pub const CONFIG_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// What identifies a config file's content cheaply: modification time and
/// size of the file the path resolves to now.
pub fn file_stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

pub fn log_filter(config: &Config) {
    for b in &config.secrets {
        let b = &b.value;
        let count = b.secret_refs.len();
        if let Some(bin) = &b.selector.binary {
            info!("[REGISTER] Registered {count} secrets for binary: {bin}");
        }
        if let Some(path) = &b.selector.path {
            info!("[REGISTER] Registered {count} secrets for path: {path}");
        }
    }
    if config.policy.kernel_binary_filter {
        info!(
            "[FILTER] Kernel-side binary filtering ENABLED - exec events only for configured binaries"
        );
    } else {
        info!(
            "[FILTER] Kernel-side binary filtering DISABLED by config - monitoring all processes"
        );
    }
}
