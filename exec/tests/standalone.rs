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

/// A stand-in agent on a real unix socket: answers one request with one
/// secret, the way the agent's protocol says.
fn serve_one(socket: &std::path::Path, value: &str) -> std::thread::JoinHandle<String> {
    use kernelseal_protocol::{
        EnvVar, ExecResponse, MAX_REQUEST_BYTES, PROTOCOL_VERSION, decode_request, encode,
        read_frame, write_frame,
    };
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    let value = value.to_string();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let req = decode_request(&read_frame(&mut s, MAX_REQUEST_BYTES).unwrap()).unwrap();
        let resp = ExecResponse::Ok {
            version: PROTOCOL_VERSION,
            bindings: vec!["standin".into()],
            env: vec![EnvVar {
                name: "STANDIN_SECRET".into(),
                value,
            }],
            missing: vec![],
            protected: true,
            warnings: vec![],
        };
        write_frame(&mut s, &encode(&resp)).unwrap();
        req.binary
    })
}

#[test]
fn secrets_reach_the_program_and_the_wrapper_says_where_it_held_them() {
    let dir = std::env::temp_dir().join(format!("ks-standalone-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("agent.sock");
    let agent = serve_one(&socket, "standin-value");
    let out = wrapper()
        .arg("--socket")
        .arg(&socket)
        .args([
            "--verbose",
            "--",
            "/bin/sh",
            "-c",
            "printf %s \"$STANDIN_SECRET\"",
        ])
        .output()
        .unwrap();
    assert_eq!(agent.join().unwrap(), "/bin/sh");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"standin-value");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("STANDIN_SECRET") && !err.contains("standin-value"),
        "{err}"
    );
    let expected = format!(
        "held in {}",
        kernelseal_exec::secret_heap::expected_backing().describe()
    );
    assert!(err.contains(&expected), "want {expected:?}: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Secrets larger than the arena (RLIMIT_MEMLOCK of 64 KiB caps it) still
/// reach the program, and the wrapper says part of them sat in ordinary
/// memory instead of claiming otherwise.
#[test]
fn secrets_larger_than_the_arena_are_delivered_and_the_spill_is_said() {
    use std::os::unix::process::CommandExt;
    if !kernelseal_exec::secret_heap::secret_memory_available() {
        eprintln!("SKIP: memfd_secret is unavailable on this kernel");
        return;
    }
    let dir = std::env::temp_dir().join(format!("ks-spill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("agent.sock");
    let big = "s".repeat(100 << 10);
    let agent = serve_one(&socket, &big);
    let mut cmd = wrapper();
    cmd.arg("--socket").arg(&socket).args([
        "--",
        "/bin/sh",
        "-c",
        "printf %s \"${#STANDIN_SECRET}\"",
    ]);
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 64 << 10,
                rlim_max: 64 << 10,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    };
    let out = cmd.output().unwrap();
    agent.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        (100 << 10).to_string()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("do not all fit the secret memory (memfd_secret) arena"),
        "{err}"
    );
    assert!(!err.contains("sssss"), "the value on stderr");
    let _ = std::fs::remove_dir_all(&dir);
}
