//! `vm-bench`: which clock the hook-cost benchmark measures with, and the
//! closing summary that repeats each kernel's figures under that mode.
//!
//! The guest (`kernelseal-vmtests bench`) prints two lines per operation,
//! `bench: <operation>  <detached> -> <attached> <unit> (<percent>) …` and
//! `bench: <operation>  <detached> -> <floor> -> <attached> <unit> …`, the
//! floor being the same hooks with empty programs; those lines are the
//! figures the summary collects.

use std::io::{self, Write};

use crate::vm::Clock;

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
