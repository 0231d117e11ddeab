//! Who is on the other end of the agent socket: the kernel's word
//! (SO_PEERCRED / SO_PEERPIDFD), never the caller's.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

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
    /// Read on first use: /proc/PID/cgroup costs more than the rest of a
    /// request on a cgroup v1 host, and only cgroupPath selectors and pod
    /// identity need it. The pidfd keeps the PID from being reused meanwhile.
    cgroup: OnceLock<String>,
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
        return Err(InjectError::PeerCred(std::io::Error::last_os_error()));
    }
    Ok(cred)
}

/// The peer's uid as the kernel recorded it at connect time: what the
/// socket's connection limits count by, cheaper than a whole [`Caller`].
pub(crate) fn peer_uid(socket: &impl AsRawFd) -> Result<u32, InjectError> {
    Ok(peer_cred(socket.as_raw_fd())?.uid)
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

/// Resolves when the process behind `pidfd` exits (a pidfd becomes
/// readable then); an error when the fd cannot be watched.
pub(crate) async fn exit_of(pidfd: OwnedFd) -> std::io::Result<()> {
    use tokio::io::unix::AsyncFd;
    // SAFETY: the AsyncFd owns the pidfd; it stays open and the same fd for
    // the AsyncFd's whole life.
    let fd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    fd.readable().await.map(drop)
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
    // One read for the common case: procfs reports size 0, so
    // read_to_string would grow from 32 bytes in four reads.
    let mut buf = Vec::with_capacity(4096);
    let _ = std::fs::File::open(format!("/proc/{pid}/cgroup"))
        .and_then(|mut f| f.read_to_end(&mut buf));
    let text = String::from_utf8_lossy(&buf);
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
        .unwrap_or_else(|| text.lines().collect::<Vec<_>>().join(";"))
}

impl Caller {
    /// cgroup v2 path (`0::/…` line of /proc/PID/cgroup), or the v1 lines
    /// joined with ';'.
    pub fn cgroup(&self) -> &str {
        self.cgroup.get_or_init(|| cgroup_of(self.pid))
    }

    /// The cgroup path if a selector or pod identity has read it already:
    /// the log line of a delivery names it without paying for the read.
    pub fn cgroup_if_read(&self) -> Option<&str> {
        self.cgroup.get().map(String::as_str)
    }

    /// For tests that need a given cgroup path.
    #[doc(hidden)]
    pub fn with_cgroup(mut self, cgroup: &str) -> Self {
        self.cgroup = OnceLock::from(cgroup.to_string());
        self
    }

    /// The pod UID and container ID its cgroup path names, if any.
    pub fn pod_cgroup(&self) -> Option<crate::cgroup::PodCgroup> {
        self.cgroup()
            .split(';')
            .map(|line| line.splitn(3, ':').last().unwrap_or(line))
            .find_map(crate::cgroup::parse)
    }

    /// A process the kernel reported (an exec event), not a socket peer:
    /// the pidfd was opened from its PID; ids are its effective ones.
    pub fn of_process(pid: u32, pidfd: OwnedFd) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let effective = |name: &str| -> Option<u32> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        Some(Caller {
            pid,
            uid: effective("Uid:")?,
            gid: effective("Gid:")?,
            cgroup: OnceLock::new(),
            pidfd,
        })
    }

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
                let p = kernelseal_bpf::pidfd_open(pid).map_err(InjectError::CallerPidfd)?;
                if before.is_none() || start_time(pid) != before {
                    return Err(InjectError::CallerChanged { pid });
                }
                p
            }
        };
        Ok(Caller {
            pid,
            uid: cred.uid,
            gid: cred.gid,
            cgroup: OnceLock::new(),
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
