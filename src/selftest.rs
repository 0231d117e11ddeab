//! The agent's start-up proof that the kernel enforces: a throw-away child
//! is marked and the agent (not yet allowed) opens its /proc file. BPF-LSM
//! programs can attach on a kernel whose LSM list lacks "bpf" and then never
//! run; only trying an access shows that.

use std::ffi::CString;

use kernelseal_bpf::{Gate, KernelPolicy};
use kernelseal_config::Mode;

/// Forks a child that only waits to be killed.
fn spawn_idle_child() -> Result<libc::pid_t, String> {
    // SAFETY: the child only calls pause() in a loop, which is
    // async-signal-safe, so forking a process with threads is sound.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        },
        child => Ok(child),
    }
}

fn reap(pid: libc::pid_t) {
    // SAFETY: killing and reaping our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// Ok(description) when the gate behaves as `policy` says; Err(why) when it
/// does not (the caller fails closed).
pub fn run(gate: &Gate, policy: &KernelPolicy) -> Result<String, String> {
    let file = if policy.switches.block_environ {
        "environ"
    } else if policy.switches.block_mem {
        "mem"
    } else if policy.switches.block_maps {
        "maps"
    } else {
        return Ok("skipped: no /proc file kind is blocked by the policy".into());
    };
    let child = spawn_idle_child()?;
    let result = probe(gate, policy, child, file);
    reap(child);
    result
}

fn probe(
    gate: &Gate,
    policy: &KernelPolicy,
    child: libc::pid_t,
    file: &str,
) -> Result<String, String> {
    gate.marks()
        .protect(child as u32, 0)
        .map_err(|e| format!("marking a test process: {e}"))?;
    let path = CString::new(format!("/proc/{child}/{file}")).expect("no NUL");
    // SAFETY: open/close on a valid C string.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    if fd >= 0 {
        // SAFETY: closing what we opened.
        unsafe { libc::close(fd) };
    }
    match (policy.mode(), fd >= 0) {
        (Mode::Enforce, false) if errno == libc::EACCES => Ok(format!(
            "opening /proc/<marked>/{file} was refused (EACCES)"
        )),
        (Mode::Enforce, true) => Err(format!(
            "a marked process's /proc/{file} was readable: the LSM programs are attached but \
             not running (is \"bpf\" in the lsm= boot parameter?)"
        )),
        (Mode::Enforce, false) => Err(format!(
            "opening /proc/<marked>/{file} failed with errno {errno}, not the expected EACCES"
        )),
        (_, true) => Ok(format!(
            "audit: /proc/<marked>/{file} readable, as audit mode allows"
        )),
        (_, false) => Err(format!(
            "audit mode refused /proc/<marked>/{file} (errno {errno})"
        )),
    }
}
