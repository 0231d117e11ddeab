//! Cgroups shaped as the kubelet (systemd driver) and containerd make
//! them, for callers the agent must take for a pod's container.

use std::path::PathBuf;

/// Where the cgroup v2 hierarchy is mounted: `/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on a hybrid host. Panics without one.
pub fn cgroup2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    info.lines()
        .find(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|t| t.starts_with("cgroup2 "))
        })
        .and_then(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .expect("no cgroup2 hierarchy mounted: pod identity needs one")
}

/// A container's cgroup directory:
/// `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid
/// with _>.slice/cri-containerd-<id>.scope` under [`cgroup2_root`].
pub fn container_cgroup(pod_uid: &str, container_id: &str) -> PathBuf {
    cgroup2_root()
        .join("kubepods.slice/kubepods-besteffort.slice")
        .join(format!(
            "kubepods-besteffort-pod{}.slice",
            pod_uid.replace('-', "_")
        ))
        .join(format!("cri-containerd-{container_id}.scope"))
}
