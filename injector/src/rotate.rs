//! Rotation of env deliveries: an environment cannot change in place, so
//! when a delivered secret's version changes the binding's `onRotate` says
//! what happens to the process: nothing (logged), a signal, or a restart
//! (SIGTERM, for the supervisor to start it again with the new value).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use kernelseal_config::OnRotate;
use kernelseal_providers::identity::PodReads;
use kernelseal_providers::{SecretRef, SecretValue, TemplateRef, VersionChange};
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
    /// What was written, by inode: a rotation replaces exactly these.
    pub files: std::sync::Arc<crate::DeliveredFiles>,
    /// (cache key, file name); a template's file is named under each of
    /// its refs' keys.
    pub names: Vec<(String, String)>,
    /// For a file expanded from its ref's JSON object (`keys: all`,
    /// `jmesPath`), by file name: where its content sits in the ref's new
    /// value. A file without one gets the whole value.
    pub parts: std::collections::BTreeMap<String, kernelseal_config::JsonPath>,
    /// (file name, template) of the files rendered from a template: a
    /// change of one of its refs rewrites them with the template rendered
    /// anew, not with that ref's value.
    pub templates: Vec<(String, Arc<TemplateRef>)>,
}

impl LiveFiles {
    fn template_of(&self, name: &str) -> Option<&Arc<TemplateRef>> {
        self.templates
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
    }
}

/// A template rendered anew after one of its refs changed; `None` when
/// it could not be.
pub struct Rerendered {
    pub template: Arc<TemplateRef>,
    pub value: Option<SecretValue>,
}

/// The processes to tell about rotations; shared across config reloads.
#[derive(Default)]
pub struct LiveSet(Mutex<Entries>);

#[derive(Default)]
struct Entries {
    live: Vec<Live>,
    /// Size after the last sweep of exited processes.
    swept: usize,
}

/// Below this many entries a sweep is not worth a syscall per entry.
const SWEEP_FLOOR: usize = 64;

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
        // Forget processes that exited (signal 0 probes without disturbing),
        // once the set has doubled since the last sweep: a probe per entry
        // on every request would make each request cost O(processes).
        if set.live.len() >= SWEEP_FLOOR.max(2 * set.swept) {
            set.live.retain(|l| send(&l.pidfd, 0).is_ok());
            set.swept = set.live.len();
        }
        // A process asking again (an exec chain through the wrapper) replaces
        // its entry: the set stays one entry per process and binding.
        set.live
            .retain(|l| !(l.pid == live.pid && l.binding == live.binding));
        set.live.push(live);
    }

    /// Entries held (exited processes included until the next sweep).
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The templates of live file deliveries that read the ref whose cache
    /// key is `key`, each once.
    pub fn templates_reading(&self, key: &str) -> Vec<Arc<TemplateRef>> {
        let set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Arc<TemplateRef>> = Vec::new();
        let templates = set
            .live
            .iter()
            .filter_map(|l| l.files.as_ref())
            .flat_map(|f| f.templates.iter().map(|(_, t)| t));
        for t in templates {
            let reads = t
                .refs
                .values()
                .any(|r| r.cache_key().as_deref() == Some(key));
            if reads && !out.iter().any(|o| Arc::ptr_eq(o, t)) {
                out.push(t.clone());
            }
        }
        out
    }

    /// Acts on one version change; returns how many processes were affected.
    /// `value` is the new content, for file deliveries; `rendered`, the
    /// templates reading the changed ref rendered anew, for files rendered
    /// from them.
    pub fn on_change(
        &self,
        change: &VersionChange,
        value: Option<&[u8]>,
        rendered: &[Rerendered],
    ) -> usize {
        let set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut affected = 0;
        for l in set.live.iter().filter(|l| l.keys.contains(&change.key)) {
            // Exited, not swept yet: its files are gone, nothing to tell.
            if send(&l.pidfd, 0).is_err() {
                continue;
            }
            affected += 1;
            let what = change.reference.to_string();
            if let Some(f) = &l.files {
                for (_, name) in f.names.iter().filter(|(k, _)| *k == change.key) {
                    let new = match f.template_of(name) {
                        Some(t) => rendered
                            .iter()
                            .find(|r| Arc::ptr_eq(&r.template, t))
                            .and_then(|r| r.value.as_ref())
                            .map(SecretValue::expose_bytes),
                        None => value,
                    };
                    match new.map(|v| rewrite(f, name, v, &what)) {
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
            nudge(
                l.pid,
                &l.pidfd,
                &l.binding,
                l.on_rotate.as_ref(),
                &format!("{what} changed"),
            );
        }
        affected
    }
}

/// What the binding's `onRotate` says to do to a process whose secret is
/// about to be or has been replaced (`event` says which, for the log):
/// nothing, a signal, or a restart (SIGTERM, or SIGKILL where the kernel
/// would drop SIGTERM).
pub(crate) fn nudge(
    pid: u32,
    pidfd: &OwnedFd,
    binding: &str,
    on_rotate: Option<&OnRotate>,
    event: &str,
) {
    match on_rotate {
        None | Some(OnRotate::None) => info!(
            pid, binding = %binding,
            "[ROTATE] {event}; PID {} keeps the old value (binding {}: onRotate none)", pid, binding
        ),
        Some(OnRotate::Signal(name))
            if signal_number(name).is_some_and(|sig| dropped_by_kernel(pid, sig)) =>
        {
            warn!(
                pid, binding = %binding,
                "[ROTATE] {event}; {name} to PID {} would be dropped by the kernel \
                 (PID 1 of its container without a handler for it, or ignored): it keeps \
                 the old value (binding {})", pid, binding
            );
        }
        Some(OnRotate::Restart) if dropped_by_kernel(pid, libc::SIGTERM) => {
            match send(pidfd, libc::SIGKILL) {
                Ok(()) => info!(
                    pid, binding = %binding,
                    "[ROTATE] {event}; SIGTERM to PID {} would be dropped (PID 1 \
                     of its container without a handler for it, or ignored): sent SIGKILL \
                     for a restart with the new value (binding {})", pid, binding
                ),
                Err(e) => warn!(
                    pid = pid,
                    "[ROTATE] {event}; SIGKILL to PID {} failed: {e}", pid
                ),
            }
        }
        Some(OnRotate::Signal(name)) => match signal_number(name).map(|sig| send(pidfd, sig)) {
            Some(Ok(())) => info!(
                pid, binding = %binding,
                "[ROTATE] {event}; sent {name} to PID {} (binding {})", pid, binding
            ),
            Some(Err(e)) => warn!(
                pid = pid,
                "[ROTATE] {event}; {name} to PID {} failed: {e}", pid
            ),
            None => warn!("[ROTATE] unknown signal {name:?} in binding {}", binding),
        },
        Some(OnRotate::Restart) => match send(pidfd, libc::SIGTERM) {
            Ok(()) => info!(
                pid, binding = %binding,
                "[ROTATE] {event}; PID {} terminated for a restart with the new value (binding {})", pid, binding
            ),
            Err(e) => warn!(
                pid = pid,
                "[ROTATE] {event}; SIGTERM to PID {} failed: {e}", pid
            ),
        },
    }
}

/// Rewrites one delivered file with its part of the ref's new value. A key
/// gone from the value leaves the file as it was, with the reason.
fn rewrite(f: &LiveFiles, name: &str, value: &[u8], what: &str) -> Result<(), String> {
    match f.parts.get(name) {
        None => f.store.rewrite(&f.files, name, value),
        Some(part) => {
            let content =
                kernelseal_providers::select_part(value, part, what).map_err(|e| e.to_string())?;
            f.store.rewrite(&f.files, name, &content)
        }
    }
    .map_err(|e| e.to_string())
}

/// Whether the kernel drops `sig` sent from the agent's PID namespace: the
/// process ignores it, or it is the init of a PID namespace below ours (a
/// container's PID 1) with no handler for it — such an init gets only the
/// signals it catches (and SIGKILL/SIGSTOP) from an ancestor namespace.
fn dropped_by_kernel(pid: u32, sig: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|status| drops(&status, sig))
        .unwrap_or(false)
}

fn drops(status: &str, sig: i32) -> bool {
    if !(1..=64).contains(&sig) || sig == libc::SIGKILL || sig == libc::SIGSTOP {
        return false;
    }
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let bit = |name: &str| {
        field(name)
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .is_some_and(|mask| mask & (1u64 << (sig - 1)) != 0)
    };
    let ns_pids: Vec<&str> = field("NSpid")
        .map(|v| v.split_whitespace().collect())
        .unwrap_or_default();
    let nested_init = ns_pids.len() > 1 && ns_pids.last() == Some(&"1");
    bit("SigIgn") || (nested_init && !bit("SigCgt"))
}

/// Follows the version changes of one serving state — its cache's, and
/// those of values read as pods — until `stop` is dropped (the delivery it
/// belongs to was replaced by a reload).
pub async fn watch(
    cache: kernelseal_providers::Cache,
    pod_reads: std::sync::Arc<PodReads>,
    live: std::sync::Arc<LiveSet>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut changes = cache.subscribe();
    let mut pod_changes = pod_reads.subscribe();
    loop {
        tokio::select! {
            _ = &mut stop => return,
            c = changes.recv() => match c {
                Ok(change) => {
                    let value = cache.get(&change.reference).await.ok();
                    let rendered = rerender(&cache, &live, &change.key).await;
                    live.on_change(&change, value.as_ref().map(|v| v.expose_bytes()), &rendered);
                }
                Err(e) => if !missed(e) { return },
            },
            c = pod_changes.recv() => match c {
                Ok(pc) => {
                    let value = pc.value().await;
                    // A template read as the pod is not rendered anew here
                    // (that needs the pod's login): its file is left as is
                    // and said to be stale; onRotate still applies.
                    live.on_change(&pc.change, value.as_ref().map(|v| v.expose_bytes()), &[]);
                }
                Err(e) => if !missed(e) { return },
            },
        }
    }
}

/// Renders anew, from the cache, every template of a live file delivery
/// that reads the ref whose cache key is `key`.
async fn rerender(
    cache: &kernelseal_providers::Cache,
    live: &LiveSet,
    key: &str,
) -> Vec<Rerendered> {
    let mut out = Vec::new();
    for template in live.templates_reading(key) {
        // A template's text as a ref is its TemplateRef's Display.
        let reference = template.to_string();
        // A dynamic ref is each process's own, read at its delivery with its
        // lease held for it: a re-render would read one new credential for
        // every process's file, held by nobody. The file stays as it was
        // (logged stale) and onRotate applies.
        if template.refs.values().any(SecretRef::is_dynamic) {
            warn!("[ROTATE] {reference} reads a dynamic secret: its files are not rendered anew");
            out.push(Rerendered {
                template,
                value: None,
            });
            continue;
        }
        let fetched =
            kernelseal_providers::fetch_and_render(&template, &reference, |inner| cache.get(inner))
                .await;
        let value = fetched.rendered.inspect_err(|e| warn!("[ROTATE] {e}")).ok();
        out.push(Rerendered { template, value });
    }
    out
}

/// Logs changes lost to a full queue; `false` when the channel closed.
fn missed(e: broadcast::error::RecvError) -> bool {
    match e {
        broadcast::error::RecvError::Lagged(n) => {
            warn!("[ROTATE] {n} version change(s) missed (too many at once)");
            true
        }
        broadcast::error::RecvError::Closed => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: u32, binding: &str) -> Live {
        Live {
            pid,
            pidfd: kernelseal_bpf::pidfd_open(pid).unwrap(),
            binding: binding.into(),
            on_rotate: None,
            keys: vec!["k".into()],
            files: None,
        }
    }

    #[tokio::test]
    async fn a_template_file_is_rewritten_rendered_not_with_the_ref_s_value() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.json");
        std::fs::write(&db, r#"{"password":"v1"}"#).unwrap();
        let yaml = format!(
            "secrets:\n  - name: app\n    selector: {{ uid: 1 }}\n    delivery: file\n    secretRefs:\n      - name: conf\n        source:\n          template:\n            text: \"password={{{{ db.password }}}}\\n\"\n            refs:\n              db: {{ fileRef: {} }}\n",
            db.display()
        );
        let config = kernelseal_config::parse_str(&yaml, "t").unwrap().config;
        let source = config.secrets[0].value.secret_refs[0]
            .value
            .source
            .value
            .clone();
        let SecretRef::Template(template) = source else {
            panic!("{source:?}")
        };
        let inner_key = template.refs["db"].cache_key().unwrap();

        let root = std::path::PathBuf::from(format!(
            "/dev/shm/ks-rotate-test-{}/secrets",
            std::process::id()
        ));
        let store = Arc::new(crate::FileStore::open(root.clone(), None).unwrap());
        let mut app = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = app.id();
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let first = kernelseal_providers::render_template(
            &template,
            "t",
            &[("db".to_string(), value(r#"{"password":"v1"}"#))].into(),
        )
        .unwrap();
        let pidfd = kernelseal_bpf::pidfd_open(pid).unwrap();
        let files = store
            .deliver(pid, uid, gid, 1, &[("conf".into(), first)], pidfd)
            .unwrap();
        let set = LiveSet::default();
        set.add(Live {
            pid,
            pidfd: kernelseal_bpf::pidfd_open(pid).unwrap(),
            binding: "app".into(),
            on_rotate: None,
            keys: vec![inner_key.clone()],
            files: Some(LiveFiles {
                store: store.clone(),
                files: files.clone(),
                names: vec![(inner_key.clone(), "conf".into())],
                parts: Default::default(),
                templates: vec![("conf".into(), template.clone())],
            }),
        });
        assert_eq!(set.templates_reading(&inner_key).len(), 1);
        assert!(set.templates_reading("fileRef /elsewhere").is_empty());

        let change = VersionChange {
            key: inner_key,
            reference: template.refs["db"].clone(),
            old_version: None,
            new_version: None,
        };
        let raw = br#"{"password":"v2"}"#;
        let rendered = [Rerendered {
            template: template.clone(),
            value: Some(value("password=v2\n")),
        }];
        assert_eq!(set.on_change(&change, Some(raw), &rendered), 1);
        let path = files.path().join("conf");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "password=v2\n");
        // Not rendered anew (a template read as the pod): the file is left
        // as it was rather than given the ref's raw value.
        assert_eq!(set.on_change(&change, Some(raw), &[]), 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "password=v2\n");
        let _ = app.kill();
        let _ = app.wait();
        let _ = std::fs::remove_dir_all(root.parent().unwrap());
    }

    fn value(text: &str) -> SecretValue {
        SecretValue::new(
            zeroize::Zeroizing::new(text.as_bytes().to_vec()),
            kernelseal_providers::Metadata::new("test", "test"),
        )
    }

    #[test]
    fn signals_the_kernel_would_drop_are_recognised() {
        // A container's PID 1 (4242 here, 1 inside) catching only SIGHUP.
        let init =
            "Name:\tapp\nNSpid:\t4242\t1\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000000001\n";
        assert!(!drops(init, libc::SIGHUP));
        assert!(drops(init, libc::SIGTERM));
        assert!(drops(init, libc::SIGUSR1));
        assert!(!drops(init, libc::SIGKILL));
        // An ordinary process: the default action happens.
        let plain = "NSpid:\t4242\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000000000\n";
        assert!(!drops(plain, libc::SIGTERM));
        // A process in a container but not its init.
        let child = "NSpid:\t4243\t7\nSigIgn:\t0\nSigCgt:\t0\n";
        assert!(!drops(child, libc::SIGTERM));
        // Ignored anywhere: SIGUSR1 is bit 9 (0x200).
        let ignoring = "NSpid:\t4242\nSigIgn:\t0000000000000200\nSigCgt:\t0\n";
        assert!(drops(ignoring, libc::SIGUSR1));
        assert!(!drops(ignoring, libc::SIGUSR2));
    }

    #[test]
    fn exited_processes_are_swept_and_a_repeat_request_replaces_its_entry() {
        let set = LiveSet::default();
        let mut children: Vec<std::process::Child> = (0..SWEEP_FLOOR)
            .map(|_| {
                std::process::Command::new("sleep")
                    .arg("60")
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in &children {
            set.add(entry(c.id(), "b"));
        }
        set.add(entry(children[0].id(), "b"));
        assert_eq!(set.len(), SWEEP_FLOOR, "same process and binding: replaced");
        for c in &mut children {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        // Swept at 64 (all alive): the next sweep comes when the set has
        // doubled, and removes every exited entry.
        let me = std::process::id();
        for i in 0..SWEEP_FLOOR {
            set.add(entry(me, &format!("m{i}")));
        }
        assert_eq!(set.len(), 2 * SWEEP_FLOOR, "no sweep before doubling");
        set.add(entry(me, "last"));
        assert_eq!(set.len(), SWEEP_FLOOR + 1, "the exited ones are gone");
        let change = VersionChange {
            key: "k".into(),
            reference: kernelseal_providers::SecretRef::literal("x"),
            old_version: None,
            new_version: None,
        };
        assert_eq!(
            set.on_change(&change, None, &[]),
            SWEEP_FLOOR + 1,
            "only live processes"
        );
    }
}
