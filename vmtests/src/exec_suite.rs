//! Exec-time protection (the original quick start), traced execs, and
//! enforcement that outlives the agent: kill -9, re-adoption, audit, unpin.

use std::ffi::CString;
use std::process::Command;

use crate::agent::{Agent, Policy, log_text, wait_log_line, wait_log_line_for};
use crate::attacks::{ALL, Outcome, Vector};
use crate::suite::{Ctx, TestResult};
use crate::victim::{Victim, bound_exe, kill_pid};

pub(crate) fn all(label: &str, pid: u32, tid: u32, addr: usize, refused: bool) -> TestResult {
    let wrong: Vec<String> = ALL
        .iter()
        .filter_map(|v| {
            let got = v.attempt(pid, tid, addr);
            let want = if refused {
                Outcome::Refused(v.refusal_errno())
            } else {
                Outcome::Allowed
            };
            (got != want).then(|| format!("{}: got {got}", v.name()))
        })
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{label} (pid {pid}): {}", wrong.join("; ")))
    }
}

/// The original README's quick start, verbatim in spirit.
pub fn quick_start_sleep_is_protected_at_exec(ctx: &mut Ctx) -> TestResult {
    let yaml = "version: v1\npolicy:\n  mode: enforce\n  blockEnviron: true\n  blockMem: true\n  blockPtrace: true\n  allowSelfRead: true\n  kernelBinaryFilter: false\n\nsecrets:\n  - name: test-secrets\n    selector:\n      binary: \"sleep\"\n    secretRefs:\n      - name: MY_SECRET\n        source:\n          envRef: \"KernelSeal_MY_SECRET\"\n";
    ctx.agent.set_policy_yaml(yaml)?;
    let mut sleep = Command::new("sleep")
        .arg("300")
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = sleep.id();
    let out = Command::new("cat")
        .arg(format!("/proc/{pid}/environ"))
        .output()
        .map_err(|e| e.to_string())?;
    let _ = sleep.kill();
    let _ = sleep.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || !err.contains("Permission denied") {
        return Err(format!(
            "cat /proc/{pid}/environ of sleep: status {}, stderr {err:?}",
            out.status
        ));
    }
    wait_log_line(&[&format!("[EXEC] PID={pid} "), "Binary=sleep"])?;
    wait_log_line(&[&format!("[PROTECT] PID {pid} marked as protected")])?;
    wait_log_line(&[
        "[LSM BLOCKED]",
        &format!("attempted environ access to PID={pid} (cat)"),
    ])
}

pub fn exec_matched_binary_full_matrix(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let mut v = Victim::spawn_bound()?;
    all("matched at exec", v.pid, v.pid, v.addr, true)?;
    let tid = v.ask_number("thread", "tid")?;
    all("its thread", tid, tid, v.addr, true)?;
    let child = v.ask_number("fork", "child")?;
    let result = all("its child", child, child, v.addr, true);
    kill_pid(child);
    result
}

/// A process traced before it execs a protected binary would keep its
/// tracer: the exec is refused.
pub fn traced_exec_is_refused(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let exe = CString::new(bound_exe()?.to_str().ok_or("path")?.to_string())
        .map_err(|e| e.to_string())?;
    let arg0 = CString::new("ks-victim").unwrap();
    let arg1 = CString::new("victim").unwrap();
    // SAFETY: the child only makes raw syscalls and _exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let argv = [arg0.as_ptr(), arg1.as_ptr(), std::ptr::null()];
        // SAFETY: TRACEME then execv with NUL-terminated argv.
        unsafe {
            libc::ptrace(
                libc::PTRACE_TRACEME,
                0,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            );
            libc::execv(exe.as_ptr(), argv.as_ptr());
            libc::_exit(*libc::__errno_location());
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    if libc::WIFSTOPPED(status) {
        kill_pid(child as u32);
        // SAFETY: reap it.
        unsafe { libc::waitpid(child, &mut status, 0) };
        return Err("a traced process exec'd a protected binary (stopped at exec)".into());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != libc::EPERM {
        return Err(format!(
            "traced exec: want exit EPERM, got status {status:#x}"
        ));
    }
    wait_log_line(&["[LSM BLOCKED]", "traced-exec", &format!("PID={child}")])
}

fn program_ids(line_marker: &str) -> Option<String> {
    let log = log_text();
    let line = log.lines().rev().find(|l| l.contains(line_marker))?;
    let ids = line.split(": ").last()?;
    let mut v: Vec<&str> = ids.split(", ").map(str::trim).collect();
    v.sort();
    Some(v.join(","))
}

/// kill -9 → still refused; restart → same programs re-adopted; audit →
/// allowed and logged; --unpin-on-exit → allowed.
pub fn enforcement_outlives_the_agent(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let loaded = program_ids("[OK] LSM BPF programs loaded and attached")
        .ok_or("no loaded-programs line")?;
    let v = Victim::spawn_bound()?;
    all("before kill -9", v.pid, v.pid, v.addr, true)?;
    ctx.agent.kill9();
    all("agent killed with SIGKILL", v.pid, v.pid, v.addr, true)?;
    let other = Victim::spawn_bound()?;
    all(
        "exec after the agent died",
        other.pid,
        other.pid,
        other.addr,
        true,
    )?;

    ctx.agent = Agent::start(Policy::ENFORCE_ALL)?;
    let adopted = program_ids("[OK] adopted the programs pinned")
        .ok_or("restarted agent did not adopt the pins")?;
    if adopted != loaded {
        return Err(format!(
            "re-adopted programs differ: loaded {loaded}, adopted {adopted}"
        ));
    }
    all("after restart", v.pid, v.pid, v.addr, true)?;

    ctx.agent.set_policy(Policy {
        mode: "audit",
        ..Policy::ENFORCE_ALL
    })?;
    all("audit after restart", v.pid, v.pid, v.addr, false)?;
    // A fresh accessor: this runner's own (runner, victim, environ) events
    // are past the audit trail's rate limit by now (the ring buffer kept
    // the ones made while no agent ran).
    let cat = Command::new("cat")
        .arg(format!("/proc/{}/environ", v.pid))
        .output()
        .map_err(|e| e.to_string())?;
    if !cat.status.success() {
        return Err("audit mode: cat of environ failed".into());
    }
    wait_log_line(&[
        "[LSM AUDIT]",
        &format!("environ access to PID={} (cat)", v.pid),
    ])?;

    let stopping = std::mem::replace(&mut ctx.agent, Agent::detached());
    stopping.stop()?;
    all("after --unpin-on-exit", v.pid, v.pid, v.addr, false)?;
    if std::path::Path::new("/sys/fs/bpf/kernelseal").exists() {
        return Err("pins left after --unpin-on-exit".into());
    }
    // Fresh agent for what follows: a new load, not an adoption.
    ctx.agent = Agent::start(Policy::ENFORCE_ALL)?;
    let reloaded =
        program_ids("[OK] LSM BPF programs loaded and attached").ok_or("no fresh load")?;
    if reloaded == loaded {
        return Err("a fresh load after unpin reused the old program ids".into());
    }
    Ok(())
}

/// A reload keeps marks: processes protected before SIGHUP stay protected.
pub fn reload_keeps_marks(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let v = Victim::spawn_bound()?;
    ctx.agent.set_policy(Policy {
        maps: false,
        ..Policy::ENFORCE_ALL
    })?;
    let env = Vector::Environ.attempt(v.pid, v.pid, 0);
    if env != Outcome::Refused(libc::EACCES) {
        return Err(format!("environ after reload: {env}"));
    }
    Ok(())
}

/// `kernelseal check` in a VM with BPF-LSM: every requirement OK, exit 0.
pub fn check_passes_with_bpf_lsm(_ctx: &mut Ctx) -> TestResult {
    let out = crate::agent::kernelseal(&["check"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success()
        || !text.contains("[ OK ] LSM programs load and attach")
        || !text.contains("[ OK ] LSM list")
        || !text.contains("enforcement is possible")
    {
        return Err(format!("kernelseal check: {}: {text}", out.status));
    }
    wait_log_line(&["[OK] self-test: opening /proc/<marked>/environ was refused"])
}

/// An agent of an older pin layout is replaced: the new links attach before
/// the old ones go, marks survive (shared marks map), the old pins vanish.
pub fn upgrade_replaces_old_layout_keeping_marks(ctx: &mut Ctx) -> TestResult {
    let stopping = std::mem::replace(&mut ctx.agent, Agent::detached());
    stopping.stop()?;
    let mut old = Agent::start_with(&Policy::ENFORCE_ALL.yaml(), &["--pin-layout-version", "0"])?;
    let v = Victim::spawn_bound()?;
    all(
        "marked by the old layout's programs",
        v.pid,
        v.pid,
        v.addr,
        true,
    )?;
    // A file delivered under the old layout stays guarded after the upgrade.
    let mut wrapped = Victim::spawn_wrapped()?;
    let file = format!("{}/wrapped.txt", wrapped.ask("secretsdir")?);
    let refused = format!("read err {}", libc::EACCES);
    if crate::victim::read_reply(&file) != refused {
        return Err(format!("root reading {file} under the old layout"));
    }
    old.kill9();
    ctx.agent = Agent::start(Policy::ENFORCE_ALL)?;
    wait_log_line(&[
        "[OK] LSM BPF programs loaded and attached",
        "replaced layout v0 pins",
    ])?;
    all("after the upgrade", v.pid, v.pid, v.addr, true)?;
    let root = crate::victim::read_reply(&file);
    if root != refused {
        return Err(format!(
            "root reading {file} delivered before the upgrade: {root}"
        ));
    }
    let own = wrapped.ask(&format!("readpath {file}"))?;
    if own != format!("read {}", "wrapped-file-value".len()) {
        return Err(format!("the app reading its file after the upgrade: {own}"));
    }
    if std::path::Path::new("/sys/fs/bpf/kernelseal/v0").exists() {
        return Err("old layout pins left behind".into());
    }
    let fresh = Victim::spawn_bound()?;
    all(
        "marked by the new programs",
        fresh.pid,
        fresh.pid,
        fresh.addr,
        true,
    )
}

/// A scanner hammering one protected process gets BURST log lines and one
/// suppressed-count line per window, not one line per attempt.
pub fn audit_trail_is_rate_limited(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let v = Victim::spawn_bound()?;
    let me = std::process::id();
    for _ in 0..40 {
        let got = Vector::Environ.attempt(v.pid, v.pid, 0);
        if got != Outcome::Refused(libc::EACCES) {
            return Err(format!("environ read: {got}"));
        }
    }
    // The window ends on the agent's 10 s flush tick.
    wait_log_line_for(
        &[&format!(
            "[LSM SUPPRESSED] 35 more environ event(s) from PID={me} on PID={}",
            v.pid
        )],
        30,
    )?;
    let blocked = log_text()
        .lines()
        .filter(|l| {
            l.contains(&format!(
                "[LSM BLOCKED] PID={me} attempted environ access to PID={}",
                v.pid
            ))
        })
        .count();
    if blocked != 5 {
        return Err(format!(
            "{blocked} BLOCKED lines for 40 reads by one accessor, want 5"
        ));
    }
    Ok(())
}

/// `kernelseal exec -- app`: the app gets its secret in its environment and
/// is protected from its first instruction (same PID as the wrapper).
pub fn exec_wrapper_delivers_and_protects(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let mut v = Victim::spawn_wrapped()?;
    let len = v.ask_number("getenv WRAPPED_SECRET", "env")?;
    if len as usize != "wrapped-secret-value".len() {
        return Err(format!("WRAPPED_SECRET has length {len}"));
    }
    all("wrapped app", v.pid, v.pid, v.addr, true)?;
    let child = v.ask_number("fork", "child")?;
    let result = all("wrapped app's child", child, child, v.addr, true);
    kill_pid(child);
    result?;
    wait_log_line(&[&format!(
        "[INJECT] Secrets injected into PID {}: [WRAPPED_SECRET, wrapped.txt]",
        v.pid
    )])?;
    let log = log_text();
    if log.contains("wrapped-secret-value") {
        return Err("the secret value appeared in the agent's log".into());
    }
    // Debian's 6.12 and 6.19 kernels have CONFIG_SECRETMEM: the agent's
    // cache must be in secret memory there, not in the fallback.
    if !log.contains("[MEMORY] secret values are held in secret memory (memfd_secret)") {
        return Err(format!("the agent's cache is not in secret memory: {log}"));
    }
    Ok(())
}

/// `delivery: file`: the app, and its children, read the file; root and a
/// sibling are refused (EACCES); the directory goes when the app exits.
pub fn file_delivery_is_guarded(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let mut v = Victim::spawn_wrapped()?;
    let dir = v.ask("secretsdir")?;
    if !dir.starts_with("/run/kernelseal/secrets/") {
        return Err(format!("KERNELSEAL_SECRETS_DIR = {dir:?}"));
    }
    let file = format!("{dir}/wrapped.txt");
    let own = v.ask(&format!("readpath {file}"))?;
    if own != format!("read {}", "wrapped-file-value".len()) {
        return Err(format!("the app reading its own secret file: {own}"));
    }
    let child = v.ask(&format!("forkread {file}"))?;
    if child != "child read ok" {
        return Err(format!("the app's child reading the file: {child}"));
    }
    let root = crate::victim::read_reply(&file);
    if root != format!("read err {}", libc::EACCES) {
        return Err(format!("root reading the app's secret file: {root}"));
    }
    let mut sibling = Victim::spawn()?;
    let sib = sibling.ask(&format!("readpath {file}"))?;
    if sib != format!("read err {}", libc::EACCES) {
        return Err(format!("a sibling reading the app's secret file: {sib}"));
    }
    wait_log_line(&["[LSM BLOCKED]", "secret-file"])?;
    drop(v);
    let start = std::time::Instant::now();
    while std::path::Path::new(&dir).exists() {
        if start.elapsed() > std::time::Duration::from_secs(10) {
            return Err(format!("{dir} left after the app exited"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if log_text().contains("wrapped-file-value") {
        return Err("the file secret's value appeared in the log".into());
    }
    Ok(())
}

/// A `delivery: file` binding matched at exec by the kernel (no wrapper):
/// the agent writes the files on the exec event to /run/kernelseal/secrets/<pid>/.
pub fn file_delivery_on_exec_without_wrapper(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let mut v = Victim::spawn_named("ks-file-victim")?;
    let file = format!("/run/kernelseal/secrets/{}/exec.txt", v.pid);
    let start = std::time::Instant::now();
    loop {
        let got = v.ask(&format!("readpath {file}"))?;
        if got == format!("read {}", "exec-file-value".len()) {
            break;
        }
        if start.elapsed() > std::time::Duration::from_secs(10) {
            return Err(format!("the exec-matched app reading {file}: {got}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let root = crate::victim::read_reply(&file);
    if root != format!("read err {}", libc::EACCES) {
        return Err(format!("root reading the exec-delivered file: {root}"));
    }
    wait_log_line(&[&format!(
        "[FILE] Secrets written to /run/kernelseal/secrets/{} for PID {}",
        v.pid, v.pid
    )])
}
