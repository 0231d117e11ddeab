//! `static-exec`: the wrapper `kernelseal-exec` and the `kernelseal`
//! command (the same crate; it runs `exec` itself and execs
//! `kernelseal-core` for the rest) statically linked into `target/static/`,
//! their paths on stdout.

use std::process::ExitCode;

use anyhow::Result;

use crate::util::{StaticLibc, Workspace};

pub fn run(ws: &Workspace) -> Result<ExitCode> {
    let libc = StaticLibc::for_wrapper()?;
    for bin in ["kernelseal-exec", "kernelseal"] {
        let out = ws.cargo_build_static("kernelseal-exec", bin, libc)?;
        println!("{}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}
