//! `demo`: `examples/vm-demo.sh` run as `vm-run` runs a file, on the newest
//! kernel, with `kernelseal-attacks` installed for the script's attack step.
//! It builds as little as it can: `scripts/setup` runs it on a fresh clone.

use std::process::ExitCode;

use anyhow::Result;

use crate::kernel::Series;
use crate::util::Workspace;
use crate::vm_run::{self, Guest};

pub fn run(ws: &Workspace) -> Result<ExitCode> {
    const ATTACKER: &str = "kernelseal-attacks";
    ws.cargo_build_release(&["-p", ATTACKER, "--bin", ATTACKER])?;
    let script = ws.root.join("examples/vm-demo.sh");
    vm_run::run(
        ws,
        Series::V6_19,
        300,
        Guest::Demo(&[ws.release_bin(ATTACKER)]),
        &script,
        Vec::new(),
    )
}
