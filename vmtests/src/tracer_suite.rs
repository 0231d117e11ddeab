//! A debugger attached before the wrapper is protected: the gate refuses
//! new attaches, but an existing tracer could still `PTRACE_PEEKDATA` the
//! secrets out, so the agent must refuse such a caller in enforce.

use std::ffi::CString;
use std::time::{Duration, Instant};

use crate::agent::{KERNELSEAL, Policy, log_text, wait_log_line};
use crate::suite::{Ctx, TestResult};
use crate::victim::kill_pid;

const ERR_FILE: &str = "/tmp/ks-traced.err";

/// What a traced `kernelseal exec` did.
struct TracedRun {
    pid: u32,
    exit_code: i32,
    stderr: String,
}

/// Runs `kernelseal exec --timeout 10s -- /bin/true` under our own ptrace
/// (PTRACE_TRACEME before exec: attached from the first instruction, long
/// before the wrapper reaches the agent), continuing every stop.
fn run_traced() -> Result<TracedRun, String> {
    let path = CString::new(KERNELSEAL).unwrap();
    let args: Vec<CString> = ["kernelseal", "exec", "--timeout", "10s", "--", "/bin/true"]
        .iter()
        .map(|a| CString::new(*a).unwrap())
        .collect();
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let err_path = CString::new(ERR_FILE).unwrap();
    // SAFETY: the child only makes async-signal-safe calls, then execs or
    // _exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err("fork failed".into());
    }
    if child == 0 {
        // SAFETY: see above; all pointers outlive the calls.
        unsafe {
            let fd = libc::open(
                err_path.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                0o600,
            );
            if fd >= 0 {
                libc::dup2(fd, 2);
            }
            libc::ptrace(
                libc::PTRACE_TRACEME,
                0,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            );
            libc::execv(path.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        if r == child {
            if libc::WIFSTOPPED(status) {
                // The exec's SIGTRAP is ours; any other signal is the app's.
                let sig = libc::WSTOPSIG(status);
                let inject = if sig == libc::SIGTRAP { 0 } else { sig };
                // SAFETY: resuming our stopped tracee.
                unsafe {
                    libc::ptrace(
                        libc::PTRACE_CONT,
                        child,
                        std::ptr::null_mut::<libc::c_void>(),
                        inject as usize as *mut libc::c_void,
                    )
                };
                continue;
            }
            break;
        }
        if Instant::now() > deadline {
            kill_pid(child as u32);
            // SAFETY: reaping it.
            unsafe { libc::waitpid(child, &mut status, 0) };
            return Err("the traced wrapper did not finish within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let exit_code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    Ok(TracedRun {
        pid: child as u32,
        exit_code,
        stderr: std::fs::read_to_string(ERR_FILE).unwrap_or_default(),
    })
}

fn untraced_wrapper_gets_its_secrets(when: &str) -> TestResult {
    let out = std::process::Command::new(KERNELSEAL)
        .args(["exec", "--verbose", "--timeout", "10s", "--", "/bin/true"])
        .output()
        .map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "{when}: untraced wrapper failed ({}): {}",
            out.status,
            err.trim()
        ));
    }
    // Debian's kernels have CONFIG_SECRETMEM and (from 6.5) enable it: the
    // wrapper must have used it, not the fallback.
    if !err.contains("held in secret memory (memfd_secret)") {
        return Err(format!(
            "{when}: the wrapper did not hold the secrets in secret memory: {}",
            err.trim()
        ));
    }
    Ok(())
}

/// allow (untraced) → refuse (traced, enforce) → allow (untraced) → audit:
/// a traced caller is logged and served.
pub fn wrapper_traced_before_protection_is_refused(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    untraced_wrapper_gets_its_secrets("before")?;

    let run = run_traced()?;
    if run.exit_code != 125 {
        return Err(format!(
            "traced wrapper under enforce: want exit 125 (refused), got {} ({})",
            run.exit_code,
            run.stderr.trim()
        ));
    }
    if !run.stderr.contains("is being traced") {
        return Err(format!(
            "traced wrapper's reason does not name the tracer: {}",
            run.stderr.trim()
        ));
    }
    let me = std::process::id();
    wait_log_line(&[
        &format!("[INJECT] refusing PID {}", run.pid),
        &format!("by PID {me}"),
    ])?;
    if log_text().contains(&format!("Secrets injected into PID {}:", run.pid)) {
        return Err("the traced wrapper was refused, yet the log says it got secrets".into());
    }

    untraced_wrapper_gets_its_secrets("after the refusal")?;

    ctx.agent.set_policy(Policy {
        mode: "audit",
        ..Policy::ENFORCE_ALL
    })?;
    let run = run_traced()?;
    if run.exit_code != 0 {
        return Err(format!(
            "traced wrapper under audit: want exit 0 (served), got {} ({})",
            run.exit_code,
            run.stderr.trim()
        ));
    }
    wait_log_line(&[&format!("[AUDIT] PID {} is being traced", run.pid)])?;
    wait_log_line(&[&format!("Secrets injected into PID {}:", run.pid)])
}
