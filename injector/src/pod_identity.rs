//! Pod identity of one caller: the kernel's cgroup path names the pod and
//! container; the node's pod list ([`crate::PodIndex`]) says who they are.

use tracing::warn;

use crate::identity::Caller;
use crate::select::PodCaller;
use crate::state::ServingState;

/// The caller's pod, when pod identity applies here.
pub(crate) struct PodIdentity {
    /// What the caller's cgroup path names, when pod identity looked.
    cgroup: Option<crate::cgroup::PodCgroup>,
    pod: Option<crate::PodInfo>,
}

impl PodIdentity {
    pub(crate) fn caller(&self) -> Option<PodCaller<'_>> {
        self.pod.as_ref().map(|p| PodCaller {
            pod: p,
            container_id: self.cgroup.as_ref().and_then(|c| c.container_id.as_deref()),
        })
    }

    /// A caller in `pod`, at pod level (tests of what follows selection).
    #[cfg(test)]
    pub(crate) fn in_pod(pod: crate::PodInfo) -> Self {
        PodIdentity {
            cgroup: Some(crate::cgroup::PodCgroup {
                pod_uid: pod.uid.clone(),
                container_id: None,
            }),
            pod: Some(pod),
        }
    }

    /// A caller outside any pod.
    #[cfg(test)]
    pub(crate) fn host() -> Self {
        PodIdentity {
            cgroup: None,
            pod: None,
        }
    }

    /// The caller's pod, when the node's list shows it.
    pub(crate) fn pod(&self) -> Option<&crate::PodInfo> {
        self.pod.as_ref()
    }

    /// The caller's container name, when the pod list shows its ID.
    fn container(&self) -> Option<&str> {
        let pc = self.caller()?;
        pc.pod.containers.get(pc.container_id?).map(String::as_str)
    }

    /// In a pod, but the pod or its container is not in the pod list (yet):
    /// a pod selector may match once the list shows them.
    pub(crate) fn incomplete(&self) -> bool {
        let Some(cg) = &self.cgroup else {
            return false;
        };
        self.pod.is_none() || (cg.container_id.is_some() && self.container().is_none())
    }

    /// Who the caller is to pod selectors, for a "no binding" answer.
    pub(crate) fn describe(&self) -> String {
        let Some(cg) = &self.cgroup else {
            return String::new();
        };
        let Some(pod) = &self.pod else {
            return format!(", pod {} not (yet) known on this node", cg.pod_uid);
        };
        let whose = format!(
            "pod {}/{} (service account {})",
            pod.namespace, pod.name, pod.service_account
        );
        match (&cg.container_id, self.container()) {
            (_, Some(name)) => format!(", {whose}, container {name}"),
            (Some(id), None) => format!(
                ", {whose}, container {} not (yet) in the pod's status",
                &id[..id.len().min(12)]
            ),
            (None, None) => format!(", {whose}, container unknown (pod-level cgroup)"),
        }
    }
}

/// `podIdentity: required` and no known pod: the caller gets nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PodRequired {
    #[error("podIdentity: required and the caller is not in a Kubernetes pod")]
    NotInPod,
    #[error("podIdentity: required and pod {pod_uid} is not (yet) known on this node")]
    UnknownPod { pod_uid: String },
}

impl PodRequired {
    /// A pod the node's list does not show yet may be there on a retry.
    pub(crate) fn retry(&self) -> bool {
        matches!(self, PodRequired::UnknownPod { .. })
    }
}

/// Pod identity: the kernel's cgroup path names the pod; the node's pod
/// list says who that pod is.
pub(crate) async fn pod_identity(
    caller: &Caller,
    d: &ServingState,
) -> Result<PodIdentity, PodRequired> {
    // Outside Kubernetes nothing asks for the cgroup: not read.
    let wanted = d.pods.is_some() || d.pod_identity == kernelseal_config::PodIdentityMode::Required;
    let pod_cgroup = wanted.then(|| caller.pod_cgroup()).flatten();
    let pod = match (&d.pods, &pod_cgroup) {
        (Some(index), Some(pc)) => {
            match index.lookup(&pc.pod_uid, pc.container_id.as_deref()).await {
                Ok(p) => p,
                Err(e) => {
                    warn!(
                        pid = caller.pid,
                        "[INJECT] pod identity for PID {} unavailable: {e}", caller.pid
                    );
                    None
                }
            }
        }
        _ => None,
    };
    if d.pod_identity == kernelseal_config::PodIdentityMode::Required && pod.is_none() {
        return Err(match pod_cgroup {
            Some(pc) => PodRequired::UnknownPod {
                pod_uid: pc.pod_uid,
            },
            None => PodRequired::NotInPod,
        });
    }
    Ok(PodIdentity {
        cgroup: pod_cgroup,
        pod,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::PodCgroup;

    const CID: &str = "3f0c6a9e5b1d4c2f8a7e6d5c4b3a29180f7e6d5c4b3a2918a7e6d5c4b3a29180";

    fn identity(container_id: Option<&str>, listed: Option<&[(&str, &str)]>) -> PodIdentity {
        PodIdentity {
            cgroup: Some(PodCgroup {
                pod_uid: "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901".into(),
                container_id: container_id.map(str::to_string),
            }),
            pod: listed.map(|containers| crate::PodInfo {
                uid: "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901".into(),
                namespace: "db".into(),
                name: "pg-0".into(),
                labels: Default::default(),
                service_account: "pg".into(),
                containers: containers
                    .iter()
                    .map(|(id, name)| (id.to_string(), name.to_string()))
                    .collect(),
            }),
        }
    }

    #[test]
    fn says_who_the_caller_is_and_whether_the_list_may_still_catch_up() {
        let known = identity(Some(CID), Some(&[(CID, "postgres")]));
        assert!(!known.incomplete());
        assert_eq!(
            known.describe(),
            ", pod db/pg-0 (service account pg), container postgres"
        );
        let not_yet = identity(Some(CID), Some(&[]));
        assert!(not_yet.incomplete(), "its container may be published later");
        assert_eq!(
            not_yet.describe(),
            ", pod db/pg-0 (service account pg), container 3f0c6a9e5b1d not (yet) in the pod's status"
        );
        let unknown = identity(Some(CID), None);
        assert!(unknown.incomplete());
        assert_eq!(
            unknown.describe(),
            ", pod 1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901 not (yet) known on this node"
        );
        let pod_level = identity(None, Some(&[(CID, "postgres")]));
        assert!(!pod_level.incomplete(), "nothing more to learn");
        let host = PodIdentity {
            cgroup: None,
            pod: None,
        };
        assert!(!host.incomplete());
        assert_eq!(host.describe(), "");
    }
}
