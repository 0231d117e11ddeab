//! Rotation of env deliveries: an environment cannot change in place, so
//! when a delivered secret's version changes the binding's `onRotate` says
//! what happens to the process: nothing (logged), a signal, or a restart
//! (SIGTERM, for the supervisor to start it again with the new value).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;

use kernelseal_config::OnRotate;
use kernelseal_providers::VersionChange;
use tokio::sync::broadcast;
use tracing::{info, warn};

/// One process that received env secrets.
pub struct Live {
    pub pid: u32,
    pub pidfd: OwnedFd,
    pub binding: String,
    pub on_rotate: Option<OnRotate>,
    /// Cache keys of the secrets it received.
    pub keys: Vec<String>,
    /// For `delivery: file`: where its files are, to rewrite them.
    pub files: Option<LiveFiles>,
}

pub struct LiveFiles {
    pub store: std::sync::Arc<crate::FileStore>,
    pub dir: std::path::PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub delivery: u32,
    /// (cache key, file name)
    pub names: Vec<(String, String)>,
}

/// The processes to tell about rotations; shared across config reloads.
#[derive(Default)]
pub struct LiveSet(Mutex<Vec<Live>>);

pub fn signal_number(name: &str) -> Option<i32> {
    Some(match name {
        "SIGHUP" => libc::SIGHUP,
        "SIGINT" => libc::SIGINT,
        "SIGQUIT" => libc::SIGQUIT,
        "SIGTERM" => libc::SIGTERM,
        "SIGUSR1" => libc::SIGUSR1,
        "SIGUSR2" => libc::SIGUSR2,
        "SIGWINCH" => libc::SIGWINCH,
        "SIGCONT" => libc::SIGCONT,
        "SIGKILL" => libc::SIGKILL,
        _ => return None,
    })
}

/// pidfd_send_signal: the pidfd names the delivered process for its whole
/// life, so a reused PID is never signalled.
fn send(pidfd: &OwnedFd, sig: i32) -> std::io::Result<()> {
    // SAFETY: pidfd_send_signal(pidfd, sig, NULL, 0).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl LiveSet {
    pub fn add(&self, live: Live) {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Forget processes that exited (signal 0 probes without disturbing).
        set.retain(|l| send(&l.pidfd, 0).is_ok());
        // A process asking again (an exec chain through the wrapper) replaces
        // its entry: the set stays one entry per process and binding.
        set.retain(|l| !(l.pid == live.pid && l.binding == live.binding));
        set.push(live);
    }

    /// Acts on one version change; returns how many processes were affected.
    /// `value` is the new content, for file deliveries.
    pub fn on_change(&self, change: &VersionChange, value: Option<&[u8]>) -> usize {
        let set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut affected = 0;
        for l in set.iter().filter(|l| l.keys.contains(&change.key)) {
            affected += 1;
            let what = change.reference.to_string();
            if let Some(f) = &l.files {
                for (_, name) in f.names.iter().filter(|(k, _)| *k == change.key) {
                    match value.map(|v| f.store.rewrite(&f.dir, name, v, f.uid, f.gid, f.delivery))
                    {
                        Some(Ok(())) => info!(
                            pid = l.pid,
                            "[ROTATE] {what} changed; rewrote {name} for PID {}", l.pid
                        ),
                        Some(Err(e)) => warn!(
                            pid = l.pid,
                            "[ROTATE] {what} changed; rewriting {name} for PID {} failed: {e}",
                            l.pid
                        ),
                        None => warn!(
                            pid = l.pid,
                            "[ROTATE] {what} changed but its new value could not be read; {name} of PID {} is stale",
                            l.pid
                        ),
                    }
                }
                // A file binding is rewritten in place; onRotate only adds a
                // nudge (e.g. a signal to re-read) when set.
                if matches!(l.on_rotate, None | Some(OnRotate::None)) {
                    continue;
                }
            }
            match &l.on_rotate {
                None | Some(OnRotate::None) => info!(
                    pid = l.pid, binding = %l.binding,
                    "[ROTATE] {what} changed; PID {} keeps the old value (binding {}: onRotate none)", l.pid, l.binding
                ),
                Some(OnRotate::Signal(name)) => {
                    match signal_number(name).map(|sig| send(&l.pidfd, sig)) {
                        Some(Ok(())) => info!(
                            pid = l.pid, binding = %l.binding,
                            "[ROTATE] {what} changed; sent {name} to PID {} (binding {})", l.pid, l.binding
                        ),
                        Some(Err(e)) => warn!(
                            pid = l.pid,
                            "[ROTATE] {what} changed; {name} to PID {} failed: {e}", l.pid
                        ),
                        None => warn!("[ROTATE] unknown signal {name:?} in binding {}", l.binding),
                    }
                }
                Some(OnRotate::Restart) => match send(&l.pidfd, libc::SIGTERM) {
                    Ok(()) => info!(
                        pid = l.pid, binding = %l.binding,
                        "[ROTATE] {what} changed; PID {} terminated for a restart with the new value (binding {})", l.pid, l.binding
                    ),
                    Err(e) => warn!(
                        pid = l.pid,
                        "[ROTATE] {what} changed; SIGTERM to PID {} failed: {e}", l.pid
                    ),
                },
            }
        }
        affected
    }
}

/// Follows one cache's version changes until `stop` is dropped (the
/// delivery it belongs to was replaced by a reload).
pub async fn watch(
    cache: kernelseal_providers::Cache,
    live: std::sync::Arc<LiveSet>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut changes = cache.subscribe();
    loop {
        let next = tokio::select! {
            _ = &mut stop => return,
            c = changes.recv() => c,
        };
        match next {
            Ok(change) => {
                let value = cache.get(&change.reference).await.ok();
                live.on_change(&change, value.as_ref().map(|v| v.expose_bytes()));
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!("[ROTATE] {n} version change(s) missed (too many at once)");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
