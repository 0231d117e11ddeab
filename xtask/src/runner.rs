//! The in-VM runner as `vm-test` and `vm-bench` run it: one boot per
//! kernel, its output passed to stdout as it arrives and kept, for judging
//! the run and in `target/vm/logs/<label>.output.log`.

use std::fs;
use std::io::{self, Write};

use anyhow::{Context, Result};

use crate::util::Workspace;
use crate::vm::{self, VmSpec};

/// The package and binary of the runner (`target/release/kernelseal-vmtests`).
pub const PACKAGE: &str = "kernelseal-vmtests";

/// Builds the release `kernelseal`, `kernelseal-core` and the runner.
pub fn build_with_kernelseal(ws: &Workspace) -> Result<()> {
    ws.cargo_build_kernelseal(&[PACKAGE])
}

/// What one kernel's boot gave.
pub struct RunnerRun {
    /// The payload's stdout and stderr.
    pub output: String,
    /// Its exit status, or why the VM failed (crash, timeout, cannot boot).
    pub exit: Result<i32, String>,
}

/// Boots `spec`, then prints `=== <timing>` on stdout, or the VM's error on
/// stderr; a VM failure is part of the result, only a log that cannot be
/// written is an error.
pub fn run_logged(ws: &Workspace, spec: &VmSpec) -> Result<RunnerRun> {
    let mut captured = Vec::new();
    let outcome = {
        let stdout = io::stdout();
        let mut tee = Tee(stdout.lock(), &mut captured);
        vm::run(&ws.vm_dir(), spec, &mut tee)
    };
    let log = ws
        .vm_dir()
        .join("logs")
        .join(format!("{}.output.log", spec.label));
    fs::write(&log, &captured).with_context(|| format!("writing {}", log.display()))?;
    let exit = match outcome {
        Ok(o) => {
            println!("=== {}", o.timing(spec.kernel));
            Ok(o.exit_status)
        }
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            Err(format!("{e}"))
        }
    };
    Ok(RunnerRun {
        output: String::from_utf8_lossy(&captured).into_owned(),
        exit,
    })
}

/// Passes output on to the terminal and keeps a copy for parsing.
struct Tee<'a, W: Write>(W, &'a mut Vec<u8>);

impl<W: Write> Write for Tee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(buf)?;
        self.1.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
