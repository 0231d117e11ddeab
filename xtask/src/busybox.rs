//! The guest's busybox: the host's static `/bin/busybox`, cached under
//! `target/vm/`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::initramfs;

/// The static busybox, copied once under `target/vm/` so runs do not depend
/// on the host's copy staying put.
pub fn ensure(vm_dir: &Path) -> Result<PathBuf> {
    let cached = vm_dir.join("busybox");
    if cached.is_file() {
        return Ok(cached);
    }
    let host = Path::new("/bin/busybox");
    if !host.is_file() {
        bail!(
            "/bin/busybox not found: install the Debian package busybox-static (scripts/setup does)"
        );
    }
    let data = fs::read(host).context("reading /bin/busybox")?;
    if initramfs::elf_interpreter(&data) {
        bail!("/bin/busybox is dynamically linked: install the Debian package busybox-static");
    }
    fs::create_dir_all(vm_dir)?;
    fs::copy(host, &cached)
        .with_context(|| format!("copying /bin/busybox to {}", cached.display()))?;
    Ok(cached)
}
