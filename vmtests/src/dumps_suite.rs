//! Core dumps of a protected process, the leak a crash handled by
//! systemd-coredump or apport opens: a file core (root raised the app's
//! RLIMIT_CORE with prlimit, no ptrace check) and a pipe handler (which
//! ignores RLIMIT_CORE), induced by a signal from root and by the process
//! crashing itself. Each next to an unprotected control whose core holds
//! the secret, so the dump itself is known to work.

use std::io::Read;
use std::time::{Duration, Instant};

use crate::agent::{Policy, protect, wait_log_line};
use crate::suite::{Ctx, TestResult};
use crate::victim::{SECRET_VALUE, Victim};

const CORE_PATTERN: &str = "/proc/sys/kernel/core_pattern";

/// `kernelseal-vmtests core-sink PATH`: the pipe handler the kernel starts
/// for a `|…` core_pattern; copies the core from stdin to PATH.
pub fn core_sink(path: &str) -> std::process::ExitCode {
    let mut core = Vec::new();
    if std::io::stdin().read_to_end(&mut core).is_err() || std::fs::write(path, core).is_err() {
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

/// Sets core_pattern for the test and puts the old one back after.
struct CorePattern(String);

impl CorePattern {
    fn set(pattern: &str) -> Result<Self, String> {
        let old = std::fs::read_to_string(CORE_PATTERN)
            .map_err(|e| format!("reading {CORE_PATTERN}: {e}"))?;
        std::fs::write(CORE_PATTERN, pattern)
            .map_err(|e| format!("writing {CORE_PATTERN}: {e}"))?;
        Ok(CorePattern(old.trim_end().to_string()))
    }
}

impl Drop for CorePattern {
    fn drop(&mut self) {
        let _ = std::fs::write(CORE_PATTERN, &self.0);
    }
}

/// How the victim dies.
#[derive(Clone, Copy)]
enum Death {
    /// Root sends SIGQUIT (a core signal without a Rust handler: std's
    /// SIGSEGV handler would return from a signal sent by kill()).
    Signal,
    /// The process faults itself (SIGSEGV, default action).
    Crash,
}

/// Raises the victim's RLIMIT_CORE from outside, as `prlimit --core` does.
fn raise_core_limit(pid: u32) -> Result<(), String> {
    let unlimited = libc::rlimit64 {
        rlim_cur: libc::RLIM64_INFINITY,
        rlim_max: libc::RLIM64_INFINITY,
    };
    // SAFETY: prlimit64 on a pid with a valid new limit and no old one.
    let rc = unsafe {
        libc::prlimit64(
            pid as libc::pid_t,
            libc::RLIMIT_CORE,
            &unlimited,
            std::ptr::null_mut(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "prlimit RLIMIT_CORE of {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Kills the victim the chosen way and waits for it to be gone.
fn dump(mut v: Victim, death: Death) -> Result<(), String> {
    match death {
        Death::Signal => {
            // SAFETY: signalling the victim we spawned.
            unsafe { libc::kill(v.pid as libc::pid_t, libc::SIGQUIT) };
        }
        Death::Crash => {
            v.send("crash")?;
        }
    }
    v.wait_exit(Duration::from_secs(30))
}

/// Whether a core that holds the secret appears at `path` within `wait`.
fn core_with_secret(path: &str, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(core) = std::fs::read(path)
            && core
                .windows(SECRET_VALUE.len())
                .any(|w| w == SECRET_VALUE.as_bytes())
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One victim, protected or not, dumped through `pattern` (with `{}` for
/// its PID in the core's path): whether its core held the secret.
fn leaked(pattern: &str, path: &str, protected: bool, death: Death) -> Result<bool, String> {
    let _pattern = CorePattern::set(pattern)?;
    let v = Victim::spawn()?;
    if protected {
        protect(v.pid)?;
    }
    raise_core_limit(v.pid)?;
    let core = path.replace("{}", &v.pid.to_string());
    let _ = std::fs::remove_file(&core);
    dump(v, death)?;
    // A refused dump writes nothing: a short wait is enough there; the
    // control's pipe handler may still be copying.
    let found = core_with_secret(&core, Duration::from_secs(if protected { 2 } else { 20 }));
    let _ = std::fs::remove_file(&core);
    Ok(found)
}

fn sink_pattern(path: &str) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| format!("this binary's path: {e}"))?;
    Ok(format!(
        "|{} core-sink {}",
        exe.display(),
        path.replace("{}", "%p")
    ))
}

pub fn core_dumps_of_protected_process_are_refused(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let file = "/tmp/ks-core.{}";
    let file_pattern = "/tmp/ks-core.%p";
    let piped = "/tmp/ks-pipecore.{}";
    let pipe_pattern = sink_pattern(piped)?;
    for (label, pattern, path) in [
        ("file core", file_pattern.to_string(), file),
        ("pipe handler", pipe_pattern, piped),
    ] {
        for (how, death) in [("root's signal", Death::Signal), ("a crash", Death::Crash)] {
            if !leaked(&pattern, path, false, death)? {
                return Err(format!(
                    "control: {label} after {how} of an unprotected process must hold its \
                     secret (pattern {pattern})"
                ));
            }
            if leaked(&pattern, path, true, death)? {
                return Err(format!(
                    "{label} after {how} of a protected process holds its secret"
                ));
            }
        }
    }
    wait_log_line(&["[LSM BLOCKED]", "attempted core-dump access"])?;

    ctx.agent.set_policy(Policy {
        mode: "audit",
        ..Policy::ENFORCE_ALL
    })?;
    if !leaked(file_pattern, file, true, Death::Signal)? {
        return Err("audit: the protected process's core must be written".into());
    }
    wait_log_line(&["[LSM AUDIT]", "core-dump access"])
}
