//! The patch as it is written: `add` operations whose values are either
//! built for the pod or copied from JSON text [`Patcher::new`] wrote once
//! — the init container, our volumes and mounts depend on the settings
//! alone, and a review is cheaper for not building them again.

use json_patch::jsonptr::{PointerBuf, Token};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{
    BIN_VOLUME, INIT_CONTAINER, RUN_VOLUME, Settings, TOKEN_VOLUME, WRAPPER_DIR, WRAPPER_IN_IMAGE,
};

/// Builds patches for one [`Settings`].
pub struct Patcher {
    pub(super) settings: Settings,
    pub(super) init_container: Box<RawValue>,
    pub(super) bin_volume: Box<RawValue>,
    pub(super) run_volume: Box<RawValue>,
    pub(super) bin_mount: Box<RawValue>,
    pub(super) run_mount: Box<RawValue>,
    pub(super) token_mount: Box<RawValue>,
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

impl Patch<'_> {
    /// The patch as the answer carries it.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Strings, numbers, `Value`s and JSON text: nothing here fails.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// One `add` operation.
#[derive(Serialize)]
pub(super) struct Add<'a> {
    op: &'static str,
    path: PointerBuf,
    value: Piece<'a>,
}

/// A value in the patch: copied from [`Patcher`], or built for this pod.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum Piece<'a> {
    Written(&'a RawValue),
    List(Vec<Piece<'a>>),
    Built(Value),
}

/// An `add` at the path of these segments (escaped as RFC 6901 says).
pub(super) fn add<'a, 't>(
    path: impl IntoIterator<Item: Into<Token<'t>>>,
    value: Piece<'a>,
) -> Add<'a> {
    Add {
        op: "add",
        path: PointerBuf::from_tokens(path),
        value,
    }
}
