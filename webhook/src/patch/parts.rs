//! The patch as it is written: `add` operations whose values are either
//! built for the pod or copied from JSON text [`Patcher::new`] wrote once
//! — the init container, our volumes and mounts depend on the settings
//! alone, and a review is cheaper for not building them again.
//!
//! What is built for the pod is typed ([`Piece`]) and its paths are known
//! in advance ([`Path`]): both are written straight into the patch's
//! bytes. Built as `serde_json::Value`s and `PointerBuf`s, they were a
//! third of a review's time, most of it allocating and freeing.

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{
    BIN_VOLUME, INIT_CONTAINER, RUN_VOLUME, Settings, TOKEN_VOLUME, WRAPPER_DIR, WRAPPER_IN_IMAGE,
};
use crate::annotations::{STATUS, STATUS_INJECTED};

/// Builds patches for one [`Settings`].
pub struct Patcher {
    pub(super) settings: Settings,
    pub(super) init_container: Box<RawValue>,
    pub(super) bin_volume: Box<RawValue>,
    pub(super) run_volume: Box<RawValue>,
    pub(super) bin_mount: Box<RawValue>,
    pub(super) run_mount: Box<RawValue>,
    pub(super) token_mount: Box<RawValue>,
    /// `{"kernelseal.io/status": "injected"}`, for a pod without annotations.
    pub(super) status_annotations: Box<RawValue>,
    /// `"injected"`.
    pub(super) status_injected: Box<RawValue>,
}

impl Patcher {
    pub fn new(settings: Settings) -> Patcher {
        Patcher {
            init_container: written(json!({
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
            })),
            bin_volume: written(json!({
                "name": BIN_VOLUME, "emptyDir": { "medium": "Memory", "sizeLimit": "8Mi" }
            })),
            run_volume: written(json!({
                "name": RUN_VOLUME,
                "hostPath": { "path": settings.socket_dir, "type": "DirectoryOrCreate" }
            })),
            bin_mount: written(json!({
                "name": BIN_VOLUME, "mountPath": WRAPPER_DIR, "readOnly": true
            })),
            run_mount: written(json!({
                "name": RUN_VOLUME, "mountPath": settings.socket_dir, "readOnly": true
            })),
            token_mount: written(json!({
                "name": TOKEN_VOLUME,
                "mountPath": kernelseal_protocol::DEFAULT_TOKEN_DIR,
                "readOnly": true
            })),
            status_annotations: written(json!({ STATUS: STATUS_INJECTED })),
            status_injected: written(json!(STATUS_INJECTED)),
            settings,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }
}

/// `value` as JSON text. A `Value` always serializes: its map keys are
/// strings.
fn written(value: Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(&value).expect("a serde_json::Value serializes")
}

/// The JSON Patch (RFC 6902) that wraps a pod.
#[derive(Serialize)]
pub struct Patch<'a>(pub(super) Vec<Add<'a>>);

/// A wrapped pod's patch is about 1.5 KB (3 with a second container):
/// written into room for it, not grown to it.
const PATCH_ROOM: usize = 4096;

impl Patch<'_> {
    /// The patch as the answer carries it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PATCH_ROOM);
        // Strings, numbers and JSON text: nothing here fails.
        let _ = serde_json::to_writer(&mut out, self);
        out
    }
}

/// One `add` operation.
#[derive(Serialize)]
pub(super) struct Add<'a> {
    op: &'static str,
    path: Path,
    value: Piece<'a>,
}

/// Where an `add` goes, as a JSON Pointer (RFC 6901). Every token is ours
/// (no `~` or `/` but the one escaped in [`STATUS_PATH`]), so the pointers
/// are written as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Path {
    Fixed(&'static str),
    /// `rest` (`/command`, `/volumeMounts/-`) under container `index` of
    /// `spec.containers`.
    Container {
        index: usize,
        rest: &'static str,
    },
}

/// `/metadata/annotations/kernelseal.io/status`, its `/` escaped.
pub(super) const STATUS_PATH: &str = "/metadata/annotations/kernelseal.io~1status";

impl Serialize for Path {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Path::Fixed(p) => s.serialize_str(p),
            Path::Container { index, rest } => {
                s.collect_str(&format_args!("/spec/containers/{index}{rest}"))
            }
        }
    }
}

/// A value in the patch: copied from [`Patcher`], or built for this pod.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum Piece<'a> {
    Written(&'a RawValue),
    List(Vec<Piece<'a>>),
    /// A command or its arguments.
    Strings(Vec<String>),
    /// `{"supplementalGroups": [group]}`
    SecurityContext(SupplementalGroups),
    /// `[group]`
    Groups([i64; 1]),
    Group(i64),
    TokenVolume(TokenVolume<'a>),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SupplementalGroups {
    pub supplemental_groups: [i64; 1],
}

/// The projected volume of the pod's tokens, one per audience.
#[derive(Serialize)]
pub(super) struct TokenVolume<'a> {
    pub name: &'static str,
    pub projected: Projected<'a>,
}

#[derive(Serialize)]
pub(super) struct Projected<'a> {
    pub sources: Vec<TokenSource<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TokenSource<'a> {
    pub service_account_token: ServiceAccountToken<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ServiceAccountToken<'a> {
    pub audience: &'a str,
    pub expiration_seconds: i64,
    pub path: String,
}

/// An `add` of `value` at `path`.
pub(super) fn add(path: Path, value: Piece<'_>) -> Add<'_> {
    Add {
        op: "add",
        path,
        value,
    }
}

#[cfg(test)]
mod tests {
    use json_patch::jsonptr::PointerBuf;

    use super::*;

    #[test]
    fn paths_are_the_pointers_of_their_tokens() {
        let written = |p: Path| serde_json::to_value(p).unwrap();
        assert_eq!(
            written(Path::Fixed(STATUS_PATH)),
            PointerBuf::from_tokens(["metadata", "annotations", STATUS]).as_str()
        );
        assert_eq!(
            written(Path::Container {
                index: 12,
                rest: "/volumeMounts/-"
            }),
            PointerBuf::from_tokens(["spec", "containers", "12", "volumeMounts", "-"]).as_str()
        );
    }
}
