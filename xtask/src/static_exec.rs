//! `static-exec`: the wrapper `kernelseal-exec` statically linked into
//! `target/static/`, its path on stdout.

use std::process::ExitCode;

use anyhow::Result;

use crate::util::{StaticLibc, Workspace};

pub fn run(ws: &Workspace) -> Result<ExitCode> {
    let out = ws.cargo_build_static(
        "kernelseal-exec",
        "kernelseal-exec",
        StaticLibc::for_wrapper()?,
    )?;
    println!("{}", out.display());
    Ok(ExitCode::SUCCESS)
}
