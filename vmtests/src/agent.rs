//! Starts, reconfigures and stops the real `kernelseal agent` for the suite.

use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// The `kernelseal` command (it execs [`CORE`] for all but `exec`).
pub const KERNELSEAL: &str = "/usr/bin/kernelseal";
/// The file the agent runs and trusts, and a handover admits.
pub const CORE: &str = "/usr/bin/kernelseal-core";
pub const CONFIG: &str = "/tmp/vmtests-agent.yaml";
const LOG: &str = "/tmp/vmtests-agent.log";

/// The policy switches a test wants; rendered into the agent's config.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub mode: &'static str,
    pub environ: bool,
    pub mem: bool,
    pub maps: bool,
    pub ptrace: bool,
    pub self_read: bool,
}

impl Policy {
    pub const ENFORCE_ALL: Policy = Policy {
        mode: "enforce",
        environ: true,
        mem: true,
        maps: true,
        ptrace: true,
        self_read: true,
    };

    pub fn yaml(&self) -> String {
        self.yaml_with("", "")
    }

    /// The suite's config plus `bindings` (YAML list items under
    /// `secrets:`) and `top` (top-level keys).
    pub fn yaml_with(&self, bindings: &str, top: &str) -> String {
        format!(
            "version: v1\npolicy:\n  mode: {}\n  blockEnviron: {}\n  blockMem: {}\n  blockMaps: {}\n  blockPtrace: {}\n  allowSelfRead: {}\n  auditAll: false\n  inheritProtection: true\n  kernelBinaryFilter: true\n{}{bindings}{top}monitoring:\n  logLevel: info\n",
            self.mode, self.environ, self.mem, self.maps, self.ptrace, self.self_read, EXEC_BINDING
        )
    }
}

/// Every config of the suite binds the victim's exec name, so a victim
/// started as `/tmp/ks-victim` is marked by the kernel at exec.
pub const EXEC_BINARY: &str = "ks-victim";
/// The second binding selects socket callers by uid only (not by exec
/// name), so only the wrapper's request marks its process.
const EXEC_BINDING: &str = "secrets:\n  - name: victims\n    selector:\n      binary: ks-victim\n    secretRefs:\n      - name: VICTIM_SECRET\n        source:\n          value: not-delivered-yet\n  - name: wrapped\n    selector:\n      uid: 0\n    secretRefs:\n      - name: WRAPPED_SECRET\n        source:\n          value: wrapped-secret-value\n  - name: wrapped-files\n    selector:\n      uid: 0\n    delivery: file\n    secretRefs:\n      - name: wrapped.txt\n        source:\n          value: wrapped-file-value\n  - name: exec-files\n    selector:\n      binary: ks-file-victim\n    delivery: file\n    secretRefs:\n      - name: exec.txt\n        source:\n          value: exec-file-value\n";

pub struct Agent {
    child: Option<Child>,
    pub pid: u32,
}

impl Agent {
    /// Starts the agent with `--unpin-on-exit` (the suite's default, so a
    /// failed run leaves nothing attached).
    pub fn start(policy: Policy) -> Result<Self, String> {
        Self::start_with(&policy.yaml(), &["--unpin-on-exit"])
    }

    pub fn start_with(yaml: &str, extra: &[&str]) -> Result<Self, String> {
        Self::start_with_setup(yaml, extra, || Ok(()))
    }

    /// Like [`Agent::start_with`], with `setup` run in the agent's process
    /// just before it execs (joining a cgroup, a new namespace).
    pub fn start_with_setup(
        yaml: &str,
        extra: &[&str],
        setup: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Result<Self, String> {
        Self::start_binary(KERNELSEAL, yaml, extra, &[], setup)
    }

    /// Like [`Agent::start_with`], with `env` added to the agent's
    /// environment (`KUBECONFIG`, `NODE_NAME`: what a DaemonSet gives it).
    pub fn start_with_env(
        yaml: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        Self::start_binary(KERNELSEAL, yaml, extra, env, || Ok(()))
    }

    /// The agent of another KernelSeal binary (a copy: another build, as
    /// far as the kernel can tell).
    pub fn start_from(binary: &str, yaml: &str, extra: &[&str]) -> Result<Self, String> {
        Self::start_binary(binary, yaml, extra, &[], || Ok(()))
    }

    fn start_binary(
        binary: &str,
        yaml: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        setup: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Result<Self, String> {
        use std::os::unix::process::CommandExt;
        write_config(yaml)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(LOG)
            .map_err(|e| e.to_string())?;
        let ready_before = count(&log_text(), "[OK] KernelSeal agent running");
        let mut cmd = Command::new(binary);
        // SAFETY: the setup hooks of this suite only make syscalls.
        unsafe { cmd.pre_exec(setup) };
        let child = cmd
            .args(["agent", "--config", CONFIG])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {binary}: {e}"))?;
        let pid = child.id();
        let mut agent = Agent {
            child: Some(child),
            pid,
        };
        agent.wait_for(
            |log| count(log, "[OK] KernelSeal agent running") > ready_before,
            "agent ready",
        )?;
        Ok(agent)
    }

    /// Rewrites the config and reloads it with SIGHUP; returns once the
    /// agent logged the new policy.
    pub fn set_policy(&mut self, policy: Policy) -> Result<(), String> {
        self.set_policy_yaml(&policy.yaml())
    }

    pub fn set_policy_yaml(&mut self, yaml: &str) -> Result<(), String> {
        // A detached handle has pid 0, and kill(0, …) would signal this
        // whole process group.
        if self.child.is_none() {
            return Err("no agent running (an earlier step stopped it)".into());
        }
        // The agent also reloads when it sees the file change (polled), so
        // one or two reloads follow; either applies this content.
        let before = count(&log_text(), "[CONFIG] Policy configured");
        write_config(yaml)?;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGHUP) };
        self.wait_for(
            |log| count(log, "[CONFIG] Policy configured") > before,
            "policy reload",
        )
    }

    fn wait_for(&mut self, done: impl Fn(&str) -> bool, what: &str) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if done(&log_text()) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "agent exited ({status}) before {what}: {}",
                    tail(&log_text())
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "timed out waiting for {what}: {}",
            tail(&log_text())
        ))
    }

    /// A handle with no process (after `stop` consumed the real one).
    pub fn detached() -> Self {
        Agent {
            child: None,
            pid: 0,
        }
    }

    /// SIGKILL: the agent dies without cleaning up (pins stay).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait; the agent must exit 0.
    pub fn stop(mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        let status = child.wait().map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("agent exited with {status}: {}", tail(&log_text())))
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn log_text() -> String {
    std::fs::read_to_string(LOG).unwrap_or_default()
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join(" | ")
}

/// Waits (up to 10 s) until the agent's log has a line containing every
/// one of `needles`.
pub fn wait_log_line(needles: &[&str]) -> Result<(), String> {
    wait_log_line_for(needles, 10)
}

pub fn wait_log_line_for(needles: &[&str], secs: u64) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if log_text()
            .lines()
            .any(|l| needles.iter().all(|n| l.contains(n)))
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "no agent log line with {needles:?}; log tail: {}",
        tail(&log_text())
    ))
}

/// Runs `kernelseal ARGS…` and returns its output.
pub fn kernelseal(args: &[&str]) -> Result<Output, String> {
    Command::new(KERNELSEAL)
        .args(args)
        .output()
        .map_err(|e| format!("running kernelseal {args:?}: {e}"))
}

pub fn protect(pid: u32) -> Result<(), String> {
    let out = kernelseal(&["protect", &pid.to_string()])?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "kernelseal protect {pid} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

pub fn unprotect(pid: u32) -> Result<(), String> {
    let out = kernelseal(&["unprotect", &pid.to_string()])?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "kernelseal unprotect {pid} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Atomically (write + rename): the agent polls the file and must never see
/// half of it.
fn write_config(yaml: &str) -> Result<(), String> {
    let tmp = format!("{CONFIG}.tmp");
    std::fs::write(&tmp, yaml).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, CONFIG).map_err(|e| e.to_string())
}
