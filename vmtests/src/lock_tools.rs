//! `kernelseal-vmtests lock-tools`: what real tracing tools still do on a
//! locked node, each run first on the unlocked node (the control) and then
//! locked, printed as a table. Not part of the suite: bpftrace brings 200 MB
//! of LLVM into the VM. Run by hand (the README's lock-mode section shows
//! the result):
//!
//! ```text
//! cargo xtask vm-run --kernel 6.19 --with /usr/bin/bpftrace --with /usr/bin/perf \
//!     --with /usr/sbin/bpftool target/release/kernelseal-vmtests lock-tools
//! ```

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::agent::{Agent, Policy, wait_log_line};

struct Tool {
    /// What an operator would call it.
    name: &'static str,
    argv: &'static [&'static str],
}

const TOOLS: &[Tool] = &[
    Tool {
        name: "bpftrace, tracepoint",
        argv: &[
            "bpftrace",
            "-e",
            "tracepoint:syscalls:sys_enter_getppid { exit(); }",
        ],
    },
    Tool {
        name: "bpftrace, kprobe",
        argv: &["bpftrace", "-e", "kprobe:do_sys_openat2 { exit(); }"],
    },
    Tool {
        name: "bpftrace, kfunc (fentry)",
        argv: &["bpftrace", "-e", "kfunc:do_sys_openat2 { exit(); }"],
    },
    Tool {
        name: "bpftrace, BEGIN (uprobe on itself)",
        argv: &["bpftrace", "-e", "BEGIN { exit(); }"],
    },
    Tool {
        name: "perf stat (software counter)",
        argv: &["perf", "stat", "-e", "task-clock", "--", "/bin/true"],
    },
    Tool {
        name: "perf record, CPU-wide sampling with call graphs",
        argv: &[
            "perf",
            "record",
            "-e",
            "cpu-clock",
            "-g",
            "-a",
            "-o",
            "/tmp/perf.data",
            "--",
            "sleep",
            "1",
        ],
    },
    Tool {
        name: "perf record, CPU-wide sampling of instruction pointers",
        argv: &[
            "perf",
            "record",
            "-e",
            "cpu-clock",
            "-a",
            "-o",
            "/tmp/perf.data",
            "--",
            "sleep",
            "1",
        ],
    },
    Tool {
        name: "perf record, tracepoint",
        argv: &[
            "perf",
            "record",
            "-e",
            "syscalls:sys_enter_getppid",
            "-a",
            "-o",
            "/tmp/perf.data",
            "--",
            "sleep",
            "1",
        ],
    },
    Tool {
        name: "perf probe (kprobe event)",
        argv: &["perf", "probe", "-a", "do_sys_openat2"],
    },
    Tool {
        name: "bpftool prog show",
        argv: &["bpftool", "prog", "show"],
    },
];

/// One run: whether it succeeded, and its last line of output.
struct Outcome {
    ok: bool,
    said: String,
}

pub fn run() -> Result<(), String> {
    crate::lock_suite::mount_tracefs();
    let _ = Command::new("mount")
        .args(["-t", "debugfs", "nodev", "/sys/kernel/debug"])
        .status();
    let agent = Agent::start_with(&Policy::ENFORCE_ALL.yaml(), &[])?;
    let unlocked: Vec<Outcome> = TOOLS.iter().map(attempt).collect();
    // perf probe leaves its kprobe event behind.
    let _ = Command::new("perf").args(["probe", "-d", "*"]).output();
    agent.stop()?;
    let yaml = Policy::ENFORCE_ALL
        .yaml()
        .replace("  mode: enforce\n", "  mode: enforce\n  lock: true\n");
    let _locked_agent = Agent::start_with(&yaml, &[])?;
    wait_log_line(&["[LOCK] the node is locked until reboot"])?;
    let locked: Vec<Outcome> = TOOLS.iter().map(attempt).collect();
    println!("| tool | unlocked | locked |");
    println!("|---|---|---|");
    for ((tool, u), l) in TOOLS.iter().zip(&unlocked).zip(&locked) {
        println!("| {} | {} | {} |", tool.name, cell(u), cell(l));
    }
    Ok(())
}

fn cell(o: &Outcome) -> String {
    let verdict = if o.ok { "works" } else { "fails" };
    if o.said.is_empty() {
        verdict.into()
    } else {
        format!("{verdict}: `{}`", o.said.replace('|', "/"))
    }
}

/// Runs the tool for at most a minute while another thread makes the
/// syscalls its probes wait for.
fn attempt(tool: &Tool) -> Outcome {
    let path = format!("/usr/bin/{}", tool.argv[0]);
    let exe = if std::path::Path::new(&path).exists() {
        path
    } else {
        format!("/usr/sbin/{}", tool.argv[0])
    };
    if !std::path::Path::new(&exe).exists() {
        return Outcome {
            ok: false,
            said: format!("{} is not in the VM (pass --with)", tool.argv[0]),
        };
    }
    let stop = Arc::new(AtomicBool::new(false));
    let trigger = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: getppid has no arguments and cannot fail.
                unsafe { libc::getppid() };
                let _ = std::fs::read("/proc/version");
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let outcome = run_bounded(&exe, &tool.argv[1..], Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    let _ = trigger.join();
    outcome
}

/// The tool's output goes to a file: a pipe nobody reads while it runs
/// would stall a talkative tool.
fn run_bounded(exe: &str, args: &[&str], limit: Duration) -> Outcome {
    const OUTPUT: &str = "/tmp/lock-tool.out";
    let spawned = std::fs::File::create(OUTPUT)
        .and_then(|out| Ok((out.try_clone()?, out)))
        .and_then(|(out, err)| {
            Command::new(exe)
                .args(args)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
        });
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                ok: false,
                said: format!("cannot run {exe}: {e}"),
            };
        }
    };
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let text = String::from_utf8_lossy(&std::fs::read(OUTPUT).unwrap_or_default()).into_owned();
    let last = text
        .lines()
        .map(str::trim)
        .rfind(|l| l.chars().any(char::is_alphabetic))
        .unwrap_or_default()
        .chars()
        .take(110)
        .collect::<String>();
    match status {
        Some(s) => Outcome {
            ok: s.success(),
            said: last,
        },
        None => Outcome {
            ok: false,
            said: format!("no exit within {} s; {last}", limit.as_secs()),
        },
    }
}
