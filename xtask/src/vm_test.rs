//! `vm-test`: run the in-VM test runner on each kernel and sum the results.
//!
//! The runner's closing line `N passed, M failed` is the only source of the
//! counts. A kernel whose run produced no such line, crashed, timed out, or
//! whose runner exited non-zero while claiming no failure, is counted as one
//! failure: such a run must never read as a pass.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::kernel::{self, Kernel, Series};
use crate::util::{Workspace, absolute_file};
use crate::{busybox, guest, runner, vm};

/// Runs the runner on each kernel, its output on stdout, then one line per
/// kernel and the overall `vmtest: N passed, M failed`.
pub fn run(
    ws: &Workspace,
    series: &[Series],
    runner_override: Option<PathBuf>,
    timeout: u64,
    with: &[PathBuf],
    args: Vec<String>,
) -> Result<ExitCode> {
    let runner_bin = build_runner(ws, runner_override)?;
    let busybox = busybox::ensure(&ws.vm_dir())?;
    // Fetch every kernel first, so a missing one fails before any long boot.
    let kernels = series
        .iter()
        .map(|&s| kernel::ensure(&ws.vm_dir(), s))
        .collect::<Result<Vec<Kernel>>>()?;
    let payload = guest::bin_path(&runner_bin)?;
    // Built once for every kernel.
    let mut executables = guest::base_executables(ws, with)?;
    executables.push((payload.clone(), runner_bin.clone()));
    let mut results = Vec::new();
    for kernel in &kernels {
        let spec = vm::VmSpec {
            kernel,
            busybox: &busybox,
            executables: executables.clone(),
            payload: payload.clone(),
            args: args.clone(),
            timeout: Duration::from_secs(timeout),
            label: format!("vm-test-{}", kernel.series.as_str()),
            clock: vm::Clock::Wall,
        };
        // On stdout, so the runner's output of each kernel is headed there.
        println!("=== vm-test on {} ===", kernel.release);
        let run = runner::run_logged(ws, &spec)?;
        results.push(judge(kernel.series.as_str(), &run.output, run.exit));
    }
    let all_ok = report(&results, &mut io::stdout().lock())?;
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Builds the release `kernelseal` and, unless `--runner` names one, the
/// runner; returns the runner's absolute path.
fn build_runner(ws: &Workspace, runner_override: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = runner_override {
        ws.cargo_build_kernelseal(&[])?;
        return absolute_file(&path);
    }
    let default = ws.release_bin(runner::PACKAGE);
    if ws.has_package(runner::PACKAGE)? {
        // Always rebuild so a stale runner is never tested.
        runner::build_with_kernelseal(ws)?;
    } else if default.is_file() {
        ws.cargo_build_kernelseal(&[])?;
        eprintln!(
            "xtask: warning: no package {}; using the existing {}",
            runner::PACKAGE,
            default.display()
        );
    } else {
        bail!(
            "no test runner: {} does not exist and the workspace has no package \
             {} to build it from (pass --runner PATH)",
            default.display(),
            runner::PACKAGE
        );
    }
    absolute_file(&default)
}

/// What one kernel's run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelResult {
    pub kernel: String,
    pub passed: u64,
    pub failed: u64,
    /// Why the run counts as failed beyond its own failed tests, if it does.
    pub problem: Option<String>,
}

impl KernelResult {
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.problem.is_none()
    }

    /// Failures as counted in the totals: at least one if there is a problem.
    pub fn counted_failed(&self) -> u64 {
        if self.problem.is_some() {
            self.failed.max(1)
        } else {
            self.failed
        }
    }
}

/// Parses `N passed, M failed` from a line (surrounding whitespace allowed).
pub fn parse_summary_line(line: &str) -> Option<(u64, u64)> {
    let (passed, rest) = line.trim().split_once(" passed, ")?;
    let failed = rest.strip_suffix(" failed")?;
    Some((passed.parse().ok()?, failed.parse().ok()?))
}

/// The last summary line of the runner's output, if any.
pub fn find_summary(output: &str) -> Option<(u64, u64)> {
    output.lines().rev().find_map(parse_summary_line)
}

/// Judges one kernel's run from the runner's output and exit status
/// (`Err` = the VM itself failed: crash, timeout, cannot boot).
pub fn judge(kernel: &str, output: &str, exit: Result<i32, String>) -> KernelResult {
    let summary = find_summary(output);
    let (passed, failed) = summary.unwrap_or((0, 0));
    let problem = match (&exit, summary) {
        (Err(vm_error), _) => Some(format!("VM failed: {vm_error}")),
        (Ok(_), None) => Some("the runner printed no `N passed, M failed` line".to_owned()),
        (Ok(code), Some((_, 0))) if *code != 0 => Some(format!(
            "the runner exited with status {code} although it reported no failure"
        )),
        (Ok(_), Some(_)) => None,
    };
    KernelResult {
        kernel: kernel.to_owned(),
        passed,
        failed,
        problem,
    }
}

/// Prints the per-kernel summaries and the overall line; returns whether
/// every kernel passed.
pub fn report(results: &[KernelResult], out: &mut impl Write) -> io::Result<bool> {
    writeln!(out)?;
    for r in results {
        let verdict = if r.ok() { "ok" } else { "FAILED" };
        write!(
            out,
            "vmtest [{}]: {} passed, {} failed — {verdict}",
            r.kernel, r.passed, r.failed
        )?;
        if let Some(p) = &r.problem {
            write!(out, " ({p}; counted as a failure)")?;
        }
        writeln!(out)?;
    }
    let passed: u64 = results.iter().map(|r| r.passed).sum();
    let failed: u64 = results.iter().map(KernelResult::counted_failed).sum();
    writeln!(out, "vmtest: {passed} passed, {failed} failed")?;
    Ok(!results.is_empty() && results.iter().all(KernelResult::ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_parsing() {
        assert_eq!(parse_summary_line("2 passed, 0 failed"), Some((2, 0)));
        assert_eq!(parse_summary_line("  10 passed, 3 failed\r"), Some((10, 3)));
        assert_eq!(parse_summary_line("test x passed, 0 failed"), None);
        assert_eq!(parse_summary_line("2 passed, 0 failed!"), None);
        assert_eq!(parse_summary_line("passed, failed"), None);
        assert_eq!(parse_summary_line(""), None);
    }

    #[test]
    fn last_summary_wins() {
        let out = "ok a\n1 passed, 0 failed\nok b\nFAIL c\n1 passed, 1 failed\n";
        assert_eq!(find_summary(out), Some((1, 1)));
    }

    #[test]
    fn missing_summary_is_a_failure() {
        let r = judge("6.12", "ok a\nok b\n", Ok(0));
        assert!(!r.ok());
        assert_eq!(r.counted_failed(), 1);
        let r = judge("6.12", "", Ok(0));
        assert!(!r.ok());
    }

    #[test]
    fn vm_failure_is_a_failure_even_with_a_summary() {
        let r = judge("6.19", "3 passed, 0 failed\n", Err("timed out".into()));
        assert!(!r.ok());
        assert_eq!((r.passed, r.counted_failed()), (3, 1));
    }

    #[test]
    fn nonzero_exit_without_failures_is_a_failure() {
        assert!(!judge("6.19", "3 passed, 0 failed\n", Ok(1)).ok());
        // Failed tests with a non-zero exit: the counts speak for themselves.
        let r = judge("6.19", "3 passed, 2 failed\n", Ok(1));
        assert_eq!((r.passed, r.counted_failed(), r.problem), (3, 2, None));
    }

    #[test]
    fn overall_line_sums_kernels() {
        let results = vec![
            judge("6.12", "2 passed, 0 failed\n", Ok(0)),
            judge("6.19", "2 passed, 0 failed\n", Ok(0)),
        ];
        let mut out = Vec::new();
        assert!(report(&results, &mut out).unwrap());
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().last(), Some("vmtest: 4 passed, 0 failed"));

        let results = vec![
            judge("6.12", "2 passed, 0 failed\n", Ok(0)),
            judge("6.19", "nothing\n", Ok(0)),
        ];
        let mut out = Vec::new();
        assert!(!report(&results, &mut out).unwrap());
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().last(), Some("vmtest: 2 passed, 1 failed"));
    }

    #[test]
    fn no_kernels_is_not_a_pass() {
        assert!(!report(&[], &mut Vec::new()).unwrap());
    }
}
