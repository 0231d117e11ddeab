//! The host's view of cgroup paths.
//!
//! `/proc/PID/cgroup` is written relative to the *reader's* cgroup
//! namespace. An agent in a container with its own cgroup namespace (the
//! default for cgroup v2 under containerd and CRI-O) reads other processes'
//! paths as `/../../kubepods.slice/…`, which no `cgroupPath` selector
//! written with host paths matches. With `hostPID`, PID 1 is the host's
//! init: joining its cgroup namespace restores host paths. Nothing else
//! changes: the agent's own cgroup membership stays where it is.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use tracing::{info, warn};

/// Must run before the agent starts threads: `setns` changes only the
/// calling thread, and threads created afterwards inherit it.
pub fn join_host_cgroup_namespace() {
    let ns = |pid: &str| std::fs::metadata(format!("/proc/{pid}/ns/cgroup")).map(|m| m.ino());
    let (Ok(own), Ok(init)) = (ns("self"), ns("1")) else {
        return; // no cgroup namespaces here
    };
    if own == init {
        return;
    }
    let joined = std::fs::File::open("/proc/1/ns/cgroup").and_then(|f| {
        // SAFETY: setns with an fd we hold open and a namespace type flag.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWCGROUP) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    });
    match joined {
        Ok(()) => info!(
            "[IDENTITY] joined the cgroup namespace of PID 1: callers' cgroup paths are read as \
             the host writes them"
        ),
        Err(e) => warn!(
            "[IDENTITY] the agent has its own cgroup namespace and cannot join PID 1's ({e}): \
             callers' cgroup paths are relative to it, so cgroupPath selectors written with host \
             paths will not match; run the agent with hostPID and CAP_SYS_ADMIN"
        ),
    }
}
