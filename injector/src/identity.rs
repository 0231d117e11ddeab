//! Who is on the other end of the agent socket: the kernel's word
//! (SO_PEERCRED / SO_PEERPIDFD), never the caller's.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::InjectError;

/// SO_PEERPIDFD (Linux 6.5+): a pidfd for the peer, taken at connect time,
/// so PID reuse between accept and lookup cannot substitute another process.
const SO_PEERPIDFD: libc::c_int = 77;

/// The caller of one request.
#[derive(Debug)]
pub struct Caller {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// cgroup v2 path (`0::/…` line of /proc/PID/cgroup), or the v1 lines joined.
    pub cgroup: String,
    /// Names the caller for its whole life; marks go through it.
    pub pidfd: OwnedFd,
}

fn peer_cred(fd: libc::c_int) -> Result<libc::ucred, InjectError> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt into a ucred-sized buffer.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(InjectError::Identity(format!(
            "SO_PEERCRED: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(cred)
}

fn peer_pidfd(fd: libc::c_int) -> Option<OwnedFd> {
    let mut pidfd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into an int.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&mut pidfd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    // SAFETY: on success the kernel returned a new fd we own.
    (rc == 0 && pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) })
}

/// Field 22 of /proc/PID/stat: start time in clock ticks since boot.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

fn cgroup_of(pid: u32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
        .unwrap_or_else(|| text.lines().collect::<Vec<_>>().join(";"))
}

impl Caller {
    /// Identifies the peer of a connected unix socket.
    pub fn of(socket: &impl AsRawFd) -> Result<Self, InjectError> {
        let fd = socket.as_raw_fd();
        let cred = peer_cred(fd)?;
        let pid = cred.pid as u32;
        let pidfd = match peer_pidfd(fd) {
            Some(p) => p,
            None => {
                // Older kernels: open a pidfd now and check it still names the
                // process that connected (same start time before and after).
                let before = start_time(pid);
                let p = kernelseal_bpf::pidfd_open(pid)
                    .map_err(|e| InjectError::Identity(e.to_string()))?;
                if before.is_none() || start_time(pid) != before {
                    return Err(InjectError::Identity(format!(
                        "PID {pid} changed while being identified"
                    )));
                }
                p
            }
        };
        Ok(Caller {
            pid,
            uid: cred.uid,
            gid: cred.gid,
            cgroup: cgroup_of(pid),
            pidfd,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_a_real_peer() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let c = Caller::of(&a).unwrap();
        assert_eq!(c.pid, std::process::id());
        // SAFETY: getuid has no preconditions.
        assert_eq!(c.uid, unsafe { libc::getuid() });
        assert!(c.pidfd.as_raw_fd() >= 0);
        assert!(start_time(c.pid).is_some());
    }
}
