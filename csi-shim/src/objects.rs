//! One entry of a class's `objects` list: parsing and validation, with
//! errors that name the object and the key.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::Error;

/// Keys of an `objects` entry.
const OBJECT_KEYS: &[&str] = &[
    "objectName",
    "vaultPath",
    "vaultKey",
    "vaultVersion",
    "awsSecretId",
    "jsonKey",
    "versionStage",
    "versionId",
    "k8sSecret",
    "k8sKey",
    "file",
    "env",
    "filePermission",
    "encoding",
];

/// One entry of `objects`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The file path inside the volume, relative and clean; also the id of
    /// its ObjectVersion.
    pub name: String,
    pub source: ObjectSource,
    /// From `filePermission` (octal); `None` = the request's `permission`.
    pub mode: Option<u32>,
    pub encoding: Encoding,
    /// The entry as written, canonical (sorted keys): part of the version
    /// HMAC, so a config change is a new version even for equal content.
    pub canonical: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectSource {
    Vault {
        path: String,
        key: String,
        version: Option<u64>,
    },
    Aws {
        secret_id: String,
        json_key: Option<String>,
        version_stage: Option<String>,
        version_id: Option<String>,
    },
    K8sSecret {
        name: String,
        key: String,
    },
    File {
        path: String,
    },
    Env {
        var: String,
    },
}

impl ObjectSource {
    pub fn kind(&self) -> &'static str {
        match self {
            ObjectSource::Vault { .. } => "vault",
            ObjectSource::Aws { .. } => "aws",
            ObjectSource::K8sSecret { .. } => "k8sSecret",
            ObjectSource::File { .. } => "file",
            ObjectSource::Env { .. } => "env",
        }
    }
}

/// How the fetched value is turned into file contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Written as is.
    Utf8,
    /// The value is base64 text; the file gets the decoded bytes.
    Base64,
    /// The value is hex text; the file gets the decoded bytes.
    Hex,
}

pub(crate) fn parse_object(
    index: usize,
    entry: &Value,
    texts: Option<&BTreeMap<String, String>>,
) -> Result<Object, Error> {
    let fallback = format!("objects[{index}]");
    let Value::Object(map) = entry else {
        return Err(Error::Object {
            object: fallback,
            field: "objects".into(),
            message: "each entry must be a mapping with objectName and a source".into(),
        });
    };
    let mut fields: BTreeMap<&str, String> = BTreeMap::new();
    for (k, v) in map {
        let text = match v {
            _ if texts.is_some_and(|t| t.contains_key(k)) && !v.is_object() && !v.is_array() => {
                texts.and_then(|t| t.get(k)).cloned().unwrap_or_default()
            }
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(Error::Object {
                    object: fallback,
                    field: k.clone(),
                    message: "must be a string".into(),
                });
            }
        };
        fields.insert(k.as_str(), text);
    }
    let name = fields.get("objectName").cloned().unwrap_or_default();
    let object = if name.is_empty() {
        fallback
    } else {
        name.clone()
    };
    let err = |field: &str, message: String| Error::Object {
        object: object.clone(),
        field: field.to_string(),
        message,
    };
    if let Some(k) = fields.keys().find(|k| !OBJECT_KEYS.contains(k)) {
        return Err(err(
            k,
            "unknown key; sources are vaultPath, awsSecretId, k8sSecret, file, env".into(),
        ));
    }
    if name.is_empty() {
        return Err(err("objectName", "missing".into()));
    }
    check_file_name(&name).map_err(|m| err("objectName", m))?;
    let take = |k: &str| fields.get(k).cloned().filter(|s| !s.is_empty());
    let sources: Vec<&str> = ["vaultPath", "awsSecretId", "k8sSecret", "file", "env"]
        .into_iter()
        .filter(|k| fields.contains_key(k))
        .collect();
    let source = match sources.as_slice() {
        [] => {
            return Err(err(
                "source",
                "none given; set one of vaultPath, awsSecretId, k8sSecret, file, env".into(),
            ));
        }
        [one] => *one,
        many => {
            return Err(err(
                "source",
                format!("set only one of {}", many.join(", ")),
            ));
        }
    };
    let required = |k: &str| take(k).ok_or_else(|| err(k, "missing or empty".into()));
    // Keys that belong to another source are mistakes, not extras.
    let allowed: &[&str] = match source {
        "vaultPath" => &["vaultPath", "vaultKey", "vaultVersion"],
        "awsSecretId" => &["awsSecretId", "jsonKey", "versionStage", "versionId"],
        "k8sSecret" => &["k8sSecret", "k8sKey"],
        "file" => &["file"],
        _ => &["env"],
    };
    if let Some(k) = fields
        .keys()
        .find(|k| !["objectName", "filePermission", "encoding"].contains(k) && !allowed.contains(k))
    {
        return Err(err(k, format!("does not apply to a {source} object")));
    }
    let source = match source {
        "vaultPath" => {
            let path = required("vaultPath")?.trim_matches('/').to_string();
            if path
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
            {
                return Err(err("vaultPath", "not a secret path".into()));
            }
            let version = take("vaultVersion")
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| err("vaultVersion", format!("{v:?} is not a version number")))
                })
                .transpose()?;
            ObjectSource::Vault {
                path,
                key: required("vaultKey")?,
                version,
            }
        }
        "awsSecretId" => {
            let version_stage = take("versionStage");
            let version_id = take("versionId");
            if version_stage.is_some() && version_id.is_some() {
                return Err(err(
                    "versionStage",
                    "set versionId or versionStage, not both".into(),
                ));
            }
            ObjectSource::Aws {
                secret_id: required("awsSecretId")?,
                json_key: take("jsonKey"),
                version_stage,
                version_id,
            }
        }
        "k8sSecret" => {
            let name = required("k8sSecret")?;
            // A DNS-1123 subdomain: no '/', so no other namespace or path.
            let dns = name.len() <= 253
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                })
                && !name.starts_with(['-', '.'])
                && !name.ends_with(['-', '.']);
            if !dns {
                return Err(err(
                    "k8sSecret",
                    format!("{name:?} is not a Secret name (the pod's own namespace is implied)"),
                ));
            }
            ObjectSource::K8sSecret {
                name,
                key: required("k8sKey")?,
            }
        }
        "file" => {
            let path = required("file")?;
            if !path.starts_with('/') {
                return Err(err("file", format!("{path:?} is not an absolute path")));
            }
            ObjectSource::File { path }
        }
        _ => ObjectSource::Env {
            var: required("env")?,
        },
    };
    let mode = take("filePermission")
        .map(|p| parse_octal_mode(&p).map_err(|m| err("filePermission", m)))
        .transpose()?;
    let encoding = match take("encoding")
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("utf-8") | Some("utf8") => Encoding::Utf8,
        Some("base64") => Encoding::Base64,
        Some("hex") => Encoding::Hex,
        Some(other) => {
            return Err(err(
                "encoding",
                format!("{other:?}: use utf-8, base64 or hex"),
            ));
        }
    };
    let canonical = serde_json::to_string(&fields).unwrap_or_default();
    Ok(Object {
        name,
        source,
        mode,
        encoding,
        canonical,
    })
}

/// A file name the driver will accept: relative, clean, no `..`.
fn check_file_name(name: &str) -> Result<(), String> {
    if name.starts_with('/') {
        return Err(format!(
            "{name:?} is absolute; file names are relative to the volume"
        ));
    }
    if name.contains('\0') || name.contains('\\') {
        return Err(format!("{name:?} holds a NUL or backslash"));
    }
    if name
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(format!(
            "{name:?} is not a clean relative path (no empty, . or .. segments)"
        ));
    }
    Ok(())
}

/// `0640`, `640`, `0o640` → 0o640.
fn parse_octal_mode(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        Ok(_) => Err(format!("{text:?} is over 0777")),
        Err(_) => Err(format!("{text:?} is not an octal file mode like \"0640\"")),
    }
}
