//! What the agent tells the kernel besides the policy: the exec filter,
//! and where delivered files live.

use std::path::Path;

use kernelseal_bpf::{BpfError, ExecFilter, GuardedFiles, PinLayout};
use kernelseal_config::Config;
use tracing::info;

use crate::event_log::BindingNames;

/// The exec filter and binding names of a config: binding ids are the
/// 1-based positions in `secrets`.
pub fn exec_filter(config: &Config) -> Result<(ExecFilter, BindingNames), BpfError> {
    let mut filter = ExecFilter::default();
    let mut names = Vec::new();
    for (i, binding) in config.secrets.iter().enumerate() {
        let b = &binding.value;
        filter.add(
            i as u32 + 1,
            b.selector.binary.as_deref(),
            b.selector.path.as_deref(),
        )?;
        names.push(b.name.clone());
    }
    Ok((filter, names))
}

/// The kernel dev of the secrets directory's filesystem, so the programs
/// skip the guarded-files lookup on other tmpfs mounts. 0 (check every
/// tmpfs open) when it cannot be read, or when pinned guarded files from an
/// earlier agent live elsewhere (another --secrets-dir): those must stay
/// guarded.
pub fn secrets_dev(secrets_dir: &Path, pin_dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::create_dir_all(secrets_dir)
        .and_then(|()| std::fs::metadata(secrets_dir))
        .map(|m| kernelseal_bpf::kernel_dev(m.dev()))
        .unwrap_or(0);
    for version in PinLayout::new(pin_dir).versions() {
        let Ok(guarded) = GuardedFiles::from_pin(pin_dir, version) else {
            continue;
        };
        if guarded.devs().iter().any(|d| *d != dev) {
            info!(
                "[FILE] guarded files from an earlier agent live outside {}: every tmpfs open is checked",
                secrets_dir.display()
            );
            return 0;
        }
    }
    dev
}
