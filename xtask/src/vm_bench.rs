//! `vm-bench`: the hook-cost benchmark on each kernel, which clock it
//! measures with, and the closing summary that repeats each kernel's
//! figures under that mode.
//!
//! The guest (`kernelseal-vmtests bench`) prints two lines per operation,
//! `bench: <operation>  <detached> -> <attached> <unit> (<percent>) …` and
//! `bench: <operation>  <detached> -> <floor> -> <attached> <unit> …`, the
//! floor being the same hooks with empty programs; those lines are the
//! figures the summary collects.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use crate::kernel::{self, Series};
use crate::util::{Workspace, absolute_file};
use crate::vm::{self, Clock};
use crate::{busybox, guest, runner};

/// Runs `kernelseal-vmtests bench` on each kernel, its output on stdout,
/// then a summary of every kernel's figures headed by the mode.
pub fn run(ws: &Workspace, series: &[Series], clock: Clock, timeout: u64) -> Result<ExitCode> {
    runner::build_with_kernelseal(ws)?;
    let runner_bin = absolute_file(&ws.release_bin(runner::PACKAGE))?;
    let busybox = busybox::ensure(&ws.vm_dir())?;
    let payload = guest::bin_path(&runner_bin)?;
    // Built once for every kernel.
    let mut executables = guest::base_executables(ws, &[])?;
    executables.push((payload.clone(), runner_bin.clone()));
    let mut results = Vec::new();
    for &one in series {
        let kernel = kernel::ensure(&ws.vm_dir(), one)?;
        let spec = vm::VmSpec {
            kernel: &kernel,
            busybox: &busybox,
            executables: executables.clone(),
            payload: payload.clone(),
            args: guest_args(clock),
            timeout: Duration::from_secs(timeout),
            label: format!("vm-bench-{}", one.as_str()),
            clock,
        };
        println!(
            "=== vm-bench on {} ({}, timeout {timeout} s) ===",
            kernel.release,
            mode_name(clock)
        );
        let run = runner::run_logged(ws, &spec)?;
        let problem = match run.exit {
            Ok(0) => None,
            Ok(status) => Some(format!("exit status {status}")),
            Err(vm_error) => Some(vm_error),
        };
        results.push(KernelBench {
            kernel: kernel.release.clone(),
            figures: figures(&run.output),
            problem,
        });
    }
    let all_ok = report(clock, &results, &mut io::stdout().lock())?;
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The clock's name in the summary and in the guest's arguments.
pub fn mode_name(clock: Clock) -> &'static str {
    match clock {
        Clock::Icount => "icount",
        Clock::Wall => "wall",
    }
}

/// What the figures mean in this mode, for the summary's heading.
pub fn describe(clock: Clock) -> &'static str {
    match clock {
        Clock::Icount => {
            "guest instructions per op (QEMU -icount shift=0,sleep=off), the same on any host"
        }
        Clock::Wall => "host nanoseconds per op under TCG, noisy (host load shows in them)",
    }
}

/// The guest's arguments: `bench --icount` or `bench --wall`.
pub fn guest_args(clock: Clock) -> Vec<String> {
    vec!["bench".to_owned(), format!("--{}", mode_name(clock))]
}

/// The per-operation figure lines of one kernel's output, without the
/// `bench: ` prefix.
pub fn figures(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("bench: "))
        .filter(|l| l.contains(" -> "))
        .map(str::to_owned)
        .collect()
}

/// What one kernel's run produced.
pub struct KernelBench {
    pub kernel: String,
    pub figures: Vec<String>,
    /// Why the run failed, if it did.
    pub problem: Option<String>,
}

impl KernelBench {
    fn ok(&self) -> bool {
        self.problem.is_none() && !self.figures.is_empty()
    }
}

/// Prints the mode, every kernel's figures and a closing line; returns
/// whether every kernel produced figures.
pub fn report(clock: Clock, results: &[KernelBench], out: &mut impl Write) -> io::Result<bool> {
    writeln!(out)?;
    writeln!(
        out,
        "vm-bench summary, mode {}: {}",
        mode_name(clock),
        describe(clock)
    )?;
    for r in results {
        writeln!(out, "[{}]", r.kernel)?;
        for f in &r.figures {
            writeln!(out, "  {f}")?;
        }
        match (&r.problem, r.figures.is_empty()) {
            (Some(p), _) => writeln!(out, "  FAILED: {p}")?,
            (None, true) => writeln!(out, "  FAILED: the bench printed no figures")?,
            (None, false) => {}
        }
    }
    let failed = results.iter().filter(|r| !r.ok()).count();
    writeln!(
        out,
        "vm-bench ({}): {} kernel(s) measured, {failed} failed",
        mode_name(clock),
        results.len() - failed
    )?;
    Ok(!results.is_empty() && failed == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "bench: clock icount\r\nbench: round 1 of 4 done\n\
        bench: open()+close() regular file  5203 -> 5542 insns/op (+6.5 %)\n\
        bench: open()+close() regular file  5203 -> 5390 -> 5542 insns/op (detached -> floor -> attached)\n\
        bench: failed to start\n";

    #[test]
    fn figures_are_the_lines_with_an_arrow() {
        assert_eq!(
            figures(OUTPUT),
            [
                "open()+close() regular file  5203 -> 5542 insns/op (+6.5 %)",
                "open()+close() regular file  5203 -> 5390 -> 5542 insns/op (detached -> floor -> attached)",
            ]
        );
        assert!(figures("open -> close\n").is_empty(), "needs the prefix");
    }

    #[test]
    fn guest_args_name_the_mode() {
        assert_eq!(guest_args(Clock::Icount), ["bench", "--icount"]);
        assert_eq!(guest_args(Clock::Wall), ["bench", "--wall"]);
    }

    #[test]
    fn summary_names_the_mode_and_counts_failures() {
        let results = [
            KernelBench {
                kernel: "6.12".into(),
                figures: figures(OUTPUT),
                problem: None,
            },
            KernelBench {
                kernel: "6.19".into(),
                figures: Vec::new(),
                problem: None,
            },
        ];
        let mut out = Vec::new();
        assert!(!report(Clock::Icount, &results, &mut out).unwrap());
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("mode icount: guest instructions per op"),
            "{text}"
        );
        assert!(text.contains("  open()+close() regular file  5203 -> 5542"));
        assert!(text.contains("  open()+close() regular file  5203 -> 5390 -> 5542"));
        assert!(text.contains("[6.19]\n  FAILED: the bench printed no figures"));
        assert_eq!(
            text.lines().last(),
            Some("vm-bench (icount): 1 kernel(s) measured, 1 failed")
        );
    }

    #[test]
    fn all_measured_is_a_pass() {
        let results = [KernelBench {
            kernel: "6.19".into(),
            figures: figures(OUTPUT),
            problem: None,
        }];
        let mut out = Vec::new();
        assert!(report(Clock::Wall, &results, &mut out).unwrap());
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("mode wall: host nanoseconds")
        );
        assert!(!report(Clock::Wall, &[], &mut Vec::new()).unwrap());
    }
}
