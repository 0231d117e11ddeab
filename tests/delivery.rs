//! Host tests of delivery: the real agent (mode disabled: no BPF-LSM on
//! this host, and the agent says loudly that nothing is protected) and the
//! real wrapper over a real unix socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kernelseal_testkit::{Reaped, wait_until};

const SECRET: &str = "delivery-s3cret-VALUE";

mod support;

use support::{Agent, bin, read};

fn dir(name: &str) -> PathBuf {
    support::scratch("delivery", name)
}

fn start_agent(d: &Path) -> Agent {
    start_agent_with(
        d,
        &format!(
            "version: v1\npolicy: {{ mode: disabled }}\nsecrets:\n  - name: shell\n    selector: {{ binary: sh }}\n    secretRefs:\n      - {{ name: MY_SECRET, source: {{ value: {SECRET} }} }}\n  - name: broken\n    selector: {{ binary: cat }}\n    secretRefs:\n      - {{ name: GONE, source: {{ fileRef: /nonexistent/kernelseal }} }}\n"
        ),
        &[],
    )
}

/// The real agent on `config_text`, with `extra` arguments.
fn start_agent_with(d: &Path, config_text: &str, extra: &[&std::ffi::OsStr]) -> Agent {
    support::start_agent(d, config_text, |c| {
        c.args(extra);
    })
}

fn wrap(socket: &Path, extra: &[&str], cmd: &[&str]) -> std::process::Output {
    Command::new(bin())
        .arg("exec")
        .arg("--socket")
        .arg(socket)
        .args(extra)
        .arg("--")
        .args(cmd)
        .output()
        .unwrap()
}

/// One binding for `binary` (mode disabled) whose secret `name` is re-read
/// from `file` every second, so a write to it is a rotation; `extra` is one
/// more line of the binding (`onRotate: …`, `delivery: file`).
fn rotating_config(binary: &str, extra: &str, name: &str, file: &Path) -> String {
    format!(
        "version: v1\npolicy: {{ mode: disabled }}\nsecrets:\n  - name: rotating\n    \
         selector: {{ binary: {binary} }}\n    {extra}\n    secretRefs:\n      - {{ name: \
         {name}, source: {{ fileRef: {{ path: {}, ttl: 1s }} }} }}\n",
        file.display()
    )
}

/// `sh -c script` started through the wrapper, running in the background.
fn spawn_wrapped(socket: &Path, script: &str) -> Reaped {
    Reaped(
        Command::new(bin())
            .arg("exec")
            .arg("--socket")
            .arg(socket)
            .args(["--", "sh", "-c", script])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn wrapper_gets_env_and_execs_with_the_same_pid() {
    let d = dir("env");
    let agent = start_agent(&d);
    let child = Command::new(bin())
        .arg("exec")
        .arg("--socket")
        .arg(&agent.socket)
        .args(["--", "sh", "-c", "echo \"$$ $MY_SECRET\""])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        format!("{pid} {SECRET}"),
        "same PID, secret in env"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NOT protected"),
        "disabled mode is said: {err}"
    );
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(
        log.contains(&format!(
            "[INJECT] Secrets injected into PID {pid}: [MY_SECRET]"
        )),
        "{log}"
    );
    assert!(log.contains("UNPROTECTED"), "{log}");
    assert!(!log.contains(SECRET), "value in the agent log: {log}");
}

/// A wrapped program no binding selects would start without the secrets
/// it was wrapped for: the agent refuses it (and logs who it was), the
/// wrapper exits 125 (`--on-error fail`, the default) or runs it saying so
/// (`continue`). It used to run silently.
#[test]
fn no_binding_is_a_failure_and_the_agent_says_who_asked() {
    let d = dir("nobinding");
    let agent = start_agent(&d);
    let ran = d.join("ran");
    let out = wrap(
        &agent.socket,
        &[],
        &["/usr/bin/touch", ran.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(!ran.exists(), "the program ran without its secrets");
    assert!(
        err.contains("no binding matched: PID") && err.contains("(/usr/bin/touch, uid"),
        "{err}"
    );
    let log = read(&agent.log);
    assert!(
        log.contains("[INJECT] no binding matched PID") && log.contains("(/usr/bin/touch, uid"),
        "{log}"
    );
    // The caller's cgroup, which a cgroupPath selector for it must name:
    // the wrapper runs in this test's cgroup.
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    if let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) {
        assert!(log.contains(&format!("cgroup=\"{path}\"")), "{log}");
    }

    let out = wrap(
        &agent.socket,
        &["--on-error", "continue"],
        &["/bin/echo", "plain"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "plain");
    assert!(
        err.contains("no binding matched") && err.contains("WITHOUT secrets"),
        "{err}"
    );
}

/// `kernelseal exec` (the big binary, not only `kernelseal-exec`) holds
/// what it receives in secret memory where the kernel offers it.
#[test]
fn kernelseal_exec_holds_secrets_in_secret_memory() {
    let d = dir("secretmem");
    let agent = start_agent(&d);
    let out = wrap(&agent.socket, &["--verbose"], &["sh", "-c", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let expected = format!(
        "held in {}",
        kernelseal_exec::secret_heap::expected_backing().describe()
    );
    assert!(err.contains(&expected), "want {expected:?}: {err}");
    assert!(!err.contains(SECRET), "{err}");
}

#[test]
fn unresolvable_binding_is_refused_not_started_empty() {
    let d = dir("refused");
    let agent = start_agent(&d);
    let out = wrap(
        &agent.socket,
        &["--timeout", "300ms"],
        &["cat", "/dev/null"],
    );
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("GONE") && err.contains("no secret of binding \"broken\""),
        "{err}"
    );
    let out = wrap(
        &agent.socket,
        &["--timeout", "300ms", "--on-error", "continue"],
        &["cat", "/dev/null"],
    );
    assert!(out.status.success(), "continue execs without secrets");
}

#[test]
fn agent_down_fails_within_the_timeout_or_continues() {
    let d = dir("down");
    let socket = d.join("none.sock");
    let start = Instant::now();
    let out = wrap(&socket, &["--timeout", "500ms"], &["/bin/echo", "x"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(start.elapsed() < Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unavailable") && err.contains("gave up after 0.5s"),
        "{err}"
    );
    let out = wrap(
        &socket,
        &["--timeout", "200ms", "--on-error", "continue"],
        &["/bin/echo", "x"],
    );
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "x");
}

#[test]
fn malformed_and_oversize_requests_are_refused_and_the_agent_keeps_serving() {
    let d = dir("bad");
    let agent = start_agent(&d);
    for frame in [
        {
            let mut f = 9u32.to_be_bytes().to_vec();
            f.extend_from_slice(b"not json!");
            f
        },
        (10u32 * 1024 * 1024).to_be_bytes().to_vec(),
    ] {
        let mut s = UnixStream::connect(&agent.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&frame).unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        let text = String::from_utf8_lossy(&reply);
        assert!(
            text.contains("\"refused\"") && text.contains("bad request"),
            "{text}"
        );
    }
    let out = wrap(&agent.socket, &[], &["sh", "-c", "echo ${#MY_SECRET}"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        SECRET.len().to_string(),
        "still serving"
    );
}

#[test]
fn socket_of_a_dead_agent_is_replaced_and_other_files_are_not() {
    let d = dir("stale");
    let socket = d.join("agent.sock");
    // A socket nobody listens on: what a SIGKILLed agent leaves.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let agent = start_agent(&d);
    assert!(
        std::fs::read_to_string(&agent.log)
            .unwrap()
            .contains("replaced a stale socket")
    );
    // A second agent on the live socket is refused.
    let config = d.join("config.yaml");
    let out = Command::new(bin())
        .args(["agent", "--config"])
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another agent is serving"));
    drop(agent);
    // A regular file is never removed.
    let d2 = dir("regular");
    let file = d2.join("agent.sock");
    std::fs::write(&file, b"keep me").unwrap();
    let out = Command::new(bin())
        .args(["agent", "--config"])
        .arg(&config)
        .arg("--socket")
        .arg(&file)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

#[test]
fn metrics_endpoint_is_scraped_and_parsed() {
    let d = dir("metrics");
    let agent = start_agent(&d);
    let out = wrap(&agent.socket, &[], &["sh", "-c", "true"]);
    assert!(out.status.success());
    let log = std::fs::read_to_string(&agent.log).unwrap();
    let addr = log
        .lines()
        .find_map(|l| l.split("[OK] metrics on http://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .expect("metrics address logged")
        .to_string();
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    let metrics = get("/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    assert_eq!(value("kernelseal_secrets_injected_total "), 1.0);
    assert_eq!(value("kernelseal_secrets_denied_total "), 0.0);
    assert_eq!(
        value("kernelseal_lsm_loaded "),
        0.0,
        "mode disabled loads nothing"
    );
    assert!(
        metrics.contains("kernelseal_provider_fetch_seconds_count{provider=\"value\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    assert!(!metrics.contains(SECRET));
    assert!(get("/healthz").starts_with("HTTP/1.1 200 OK"));
    assert!(get("/ready").starts_with("HTTP/1.1 200 OK"));
    assert!(get("/nope").starts_with("HTTP/1.1 404"));
}

#[test]
fn a_rotated_secret_signals_the_process_it_was_delivered_to() {
    let d = dir("rotate");
    let secret_file = d.join("secret");
    std::fs::write(&secret_file, "first-value").unwrap();
    let agent = start_agent_with(
        &d,
        &rotating_config("sh", "onRotate: { signal: SIGUSR1 }", "ROT", &secret_file),
        &[],
    );
    let (socket, log) = (agent.socket.clone(), agent.log.clone());
    let marker = d.join("rotated");
    let ready = d.join("ready");
    let script = format!(
        "trap 'echo \"$ROT\" >> {m}' USR1; echo up > {r}; while true; do sleep 0.1; done",
        m = marker.display(),
        r = ready.display()
    );
    let app = spawn_wrapped(&socket, &script);
    let pid = app.0.id();
    wait_until(20, || ready.exists(), || "app did not start".into());
    std::fs::write(&secret_file, "second-value-longer").unwrap();
    wait_until(
        20,
        || marker.exists(),
        || format!("no SIGUSR1 after rotation: {}", read(&log)),
    );
    drop(app);
    // The process still holds the value it was started with: env cannot change in place.
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().lines().next(),
        Some("first-value")
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!("sent SIGUSR1 to PID {pid}")),
        "{text}"
    );
    assert!(
        !text.contains("first-value") && !text.contains("second-value"),
        "values in the log: {text}"
    );
}

/// A container's PID 1 gets from an ancestor namespace only the signals it
/// catches: `onRotate: restart` to a handler-less init must not be a
/// SIGTERM the kernel drops. The app runs as PID 1 of a new PID namespace.
#[test]
fn restart_reaches_the_init_of_a_pid_namespace() {
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("SKIP: cannot make a PID namespace here (unshare --pid: needs root)");
        return;
    }
    let d = dir("nsinit");
    let secret_file = d.join("secret");
    std::fs::write(&secret_file, "first-value").unwrap();
    let agent = start_agent_with(
        &d,
        &rotating_config("sleep", "onRotate: restart", "ROT", &secret_file),
        &[],
    );
    // unshare forks the namespace's init, which execs the wrapper, which
    // execs sleep: PID 1 inside, no handler for anything.
    let mut app = Reaped(
        Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child"])
            .arg(bin())
            .arg("exec")
            .arg("--socket")
            .arg(&agent.socket)
            .args(["--", "sleep", "300"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let wait_log = |needle: &str| {
        wait_until(
            20,
            || read(&agent.log).contains(needle),
            || format!("no {needle:?} in: {}", read(&agent.log)),
        );
        read(&agent.log)
    };
    wait_log("Secrets injected into PID");
    std::fs::write(&secret_file, "second-value-longer").unwrap();
    let text = wait_log("sent SIGKILL for a restart");
    assert!(
        text.contains("SIGTERM to PID") && text.contains("would be dropped"),
        "{text}"
    );
    // The init is gone, so is its namespace: unshare returns.
    wait_until(
        20,
        || app.0.try_wait().unwrap().is_some(),
        || "the namespace init survived its restart".into(),
    );
}

#[test]
fn file_delivery_writes_0400_files_and_removes_them_when_the_process_exits() {
    let d = dir("files");
    // The guard covers tmpfs only, so the agent insists on one.
    let shm = PathBuf::from(format!("/dev/shm/ks-delivery-{}", std::process::id()));
    let agent = start_agent_with(
        &d,
        &format!(
            "version: v1\npolicy: {{ mode: disabled }}\nsecrets:\n  - name: files\n    selector: {{ binary: sh }}\n    delivery: file\n    secretRefs:\n      - {{ name: token.txt, source: {{ value: {SECRET} }} }}\n"
        ),
        &["--secrets-dir".as_ref(), shm.as_os_str()],
    );
    let (socket, log) = (agent.socket.clone(), agent.log.clone());
    let out = wrap(
        &socket,
        &[],
        &[
            "sh",
            "-c",
            "stat -c '%a %n' \"$KERNELSEAL_SECRETS_DIR/token.txt\"; cat \"$KERNELSEAL_SECRETS_DIR/token.txt\"; echo; echo \"$KERNELSEAL_SECRETS_DIR\"",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("400 "), "mode 0400: {stdout}");
    assert_eq!(lines[1], SECRET);
    let dir_of_app = PathBuf::from(lines[2]);
    assert!(dir_of_app.starts_with(&shm));
    wait_until(
        10,
        || !dir_of_app.exists(),
        || format!("{} not removed after exit", dir_of_app.display()),
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("[FILE] Secrets written to") && text.contains("(its process exited)"),
        "{text}"
    );
    assert!(!text.contains(SECRET));
    let _ = std::fs::remove_dir_all(&shm);
}

#[test]
fn a_rotated_file_secret_is_rewritten_in_place() {
    let d = dir("filerotate");
    let shm = PathBuf::from(format!("/dev/shm/ks-filerotate-{}", std::process::id()));
    let source = d.join("source");
    std::fs::write(&source, "version-one").unwrap();
    let agent = start_agent_with(
        &d,
        &rotating_config("sh", "delivery: file", "token", &source),
        &["--secrets-dir".as_ref(), shm.as_os_str()],
    );
    let (socket, log) = (agent.socket.clone(), agent.log.clone());
    let seen = d.join("seen");
    // The app polls its file and records each content it sees.
    let script = format!(
        "while true; do cat \"$KERNELSEAL_SECRETS_DIR/token\" >> {s}; echo >> {s}; sleep 0.2; done",
        s = seen.display()
    );
    let app = spawn_wrapped(&socket, &script);
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(&source, "version-two").unwrap();
    wait_until(
        20,
        || read(&seen).contains("version-two"),
        || format!("file not rewritten: {}", read(&log)),
    );
    drop(app);
    let text = read(&seen);
    assert!(
        text.contains("version-one"),
        "first content seen first: {text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| !l.is_empty() && l != "version-one" && l != "version-two"),
        "never a partial file: {text}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("rewrote token for PID"), "{text}");
    assert!(
        !text.contains("version-one") && !text.contains("version-two"),
        "values in the log: {text}"
    );
    let _ = std::fs::remove_dir_all(&shm);
}
