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
    // The name is checked before any error names the object by it: a name
    // with a newline or ESC would forge lines in the driver's and our logs.
    if let Err(message) = check_file_name(&name) {
        return Err(Error::Object {
            object: fallback,
            field: "objectName".into(),
            message,
        });
    }
    let object = name.clone();
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

/// Longest segment of an object name: Linux's NAME_MAX, which the driver
/// cannot exceed when it writes the file.
const MAX_SEGMENT_BYTES: usize = 255;

/// Bidirectional-text controls: they reorder how a log line reads.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A file name the driver can write and the logs can show: relative,
/// clean, no `..`, no control characters, segments within NAME_MAX. The
/// messages never quote a name that holds a control character.
fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("missing".into());
    }
    if let Some(c) = name.chars().find(|c| c.is_control() || is_bidi_control(*c)) {
        return Err(format!(
            "holds the control character U+{:04X}; names are printed in logs and events",
            c as u32
        ));
    }
    if name.starts_with('/') {
        return Err(format!(
            "{name:?} is absolute; file names are relative to the volume"
        ));
    }
    if name.contains('\\') {
        return Err(format!("{name:?} holds a backslash"));
    }
    if name
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(format!(
            "{name:?} is not a clean relative path (no empty, . or .. segments)"
        ));
    }
    if name.split('/').any(|s| s.len() > MAX_SEGMENT_BYTES) {
        return Err(format!(
            "a segment is over {MAX_SEGMENT_BYTES} bytes, the longest file name the driver can write"
        ));
    }
    Ok(())
}

/// Refuses two objects where one's file is a directory of the other
/// (`a` and `a/b`): the driver cannot write both, and would fail the
/// volume after we answered.
pub(crate) fn check_layout(objects: &[Object]) -> Result<(), Error> {
    let files: std::collections::HashMap<&str, usize> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| (o.name.as_str(), i))
        .collect();
    for (j, o) in objects.iter().enumerate() {
        let dirs = o.name.match_indices('/').map(|(at, _)| &o.name[..at]);
        for dir in dirs {
            if let Some(i) = files.get(dir) {
                return Err(Error::Object {
                    object: format!("objects[{j}]"),
                    field: "objectName".into(),
                    message: format!(
                        "its directory is the file of objects[{i}]; a path cannot be both a file and a directory"
                    ),
                });
            }
        }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::error::Error;
    use crate::params::parse_parameters;

    fn objects(yaml: &str) -> Result<usize, Error> {
        let mut m = BTreeMap::new();
        m.insert("objects".to_string(), yaml.to_string());
        parse_parameters(&m).map(|(p, _)| p.objects.len())
    }

    /// An error for object `index` that does not hold `raw`.
    fn refused(yaml: &str, index: usize, raw: &str) -> String {
        let e = objects(yaml).unwrap_err();
        assert!(matches!(e, Error::Object { .. }), "{e:?}");
        let t = e.to_string();
        assert!(
            t.starts_with(&format!("object objects[{index}]: objectName: ")),
            "{t}"
        );
        assert!(!t.contains(raw), "{t:?} echoes {raw:?}");
        assert_eq!(e.to_status().code(), tonic::Code::InvalidArgument);
        t
    }

    /// A YAML double-quoted scalar with every non-printable-ASCII
    /// character escaped (`\u0085` raw would be a YAML line break).
    fn yaml_quoted(raw: &str) -> String {
        let body: String = raw
            .chars()
            .map(|c| match c {
                ' '..='~' if c != '"' && c != '\\' => c.to_string(),
                c => format!("\\u{:04X}", c as u32),
            })
            .collect();
        format!("\"{body}\"")
    }

    #[test]
    fn names_with_control_characters_are_refused_unquoted() {
        for (raw, code) in [
            ("a\n2025-01-01T00:00:00Z INFO forged", "U+000A"),
            ("a\u{1b}[31mred", "U+001B"),
            ("invoice\u{202e}fdp.exe", "U+202E"),
            ("x\u{2066}y", "U+2066"),
            ("tab\there", "U+0009"),
            ("del\u{7f}", "U+007F"),
            ("c1\u{85}", "U+0085"),
        ] {
            // Double-quoted YAML, so the escapes reach the parser as
            // characters; the entry before is fine, so the index is 1.
            let yaml = format!(
                "- objectName: ok\n  env: A\n- objectName: {}\n  env: B\n",
                yaml_quoted(raw)
            );
            let t = refused(&yaml, 1, raw);
            assert!(t.contains(code), "{t}");
        }
        // Printable non-ASCII names are fine.
        assert_eq!(objects("- objectName: café/пароль\n  env: A\n").unwrap(), 1);
    }

    #[test]
    fn names_the_driver_cannot_write_are_refused() {
        let long = "a".repeat(256);
        refused(&format!("- objectName: d/{long}\n  env: A\n"), 0, &long);
        let ok = "a".repeat(255);
        assert_eq!(
            objects(&format!("- objectName: d/{ok}\n  env: A\n")).unwrap(),
            1
        );
        // A file and a directory of the same name, either order.
        let t = refused(
            "- objectName: db\n  env: A\n- objectName: db/password\n  env: B\n",
            1,
            "password",
        );
        assert!(t.contains("objects[0]"), "{t}");
        let t = refused(
            "- objectName: x/db/password\n  env: A\n- objectName: x/db\n  env: B\n",
            0,
            "password",
        );
        assert!(t.contains("objects[1]"), "{t}");
        // Siblings and a shared directory are fine.
        assert_eq!(
            objects("- objectName: db/user\n  env: A\n- objectName: db/password\n  env: B\n- objectName: dbx\n  env: C\n")
                .unwrap(),
            3
        );
    }
}
