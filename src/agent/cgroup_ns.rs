//! The host's view of cgroup paths.
//!
//! `/proc/PID/cgroup` is written relative to the *reader's* cgroup
//! namespace. An agent in a container with its own cgroup namespace (the
//! default for cgroup v2 under containerd and CRI-O) reads other processes'
//! paths as `/../../kubepods.slice/…`, which no `cgroupPath` selector
//! written with host paths matches. With `hostPID`, PID 1 is the host's
//! init: joining its cgroup namespace restores host paths. Some hosts keep
//! PID 1's namespaces from every reader (a sandbox's init, a hardened
//! kernel); then the nearest ancestor in another namespace is the
//! runtime's shim (containerd-shim, conmon), which lives in the host's.
//! Nothing else changes: the agent's own cgroup membership stays where it
//! is.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use tracing::{info, warn};

/// Whose cgroup namespace the agent joins, decided from the namespaces'
/// inode numbers.
#[derive(Debug, PartialEq, Eq)]
enum Choice {
    /// Already in the namespace PID 1 is in.
    Stay,
    Join {
        pid: u32,
        why: &'static str,
    },
    /// PID 1's namespace is unreadable and no ancestor is in another one.
    Unknown,
}

/// `pid1`: PID 1's namespace or why it is unreadable; `ancestors`: the
/// agent's parent, its parent and so on, up to (not including) PID 1.
fn choose(own: u64, pid1: &io::Result<u64>, ancestors: &[(u32, io::Result<u64>)]) -> Choice {
    match pid1 {
        Ok(init) if *init == own => Choice::Stay,
        Ok(_) => Choice::Join {
            pid: 1,
            why: "the host's init",
        },
        Err(_) => ancestors
            .iter()
            .find(|(_, ns)| ns.as_ref().is_ok_and(|ns| *ns != own))
            .map_or(Choice::Unknown, |(pid, _)| Choice::Join {
                pid: *pid,
                why: "the nearest ancestor in another cgroup namespace (PID 1's is unreadable)",
            }),
    }
}

fn namespace_of(pid: &str) -> io::Result<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/cgroup")).map(|m| m.ino())
}

fn parent_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

/// The agent's ancestors below PID 1 with their namespaces; PID 0 (the
/// parent of a namespace's first process) ends the walk.
fn ancestors() -> Vec<(u32, io::Result<u64>)> {
    let mut out = Vec::new();
    let mut pid = parent_of(std::process::id());
    while let Some(p) = pid.filter(|p| *p > 1) {
        // A cycle cannot happen in a process tree; the bound is for a
        // /proc that changes under the walk.
        if out.len() >= 64 {
            break;
        }
        out.push((p, namespace_of(&p.to_string())));
        pid = parent_of(p);
    }
    out
}

fn setns_cgroup(pid: u32) -> io::Result<()> {
    let f = std::fs::File::open(format!("/proc/{pid}/ns/cgroup"))?;
    // SAFETY: setns with an fd we hold open and a namespace type flag.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWCGROUP) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Must run before the agent starts threads: `setns` changes only the
/// calling thread, and threads created afterwards inherit it.
pub fn join_host_cgroup_namespace() {
    let Ok(own) = namespace_of("self") else {
        return; // no cgroup namespaces here
    };
    let pid1 = namespace_of("1");
    let (pid, why) = match choose(own, &pid1, &ancestors()) {
        Choice::Stay => return,
        Choice::Join { pid, why } => (pid, why),
        Choice::Unknown => {
            let e = pid1.err().map(|e| e.to_string()).unwrap_or_default();
            warn!(
                "[IDENTITY] cannot read PID 1's cgroup namespace ({e}) and no ancestor is in \
                 another: if the agent has its own cgroup namespace, callers' cgroup paths are \
                 relative to it and cgroupPath selectors written with host paths will not match; \
                 run the agent with hostPID and CAP_SYS_PTRACE"
            );
            return;
        }
    };
    match setns_cgroup(pid) {
        Ok(()) => info!(
            "[IDENTITY] joined the cgroup namespace of PID {pid} ({why}): callers' cgroup paths \
             are read as the host writes them"
        ),
        Err(e) => warn!(
            "[IDENTITY] the agent has its own cgroup namespace and cannot join that of PID {pid} \
             ({why}): {e}: callers' cgroup paths are relative to it, so cgroupPath selectors \
             written with host paths will not match; run the agent with hostPID and \
             CAP_SYS_ADMIN"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied() -> io::Result<u64> {
        Err(io::Error::from(io::ErrorKind::PermissionDenied))
    }

    #[test]
    fn pid1_in_the_same_namespace_means_stay() {
        assert_eq!(choose(7, &Ok(7), &[(40, Ok(9))]), Choice::Stay);
    }

    #[test]
    fn pid1_elsewhere_is_joined_whatever_the_ancestors() {
        assert_eq!(
            choose(7, &Ok(3), &[(40, Ok(9))]),
            Choice::Join {
                pid: 1,
                why: "the host's init"
            }
        );
    }

    #[test]
    fn unreadable_pid1_falls_back_to_the_nearest_ancestor_in_another_namespace() {
        // tini (same namespace), an unreadable one, then the shim.
        let chain = [(40, Ok(7)), (35, denied()), (30, Ok(3)), (20, Ok(5))];
        assert!(matches!(
            choose(7, &denied(), &chain),
            Choice::Join { pid: 30, .. }
        ));
    }

    #[test]
    fn unreadable_pid1_and_no_ancestor_elsewhere_is_unknown() {
        assert_eq!(choose(7, &denied(), &[(40, Ok(7))]), Choice::Unknown);
        assert_eq!(choose(7, &denied(), &[]), Choice::Unknown);
    }
}
