//! Caller identity as the host sees it, whatever the agent's own cgroup
//! namespace.

use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::agent::{Agent, KERNELSEAL, Policy, wait_log_line};
use crate::suite::{Ctx, TestResult};

const CG_ROOT: &str = "/sys/fs/cgroup";
const BINDING: &str = "  - name: by-cgroup\n    selector:\n      cgroupPath: /ks-app\n    secretRefs:\n      - name: CG_SECRET\n        source:\n          value: cgroup-secret\n";

/// Moves the calling process into the cgroup whose `cgroup.procs` is
/// `procs`. Runs between fork and exec: syscalls only, no allocation.
pub(crate) fn join_cgroup(procs: &std::ffi::CStr) -> std::io::Result<()> {
    // SAFETY: open/write/close on a NUL-terminated path and a static buffer.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
        libc::close(fd);
        if !ok {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The length of CG_SECRET as a wrapped shell saw it, run in `cgroup`
/// (`None`: where the runner is).
fn wrapped_secret_len(cgroup: Option<&'static std::ffi::CStr>) -> Result<String, String> {
    let mut cmd = Command::new(KERNELSEAL);
    cmd.args(["exec", "--timeout", "10s", "--", "/bin/sh", "-c"])
        .arg("printf %s \"${#CG_SECRET}\"");
    if let Some(procs) = cgroup {
        // SAFETY: join_cgroup only makes syscalls.
        unsafe { cmd.pre_exec(move || join_cgroup(procs)) };
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "wrapped shell failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An agent in its own cgroup namespace (as in a container) still matches
/// `cgroupPath: /ks-app` written with the host's path: it joins PID 1's
/// namespace at start. A caller outside /ks-app gets nothing (the control).
pub fn cgroup_paths_are_read_as_the_host_writes_them(ctx: &mut Ctx) -> TestResult {
    for dir in ["ks-agent", "ks-app"] {
        let path = format!("{CG_ROOT}/{dir}");
        std::fs::create_dir_all(&path).map_err(|e| format!("{path}: {e}"))?;
    }
    let stopping = std::mem::replace(&mut ctx.agent, Agent::detached());
    stopping.stop()?;
    let yaml = Policy::ENFORCE_ALL.yaml_with(BINDING, "");
    let agent_procs = c"/sys/fs/cgroup/ks-agent/cgroup.procs";
    ctx.agent = Agent::start_with_setup(&yaml, &["--unpin-on-exit"], move || {
        join_cgroup(agent_procs)?;
        // SAFETY: unshare of the cgroup namespace: the agent's root is now
        // /ks-agent, and it would read /ks-app as /../ks-app.
        if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })?;
    let result = (|| {
        wait_log_line(&["[IDENTITY] joined the cgroup namespace of PID 1"])?;
        let inside = wrapped_secret_len(Some(c"/sys/fs/cgroup/ks-app/cgroup.procs"))?;
        if inside != "cgroup-secret".len().to_string() {
            return Err(format!(
                "a caller in /ks-app got CG_SECRET of length {inside:?}"
            ));
        }
        let outside = wrapped_secret_len(None)?;
        if outside != "0" {
            return Err(format!(
                "a caller outside /ks-app got CG_SECRET of length {outside}"
            ));
        }
        Ok(())
    })();
    // Back to the suite's agent, in the root cgroup and namespace.
    let stopping = std::mem::replace(&mut ctx.agent, Agent::detached());
    stopping.stop()?;
    ctx.agent = Agent::start(Policy::ENFORCE_ALL)?;
    for dir in ["ks-app", "ks-agent"] {
        let _ = std::fs::remove_dir(format!("{CG_ROOT}/{dir}"));
    }
    result
}
