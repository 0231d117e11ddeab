//! The JSON Patch that wraps a pod: what `deploy/examples/sidecar/app.yaml`
//! does by hand, computed from the pod as the API server sent it.
//!
//! Every path is checked before it is written: a volume, mount or init
//! container of ours whose name or path the pod already uses is refused by
//! name (a patch must never replace what the user wrote), and a list or
//! map the pod lacks is added whole rather than appended to.
//!
//! The patch is written straight to the bytes the answer carries
//! ([`parts`]); tests read it back with the `json-patch` crate.

use crate::annotations::Injection;
use crate::pod::{Container, Pod};

mod parts;

use parts::{
    Add, Path, Piece, Projected, STATUS_PATH, ServiceAccountToken, SupplementalGroups, TokenSource,
    TokenVolume, add,
};
pub use parts::{Patch, Patcher};

/// Where the wrapper is copied to, in every wrapped container.
pub const WRAPPER_DIR: &str = "/kernelseal/bin";
/// The wrapper inside the KernelSeal image.
const WRAPPER_IN_IMAGE: &str = "/usr/bin/kernelseal-exec";
pub const INIT_CONTAINER: &str = "kernelseal-exec";
pub const BIN_VOLUME: &str = "kernelseal-bin";
pub const RUN_VOLUME: &str = "kernelseal-run";
pub const TOKEN_VOLUME: &str = "kernelseal-tokens";
/// The agent's socket in [`Settings::socket_dir`], as the agent names it
/// by default.
pub const SOCKET_NAME: &str = "kernelseal.sock";

/// How this webhook's pods are wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The KernelSeal image the init container copies the wrapper from.
    pub image: String,
    /// The agent's socket directory on the node, mounted at the same path;
    /// the socket in it is [`SOCKET_NAME`].
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
         could not be read ({why}): set command on the container (the webhook then needs no \
         registry)"
    )]
    NoEntrypoint {
        container: String,
        image: String,
        why: String,
    },
    #[error(
        "container {container:?} has no command, and its image {image:?} has neither \
         ENTRYPOINT nor CMD: set command on the container"
    )]
    EmptyImage { container: String, image: String },
    #[error("the pod already has a {what} named {name:?}: KernelSeal's would replace it")]
    Collision { what: &'static str, name: String },
    #[error("container {container:?} already mounts something at {path}")]
    MountCollision { container: String, path: String },
}

/// The patch that wraps `pod` as `injection` asks.
pub fn wrap<'a>(
    pod: &Pod,
    injection: &'a Injection,
    patcher: &'a Patcher,
    images: &dyn Entrypoints,
) -> Result<Patch<'a>, PatchError> {
    let spec = pod.spec.as_ref().ok_or(PatchError::NoSpec)?;
    let selected = selected(&spec.containers, injection)?;
    check_names(pod, injection)?;
    let mut ops = Vec::new();
    annotate(pod, patcher, &mut ops);
    add_init_container(pod, patcher, &mut ops);
    add_volumes(pod, injection, patcher, &mut ops);
    add_group(pod, &patcher.settings, &mut ops);
    for i in selected {
        wrap_container(i, &spec.containers[i], injection, patcher, images, &mut ops)?;
    }
    Ok(Patch(ops))
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

fn annotate<'a>(pod: &Pod, patcher: &'a Patcher, ops: &mut Vec<Add<'a>>) {
    match &pod.metadata.annotations {
        None => ops.push(add(
            Path::Fixed("/metadata/annotations"),
            Piece::Written(&patcher.status_annotations),
        )),
        Some(_) => ops.push(add(
            Path::Fixed(STATUS_PATH),
            Piece::Written(&patcher.status_injected),
        )),
    }
}

/// First of the init containers: any init container wrapped later finds
/// the wrapper there.
fn add_init_container<'a>(pod: &Pod, patcher: &'a Patcher, ops: &mut Vec<Add<'a>>) {
    let init = Piece::Written(&patcher.init_container);
    let has_init = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|i| !i.is_empty());
    if has_init {
        ops.push(add(Path::Fixed("/spec/initContainers/0"), init));
    } else {
        ops.push(add(
            Path::Fixed("/spec/initContainers"),
            Piece::List(vec![init]),
        ));
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

fn add_volumes<'a>(
    pod: &Pod,
    injection: &'a Injection,
    patcher: &'a Patcher,
    ops: &mut Vec<Add<'a>>,
) {
    let mut volumes = vec![
        Piece::Written(&patcher.bin_volume),
        Piece::Written(&patcher.run_volume),
    ];
    if !injection.token_audiences.is_empty() {
        let expiry = patcher.settings.token_expiry_secs;
        let sources = injection
            .token_audiences
            .iter()
            .map(|a| TokenSource {
                service_account_token: ServiceAccountToken {
                    audience: a,
                    expiration_seconds: expiry,
                    path: token_file(a),
                },
            })
            .collect();
        volumes.push(Piece::TokenVolume(TokenVolume {
            name: TOKEN_VOLUME,
            projected: Projected { sources },
        }));
    }
    let has = pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).is_some();
    if has {
        ops.extend(
            volumes
                .into_iter()
                .map(|v| add(Path::Fixed("/spec/volumes/-"), v)),
        );
    } else {
        ops.push(add(Path::Fixed("/spec/volumes"), Piece::List(volumes)));
    }
}

/// The socket's group, so that a non-root app may connect.
fn add_group(pod: &Pod, settings: &Settings, ops: &mut Vec<Add<'_>>) {
    let g = settings.socket_group;
    let sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    match sc {
        None => ops.push(add(
            Path::Fixed("/spec/securityContext"),
            Piece::SecurityContext(SupplementalGroups {
                supplemental_groups: [g],
            }),
        )),
        Some(sc) => match &sc.supplemental_groups {
            None => ops.push(add(
                Path::Fixed("/spec/securityContext/supplementalGroups"),
                Piece::Groups([g]),
            )),
            Some(groups) if groups.contains(&g) => {}
            Some(_) => ops.push(add(
                Path::Fixed("/spec/securityContext/supplementalGroups/-"),
                Piece::Group(g),
            )),
        },
    }
}

/// The wrapper's command line up to `--`.
fn wrapper_prefix(injection: &Injection, settings: &Settings) -> Vec<String> {
    let mut p = vec![format!("{WRAPPER_DIR}/kernelseal-exec")];
    let socket = format!(
        "{}/{SOCKET_NAME}",
        settings.socket_dir.trim_end_matches('/')
    );
    if socket != kernelseal_protocol::DEFAULT_SOCKET {
        p.push("--socket".into());
        p.push(socket);
    }
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
fn wrap_container<'a>(
    i: usize,
    c: &Container,
    injection: &Injection,
    patcher: &'a Patcher,
    images: &dyn Entrypoints,
    ops: &mut Vec<Add<'a>>,
) -> Result<(), PatchError> {
    let at = |rest| Path::Container { index: i, rest };
    let mut command = wrapper_prefix(injection, &patcher.settings);
    match command_of(c) {
        Some(cmd) => command.extend(cmd.iter().cloned()),
        None => {
            let image = c.image.as_deref().unwrap_or_default();
            let ep = images
                .lookup(image)
                .map_err(|why| PatchError::NoEntrypoint {
                    container: c.name.clone(),
                    image: image.into(),
                    why,
                })?;
            let args_missing = c.args.as_ref().is_none_or(|a| a.is_empty());
            if ep.entrypoint.is_empty() && ep.cmd.is_empty() && args_missing {
                return Err(PatchError::EmptyImage {
                    container: c.name.clone(),
                    image: image.into(),
                });
            }
            command.extend(ep.entrypoint);
            if args_missing && !ep.cmd.is_empty() {
                ops.push(add(at("/args"), Piece::Strings(ep.cmd)));
            }
        }
    }
    ops.push(add(at("/command"), Piece::Strings(command)));
    let has_token = !injection.token_audiences.is_empty();
    let ours = [
        Some(WRAPPER_DIR),
        Some(patcher.settings.socket_dir.as_str()),
        has_token.then_some(kernelseal_protocol::DEFAULT_TOKEN_DIR),
    ];
    if let Some(m) = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| ours.contains(&Some(m.mount_path.as_str())))
    {
        return Err(PatchError::MountCollision {
            container: c.name.clone(),
            path: m.mount_path.clone(),
        });
    }
    let mut mounts = vec![
        Piece::Written(&patcher.bin_mount),
        Piece::Written(&patcher.run_mount),
    ];
    if has_token {
        mounts.push(Piece::Written(&patcher.token_mount));
    }
    match &c.volume_mounts {
        None => ops.push(add(at("/volumeMounts"), Piece::List(mounts))),
        Some(_) => ops.extend(mounts.into_iter().map(|m| add(at("/volumeMounts/-"), m))),
    }
    Ok(())
}
