//! The JSON Patch that wraps a pod: what `deploy/examples/sidecar/app.yaml`
//! does by hand, computed from the pod as the API server sent it.
//!
//! Every path is checked before it is written: a volume, mount or init
//! container of ours whose name or path the pod already uses is refused by
//! name (a patch must never replace what the user wrote), and a list or
//! map the pod lacks is added whole rather than appended to.

use json_patch::jsonptr::{PointerBuf, Token};
use json_patch::{AddOperation, PatchOperation};
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

use crate::annotations::{self, Injection};

/// Where the wrapper is copied to, in every wrapped container.
pub const WRAPPER_DIR: &str = "/kernelseal/bin";
/// The wrapper inside the KernelSeal image.
const WRAPPER_IN_IMAGE: &str = "/usr/bin/kernelseal-exec";
pub const INIT_CONTAINER: &str = "kernelseal-exec";
pub const BIN_VOLUME: &str = "kernelseal-bin";
pub const RUN_VOLUME: &str = "kernelseal-run";
pub const TOKEN_VOLUME: &str = "kernelseal-tokens";

/// How this webhook's pods are wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The KernelSeal image the init container copies the wrapper from.
    pub image: String,
    /// The agent's socket directory on the node, mounted at the same path.
    pub socket_dir: String,
    /// The socket's group (the agent's `--socket-group`).
    pub socket_group: i64,
    /// Life of the projected tokens (the kubelet renews them at 80 %).
    pub token_expiry_secs: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            image: "kernelseal:0.1.0".into(),
            socket_dir: "/run/kernelseal".into(),
            socket_group: 7373,
            token_expiry_secs: 600,
        }
    }
}

/// An image's ENTRYPOINT and CMD, as its config says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entrypoint {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

/// The ENTRYPOINT and CMD of a container's image, looked up beforehand
/// ([`crate::images::look_up_all`] of [`images_to_look_up`]); `Err` says
/// why there is none (the reason ends up in the refusal).
pub trait Entrypoints {
    fn lookup(&self, image: &str) -> Result<Entrypoint, String>;
}

/// Why a pod cannot be wrapped. Names the container, volume or path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("the pod has no spec")]
    NoSpec,
    #[error(
        "kernelseal.io/containers names {0:?}, which is not a container of the pod (init \
         containers are not wrapped)"
    )]
    UnknownContainer(String),
    #[error(
        "container {container:?} has no command, and the ENTRYPOINT of its image {image:?} \
         could not be read ({why}): set `command` on the container (the webhook then needs no \
         registry)"
    )]
    NoEntrypoint {
        container: String,
        image: String,
        why: String,
    },
    #[error(
        "container {container:?} has no command, and its image {image:?} has neither \
         ENTRYPOINT nor CMD: set `command`"
    )]
    EmptyImage { container: String, image: String },
    #[error("the pod already has a {what} named {name:?}: KernelSeal's would replace it")]
    Collision { what: &'static str, name: String },
    #[error("container {container:?} already mounts something at {path}")]
    MountCollision { container: String, path: String },
}

/// The operations that wrap `pod` as `injection` asks.
pub fn wrap(
    pod: &Pod,
    injection: &Injection,
    settings: &Settings,
    images: &dyn Entrypoints,
) -> Result<Vec<PatchOperation>, PatchError> {
    let spec = pod.spec.as_ref().ok_or(PatchError::NoSpec)?;
    let selected = selected(&spec.containers, injection)?;
    check_names(pod, injection)?;
    let mut ops = Vec::new();
    annotate(pod, &mut ops);
    add_init_container(pod, settings, &mut ops);
    add_volumes(pod, injection, settings, &mut ops);
    add_group(pod, settings, &mut ops);
    for i in selected {
        wrap_container(
            i,
            &spec.containers[i],
            injection,
            settings,
            images,
            &mut ops,
        )?;
    }
    Ok(ops)
}

/// The images whose ENTRYPOINT and CMD [`wrap`] needs: those of the
/// selected containers without `command` (none if the selection names a
/// container the pod lacks: `wrap` refuses it).
pub fn images_to_look_up(pod: &Pod, injection: &Injection) -> Vec<String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let Ok(selected) = selected(&spec.containers, injection) else {
        return Vec::new();
    };
    selected
        .into_iter()
        .map(|i| &spec.containers[i])
        .filter(|c| command_of(c).is_none())
        .map(|c| c.image.clone().unwrap_or_default())
        .collect()
}

/// A container's own command, if it has one.
fn command_of(c: &Container) -> Option<&Vec<String>> {
    c.command.as_ref().filter(|cmd| !cmd.is_empty())
}

/// The indices of the containers to wrap.
fn selected(containers: &[Container], injection: &Injection) -> Result<Vec<usize>, PatchError> {
    match &injection.containers {
        None => Ok((0..containers.len()).collect()),
        Some(names) => names
            .iter()
            .map(|n| {
                containers
                    .iter()
                    .position(|c| &c.name == n)
                    .ok_or_else(|| PatchError::UnknownContainer(n.clone()))
            })
            .collect(),
    }
}

/// None of our names is taken.
fn check_names(pod: &Pod, injection: &Injection) -> Result<(), PatchError> {
    let spec = pod.spec.as_ref().ok_or(PatchError::NoSpec)?;
    let ours = our_volumes(injection);
    for v in spec.volumes.iter().flatten() {
        if ours.contains(&v.name.as_str()) {
            return Err(PatchError::Collision {
                what: "volume",
                name: v.name.clone(),
            });
        }
    }
    let init = spec.init_containers.iter().flatten();
    for c in init.chain(&spec.containers) {
        if c.name == INIT_CONTAINER {
            return Err(PatchError::Collision {
                what: "container",
                name: c.name.clone(),
            });
        }
    }
    Ok(())
}

fn our_volumes(injection: &Injection) -> Vec<&'static str> {
    let mut v = vec![BIN_VOLUME, RUN_VOLUME];
    if !injection.token_audiences.is_empty() {
        v.push(TOKEN_VOLUME);
    }
    v
}

/// An `add` at the path of these segments (escaped as RFC 6901 says).
fn add<'t>(path: impl IntoIterator<Item: Into<Token<'t>>>, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path),
        value,
    })
}

fn annotate(pod: &Pod, ops: &mut Vec<PatchOperation>) {
    match &pod.metadata.annotations {
        None => ops.push(add(
            ["metadata", "annotations"],
            json!({ annotations::STATUS: annotations::STATUS_INJECTED }),
        )),
        Some(_) => ops.push(add(
            ["metadata", "annotations", annotations::STATUS],
            json!(annotations::STATUS_INJECTED),
        )),
    }
}

/// First of the init containers: any init container wrapped later finds
/// the wrapper there.
fn add_init_container(pod: &Pod, settings: &Settings, ops: &mut Vec<PatchOperation>) {
    let init = json!({
        "name": INIT_CONTAINER,
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["cp", WRAPPER_IN_IMAGE, format!("{WRAPPER_DIR}/kernelseal-exec")],
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": { "drop": ["ALL"] }
        },
        "resources": {
            "requests": { "cpu": "10m", "memory": "16Mi" },
            "limits": { "cpu": "100m", "memory": "32Mi" }
        },
        "volumeMounts": [{ "name": BIN_VOLUME, "mountPath": WRAPPER_DIR }]
    });
    let has_init = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|i| !i.is_empty());
    if has_init {
        ops.push(add(["spec", "initContainers", "0"], init));
    } else {
        ops.push(add(["spec", "initContainers"], json!([init])));
    }
}

/// A file name for an audience's token (`sts.amazonaws.com` stays, any
/// character a file name should not hold becomes `_`).
pub fn token_file(audience: &str) -> String {
    audience
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn add_volumes(
    pod: &Pod,
    injection: &Injection,
    settings: &Settings,
    ops: &mut Vec<PatchOperation>,
) {
    let mut volumes = vec![
        json!({ "name": BIN_VOLUME, "emptyDir": { "medium": "Memory", "sizeLimit": "8Mi" } }),
        json!({
            "name": RUN_VOLUME,
            "hostPath": { "path": settings.socket_dir, "type": "DirectoryOrCreate" }
        }),
    ];
    if !injection.token_audiences.is_empty() {
        let sources: Vec<Value> = injection
            .token_audiences
            .iter()
            .map(|a| {
                json!({ "serviceAccountToken": {
                    "audience": a,
                    "expirationSeconds": settings.token_expiry_secs,
                    "path": token_file(a)
                } })
            })
            .collect();
        volumes.push(json!({ "name": TOKEN_VOLUME, "projected": { "sources": sources } }));
    }
    let has = pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).is_some();
    if has {
        ops.extend(
            volumes
                .into_iter()
                .map(|v| add(["spec", "volumes", "-"], v)),
        );
    } else {
        ops.push(add(["spec", "volumes"], Value::Array(volumes)));
    }
}

/// The socket's group, so that a non-root app may connect.
fn add_group(pod: &Pod, settings: &Settings, ops: &mut Vec<PatchOperation>) {
    let g = settings.socket_group;
    let sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    match sc {
        None => ops.push(add(
            ["spec", "securityContext"],
            json!({ "supplementalGroups": [g] }),
        )),
        Some(sc) => match &sc.supplemental_groups {
            None => ops.push(add(
                ["spec", "securityContext", "supplementalGroups"],
                json!([g]),
            )),
            Some(groups) if groups.contains(&g) => {}
            Some(_) => ops.push(add(
                ["spec", "securityContext", "supplementalGroups", "-"],
                json!(g),
            )),
        },
    }
}

/// The wrapper's command line up to `--`.
fn wrapper_prefix(injection: &Injection) -> Vec<String> {
    let mut p = vec![format!("{WRAPPER_DIR}/kernelseal-exec")];
    if let Some(t) = injection.timeout {
        p.push("--timeout".into());
        p.push(format!("{}ms", t.as_millis()));
    }
    if let Some(e) = &injection.on_error {
        p.push("--on-error".into());
        p.push(e.clone());
    }
    p.push("--".into());
    p
}

/// The wrapper in front of container `i`'s command, and its mounts.
///
/// Kubernetes runs `command` + `args`, where a missing `command` is the
/// image's ENTRYPOINT and a missing `args` the image's CMD — but once
/// `command` is set, the CMD is dropped. So a container without `command`
/// gets ENTRYPOINT after the wrapper, and, without `args` too, CMD as its
/// `args`.
fn wrap_container(
    i: usize,
    c: &Container,
    injection: &Injection,
    settings: &Settings,
    images: &dyn Entrypoints,
    ops: &mut Vec<PatchOperation>,
) -> Result<(), PatchError> {
    let index = i.to_string();
    let mut command = wrapper_prefix(injection);
    match command_of(c) {
        Some(cmd) => command.extend(cmd.iter().cloned()),
        None => {
            let image = c.image.clone().unwrap_or_default();
            let ep = images
                .lookup(&image)
                .map_err(|why| PatchError::NoEntrypoint {
                    container: c.name.clone(),
                    image: image.clone(),
                    why,
                })?;
            let args_missing = c.args.as_ref().is_none_or(|a| a.is_empty());
            if ep.entrypoint.is_empty() && ep.cmd.is_empty() && args_missing {
                return Err(PatchError::EmptyImage {
                    container: c.name.clone(),
                    image,
                });
            }
            command.extend(ep.entrypoint);
            if args_missing && !ep.cmd.is_empty() {
                ops.push(add(["spec", "containers", &index, "args"], json!(ep.cmd)));
            }
        }
    }
    ops.push(add(
        ["spec", "containers", &index, "command"],
        json!(command),
    ));
    let mut mounts = vec![
        json!({ "name": BIN_VOLUME, "mountPath": WRAPPER_DIR, "readOnly": true }),
        json!({ "name": RUN_VOLUME, "mountPath": settings.socket_dir, "readOnly": true }),
    ];
    if !injection.token_audiences.is_empty() {
        mounts.push(json!({
            "name": TOKEN_VOLUME,
            "mountPath": kernelseal_protocol::DEFAULT_TOKEN_DIR,
            "readOnly": true
        }));
    }
    for m in c.volume_mounts.iter().flatten() {
        let taken = mounts
            .iter()
            .any(|o| o["mountPath"] == m.mount_path.as_str());
        if taken {
            return Err(PatchError::MountCollision {
                container: c.name.clone(),
                path: m.mount_path.clone(),
            });
        }
    }
    match &c.volume_mounts {
        None => ops.push(add(
            ["spec", "containers", &index, "volumeMounts"],
            Value::Array(mounts),
        )),
        Some(_) => ops.extend(
            mounts
                .into_iter()
                .map(|m| add(["spec", "containers", &index, "volumeMounts", "-"], m)),
        ),
    }
    Ok(())
}
