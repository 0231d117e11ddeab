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
    validate_value(parse_yaml(text)?)
}

/// Validates every SecretProviderClass of a file of one or more YAML
/// documents (`---`-separated, as `kubectl apply -f` takes them). Documents
/// of other kinds are skipped; a file holding no class at all is an error.
/// A single document without `kind` is a bare parameters map. Errors name
/// the document (1-based) when there are several.
pub fn validate_documents(text: &str) -> Result<Vec<Validated>, Error> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(not_yaml)?;
    // Numbered as the parser yields them (it skips empty documents).
    let docs: Vec<(usize, Value)> = docs
        .into_iter()
        .enumerate()
        .filter(|(_, d)| !d.is_null())
        .collect();
    if docs.len() <= 1 {
        let doc = docs.into_iter().next().map_or(Value::Null, |(_, d)| d);
        return validate_value(doc).map(|v| vec![v]);
    }
    let mut out = Vec::new();
    for (i, doc) in docs {
        if doc.get("kind").is_some_and(|k| k != "SecretProviderClass") {
            continue;
        }
        // The class's name too: the number alone can be off by the empty
        // documents the parser skips.
        let field = match doc.pointer("/metadata/name").and_then(Value::as_str) {
            Some(name) => format!("document {} (SecretProviderClass {name})", i + 1),
            None => format!("document {}", i + 1),
        };
        let v = validate_value(doc).map_err(|e| Error::Request {
            field,
            message: e.to_string(),
        })?;
        out.push(v);
    }
    if out.is_empty() {
        return Err(Error::Request {
            field: "document".into(),
            message: "none of the documents is a SecretProviderClass".into(),
        });
    }
    Ok(out)
}

fn not_yaml(e: serde_saphyr::Error) -> Error {
    let loc = e
        .location()
        .map(|l| format!(" at line {} column {}", l.line(), l.column()))
        .unwrap_or_default();
    Error::Request {
        field: "document".into(),
        message: format!("not YAML{loc}"),
    }
}

fn parse_yaml(text: &str) -> Result<Value, Error> {
    serde_saphyr::from_str(text).map_err(not_yaml)
}

fn validate_value(doc: Value) -> Result<Validated, Error> {
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
