//! Delivery under enforcement on the real kernel: rotation reaching running
//! apps (env by signal, files rewritten in place), exec-time file delivery
//! that honours the whole selector, `podIdentity: required` refusals, and
//! the metrics endpoint counting real refusals.

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::agent::{Policy, log_text, wait_log_line};
use crate::attacks::{Outcome, Vector};
use crate::suite::{Ctx, TestResult};
use crate::victim::{Victim, read_reply};

const ROT_DIR: &str = "/tmp/ks-rot";

/// Atomic, like a Secret volume or a config-management tool would do it.
fn write_source(name: &str, value: &str) -> Result<(), String> {
    let tmp = format!("{ROT_DIR}/.{name}.tmp");
    std::fs::write(&tmp, value).map_err(|e| format!("{tmp}: {e}"))?;
    std::fs::rename(&tmp, format!("{ROT_DIR}/{name}")).map_err(|e| e.to_string())
}

fn until(what: &str, secs: u64, mut done: impl FnMut() -> Result<bool, String>) -> TestResult {
    let start = Instant::now();
    loop {
        if done()? {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(secs) {
            return Err(format!("{what}: not within {secs} s"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A wrapped app gets an env secret (onRotate: SIGHUP) and a file secret
/// from files re-read every second. Changing the sources signals the app
/// and rewrites its file; the new file is as guarded as the old one.
pub fn rotation_reaches_running_apps(ctx: &mut Ctx) -> TestResult {
    std::fs::create_dir_all(ROT_DIR).map_err(|e| e.to_string())?;
    write_source("env-secret", "one")?;
    write_source("file-secret", "file-one")?;
    let bindings = format!(
        "  - name: rot-env\n    selector: {{ binary: ks-rot-victim }}\n    onRotate: {{ signal: SIGHUP }}\n    secretRefs:\n      - name: ROT_ENV\n        source: {{ fileRef: {{ path: {ROT_DIR}/env-secret, ttl: 1s }} }}\n  - name: rot-file\n    selector: {{ binary: ks-rot-victim }}\n    delivery: file\n    secretRefs:\n      - name: rot.txt\n        source: {{ fileRef: {{ path: {ROT_DIR}/file-secret, ttl: 1s }} }}\n"
    );
    ctx.agent
        .set_policy_yaml(&Policy::ENFORCE_ALL.yaml_with(&bindings, ""))?;
    let mut v = Victim::spawn_wrapped_named("ks-rot-victim")?;
    if v.ask("getenv ROT_ENV")? != "env 3" {
        return Err("ROT_ENV not delivered with its first value".into());
    }
    let dir = v.ask("secretsdir")?;
    let rot = format!("{dir}/rot.txt");
    // The kernel also matched this exec by name: once its exec event is
    // handled, the wrapper's files must still be the app's (not replaced).
    wait_log_line(&[&format!("[FILE] PID {} already has its files", v.pid)])?;
    for (file, len) in [
        (&rot, "file-one".len()),
        (&format!("{dir}/wrapped.txt"), 18),
    ] {
        let got = v.ask(&format!("readpath {file}"))?;
        if got != format!("read {len}") {
            return Err(format!("the app reading {file} after its exec: {got}"));
        }
    }
    write_source("env-secret", "two-rotated")?;
    write_source("file-secret", "file-two-rotated")?;
    until("the app's file has the new value", 20, || {
        Ok(v.ask(&format!("readpath {rot}"))? == format!("read {}", "file-two-rotated".len()))
    })?;
    until("the app got SIGHUP", 20, || Ok(v.ask("hups")? != "hups 0"))?;
    let root = read_reply(&rot);
    if root != format!("read err {}", libc::EACCES) {
        return Err(format!("root reading the rewritten file: {root}"));
    }
    wait_log_line(&["[ROTATE]", &format!("rewrote rot.txt for PID {}", v.pid)])?;
    wait_log_line(&["[ROTATE]", &format!("sent SIGHUP to PID {}", v.pid)])?;
    let log = log_text();
    for value in ["file-two-rotated", "two-rotated", "file-one"] {
        if log.contains(value) {
            return Err(format!("a secret value ({value}) is in the agent's log"));
        }
    }
    Ok(())
}

/// The kernel marks an exec by file name alone; files are written only when
/// the binding's whole selector matches (here a uid the process does not run as).
pub fn exec_file_delivery_honours_the_whole_selector(ctx: &mut Ctx) -> TestResult {
    let bindings = "  - name: other-user\n    selector: { binary: ks-uid-victim, uid: 4242 }\n    delivery: file\n    secretRefs:\n      - name: other.txt\n        source: { value: not-for-root }\n";
    ctx.agent
        .set_policy_yaml(&Policy::ENFORCE_ALL.yaml_with(bindings, ""))?;
    let v = Victim::spawn_named("ks-uid-victim")?;
    wait_log_line(&[&format!(
        "[FILE] PID {} (/tmp/ks-uid-victim) was marked at exec by name, but no file binding's whole selector matches it",
        v.pid
    )])?;
    let dir = format!("/run/kernelseal/secrets/{}", v.pid);
    if std::path::Path::new(&dir).exists() {
        return Err(format!(
            "{dir} was written for a process the binding does not select"
        ));
    }
    // Marked all the same: protection by name costs nothing to the owner.
    match Vector::Environ.attempt(v.pid, v.pid, 0) {
        Outcome::Refused(_) => Ok(()),
        other => Err(format!("environ of the exec-marked process: {other}")),
    }
}

/// The last line of `kernelseal exec`'s stderr and its exit code.
fn wrap_true() -> Result<(Option<i32>, String), String> {
    let out = Command::new(crate::agent::KERNELSEAL)
        .args(["exec", "--timeout", "1s", "--", "/bin/true"])
        .output()
        .map_err(|e| e.to_string())?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    ))
}

/// `podIdentity: required`: a host process is refused at once; a process
/// in a kubelet-shaped pod cgroup the node does not know is refused after
/// the wrapper's retries. Nothing is delivered either way.
pub fn pod_identity_required_refuses_without_a_known_pod(ctx: &mut Ctx) -> TestResult {
    ctx.agent
        .set_policy_yaml(&Policy::ENFORCE_ALL.yaml_with("", "podIdentity: required\n"))?;
    let (code, err) = wrap_true()?;
    if code != Some(125)
        || !err.contains("podIdentity: required and the caller is not in a Kubernetes pod")
    {
        return Err(format!("host caller: exit {code:?}, stderr {err:?}"));
    }
    let pod_uid = "0f3c9f4e-7d1a-4c55-9b1e-2a6d8c0b7e11";
    let container = "4a1f0e2b9c3d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f";
    let slice = format!(
        "/sys/fs/cgroup/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
        pod_uid.replace('-', "_")
    );
    let scope = format!("{slice}/cri-containerd-{container}.scope");
    std::fs::create_dir_all(&scope).map_err(|e| format!("mkdir {scope}: {e}"))?;
    let result = (|| {
        let procs = format!("{scope}/cgroup.procs");
        let out = {
            use std::os::unix::process::CommandExt;
            let mut cmd = Command::new(crate::agent::KERNELSEAL);
            cmd.args(["exec", "--timeout", "1s", "--", "/bin/true"]);
            // SAFETY: the child only writes "0" (itself) into cgroup.procs.
            unsafe {
                cmd.pre_exec(move || std::fs::write(&procs, "0"));
            }
            cmd.output().map_err(|e| e.to_string())?
        };
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(125)
            || !err.contains(&format!("pod {pod_uid} is not (yet) known on this node"))
            || !err.contains("gave up after 1.0s")
        {
            return Err(format!(
                "caller in pod cgroup: exit {:?}, stderr {err:?}",
                out.status.code()
            ));
        }
        Ok(())
    })();
    // The cgroups are empty again once the wrapper has exited.
    let _ = std::fs::remove_dir(&scope);
    let _ = std::fs::remove_dir_all(&slice);
    let _ = std::fs::remove_dir("/sys/fs/cgroup/kubepods.slice/kubepods-besteffort.slice");
    let _ = std::fs::remove_dir("/sys/fs/cgroup/kubepods.slice");
    result?;
    if log_text().contains("wrapped-secret-value") {
        return Err("a secret value is in the agent's log".into());
    }
    Ok(())
}

pub(crate) fn http_get(path: &str) -> Result<(u16, String), String> {
    let mut s = std::net::TcpStream::connect("127.0.0.1:9090")
        .map_err(|e| format!("connecting to the metrics endpoint: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(format!("bad HTTP response to {path}: {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_string()))
}

/// The value of the sample named exactly `series` (name and labels).
pub(crate) fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The endpoint under enforce: LSM loaded, a protected process counted,
/// a real refusal counted, health and readiness answered.
pub fn metrics_count_real_refusals(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    crate::loopback::loopback_up()?;
    for (path, want) in [("/healthz", 200), ("/ready", 200)] {
        let (status, body) = http_get(path)?;
        if status != want {
            return Err(format!("{path}: {status} {body:?}"));
        }
    }
    const BLOCKED: &str = "kernelseal_access_blocked_total{kind=\"environ\",mode=\"enforce\"}";
    let (_, before) = http_get("/metrics")?;
    if sample(&before, "kernelseal_lsm_loaded") != Some(1.0) {
        return Err(format!("kernelseal_lsm_loaded is not 1: {before}"));
    }
    let blocked_before = sample(&before, BLOCKED).unwrap_or(0.0);
    // The start-up self-test's refusal is the agent's own: logged as such,
    // never as an access or in the access metric.
    crate::agent::wait_log_line(&["[OK] self-test: the kernel refused the agent's own"])?;
    let own = format!("[LSM BLOCKED] PID={} ", ctx.agent.pid);
    if crate::agent::log_text().contains(&own) {
        return Err(format!("the self-test was logged as an access: {own}"));
    }
    let v = Victim::spawn_bound()?;
    match Vector::Environ.attempt(v.pid, v.pid, 0) {
        Outcome::Refused(_) => {}
        other => return Err(format!("environ read of a protected victim: {other}")),
    }
    let mut last = String::new();
    until(
        "the refusal and the protected process in /metrics",
        10,
        || {
            let (_, body) = http_get("/metrics")?;
            let ok = sample(&body, BLOCKED).is_some_and(|n| n > blocked_before)
                && sample(&body, "kernelseal_protected_processes").is_some_and(|n| n >= 1.0);
            last = body;
            Ok(ok)
        },
    )
    .map_err(|e| format!("{e}; last scrape: {last}"))?;
    for name in [
        "kernelseal_exec_events_total",
        "kernelseal_secrets_injected_total",
        "kernelseal_secrets_denied_total",
    ] {
        if sample(&last, name).is_none() {
            return Err(format!("{name} missing from /metrics"));
        }
    }
    Ok(())
}
