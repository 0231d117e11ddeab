//! `demo`: `examples/vm-demo.sh` run as `vm-run` runs a file, on the newest
//! kernel, with `kernelseal-vmtests` installed for the script's attack step.

use std::process::ExitCode;

use anyhow::Result;

use crate::kernel::Series;
use crate::util::Workspace;
use crate::{runner, vm_run};

pub fn run(ws: &Workspace) -> Result<ExitCode> {
    ws.cargo_build_release(&["-p", runner::PACKAGE, "--bin", runner::PACKAGE])?;
    let script = ws.root.join("examples/vm-demo.sh");
    vm_run::run(
        ws,
        Series::V6_19,
        300,
        &[ws.release_bin(runner::PACKAGE)],
        &script,
        Vec::new(),
    )
}
