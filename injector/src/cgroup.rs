//! Pod UID and container ID from a process's cgroup path: the first half of
//! pod identity (the node's pod list, `pods.rs`, maps a UID to namespace,
//! labels and service account: the second). Covers cgroup v1 and v2, the
//! systemd and cgroupfs drivers, containerd, CRI-O and docker.

/// What a cgroup path says about the container a process runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroup {
    /// The pod UID with dashes (`1b2c3d4e-5f60-…`).
    pub pod_uid: String,
    /// The 64-hex container ID, when the path goes down to the container.
    pub container_id: Option<String>,
}

fn is_hex_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn pod_uid(segment: &str) -> Option<String> {
    // systemd: kubepods-burstable-pod<uid with _>.slice; cgroupfs: pod<uid>
    let s = segment.strip_suffix(".slice").unwrap_or(segment);
    let uid = s.rsplit_once("pod").map(|(_, u)| u)?;
    let uid = uid.replace('_', "-");
    let ok = uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    ok.then_some(uid)
}

fn container_id(segment: &str) -> Option<String> {
    let s = segment.strip_suffix(".scope").unwrap_or(segment);
    let id = ["cri-containerd-", "crio-", "docker-", "containerd-"]
        .iter()
        .find_map(|p| s.strip_prefix(p))
        .unwrap_or(s);
    is_hex_id(id).then(|| id.to_string())
}

/// Parses the path part of a /proc/PID/cgroup line (v2 `0::/…`, or one v1
/// controller line's path). `None` outside Kubernetes pods.
pub fn parse(path: &str) -> Option<PodCgroup> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if !segments.iter().any(|s| s.starts_with("kubepods")) {
        return None;
    }
    let (i, uid) = segments
        .iter()
        .enumerate()
        .find_map(|(i, s)| pod_uid(s).map(|u| (i, u)))?;
    Some(PodCgroup {
        pod_uid: uid,
        container_id: segments.get(i + 1).and_then(|s| container_id(s)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901";
    const CID: &str = "3f0c6a9e5b1d4c2f8a7e6d5c4b3a29180f7e6d5c4b3a2918a7e6d5c4b3a29180";

    #[test]
    fn real_path_shapes() {
        let u = UID.replace('-', "_");
        let cases = [
            // cgroup v2, systemd driver, containerd, burstable
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{CID}.scope"
            ),
            // cgroup v2, systemd driver, CRI-O, besteffort
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-{CID}.scope"
            ),
            // guaranteed QoS (no QoS slice)
            format!("/kubepods.slice/kubepods-pod{u}.slice/cri-containerd-{CID}.scope"),
            // cgroupfs driver (v1 controller line path or v2)
            format!("/kubepods/burstable/pod{UID}/{CID}"),
            format!("/kubepods/pod{UID}/{CID}"),
            // docker shim, systemd
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/docker-{CID}.scope"
            ),
        ];
        for path in &cases {
            let p = parse(path).unwrap_or_else(|| panic!("no pod in {path}"));
            assert_eq!(p.pod_uid, UID, "{path}");
            assert_eq!(p.container_id.as_deref(), Some(CID), "{path}");
        }
    }

    #[test]
    fn pod_level_and_non_pod_paths() {
        let u = UID.replace('-', "_");
        let pod_only = parse(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice"
        ))
        .unwrap();
        assert_eq!(pod_only.container_id, None);
        assert_eq!(parse("/system.slice/containerd.service"), None);
        assert_eq!(parse("/user.slice/user-1000.slice/session-3.scope"), None);
        assert_eq!(
            parse("/kubepods.slice/kubepods-burstable.slice"),
            None,
            "QoS slice, no pod"
        );
        assert_eq!(
            parse(&format!("/kubepods/burstable/podnot-a-uid/{CID}")),
            None
        );
    }
}
