//! `static`: `kernelseal` statically linked into `target/static/`, its path
//! on stdout (the VM commands build the same file for /usr/bin/kernelseal).

use std::process::ExitCode;

use anyhow::Result;

use crate::util::{StaticLibc, Workspace};

pub fn run(ws: &Workspace) -> Result<ExitCode> {
    let out = ws.cargo_build_static("kernelseal", "kernelseal", StaticLibc::Glibc)?;
    println!("{}", out.display());
    Ok(ExitCode::SUCCESS)
}
