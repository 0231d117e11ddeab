//! Input files that are not what a path check expects: `/dev/zero` (size
//! 0, endless), a FIFO with no writer (an open that never returns), a
//! directory, an oversized file, and standard input by intent (`-`). Every
//! command that reads a config or a manifest must refuse them at once with
//! exit 2 and a message naming the file, never grow without bound or hang.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kernelseal_testkit::Reaped;

/// Only a guard against a hang of the code under test: a correct run
/// returns in milliseconds, this is no timing assertion.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// Address space for the child: ample for the binary, small enough that
/// a read without bound ends in a failed allocation, not the machine's
/// out-of-memory killer.
const CHILD_AS_BYTES: libc::rlim_t = 2 << 30;

const CONFIG_LIMIT: u64 = 4 * 1024 * 1024;

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("kernelseal-input-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fifo(name: &str) -> PathBuf {
    let p = dir().join(name);
    let _ = std::fs::remove_file(&p);
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    p
}

/// Runs `kernelseal ARGS` with `stdin` (and `input` written to it when
/// given); returns (exit code, stdout, stderr).
fn run(args: &[&str], stdin: Stdio, input: Option<&[u8]>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kernelseal-core"));
    cmd.args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: CHILD_AS_BYTES,
                rlim_max: CHILD_AS_BYTES,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let mut child = Reaped(cmd.spawn().expect("runs kernelseal"));
    if let Some(bytes) = input {
        let mut w = child.0.stdin.take().unwrap();
        w.write_all(bytes).unwrap();
    }
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < HANG_GUARD,
            "kernelseal {args:?} still runs after {HANG_GUARD:?}: it hangs"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |r: Option<&mut dyn std::io::Read>| {
        let mut s = String::new();
        if let Some(r) = r {
            r.read_to_string(&mut s).unwrap();
        }
        s
    };
    let out = read(child.0.stdout.as_mut().map(|r| r as &mut dyn std::io::Read));
    let err = read(child.0.stderr.as_mut().map(|r| r as &mut dyn std::io::Read));
    (status.code().unwrap_or(-1), out, err)
}

/// Every command that reads a config file as its input.
fn config_commands(path: &str) -> Vec<Vec<String>> {
    [
        vec!["config", "validate", path],
        vec!["agent", "--config", path],
        vec!["providers", "check", "--config", path],
        vec![
            "csi-provider",
            "--config",
            path,
            "--socket",
            "/nonexistent/s.sock",
        ],
        vec!["csi", "validate", path],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(str::to_string).collect())
    .collect()
}

fn refused(path: &Path, want: &str) {
    let p = path.to_str().unwrap();
    for args in config_commands(p) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = run(&args, Stdio::null(), None);
        assert_eq!(code, 2, "kernelseal {args:?}: {out}{err}");
        let what = if args[0] == "csi" && args[1] == "validate" {
            "manifest"
        } else {
            "config"
        };
        let line = format!("kernelseal: {what} {p} {want}");
        assert!(
            err.contains(&line),
            "kernelseal {args:?}: wanted {line:?} in {err}"
        );
    }
}

#[test]
fn dev_zero_is_refused_not_read_forever() {
    refused(
        Path::new("/dev/zero"),
        "is a character device, not a regular file",
    );
}

#[test]
fn a_fifo_without_writer_is_refused_not_waited_on() {
    refused(&fifo("config.fifo"), "is a FIFO, not a regular file");
}

#[test]
fn a_directory_is_refused() {
    let d = dir().join("a-directory");
    std::fs::create_dir_all(&d).unwrap();
    refused(&d, "is a directory, not a regular file");
}

#[test]
fn a_regular_file_over_the_limit_is_refused_with_its_size() {
    let p = dir().join("big.yaml");
    let f = std::fs::File::create(&p).unwrap();
    // Sparse: nothing is written, yet a reader gets limit+1 bytes.
    f.set_len(CONFIG_LIMIT + 1).unwrap();
    refused(
        &p,
        &format!(
            "is {} bytes, over the {CONFIG_LIMIT}-byte limit",
            CONFIG_LIMIT + 1
        ),
    );
}

#[test]
fn dash_reads_standard_input_by_intent() {
    let config = b"version: v1\npolicy:\n  mode: disabled\n";
    let (code, out, err) = run(&["config", "validate", "-"], Stdio::piped(), Some(config));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("standard input: OK (0 binding(s), mode disabled)"),
        "{out}"
    );

    let manifest = b"objects: |\n  - objectName: a\n    env: KS_A\n";
    let (code, out, err) = run(&["csi", "validate", "-"], Stdio::piped(), Some(manifest));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("standard input: OK (1 object(s))"), "{out}");

    // Errors name it too, with the line.
    let (code, _, err) = run(
        &["config", "validate", "-"],
        Stdio::piped(),
        Some(b"version: v1\npolicy:\n  mood: enforce\n"),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("standard input:3:"), "{err}");
}

#[test]
fn dash_is_still_bounded() {
    for (args, what) in [
        (["config", "validate", "-"], "config"),
        (["csi", "validate", "-"], "manifest"),
    ] {
        let zero = std::fs::File::open("/dev/zero").unwrap();
        let (code, out, err) = run(&args, Stdio::from(zero), None);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        let line =
            format!("kernelseal: {what} standard input is over the {CONFIG_LIMIT}-byte limit");
        assert!(err.contains(&line), "{args:?}: wanted {line:?} in {err}");
    }
}
