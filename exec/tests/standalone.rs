//! The standalone `kernelseal-exec` binary (no_main, its own entry point):
//! exit codes and argument pass-through, without an agent.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::Command;

fn wrapper() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kernelseal-exec"))
}

#[test]
fn non_utf8_arguments_reach_the_program_byte_for_byte() {
    let raw = OsString::from_vec(vec![b'a', 0xff, b'z']);
    let out = wrapper()
        .args(["--socket", "/nonexistent/kernelseal.sock"])
        .args(["--timeout", "0s", "--on-error", "continue", "--"])
        .args(["/bin/sh", "-c", "printf %s \"$1\"", "sh"])
        .arg(&raw)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, raw.into_vec());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WITHOUT secrets"), "{err}");
}

#[test]
fn exit_codes_are_the_documented_ones() {
    let code = |args: &[&str]| wrapper().args(args).output().unwrap().status.code();
    assert_eq!(code(&["--help"]), Some(0));
    assert_eq!(code(&[]), Some(2), "no command");
    assert_eq!(code(&["--bogus", "x"]), Some(2));
    assert_eq!(
        code(&[
            "--socket",
            "/nonexistent",
            "--timeout",
            "0s",
            "--",
            "/bin/true"
        ]),
        Some(125),
        "agent unavailable, --on-error fail"
    );
    assert_eq!(
        code(&[
            "--on-error",
            "continue",
            "--timeout",
            "0s",
            "--",
            "no-such-cmd-ks"
        ]),
        Some(127)
    );
    let plain = std::env::temp_dir().join(format!("ks-not-exec-{}", std::process::id()));
    std::fs::write(&plain, "data\n").unwrap();
    let plain_arg = plain.to_str().unwrap();
    assert_eq!(
        code(&["--on-error", "continue", "--timeout", "0s", "--", plain_arg]),
        Some(126),
        "not executable"
    );
    std::fs::remove_file(&plain).unwrap();
}
