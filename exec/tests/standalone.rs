//! The standalone `kernelseal-exec` binary (no_main, its own entry point):
//! exit codes and argument pass-through, without an agent.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::Command;

fn wrapper() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kernelseal-exec"))
}

/// The wrapper asking the (stand-in) agent on `socket`.
fn wrapper_on(socket: &std::path::Path) -> Command {
    let mut cmd = wrapper();
    cmd.arg("--socket").arg(socket);
    cmd
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
    serve(socket, &[("STANDIN_SECRET", value)])
}

/// The same with any variables, well-formed or not.
fn serve(socket: &std::path::Path, vars: &[(&str, &str)]) -> std::thread::JoinHandle<String> {
    use kernelseal_protocol::{
        EnvVar, ExecResponse, MAX_REQUEST_BYTES, PROTOCOL_VERSION, decode_request, encode,
        read_frame, write_frame,
    };
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    let env: Vec<EnvVar> = vars
        .iter()
        .map(|(name, value)| EnvVar {
            name: name.to_string(),
            value: value.to_string(),
        })
        .collect();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let req = decode_request(&read_frame(&mut s, MAX_REQUEST_BYTES).unwrap()).unwrap();
        let resp = ExecResponse::Ok {
            version: PROTOCOL_VERSION,
            bindings: vec!["standin".into()],
            env,
            missing: vec![],
            protected: true,
            warnings: vec![],
        };
        write_frame(&mut s, &encode(&resp)).unwrap();
        req.binary
    })
}

/// A stand-in agent that answers its requests with `answers`, in order.
fn answer(
    socket: &std::path::Path,
    answers: Vec<kernelseal_protocol::ExecResponse>,
) -> std::thread::JoinHandle<()> {
    use kernelseal_protocol::{MAX_REQUEST_BYTES, decode_request, encode, read_frame, write_frame};
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        for res in answers {
            let (mut s, _) = listener.accept().unwrap();
            decode_request(&read_frame(&mut s, MAX_REQUEST_BYTES).unwrap()).unwrap();
            write_frame(&mut s, &encode(&res)).unwrap();
        }
    })
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ks-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The program gets the caller's environment with the secrets set over it
/// (a secret replaces an inherited variable of its name, once), and the
/// arguments with argv[0] as typed (not the path it was found at).
#[test]
fn the_program_gets_the_inherited_environment_with_the_secrets_over_it() {
    let dir = scratch("environment");
    let socket = dir.join("agent.sock");
    let agent = serve(&socket, &[("STANDIN_SECRET", "new-value"), ("SECOND", "2")]);
    let out = wrapper_on(&socket)
        .env("STANDIN_SECRET", "inherited-value")
        .env("STANDIN_SECRET_LONGER", "kept")
        .env("PLAIN_VARIABLE", "plain")
        .args([
            "--",
            "sh",
            "-c",
            // argv as the kernel got it, then the shell's environ as execve
            // gave it: a shell folds duplicate names in what it exports,
            // /proc does not.
            "printf '%s\\n' \"$0\"; tr '\\0' '\\n' < /proc/$$/cmdline; \
             echo --environ--; tr '\\0' '\\n' < /proc/$$/environ",
            "arg-zero",
        ])
        .output()
        .unwrap();
    agent.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let all: Vec<&str> = text.lines().collect();
    assert_eq!(all[0], "arg-zero", "$0");
    assert_eq!(all[1], "sh", "argv[0] as typed");
    let env = text.split_once("\n--environ--\n").unwrap().1;
    let lines: Vec<&str> = env.lines().collect();
    for want in [
        "STANDIN_SECRET=new-value",
        "SECOND=2",
        "STANDIN_SECRET_LONGER=kept",
        "PLAIN_VARIABLE=plain",
    ] {
        assert_eq!(
            lines.iter().filter(|l| **l == want).count(),
            1,
            "{want}: {env}"
        );
    }
    assert!(!env.contains("inherited-value"), "{env}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// As `std::process::Command` would: the program starts with no blocked
/// signal and SIGPIPE at its default, whatever the wrapper was given.
#[test]
fn the_program_starts_with_signals_reset() {
    use std::os::unix::process::CommandExt;
    let dir = scratch("signals");
    let socket = dir.join("agent.sock");
    let agent = serve_one(&socket, "v");
    let mut cmd = wrapper_on(&socket);
    cmd.args(["--", "cat", "/proc/self/status"]);
    // SAFETY: sigprocmask and signal only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            Ok(())
        })
    };
    let out = cmd.output().unwrap();
    agent.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let status = String::from_utf8_lossy(&out.stdout);
    let mask = |field: &str| {
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .unwrap()
            .trim();
        u64::from_str_radix(hex, 16).unwrap()
    };
    assert_eq!(mask("SigBlk:"), 0, "{status}");
    assert_eq!(mask("SigIgn:") & (1 << (libc::SIGPIPE - 1)), 0, "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reply no environment can carry (a NUL in a value, '=' in a name) is
/// the agent's fault: exit 125 naming the variable, never the value, and
/// nothing run; with `--on-error continue` the program runs without it.
#[test]
fn a_variable_no_environment_can_carry_is_refused_by_name() {
    for (name, value) in [("NUL_VALUE", "top\0hidden-value"), ("A=B", "hidden-value")] {
        let dir = scratch("bad-variable");
        let socket = dir.join("agent.sock");
        let ran = dir.join("ran");
        let agent = serve(&socket, &[(name, value)]);
        let out = wrapper_on(&socket)
            .args(["--", "touch"])
            .arg(&ran)
            .output()
            .unwrap();
        agent.join().unwrap();
        assert_eq!(out.status.code(), Some(125), "{out:?}");
        assert!(!ran.exists(), "the program ran");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{name:?}")), "{err}");
        assert!(!err.contains("hidden-value"), "{err}");

        let socket = dir.join("agent2.sock");
        let agent = serve(&socket, &[(name, value), ("GOOD", "good-value")]);
        let out = wrapper_on(&socket)
            .args([
                "--on-error",
                "continue",
                "--",
                "sh",
                "-c",
                "printf %s \"$GOOD\"",
            ])
            .output()
            .unwrap();
        agent.join().unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_eq!(out.stdout, b"good-value");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{name:?}")) && err.contains("running without it"),
            "{err}"
        );
        assert!(!err.contains("hidden-value"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn secrets_reach_the_program_and_the_wrapper_says_where_it_held_them() {
    let dir = scratch("standalone");
    let socket = dir.join("agent.sock");
    let agent = serve_one(&socket, "standin-value");
    let out = wrapper_on(&socket)
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
    let dir = scratch("spill");
    let socket = dir.join("agent.sock");
    let big = "s".repeat(100 << 10);
    let agent = serve_one(&socket, &big);
    let mut cmd = wrapper_on(&socket);
    cmd.args(["--", "/bin/sh", "-c", "printf %s \"${#STANDIN_SECRET}\""]);
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

/// No binding for a wrapped program is a failure: exit 125 with the
/// agent's reason and nothing run; `--on-error continue` runs it and says
/// so. An older agent's `no_binding` answer is the same failure.
#[test]
fn no_binding_is_a_failure_not_a_silent_start() {
    use kernelseal_protocol::{ExecResponse, PROTOCOL_VERSION};
    let who =
        "PID 7 (/usr/bin/touch, uid 1000, pod db/pg-0 (service account pg), container postgres)";
    let dir = scratch("no-binding");
    let ran = dir.join("ran");
    let answers = [
        ExecResponse::no_binding(who, false),
        ExecResponse::NoBinding {
            version: PROTOCOL_VERSION,
        },
    ];
    for (i, res) in answers.into_iter().enumerate() {
        let socket = dir.join(format!("fail-{i}.sock"));
        let agent = answer(&socket, vec![res]);
        let out = wrapper_on(&socket)
            .args(["--", "touch"])
            .arg(&ran)
            .output()
            .unwrap();
        agent.join().unwrap();
        assert_eq!(out.status.code(), Some(125), "{out:?}");
        assert!(!ran.exists(), "the program ran without its secrets");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no binding matched"), "{err}");
        assert!(!err.contains("the agent refused"), "told apart: {err}");
        if i == 0 {
            assert!(err.contains(&format!("no binding matched: {who}")), "{err}");
        }
    }

    let socket = dir.join("continue.sock");
    let agent = answer(&socket, vec![ExecResponse::no_binding(who, false)]);
    let out = wrapper_on(&socket)
        .args(["--on-error", "continue", "--", "touch"])
        .arg(&ran)
        .output()
        .unwrap();
    agent.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(ran.exists(), "continue runs the program");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no binding matched") && err.contains("WITHOUT secrets"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A no-binding answer the agent marks `retry` (a container the pod list
/// does not show yet) is asked again, and the secrets of the later match
/// are delivered.
#[test]
fn a_retryable_no_binding_is_asked_again() {
    use kernelseal_protocol::{EnvVar, ExecResponse, PROTOCOL_VERSION};
    let dir = scratch("no-binding-retry");
    let socket = dir.join("agent.sock");
    let not_yet = "PID 7 (/bin/sh, uid 1000, pod db/pg-0 (service account pg), container 3f0c6a9e5b1d not (yet) in the pod's status)";
    let agent = answer(
        &socket,
        vec![
            ExecResponse::no_binding(not_yet, true),
            ExecResponse::Ok {
                version: PROTOCOL_VERSION,
                bindings: vec!["pg".into()],
                env: vec![EnvVar {
                    name: "STANDIN_SECRET".into(),
                    value: "after-retry".into(),
                }],
                missing: vec![],
                protected: true,
                warnings: vec![],
            },
        ],
    );
    let out = wrapper_on(&socket)
        .args(["--", "/bin/sh", "-c", "printf %s \"$STANDIN_SECRET\""])
        .output()
        .unwrap();
    agent.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"after-retry");

    // Still no match when the wrapper's --timeout is up: the no-binding
    // failure, not a generic one.
    let socket = dir.join("agent2.sock");
    let agent = answer(&socket, vec![ExecResponse::no_binding(not_yet, true)]);
    let out = wrapper_on(&socket)
        .args(["--timeout", "0s", "--", "/bin/true"])
        .output()
        .unwrap();
    agent.join().unwrap();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no binding matched") && err.contains("gave up after"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
