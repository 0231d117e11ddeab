//! `vm-fetch`: download and cache every test kernel and busybox under
//! `target/vm/`, so later VM runs need no network.

use std::process::ExitCode;

use anyhow::Result;

use crate::busybox;
use crate::kernel::{self, Series};
use crate::util::Workspace;

pub fn run(ws: &Workspace) -> Result<ExitCode> {
    busybox::ensure(&ws.vm_dir())?;
    for series in Series::ALL {
        let k = kernel::ensure(&ws.vm_dir(), series)?;
        eprintln!(
            "xtask: kernel {} cached at {}",
            k.release,
            ws.vm_dir().display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
