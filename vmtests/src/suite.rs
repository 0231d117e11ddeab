//! The privileged suite: the attack matrix (`attacks::ALL`: environ, task
//! environ, mem, maps, ptrace attach and seize, process_vm_readv, pidfd_getfd) against
//! processes marked with `kernelseal protect`, in enforce and audit mode,
//! per switch, and the allow → deny → allow round trip. docs/architecture.md
//! maps the code this suite drives.

use std::process::Command;

use crate::agent::{self, Agent, Policy, protect, unprotect, wait_log_line};
use crate::attacks::{ALL, Outcome, Vector};
use crate::victim::{Victim, kill_pid};

pub type TestResult = Result<(), String>;

pub struct Ctx {
    pub agent: Agent,
}

/// Every vector against (pid, tid) must match `expect(vector)`:
/// `true` = refused with the vector's errno, `false` = allowed.
pub(crate) fn matrix(
    label: &str,
    pid: u32,
    tid: u32,
    addr: usize,
    expect: impl Fn(Vector) -> bool,
) -> TestResult {
    let mut wrong = Vec::new();
    for v in ALL {
        let got = v.attempt(pid, tid, addr);
        let ok = if expect(v) {
            got == Outcome::Refused(v.refusal_errno())
        } else {
            got == Outcome::Allowed
        };
        if !ok {
            let want = if expect(v) { "refused" } else { "allowed" };
            wrong.push(format!("{}: want {want}, got {got}", v.name()));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{label} (pid {pid}, tid {tid}): {}",
            wrong.join("; ")
        ))
    }
}

pub(crate) fn all_refused(label: &str, pid: u32, tid: u32, addr: usize) -> TestResult {
    matrix(label, pid, tid, addr, |_| true)
}

pub(crate) fn all_allowed(label: &str, pid: u32, tid: u32, addr: usize) -> TestResult {
    matrix(label, pid, tid, addr, |_| false)
}

fn protected_victim() -> Result<Victim, String> {
    let v = Victim::spawn()?;
    protect(v.pid)?;
    Ok(v)
}

pub fn enforce_refuses_all_vectors_on_process(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let v = protected_victim()?;
    all_refused("protected process", v.pid, v.pid, v.addr)?;
    for kind in ["environ", "mem", "maps", "ptrace"] {
        wait_log_line(&[
            "[LSM BLOCKED]",
            &format!("attempted {kind} access to PID={}", v.pid),
        ])?;
    }
    Ok(())
}

pub fn enforce_covers_thread_created_after_mark(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let mut v = protected_victim()?;
    let tid = v.ask_number("thread", "tid")?;
    all_refused("thread via its process", v.pid, tid, v.addr)?;
    all_refused("thread by tid", tid, tid, v.addr)
}

pub fn enforce_covers_child_forked_after_mark(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let mut v = protected_victim()?;
    let child = v.ask_number("fork", "child")?;
    let result = all_refused("forked child", child, child, v.addr);
    kill_pid(child);
    result
}

pub fn children_not_protected_without_inheritance(ctx: &mut Ctx) -> TestResult {
    // inheritProtection: false is a config switch; with it off a child
    // forked after the mark is readable, the parent still is not.
    let yaml =
        "version: v1\npolicy:\n  mode: enforce\n  blockMaps: true\n  inheritProtection: false\n";
    ctx.agent.set_policy_yaml(yaml)?;
    let mut v = protected_victim()?;
    let child = v.ask_number("fork", "child")?;
    let result = all_allowed("child without inheritance", child, child, v.addr)
        .and_then(|()| all_refused("parent", v.pid, v.pid, v.addr));
    kill_pid(child);
    result
}

pub fn mark_survives_execve(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let mut v = protected_victim()?;
    v.exec_sleep()?;
    // The address came from the old image; the refusal comes before any
    // address is looked at.
    all_refused("after execve", v.pid, v.pid, v.addr)
}

pub fn process_reads_its_own_files(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let mut v = protected_victim()?;
    match v.ask("selfread")?.as_str() {
        "self allowed" => Ok(()),
        other => Err(format!(
            "protected process reading its own environ: {other}"
        )),
    }
}

pub fn allow_self_read_false_refuses_own_files(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy {
        self_read: false,
        ..Policy::ENFORCE_ALL
    })?;
    let mut v = protected_victim()?;
    let reply = v.ask("selfread")?;
    if reply != format!("self refused {}", libc::EACCES) {
        return Err(format!(
            "allowSelfRead=false: own environ read gave {reply:?}"
        ));
    }
    wait_log_line(&["[LSM BLOCKED]", "self-read", &format!("PID={}", v.pid)])
}

pub fn tools_still_work(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let v = protected_victim()?;
    let pid = v.pid.to_string();
    let ns = format!("/proc/{pid}/ns");
    let checks: [(&str, Vec<&str>); 5] = [
        ("ps", vec!["ps"]),
        ("top", vec!["top", "-b", "-n", "1"]),
        ("ls -l /proc/P/ns", vec!["ls", "-l", &ns]),
        (
            "nsenter -t P",
            vec!["nsenter", "-t", &pid, "-u", "-n", "true"],
        ),
        ("cat /proc/P/status", vec!["cat", "/proc/self/status"]),
    ];
    for (label, argv) in checks {
        let out = Command::new(argv[0])
            .args(&argv[1..])
            .output()
            .map_err(|e| format!("{label}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{label} failed on a protected process: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        if label == "ps" && !String::from_utf8_lossy(&out.stdout).contains(&pid) {
            return Err("ps does not list the protected process".into());
        }
    }
    for file in ["status", "stat", "cmdline", "comm"] {
        std::fs::read(format!("/proc/{pid}/{file}")).map_err(|e| format!("/proc/P/{file}: {e}"))?;
    }
    Ok(())
}

pub fn unrelated_process_unaffected(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let _protected = protected_victim()?;
    let mut other = Victim::spawn()?;
    all_allowed("unrelated process", other.pid, other.pid, other.addr)?;
    let tid = other.ask_number("thread", "tid")?;
    all_allowed("unrelated thread by tid", tid, tid, other.addr)
}

pub fn audit_allows_and_logs(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy {
        mode: "audit",
        ..Policy::ENFORCE_ALL
    })?;
    let v = protected_victim()?;
    all_allowed("audit mode", v.pid, v.pid, v.addr)?;
    for kind in ["environ", "mem", "maps", "ptrace"] {
        wait_log_line(&["[LSM AUDIT]", &format!("{kind} access to PID={}", v.pid)])?;
    }
    Ok(())
}

pub fn each_switch_off_allows_its_kind(ctx: &mut Ctx) -> TestResult {
    let cases: [(&str, Policy); 4] = [
        (
            "environ",
            Policy {
                environ: false,
                ..Policy::ENFORCE_ALL
            },
        ),
        (
            "mem",
            Policy {
                mem: false,
                ..Policy::ENFORCE_ALL
            },
        ),
        (
            "maps",
            Policy {
                maps: false,
                ..Policy::ENFORCE_ALL
            },
        ),
        (
            "ptrace",
            Policy {
                ptrace: false,
                ..Policy::ENFORCE_ALL
            },
        ),
    ];
    let v = protected_victim()?;
    for (kind, policy) in cases {
        ctx.agent.set_policy(policy)?;
        matrix(&format!("block{kind} off"), v.pid, v.pid, v.addr, |vec| {
            vec.kind() != kind
        })?;
    }
    Ok(())
}

/// A refused environ open must not leave a pending record that refuses the
/// next, allowed, open of the same target (seen on 6.12 without the reset).
pub fn refusal_leaves_no_stale_state(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy {
        maps: false,
        ..Policy::ENFORCE_ALL
    })?;
    let v = protected_victim()?;
    let other = Victim::spawn()?;
    for _ in 0..3 {
        let env = Vector::Environ.attempt(v.pid, v.pid, 0);
        if env != Outcome::Refused(libc::EACCES) {
            return Err(format!("environ of protected: {env}"));
        }
        let maps = Vector::Maps.attempt(v.pid, v.pid, 0);
        if maps != Outcome::Allowed {
            return Err(format!("maps of protected after a refused environ: {maps}"));
        }
        let env_other = Vector::Environ.attempt(other.pid, other.pid, 0);
        if env_other != Outcome::Allowed {
            return Err(format!("environ of unrelated after a refusal: {env_other}"));
        }
    }
    Ok(())
}

pub fn unprotect_round_trip(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let v = Victim::spawn()?;
    all_allowed("before protect", v.pid, v.pid, v.addr)?;
    protect(v.pid)?;
    all_refused("after protect", v.pid, v.pid, v.addr)?;
    unprotect(v.pid)?;
    all_allowed("after unprotect", v.pid, v.pid, v.addr)?;
    protect(v.pid)?;
    all_refused("protected again", v.pid, v.pid, v.addr)
}

pub fn agent_is_protected(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let pid = ctx.agent.pid;
    let env = Vector::Environ.attempt(pid, pid, 0);
    if env != Outcome::Refused(libc::EACCES) {
        return Err(format!("agent's own environ: {env}"));
    }
    // Protecting the agent by hand must not drop its allowed flag.
    protect(pid)?;
    let out = agent::kernelseal(&["status", &pid.to_string()])?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains("protected (agent)") {
        return Err(format!("kernelseal status of the agent: {text}"));
    }
    Ok(())
}

pub fn protect_bad_input_fails_clearly(_ctx: &mut Ctx) -> TestResult {
    let cases: [(&[&str], &str); 3] = [
        (&["protect", "4000000"], "no process with PID 4000000"),
        (&["protect", "2"], "kernel thread"),
        (&["protect", "notapid"], "invalid value"),
    ];
    for (args, needle) in cases {
        let out = agent::kernelseal(args)?;
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !err.contains(needle) {
            return Err(format!(
                "kernelseal {args:?}: status {}, stderr {err:?}, want {needle:?}",
                out.status
            ));
        }
    }
    Ok(())
}
