//! The webhook's patched pod, run on the real kernel: a Deployment's pod
//! annotated `kernelseal.io/inject: "true"` is reviewed by
//! `kernelseal_webhook::review` in this process, the JSON Patch it answers
//! is applied, and the wrapped container's `command` + `args` are started
//! as the kubelet would start them — in the container's kubelet-shaped
//! cgroup, against the running agent, with the pod's projected token —
//! reading Vault as the pod (`identity: pod`). The cluster is the
//! pod-identity test's (pod_identity_suite.rs): the stand-in Kubernetes API
//! with web's pod on this node, Vault, web's binding.
//!
//! # From the pod to the VM
//!
//! The guest has no kubelet and no container runtime, so what the patched
//! pod mounts is made to be where the container would see it:
//!
//! | in the patched pod | in the VM |
//! |---|---|
//! | the init container `kernelseal-exec`: the KernelSeal image's static wrapper at `/usr/bin/kernelseal-exec`, its command copying it into the in-memory volume `kernelseal-bin` | the guest's static `kernelseal-exec` at the same path (xtask's guest.rs puts it there); the volume is a tmpfs of the same size at the init container's mount path, and the init container's command runs as the webhook wrote it |
//! | `/kernelseal/bin/kernelseal-exec`: the app container's mount of that volume, read-only | the same tmpfs at the same path: the app's command, wrapper first, runs as the webhook wrote it |
//! | `/run/kernelseal`: hostPath `/run/kernelseal`, read-only | `/run/kernelseal`: the running agent's socket directory, the same path (checked: the agent's socket is there). |
//! | `/var/run/secrets/kernelseal.io/tokens`: the projected volume `kernelseal-tokens` (one file per audience: `vault`) | the same path, made for the test and removed after it: a token minted for web's pod with the volume's audience and lifetime, at the volume's file name. The wrapper reads it at its default path; no `--token-file`. |
//! | the container's command: this runner as `victim` | the same, at the runner's path in the guest |
//! | the pod created from the reviewed one (testkit's Deployment pod, `generateName: web-6d4cf56db6-`) | `web-7d9f4c6b8-x2kq9` of the stand-in node, container `app`: the pod the agent finds behind the cgroup (its name is the stand-in's; the agent matches by cgroup, namespace and service account) |
//!
//! Not run: the socket group (the app runs as root), the read-only mount
//! of the wrapper's volume in the app (one mount serves both) and the
//! pod's other volumes.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kernelseal_testkit::admission;
use kernelseal_testkit::sa_token::TokenSpec;
use kernelseal_webhook::patch::{BIN_VOLUME, INIT_CONTAINER, RUN_VOLUME, TOKEN_VOLUME};
use kernelseal_webhook::{NoRegistry, Patcher, Settings, Trigger, review};
use serde_json::{Value, json};

use crate::agent::wait_log_line;
use crate::pod_identity_suite::{
    ContainerCgroup, NAMESPACE, StandinCluster, WEB_CID, WEB_PATH, WEB_POD, WEB_SECRET, WEB_UID,
    in_cgroup, not_in_agent_log, token, token_spec,
};
use crate::suite::{Ctx, TestResult, all_allowed, all_refused};
use crate::victim::Victim;

/// Holds the secret expected, for the app to compare with what it
/// received.
const DIR: &str = "/tmp/ks-webhook";
/// The webhook's own namespace (not the pod's: a pod there is left alone).
const OWN_NAMESPACE: &str = "kernelseal";
/// web's container, as the stand-in node runs it.
const CONTAINER: &str = "app";
const REVIEW_UID: &str = "4c1d2e3f-5a6b-4c7d-8e9f-0a1b2c3d4e5f";

/// The Deployment `web`'s pod, as its ReplicaSet has the API server create
/// it: annotated for injection, with the wrapper's timeout and on-error
/// mode, its container running `program victim`.
fn deployment_pod(program: &str) -> Value {
    let annotations = json!({
        "kernelseal.io/inject": "true",
        "kernelseal.io/timeout": "10s",
        "kernelseal.io/on-error": "fail"
    });
    let mut app = admission::container(CONTAINER, "registry.example/web:1.4", Some(&[program]));
    app["args"] = json!(["victim"]);
    admission::deployment_pod(NAMESPACE, annotations, vec![app])
}

/// `pod` as the webhook's answer makes it: reviewed (no registry: the
/// container has its command), the returned JSON Patch applied.
fn patched(runtime: &tokio::runtime::Runtime, pod: &Value) -> Result<Value, String> {
    let body = admission::admission_review(
        pod,
        &admission::Sent {
            namespace: NAMESPACE,
            uid: REVIEW_UID,
            dry_run: false,
        },
    );
    let reviewed = runtime
        .block_on(review(
            &body,
            Trigger::Annotation,
            OWN_NAMESPACE,
            &Patcher::new(Settings::default()),
            &NoRegistry,
        ))
        .map_err(|e| format!("the review failed: {e}"))?;
    let response = reviewed.response;
    if !response.allowed {
        return Err(format!(
            "the webhook refused the pod: {}",
            response.result.message
        ));
    }
    let patch = response
        .patch
        .ok_or("the webhook allowed the pod without patching it")?;
    let patch: json_patch::Patch = serde_json::from_slice(&patch)
        .map_err(|e| format!("the webhook's patch is not a JSON Patch: {e}"))?;
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch)
        .map_err(|e| format!("the webhook's patch does not apply to the pod: {e}"))?;
    Ok(out)
}

/// The container `name` of `list` (`containers`, `initContainers`).
fn container<'a>(pod: &'a Value, list: &str, name: &str) -> Result<&'a Value, String> {
    pod["spec"][list]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == name))
        .ok_or_else(|| format!("the patched pod has no {list} entry {name:?}"))
}

fn volume<'a>(pod: &'a Value, name: &str) -> Result<&'a Value, String> {
    pod["spec"]["volumes"]
        .as_array()
        .and_then(|all| all.iter().find(|v| v["name"] == name))
        .ok_or_else(|| format!("the patched pod has no volume {name:?}"))
}

/// Where `container` mounts `volume`.
fn mount_path<'a>(container: &'a Value, volume: &str) -> Result<&'a str, String> {
    container["volumeMounts"]
        .as_array()
        .and_then(|all| all.iter().find(|m| m["name"] == volume))
        .and_then(|m| m["mountPath"].as_str())
        .ok_or_else(|| format!("container {} does not mount {volume:?}", container["name"]))
}

/// What the container runs: `command` + `args`, as the kubelet joins them.
fn command_line(container: &Value) -> Vec<String> {
    ["command", "args"]
        .iter()
        .filter_map(|k| container[k].as_array())
        .flatten()
        .map(|w| w.as_str().unwrap_or_default().to_string())
        .collect()
}

/// The wrapper as the pod's containers see it: the file the init container
/// copies into the bin volume, mounted at the same directory in `app`.
fn wrapper_in_pod(pod: &Value, app: &Value) -> Result<String, String> {
    let init = container(pod, "initContainers", INIT_CONTAINER)?;
    let copied_to = command_line(init)
        .last()
        .cloned()
        .ok_or("the init container has no command")?;
    let (in_init, in_app) = (mount_path(init, BIN_VOLUME)?, mount_path(app, BIN_VOLUME)?);
    if in_init != in_app || Path::new(&copied_to).parent() != Some(Path::new(in_app)) {
        return Err(format!(
            "the init container copies the wrapper to {copied_to} in {BIN_VOLUME} at {in_init}, \
             which the app mounts at {in_app}"
        ));
    }
    Ok(copied_to)
}

/// The in-memory volume the init container copies the wrapper into, as
/// a tmpfs at its mount path. Unmounted and removed on drop.
struct BinVolume {
    path: PathBuf,
}

impl BinVolume {
    fn mount(pod: &Value, init: &Value) -> Result<Self, String> {
        let empty_dir = &volume(pod, BIN_VOLUME)?["emptyDir"];
        if empty_dir["medium"] != "Memory" {
            return Err(format!(
                "{BIN_VOLUME} is not an in-memory emptyDir: {empty_dir}"
            ));
        }
        let path = PathBuf::from(mount_path(init, BIN_VOLUME)?);
        if path.exists() {
            return Err(format!("{} exists before the test", path.display()));
        }
        std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let volume = BinVolume { path };
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs"])
            .arg(&volume.path)
            .status()
            .map_err(|e| format!("mount: {e}"))?;
        if !status.success() {
            return Err(format!(
                "mounting a tmpfs at {}: {status}",
                volume.path.display()
            ));
        }
        Ok(volume)
    }
}

impl Drop for BinVolume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Runs the init container's command as the webhook wrote it; the
/// wrapper must then be at `copied_to`, executable.
fn run_init_container(pod: &Value, copied_to: &str) -> TestResult {
    let init = command_line(container(pod, "initContainers", INIT_CONTAINER)?);
    let (program, args) = init
        .split_first()
        .ok_or("the init container has no command")?;
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .map_err(|e| format!("the init container's {init:?}: {e}"))?;
    if !status.success() {
        return Err(format!("the init container's {init:?}: {status}"));
    }
    match std::fs::metadata(copied_to) {
        Ok(m) if m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(m) => Err(format!(
            "{copied_to} is not executable ({:o})",
            m.permissions().mode()
        )),
        Err(e) => Err(format!(
            "the init container copied no wrapper to {copied_to}: {e}"
        )),
    }
}

/// The app's command line starts with the wrapper the init container
/// copied.
fn starts_with_wrapper(command_line: &[String], wrapper: &str) -> TestResult {
    match command_line.first() {
        Some(first) if first == wrapper => Ok(()),
        _ => Err(format!(
            "the patched command does not start with the wrapper {wrapper}: {command_line:?}"
        )),
    }
}

/// The socket directory the pod mounts is the node's own, at the same
/// path, and the running agent's socket is in it.
fn socket_dir_is_the_agents(pod: &Value, app: &Value) -> TestResult {
    let in_app = mount_path(app, RUN_VOLUME)?;
    let on_node = volume(pod, RUN_VOLUME)?["hostPath"]["path"]
        .as_str()
        .ok_or_else(|| format!("{RUN_VOLUME} is not a hostPath volume"))?;
    if in_app != on_node {
        return Err(format!(
            "the node's {on_node} is mounted at {in_app}: the VM has one filesystem, so the test \
             maps it to the same path"
        ));
    }
    let socket = Path::new(in_app).join("kernelseal.sock");
    match std::fs::metadata(&socket) {
        Ok(m) if m.file_type().is_socket() => Ok(()),
        Ok(_) => Err(format!("{} is not a socket", socket.display())),
        Err(e) => Err(format!("the agent's socket {}: {e}", socket.display())),
    }
}

/// The pod's projected service-account tokens, written where its container
/// mounts them, as the kubelet writes them for web's pod. Removed on drop:
/// any later wrapper would send them from its default path.
struct ProjectedTokens {
    /// The outermost directory made for them.
    made: PathBuf,
    /// The tokens, for checking the agent's log.
    tokens: Vec<String>,
}

impl ProjectedTokens {
    fn write(pod: &Value, app: &Value) -> Result<Self, String> {
        let dir = Path::new(mount_path(app, TOKEN_VOLUME)?);
        let sources = volume(pod, TOKEN_VOLUME)?["projected"]["sources"]
            .as_array()
            .ok_or_else(|| format!("{TOKEN_VOLUME} is not a projected volume"))?;
        let account = pod["spec"]["serviceAccountName"]
            .as_str()
            .ok_or("the pod names no service account")?;
        if dir.exists() {
            return Err(format!("{} exists before the test", dir.display()));
        }
        let made = dir
            .ancestors()
            .take_while(|d| !d.exists())
            .last()
            .unwrap_or(dir)
            .to_path_buf();
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut written = ProjectedTokens {
            made,
            tokens: Vec::new(),
        };
        for source in sources {
            let Some(projected) = source.get("serviceAccountToken") else {
                continue;
            };
            let (Some(audience), Some(file), Some(lifetime)) = (
                projected["audience"].as_str(),
                projected["path"].as_str(),
                projected["expirationSeconds"].as_i64(),
            ) else {
                return Err(format!(
                    "{TOKEN_VOLUME}: an incomplete token source {projected}"
                ));
            };
            let jwt = token(&TokenSpec {
                audiences: vec![audience.to_string()],
                expires_in_secs: lifetime,
                ..token_spec(WEB_POD, account, WEB_UID)
            });
            let path = dir.join(file);
            std::fs::write(&path, &jwt).map_err(|e| format!("{}: {e}", path.display()))?;
            written.tokens.push(jwt);
        }
        if written.tokens.is_empty() {
            return Err(format!("{TOKEN_VOLUME} projects no service-account token"));
        }
        Ok(written)
    }
}

impl Drop for ProjectedTokens {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.made);
    }
}

/// web's secret as Vault holds it, in a file only root reads: the app
/// compares what it received with it, so the value crosses no pipe.
fn expected_secret() -> Result<String, String> {
    std::fs::create_dir_all(DIR).map_err(|e| format!("{DIR}: {e}"))?;
    let path = format!("{DIR}/expected-db-password");
    std::fs::write(&path, WEB_SECRET).map_err(|e| format!("{path}: {e}"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{path}: {e}"))?;
    Ok(path)
}

/// The command the webhook put in front of the app, run in web's container
/// (paths mapped as the module says): the app receives web's secret read
/// from Vault as the pod, and root is refused on every vector; the same
/// container's command without the patch, beside it, is open to all of
/// them. Neither the secret nor the token reaches the agent's log.
pub fn patched_command_runs_wrapped_and_root_is_refused(ctx: &mut Ctx) -> TestResult {
    let cluster = StandinCluster::start()?;
    let runner = std::env::current_exe().map_err(|e| format!("the runner's path: {e}"))?;
    let pod = deployment_pod(&runner.to_string_lossy());
    let patched = patched(&cluster.runtime, &pod)?;
    let app = container(&patched, "containers", CONTAINER)?;
    let wrapper = wrapper_in_pod(&patched, app)?;
    let wrapped = command_line(app);
    starts_with_wrapper(&wrapped, &wrapper)?;
    let init = container(&patched, "initContainers", INIT_CONTAINER)?;
    let _bin = BinVolume::mount(&patched, init)?;
    run_init_container(&patched, &wrapper)?;
    let unwrapped = command_line(container(&pod, "containers", CONTAINER)?);
    socket_dir_is_the_agents(&patched, app)?;
    let expected = expected_secret()?;
    let cgroup = ContainerCgroup::create(WEB_UID, WEB_CID)?;
    let tokens = ProjectedTokens::write(&patched, app)?;
    let vault = &cluster.vault;
    cluster.with_agent(ctx, || {
        let mut wrapped_app = Victim::spawn_command_line(&wrapped, cgroup.joiner())?;
        in_cgroup("the wrapped app", wrapped_app.pid, &cgroup)?;
        let seen = wrapped_app.ask(&format!("envmatches DB_PASSWORD {expected}"))?;
        if seen != "envmatches yes" {
            return Err(format!(
                "the app run as {wrapped:?} did not receive web's secret in DB_PASSWORD ({seen})"
            ));
        }
        if (vault.logins_for("web"), vault.reads(WEB_PATH)) != (1, 1) {
            return Err(format!(
                "Vault: {} login(s) as web, {} read(s) of {WEB_PATH}; want 1 and 1",
                vault.logins_for("web"),
                vault.reads(WEB_PATH)
            ));
        }

        all_refused(
            "the wrapped app",
            wrapped_app.pid,
            wrapped_app.pid,
            wrapped_app.addr,
        )?;
        wait_log_line(&[
            "[LSM BLOCKED]",
            &format!("attempted environ access to PID={}", wrapped_app.pid),
        ])?;
        let control = Victim::spawn_command_line(&unwrapped, cgroup.joiner())?;
        in_cgroup("the unpatched command", control.pid, &cgroup)?;
        all_allowed(
            "the unpatched command",
            control.pid,
            control.pid,
            control.addr,
        )?;

        let mut secrets = vec![("the secret", WEB_SECRET)];
        secrets.extend(
            tokens
                .tokens
                .iter()
                .map(|t| ("the pod's token", t.as_str())),
        );
        not_in_agent_log(&secrets)
    })
}
