//! `vm-run`: boot one kernel with the release `kernelseal`, run one file in
//! it as root, pass its output through byte for byte and exit with its
//! status; the harness's own lines go to stderr.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use crate::kernel::{self, Series};
use crate::util::{Workspace, absolute_file};
use crate::{busybox, guest, vm};

/// Which KernelSeal builds the guest gets.
pub enum Guest<'a> {
    /// `guest::base_executables`: the static and dynamic `kernelseal`, the
    /// static wrapper, and these files.
    Full(&'a [PathBuf]),
    /// `guest::demo_executables`: the dynamic `kernelseal` and these files.
    Demo(&'a [PathBuf]),
}

pub fn run(
    ws: &Workspace,
    series: Series,
    timeout: u64,
    guest: Guest<'_>,
    file: &Path,
    args: Vec<String>,
) -> Result<ExitCode> {
    let file = absolute_file(file)?;
    ws.cargo_build_kernelseal(&[])?;
    let kernel = kernel::ensure(&ws.vm_dir(), series)?;
    let busybox = busybox::ensure(&ws.vm_dir())?;
    let mut executables = match guest {
        Guest::Full(with) => guest::base_executables(ws, with)?,
        Guest::Demo(with) => guest::demo_executables(ws, with)?,
    };
    let payload = guest::bin_path(&file)?;
    executables.push((payload.clone(), file));
    let spec = vm::VmSpec {
        kernel: &kernel,
        busybox: &busybox,
        executables,
        payload,
        args,
        timeout: Duration::from_secs(timeout),
        label: format!("vm-run-{}", series.as_str()),
        clock: vm::Clock::Wall,
    };
    eprintln!(
        "xtask: booting {} (TCG, timeout {timeout} s)",
        kernel.release
    );
    let stdout = io::stdout();
    let outcome = vm::run(&ws.vm_dir(), &spec, &mut stdout.lock())?;
    eprintln!("xtask: {}", outcome.timing(&kernel));
    Ok(ExitCode::from(
        u8::try_from(outcome.exit_status).unwrap_or(u8::MAX),
    ))
}
