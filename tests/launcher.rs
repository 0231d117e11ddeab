//! The `kernelseal` command as installed: kernelseal-exec's `kernelseal`
//! binary beside `kernelseal-core` (both in cargo's target directory, built
//! by `cargo test --workspace`). The agent starts through it, a wrapped app
//! gets its secret through `kernelseal exec`, and the core's help names the
//! command users type. The dispatch rules themselves are tested with a
//! stand-in core in exec/tests/launcher.rs.

use std::path::PathBuf;
use std::process::Command;

mod support;

use support::{bin, read};

const SECRET: &str = "launcher-s3cret-VALUE";

/// The `kernelseal` command next to the core.
fn command() -> PathBuf {
    let path = std::path::Path::new(bin()).with_file_name("kernelseal");
    assert!(
        path.exists(),
        "{} is missing: build it with cargo build -p kernelseal-exec (cargo test --workspace does)",
        path.display()
    );
    path
}

#[test]
fn the_agent_starts_through_the_command_and_exec_delivers() {
    let d = support::scratch("launcher", "deliver");
    let agent = support::start_agent_as(
        &command(),
        &d,
        &format!(
            "version: v1\npolicy: {{ mode: disabled }}\nsecrets:\n  - name: shell\n    selector: {{ binary: sh }}\n    secretRefs:\n      - {{ name: MY_SECRET, source: {{ value: {SECRET} }} }}\n"
        ),
        |_| {},
    );
    // The agent process runs the core's file (exec'd in place).
    let exe = std::fs::read_link(format!("/proc/{}/exe", agent._child.0.id())).unwrap();
    assert_eq!(exe.file_name().unwrap(), "kernelseal-core", "{exe:?}");
    let out = Command::new(command())
        .args(["exec", "--verbose", "--socket"])
        .arg(&agent.socket)
        .args(["--", "/bin/sh", "-c", "printf %s \"$MY_SECRET\""])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}\n{}", read(&agent.log));
    assert_eq!(String::from_utf8_lossy(&out.stdout), SECRET);
    assert!(
        err.contains("1 secret(s) from binding(s) shell: MY_SECRET"),
        "{err}"
    );
    assert!(!err.contains(SECRET));
}

#[test]
fn help_and_version_name_the_command() {
    let run = |args: &[&str]| Command::new(command()).args(args).output().unwrap();
    let version = run(&["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        format!("kernelseal {}\n", env!("CARGO_PKG_VERSION"))
    );
    let help = String::from_utf8_lossy(&run(&["--help"]).stdout).into_owned();
    assert!(help.contains("Usage: kernelseal <COMMAND>"), "{help}");
    assert!(help.contains("\n  exec "), "exec is listed: {help}");
    // The core run directly says the same: its help is the command's.
    let direct = Command::new(bin()).arg("--help").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&direct.stdout), help);
    let bad = run(&["no-such-subcommand"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Usage: kernelseal <COMMAND>"));
}
