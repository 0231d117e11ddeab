//! The `kernelseal` command's dispatch, with a stand-in `kernelseal-core`
//! (a shell script reporting how it was run) beside a copy of the binary:
//! `exec` never reaches the core; everything else reaches it in place, with
//! the arguments untouched; a missing or unusable core is a clear failure.
//! The real pair is exercised by the root package's `tests/launcher.rs`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Taken by every test for its whole run. A file being written is busy for
/// exec (ETXTBSY) while any child forked meanwhile still holds the writing
/// descriptor, so no test forks while another writes an executable.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A directory holding a copy of `kernelseal` and, when `core` is given,
/// a `kernelseal-core` script with that body and mode.
fn install(name: &str, core: Option<(&str, u32)>) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ks-launcher-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_kernelseal"), dir.join("kernelseal")).unwrap();
    if let Some((body, mode)) = core {
        let path = dir.join("kernelseal-core");
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    dir
}

/// Prints its PID, $0 and each argument on a line of its own; exits 7.
const REPORTING_CORE: &str = "#!/bin/sh\necho \"pid $$\"\necho \"argv0 $0\"\nfor a in \"$@\"; do printf 'arg %s\\n' \"$a\"; done\nexit 7\n";

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn other_subcommands_run_the_core_in_place_with_the_same_arguments() {
    let _serial = serial();
    let dir = install("pass", Some((REPORTING_CORE, 0o755)));
    let child = Command::new(dir.join("kernelseal"))
        .args(["status", "--pin-dir", "/x y", "--", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7), "the core's own exit code");
    let text = stdout(&out);
    assert!(text.contains(&format!("pid {pid}\n")), "same PID: {text}");
    // A script's $0 is its path (the kernel passes it to the interpreter),
    // so this shows which file ran, not argv[0].
    assert!(
        text.contains(&format!("argv0 {}", dir.join("kernelseal-core").display())),
        "{text}"
    );
    assert!(
        text.ends_with("arg status\narg --pin-dir\narg /x y\narg --\narg 1\n"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn non_utf8_arguments_reach_the_core_byte_for_byte() {
    let _serial = serial();
    let dir = install("raw", Some(("#!/bin/sh\nprintf %s \"$2\"\n", 0o755)));
    let raw = OsString::from_vec(vec![b'a', 0xff, b'z']);
    let out = Command::new(dir.join("kernelseal"))
        .arg("config")
        .arg(&raw)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, raw.into_vec());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exec_is_the_wrapper_and_never_reaches_the_core() {
    let _serial = serial();
    let dir = install("exec", Some((REPORTING_CORE, 0o755)));
    let run = |args: &[&str]| {
        Command::new(dir.join("kernelseal"))
            .args(args)
            .output()
            .unwrap()
    };
    let version = run(&["exec", "--version"]);
    assert_eq!(version.status.code(), Some(0));
    assert_eq!(
        stdout(&version),
        format!("kernelseal-exec {}\n", env!("CARGO_PKG_VERSION"))
    );
    let help = run(&["exec", "--help"]);
    assert!(stdout(&help).contains("usage: kernelseal-exec"), "{help:?}");
    // The wrapper's own exit codes: bad usage, and an agent that is down
    // with --on-error continue running CMD without secrets.
    assert_eq!(run(&["exec", "--bogus"]).status.code(), Some(2));
    let ran = run(&[
        "exec",
        "--socket",
        "/nonexistent/kernelseal.sock",
        "--timeout",
        "0s",
        "--on-error",
        "continue",
        "--",
        "/bin/sh",
        "-c",
        "echo wrapped; exit 3",
    ]);
    assert_eq!(ran.status.code(), Some(3), "{ran:?}");
    assert_eq!(stdout(&ran), "wrapped\n");
    // Only the first argument selects the wrapper: an `exec` later on is
    // the core's to read.
    let later = run(&["providers", "exec"]);
    assert_eq!(later.status.code(), Some(7));
    assert!(stdout(&later).ends_with("arg providers\narg exec\n"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn no_arguments_and_help_are_the_cores() {
    let _serial = serial();
    let dir = install("help", Some((REPORTING_CORE, 0o755)));
    let out = Command::new(dir.join("kernelseal")).output().unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert!(!stdout(&out).contains("arg "), "no arguments added");
    let out = Command::new(dir.join("kernelseal"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(stdout(&out).ends_with("arg --help\n"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_core_beside_the_real_file_is_run_through_a_symlink() {
    let _serial = serial();
    let dir = install("link", Some((REPORTING_CORE, 0o755)));
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    // A decoy core next to the symlink: the real file's directory wins.
    std::fs::write(elsewhere.join("kernelseal-core"), "#!/bin/sh\necho decoy\n").unwrap();
    std::fs::set_permissions(
        elsewhere.join("kernelseal-core"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink(dir.join("kernelseal"), elsewhere.join("kernelseal")).unwrap();
    let out = Command::new(elsewhere.join("kernelseal"))
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert!(!stdout(&out).contains("decoy"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_environment_variable_cannot_choose_the_core() {
    let _serial = serial();
    let dir = install("env", Some((REPORTING_CORE, 0o755)));
    let out = Command::new(dir.join("kernelseal"))
        .arg("check")
        .env("PATH", "/nonexistent")
        .env("KERNELSEAL_CORE", "/bin/false")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn assert_failure(dir: &Path, code: i32, reason: &str) {
    let out = Command::new(dir.join("kernelseal"))
        .arg("check")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(
        err.starts_with(&format!(
            "kernelseal: cannot run {}: {reason}",
            dir.join("kernelseal-core").display()
        )),
        "{err}"
    );
    assert!(
        err.contains("every subcommand but exec is in kernelseal-core"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn a_missing_or_unusable_core_is_named() {
    let _serial = serial();
    let missing = install("missing", None);
    assert_failure(&missing, 127, "No such file or directory");
    std::fs::remove_dir_all(&missing).unwrap();
    let unusable = install("unusable", Some((REPORTING_CORE, 0o644)));
    assert_failure(&unusable, 126, "Permission denied");
    std::fs::remove_dir_all(&unusable).unwrap();
}

#[test]
fn without_proc_the_core_beside_the_exec_path_is_run() {
    let _serial = serial();
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: unmounting /proc in a mount namespace needs root");
        return;
    }
    let dir = install("noproc", Some((REPORTING_CORE, 0o755)));
    // A private mount namespace without /proc; once by absolute path, once
    // by a path relative to the working directory.
    for program in [
        dir.join("kernelseal").display().to_string(),
        "./kernelseal".into(),
    ] {
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("umount -l /proc && test ! -e /proc/self && exec \"$0\" check")
            .arg(&program)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(7), "{program}: {out:?}");
        assert!(stdout(&out).ends_with("arg check\n"), "{out:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
