//! A fanotify FAN_OPEN listener, as root would run one: every file opened
//! on a marked mount hands the listener an fd of its own, opened by the
//! kernel on its behalf.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::attacks::errno;

pub struct Listener {
    fan: OwnedFd,
}

impl Listener {
    /// A FAN_OPEN mark on the mount that holds `path`.
    pub fn on_mount_of(path: &str) -> Result<Self, String> {
        // SAFETY: fanotify_init with flags; returns an fd or -1.
        let fan = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_NOTIF | libc::FAN_NONBLOCK | libc::FAN_CLOEXEC,
                libc::O_RDONLY as u32,
            )
        };
        if fan < 0 {
            return Err(format!("fanotify_init: errno {}", errno()));
        }
        // SAFETY: a fresh fd we own.
        let fan = unsafe { OwnedFd::from_raw_fd(fan) };
        let c = std::ffi::CString::new(path).map_err(|e| e.to_string())?;
        // SAFETY: marking the mount of a valid path on our fanotify fd.
        if unsafe {
            libc::fanotify_mark(
                fan.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_MOUNT,
                libc::FAN_OPEN,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        } != 0
        {
            return Err(format!("fanotify_mark {path}: errno {}", errno()));
        }
        Ok(Listener { fan })
    }

    /// Reads events for `period`, keeping the event fds whose path `keep`
    /// accepts (with that path); the others are closed.
    pub fn collect(&self, period: Duration, keep: impl Fn(&str) -> bool) -> Vec<(String, OwnedFd)> {
        let mut kept = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + period;
        while Instant::now() < deadline {
            // SAFETY: reading events into our buffer.
            let n = unsafe { libc::read(self.fan.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                // EAGAIN, or an event whose fd the kernel could not open for
                // us (a refused open drops the event).
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let mut off = 0usize;
            while off + std::mem::size_of::<libc::fanotify_event_metadata>() <= n as usize {
                // SAFETY: the kernel wrote whole metadata records.
                let meta: libc::fanotify_event_metadata =
                    unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
                if meta.fd >= 0 {
                    // SAFETY: the event fd is ours to keep or close.
                    let ev = unsafe { OwnedFd::from_raw_fd(meta.fd) };
                    let target = std::fs::read_link(format!("/proc/self/fd/{}", ev.as_raw_fd()))
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned();
                    if keep(&target) {
                        kept.push((target, ev));
                    }
                }
                if meta.event_len == 0 {
                    break;
                }
                off += meta.event_len as usize;
            }
        }
        kept
    }
}

/// What an fd holds now, from offset 0.
pub fn contents(fd: &OwnedFd) -> Vec<u8> {
    let mut data = vec![0u8; 4096];
    // SAFETY: pread into our buffer.
    let got = unsafe { libc::pread(fd.as_raw_fd(), data.as_mut_ptr().cast(), data.len(), 0) };
    data.truncate(got.max(0) as usize);
    data
}
