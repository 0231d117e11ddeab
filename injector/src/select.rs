//! Which bindings a caller gets: every set selector field must match.
//! The pod is what authorizes in Kubernetes; `binary` and `path` are the
//! caller's claim about what it will exec, so they only narrow.

use kernelseal_config::{Binding, Config, Delivery, Naming, OnRotate, Selector};
use kernelseal_providers::SecretRef;

use crate::identity::Caller;

/// A binding ready to serve: its kernel id (1-based position) and refs,
/// each with the name or names it is delivered under.
#[derive(Debug, Clone)]
pub struct PreparedBinding {
    pub id: u32,
    pub name: String,
    pub selector: Selector,
    pub refs: Vec<(Naming, SecretRef)>,
    pub on_rotate: Option<OnRotate>,
    pub delivery: Delivery,
    /// Whose login reads its Vault and AWS refs.
    pub identity: kernelseal_config::Identity,
}

impl PreparedBinding {
    /// Pod selectors need pod identity: such a binding never matches a
    /// caller outside a known pod.
    pub fn needs_pod_identity(&self) -> bool {
        let s = &self.selector;
        s.namespace.is_some()
            || !s.labels.is_empty()
            || s.service_account.is_some()
            || s.container.is_some()
    }
}

pub fn prepare(config: &Config) -> Vec<PreparedBinding> {
    config
        .secrets
        .iter()
        .enumerate()
        .map(|(i, b)| prepare_one(i as u32 + 1, &b.value))
        .collect()
}

fn prepare_one(id: u32, b: &Binding) -> PreparedBinding {
    let refs = b
        .secret_refs
        .iter()
        .map(|r| (r.value.naming.clone(), r.value.source.value.clone()))
        .collect();
    PreparedBinding {
        id,
        name: b.name.clone(),
        selector: b.selector.clone(),
        refs,
        on_rotate: b.on_rotate.clone(),
        delivery: b.delivery,
        identity: b.identity.clone(),
    }
}

/// `cgroupPath` matches the caller's cgroup or any cgroup below it.
fn cgroup_matches(want: &str, have: &str) -> bool {
    let want = want.trim_end_matches('/');
    have == want
        || have
            .strip_prefix(want)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The caller's pod and container, when pod identity resolved them.
#[derive(Debug, Clone, Copy)]
pub struct PodCaller<'a> {
    pub pod: &'a crate::PodInfo,
    pub container_id: Option<&'a str>,
}

fn pod_matches(s: &Selector, pc: &PodCaller<'_>) -> bool {
    let pod = pc.pod;
    let container = pc.container_id.and_then(|id| pod.containers.get(id));
    s.namespace
        .as_deref()
        .is_none_or(|want| want == pod.namespace)
        && s.labels.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
        && s.service_account
            .as_deref()
            .is_none_or(|want| want == pod.service_account)
        && s.container
            .as_deref()
            .is_none_or(|want| container.is_some_and(|c| c == want))
}

pub fn matches(
    b: &PreparedBinding,
    caller: &Caller,
    binary: &str,
    pod: Option<PodCaller<'_>>,
) -> bool {
    if b.needs_pod_identity() {
        match &pod {
            Some(pc) if pod_matches(&b.selector, pc) => {}
            _ => return false,
        }
    }
    let s = &b.selector;
    let base = binary.rsplit('/').next().unwrap_or(binary);
    s.binary.as_deref().is_none_or(|want| want == base)
        && s.path.as_deref().is_none_or(|want| want == binary)
        && s.uid.is_none_or(|want| want == caller.uid)
        && s.cgroup_path
            .as_deref()
            .is_none_or(|want| cgroup_matches(want, caller.cgroup()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, cgroup: &str) -> Caller {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut c = Caller::of(&a).unwrap().with_cgroup(cgroup);
        c.uid = uid;
        c
    }

    fn binding(yaml_selector: &str) -> PreparedBinding {
        let text = format!(
            "secrets:\n  - name: b\n    selector: {yaml_selector}\n    secretRefs:\n      - {{ name: A, source: {{ value: x }} }}\n"
        );
        let cfg = kernelseal_config::parse_str(&text, "t").unwrap().config;
        prepare(&cfg).remove(0)
    }

    #[test]
    fn every_set_field_must_match() {
        let c = caller(1000, "/system.slice/app.service");
        assert!(matches(
            &binding("{ binary: app }"),
            &c,
            "/usr/bin/app",
            None
        ));
        assert!(!matches(
            &binding("{ binary: app }"),
            &c,
            "/usr/bin/other",
            None
        ));
        assert!(matches(
            &binding("{ path: /usr/bin/app }"),
            &c,
            "/usr/bin/app",
            None
        ));
        assert!(!matches(
            &binding("{ path: /usr/bin/app }"),
            &c,
            "/opt/app",
            None
        ));
        assert!(matches(
            &binding("{ binary: app, uid: 1000 }"),
            &c,
            "/usr/bin/app",
            None
        ));
        assert!(!matches(
            &binding("{ binary: app, uid: 0 }"),
            &c,
            "/usr/bin/app",
            None
        ));
        assert!(matches(
            &binding("{ cgroupPath: /system.slice }"),
            &c,
            "/x",
            None
        ));
        assert!(matches(
            &binding("{ cgroupPath: /system.slice/app.service }"),
            &c,
            "/x",
            None
        ));
        assert!(
            !matches(&binding("{ cgroupPath: /system.sl }"), &c, "/x", None),
            "path segments, not prefixes"
        );
        assert!(
            !matches(&binding("{ namespace: db }"), &c, "/x", None),
            "pod selectors need pod identity"
        );
    }

    #[test]
    fn pod_selectors_match_the_resolved_pod() {
        let c = caller(0, "/kubepods.slice/x");
        let pod = crate::PodInfo {
            uid: "u".into(),
            namespace: "db".into(),
            name: "pg-0".into(),
            labels: [("app".to_string(), "pg".to_string())].into(),
            service_account: "pg".into(),
            containers: [("abc".to_string(), "postgres".to_string())].into(),
        };
        let pc = Some(PodCaller {
            pod: &pod,
            container_id: Some("abc"),
        });
        assert!(matches(
            &binding("{ namespace: db, labels: { app: pg } }"),
            &c,
            "/x",
            pc
        ));
        assert!(matches(
            &binding("{ serviceAccount: pg, container: postgres }"),
            &c,
            "/x",
            pc
        ));
        assert!(!matches(&binding("{ namespace: web }"), &c, "/x", pc));
        assert!(
            !matches(&binding("{ labels: { app: pg, tier: db } }"), &c, "/x", pc),
            "every label"
        );
        assert!(!matches(&binding("{ container: sidecar }"), &c, "/x", pc));
        let other_container = Some(PodCaller {
            pod: &pod,
            container_id: Some("def"),
        });
        assert!(!matches(
            &binding("{ container: postgres }"),
            &c,
            "/x",
            other_container
        ));
        assert!(
            !matches(&binding("{ namespace: db }"), &c, "/x", None),
            "no pod, no match"
        );
    }
}
