//! `kernelseal csi validate`: check a SecretProviderClass manifest (or a
//! bare parameters map) with the parser Mount uses.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::Error;
use crate::params::{Parameters, parse_parameters};

/// The outcome of a valid document.
#[derive(Debug)]
pub struct Validated {
    /// `metadata.name` of the class, when the document is a manifest.
    pub name: Option<String>,
    pub params: Parameters,
    pub warnings: Vec<String>,
}

/// Validates YAML text: a `kind: SecretProviderClass` manifest (its
/// `spec.parameters`) or a bare map of parameters.
pub fn validate_text(text: &str) -> Result<Validated, Error> {
    let doc: Value = serde_saphyr::from_str(text).map_err(|e| {
        let loc = e
            .location()
            .map(|l| format!(" at line {} column {}", l.line(), l.column()))
            .unwrap_or_default();
        Error::Request {
            field: "document".into(),
            message: format!("not YAML{loc}"),
        }
    })?;
    let (name, params) = if doc.get("kind").is_some() {
        if doc["kind"] != "SecretProviderClass" {
            return Err(Error::Request {
                field: "kind".into(),
                message: format!("{} is not SecretProviderClass", doc["kind"]),
            });
        }
        if let Some(p) = doc.pointer("/spec/provider")
            && p != "kernelseal"
        {
            return Err(Error::Request {
                field: "spec.provider".into(),
                message: format!("{p} is not kernelseal"),
            });
        }
        (
            doc.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_string),
            doc.pointer("/spec/parameters")
                .cloned()
                .unwrap_or(Value::Null),
        )
    } else {
        (None, doc)
    };
    let Value::Object(map) = params else {
        return Err(Error::Request {
            field: "spec.parameters".into(),
            message: "missing or not a map".into(),
        });
    };
    let mut strings = BTreeMap::new();
    for (k, v) in map {
        match v {
            Value::String(s) => {
                strings.insert(k, s);
            }
            _ => {
                return Err(Error::Parameter {
                    parameter: k,
                    message: "must be a string (Kubernetes keeps parameters as strings; quote it)"
                        .into(),
                });
            }
        }
    }
    let (params, warnings) = parse_parameters(&strings)?;
    Ok(Validated {
        name,
        params,
        warnings,
    })
}
