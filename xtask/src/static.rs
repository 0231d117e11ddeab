//! `static`: what a host installs, statically linked into `target/static/`
//! (the VM commands build the same files for /usr/bin): `kernelseal-core`,
//! the `kernelseal` command that execs it, and the wrapper
//! `kernelseal-exec`; their paths on stdout.

use std::process::ExitCode;

use anyhow::Result;

use crate::util::{StaticLibc, Workspace};

pub fn run(ws: &Workspace) -> Result<ExitCode> {
    let core = ws.cargo_build_static("kernelseal", "kernelseal-core", StaticLibc::Glibc)?;
    println!("{}", core.display());
    crate::static_exec::run(ws)
}
