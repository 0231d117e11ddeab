//! One entry of a class's `objects` list: parsing and validation, with
//! errors that name the object and the key.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::Error;

mod source;

pub use source::ObjectSource;

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
    "ssmParameter",
    "withDecryption",
    "k8sSecret",
    "k8sKey",
    "file",
    "env",
    "filePermission",
    "encoding",
    "template",
    "templateRefs",
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
    let fields = entry_fields(&fallback, entry, texts)?;
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
    let entry = Entry {
        object: name.clone(),
        fields,
    };
    if let Some(k) = entry.fields.keys().find(|k| !OBJECT_KEYS.contains(k)) {
        return Err(entry.error(
            k,
            "unknown key; sources are vaultPath, awsSecretId, ssmParameter, k8sSecret, file, env, template"
                .into(),
        ));
    }
    let source = source::parse(&entry)?;
    let mode = entry
        .optional("filePermission")
        .map(|p| parse_octal_mode(&p).map_err(|m| entry.error("filePermission", m)))
        .transpose()?;
    let encoding = parse_encoding(&entry)?;
    let canonical = serde_json::to_string(&entry.fields).unwrap_or_default();
    Ok(Object {
        name,
        source,
        mode,
        encoding,
        canonical,
    })
}

/// An entry's keys with their values as text (the class's YAML may write
/// numbers and booleans; `texts` holds the values as the YAML spelled them).
fn entry_fields<'a>(
    fallback: &str,
    entry: &'a Value,
    texts: Option<&BTreeMap<String, String>>,
) -> Result<BTreeMap<&'a str, String>, Error> {
    let Value::Object(map) = entry else {
        return Err(Error::Object {
            object: fallback.into(),
            field: "objects".into(),
            message: "each entry must be a mapping with objectName and a source".into(),
        });
    };
    let mut fields = BTreeMap::new();
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
                    object: fallback.into(),
                    field: k.clone(),
                    message: "must be a string".into(),
                });
            }
        };
        fields.insert(k.as_str(), text);
    }
    Ok(fields)
}

/// One entry's fields, named by its (checked) objectName in every error.
pub(crate) struct Entry<'a> {
    object: String,
    fields: BTreeMap<&'a str, String>,
}

impl Entry<'_> {
    pub(crate) fn error(&self, field: &str, message: String) -> Error {
        Error::Object {
            object: self.object.clone(),
            field: field.to_string(),
            message,
        }
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.fields.contains_key(key)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.keys().copied()
    }

    /// The value of `key`; an empty value counts as not given.
    pub(crate) fn optional(&self, key: &str) -> Option<String> {
        self.fields.get(key).cloned().filter(|s| !s.is_empty())
    }

    pub(crate) fn required(&self, key: &str) -> Result<String, Error> {
        self.optional(key)
            .ok_or_else(|| self.error(key, "missing or empty".into()))
    }
}

fn parse_encoding(entry: &Entry) -> Result<Encoding, Error> {
    match entry
        .optional("encoding")
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("utf-8") | Some("utf8") => Ok(Encoding::Utf8),
        Some("base64") => Ok(Encoding::Base64),
        Some("hex") => Ok(Encoding::Hex),
        Some(other) => Err(entry.error("encoding", format!("{other:?}: use utf-8, base64 or hex"))),
    }
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

/// Each template's `templateRefs` names objects of the class that are not
/// templates themselves (a template is rendered over fetched values).
pub(crate) fn check_template_refs(objects: &[Object]) -> Result<(), Error> {
    for (j, o) in objects.iter().enumerate() {
        let ObjectSource::Template { refs, .. } = &o.source else {
            continue;
        };
        for (name, target) in refs {
            let message = match objects.iter().find(|t| t.name == *target) {
                None => format!("{name}={target}: no object of the class is named {target}"),
                Some(t) if matches!(t.source, ObjectSource::Template { .. }) => {
                    format!(
                        "{name}={target}: {target} is a template; a template reads fetched objects"
                    )
                }
                Some(_) => continue,
            };
            return Err(Error::Object {
                object: format!("objects[{j}]"),
                field: "templateRefs".into(),
                message,
            });
        }
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
    fn vault_paths_the_client_cannot_send_are_refused() {
        let long = "p".repeat(4097);
        let e = objects(&format!(
            "- objectName: a\n  vaultPath: {long}\n  vaultKey: k\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("vaultPath"), "{e}");
        // At the bound the path passes; the class then only lacks its
        // vaultAddress.
        let ok = "p".repeat(4096);
        let e = objects(&format!(
            "- objectName: a\n  vaultPath: {ok}\n  vaultKey: k\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("vaultAddress"), "{e}");
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
