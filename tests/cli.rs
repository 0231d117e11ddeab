//! Host tests of the `kernelseal` binary: config errors, fail-closed exits,
//! and the agent's lifecycle in `mode: disabled` (which needs no BPF-LSM).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kernelseal-core"))
}

fn tmp_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kernelseal-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = bin().args(args).output().expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const QUICK_START: &str = "version: v1\npolicy:\n  mode: enforce\n  blockEnviron: true\n  blockMem: true\n  blockPtrace: true\n  allowSelfRead: true\n  kernelBinaryFilter: false\nsecrets:\n  - name: test-secrets\n    selector:\n      binary: \"sleep\"\n    secretRefs:\n      - name: MY_SECRET\n        source:\n          envRef: \"KernelSeal_MY_SECRET\"\n";

#[test]
fn config_validate_accepts_the_original_quick_start() {
    let path = tmp_config("quick.yaml", QUICK_START);
    let (code, out, _) = run(&["config", "validate", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK (1 binding(s), mode enforce)"), "{out}");
    assert!(
        out.contains("selects by binary name alone"),
        "binary-only warning: {out}"
    );
}

#[test]
fn config_validate_names_field_and_line_and_exits_2() {
    let path = tmp_config(
        "bad.yaml",
        "version: v1\npolicy:\n  mode: enforce\n  blockEnvrion: true\n",
    );
    let (code, _, err) = run(&["config", "validate", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.yaml:4:"), "{err}");
    assert!(err.contains("blockEnvrion"), "{err}");
}

#[test]
fn config_validate_reports_every_problem_after_parsing_at_once() {
    let long = "b".repeat(64);
    let path = tmp_config(
        "two-problems.yaml",
        &format!(
            "providers:\n  vault:\n    type: vault\n    address: vault:8200\nsecrets:\n  - name: too-long\n    selector: {{ binary: {long} }}\n    secretRefs:\n      - {{ name: A, source: {{ value: a }} }}\n"
        ),
    );
    let (code, _, err) = run(&["config", "validate", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("providers.vault.address"), "{err}");
    assert!(err.contains("binding \"too-long\""), "{err}");
}

#[test]
fn missing_config_is_a_usage_error_naming_the_path() {
    let (code, _, err) = run(&["agent", "--config", "/nonexistent/kernelseal.yaml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/kernelseal.yaml"), "{err}");
}

#[test]
fn literal_secret_values_stay_out_of_errors() {
    let secret = "s3cr3t-literal-VALUE";
    let path = tmp_config(
        "leak.yaml",
        &format!(
            "secrets:\n  - name: b\n    selector: {{ uid: 0 }}\n    secretRefs:\n      - {{ name: A, source: {{ value: {secret}, envRef: X }} }}\n"
        ),
    );
    let (code, out, err) = run(&["config", "validate", path.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(!out.contains(secret) && !err.contains(secret), "{out}{err}");
}

#[test]
fn protect_rejects_a_non_numeric_pid() {
    let (code, _, err) = run(&["protect", "abc"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid value 'abc'"), "{err}");
}

#[test]
fn protect_without_an_agent_says_so() {
    let dir = std::env::temp_dir().join("kernelseal-no-agent-pins");
    let (code, _, err) = run(&["protect", "1", "--pin-dir", dir.to_str().unwrap()]);
    assert_ne!(code, 0);
    // As root: no pinned maps; as a user: the capability is named first.
    assert!(
        err.contains("no running agent") || err.contains("CAP_BPF"),
        "{err}"
    );
}

/// `agent` on `config`, pinning under `pins`, metrics on a free port.
fn agent_args<'a>(config: &'a std::path::Path, pins: &'a std::path::Path) -> [&'a str; 7] {
    [
        "agent",
        "--config",
        config.to_str().unwrap(),
        "--pin-dir",
        pins.to_str().unwrap(),
        "--metrics-addr",
        "127.0.0.1:0",
    ]
}

/// A config error is found before anything is loaded or pinned: exit 2
/// with the field, never 3 (the gate's refusal on this host) and no pins.
#[test]
fn agent_config_errors_come_before_the_kernel() {
    let text = QUICK_START.replace(
        "secrets:\n",
        "providers:\n  vault-main:\n    type: vault\n    address: vault.local\nsecrets:\n",
    );
    let path = tmp_config("bad-provider.yaml", &text);
    let pins = std::env::temp_dir().join(format!("kernelseal-pins-bad-{}", std::process::id()));
    let (code, out, err) = run(&agent_args(&path, &pins));
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("providers.vault-main.address")
            && err.contains("not an http:// or https:// URL"),
        "{err}"
    );
    assert!(!out.contains("LSM BPF programs"), "{out}");
    assert!(!pins.exists(), "pins made for a config that was refused");
}

/// Enforce mode where the LSM cannot load must refuse to run (exit 3) and
/// say why; where it can load (a host with working BPF-LSM), the agent
/// must come up. Either way the outcome is checked.
#[test]
fn enforce_agent_fails_closed_or_runs() {
    let path = tmp_config("enforce.yaml", QUICK_START);
    let pins = std::env::temp_dir().join(format!("kernelseal-pins-{}", std::process::id()));
    let mut child = bin()
        .args(agent_args(&path, &pins))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            assert_eq!(status.code(), Some(3), "{err}");
            assert!(err.contains("Refusing to run without enforcement"), "{err}");
            assert!(err.contains("Fix:"), "the fix is named: {err}");
            return;
        }
        if start.elapsed() > Duration::from_secs(20) {
            // Still running: enforcement works on this host.
            unsafe_kill(child.id(), libc::SIGTERM);
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("[OK] LSM BPF programs loaded and attached"),
                "{text}"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unsafe_kill(pid: u32, sig: i32) {
    // SAFETY: signalling a child we spawned.
    unsafe { libc::kill(pid as i32, sig) };
}

type Collected = std::sync::Arc<std::sync::Mutex<String>>;

/// Collects a child's stdout on a thread, for waiting on log lines.
fn collect_stdout(child: &mut std::process::Child) -> (Collected, std::thread::JoinHandle<()>) {
    let buf: Collected = Default::default();
    let mut stdout = child.stdout.take().unwrap();
    let sink = buf.clone();
    let reader = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    (buf, reader)
}

fn wait_for_line(buf: &std::sync::Arc<std::sync::Mutex<String>>, needle: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if buf.lock().unwrap().contains(needle) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no {needle:?} in agent output: {}", buf.lock().unwrap());
}

#[test]
fn disabled_agent_warns_reloads_on_sighup_and_stops_on_sigterm() {
    let path = tmp_config("disabled.yaml", "version: v1\npolicy:\n  mode: disabled\n");
    let socket = path.with_file_name("disabled.sock").display().to_string();
    let mut child = bin()
        .args([
            "agent",
            "--config",
            path.to_str().unwrap(),
            "--log-format",
            "json",
            "--metrics-addr",
            "127.0.0.1:0",
            "--socket",
            &socket,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (buf, reader) = collect_stdout(&mut child);
    wait_for_line(&buf, "KernelSeal agent running");
    assert!(buf.lock().unwrap().contains("NOTHING is protected"));
    unsafe_kill(child.id(), libc::SIGHUP);
    wait_for_line(&buf, "SIGHUP received");
    unsafe_kill(child.id(), libc::SIGTERM);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success(), "{status}");
    let text = buf.lock().unwrap().clone();
    assert!(text.contains("KernelSeal agent stopped"), "{text}");
    // --log-format json: every line is a JSON object.
    for line in text.lines() {
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "not JSON: {line}"
        );
    }
}

/// `check` says exactly why enforcement is unavailable (exit 3), or that it
/// is possible (exit 0); never a silent pass.
#[test]
fn check_reports_each_requirement() {
    let (code, out, err) = run(&["check"]);
    for req in ["kernel", "privileges", "BTF", "LSM list"] {
        assert!(
            out.contains(&format!("] {req}: ")),
            "{req} line missing: {out}"
        );
    }
    match code {
        0 => assert!(out.contains("enforcement is possible"), "{out}"),
        3 => {
            assert!(out.contains("[FAIL]") && out.contains("— fix: "), "{out}");
            assert!(err.contains("enforcement is NOT possible"), "{err}");
        }
        other => panic!("check exited {other}: {out}{err}"),
    }
}

#[test]
fn providers_check_reports_each_ref_and_never_a_value() {
    let secret = "literal-Secret-Value-42";
    let path = tmp_config(
        "providers.yaml",
        &format!(
            "secrets:\n  - name: app\n    selector: {{ uid: 1000 }}\n    secretRefs:\n      - {{ name: A, source: {{ fileRef: /nonexistent/kernelseal-file }} }}\n      - {{ name: B, source: {{ value: {secret} }} }}\n"
        ),
    );
    let (code, out, err) = run(&["providers", "check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("FAIL app/A  fileRef /nonexistent/kernelseal-file"),
        "{out}"
    );
    assert!(out.contains("OK   app/B  value"), "{out}");
    assert!(
        out.contains("2 ref(s) checked") && out.contains("1 ok, 1 failed"),
        "{out}"
    );
    assert!(
        !out.contains(secret) && !err.contains(secret),
        "value leaked: {out}{err}"
    );
}

#[test]
fn a_changed_config_file_is_reloaded_without_a_signal() {
    let path = tmp_config("watched.yaml", "version: v1\npolicy:\n  mode: disabled\n");
    let socket = path.with_file_name("watched.sock").display().to_string();
    let mut child = bin()
        .args([
            "agent",
            "--config",
            path.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
            "--socket",
            &socket,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (buf, reader) = collect_stdout(&mut child);
    wait_for_line(&buf, "KernelSeal agent running");
    // A different size guarantees a different stamp even within one mtime tick.
    std::fs::write(
        &path,
        "version: v1\npolicy:\n  mode: disabled\n  auditAll: true\n",
    )
    .unwrap();
    wait_for_line(&buf, "changed on disk, reloading");
    wait_for_line(&buf, "restart it to enforce");
    // A file change is not a signal; the log must not claim one.
    assert!(!buf.lock().unwrap().contains("SIGHUP received"));
    unsafe_kill(child.id(), libc::SIGTERM);
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
}
