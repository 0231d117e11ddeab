//! An object's source (`vaultPath`, `awsSecretId`, `ssmParameter`,
//! `k8sSecret`, `file`, `env`, `template`): exactly one per entry, each
//! with the keys that belong to it.

use std::collections::BTreeMap;

use super::Entry;
use crate::error::Error;

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
    /// An SSM Parameter Store parameter, read with the same AWS identity
    /// as `awsSecretId` objects.
    Ssm {
        name: String,
        with_decryption: bool,
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
    /// Rendered over other objects of the class: `refs` maps each name the
    /// text reads to the `objectName` whose value it is.
    Template {
        text: String,
        refs: BTreeMap<String, String>,
    },
}

impl ObjectSource {
    pub fn kind(&self) -> &'static str {
        match self {
            ObjectSource::Vault { .. } => "vault",
            ObjectSource::Aws { .. } => "aws",
            ObjectSource::Ssm { .. } => "ssm",
            ObjectSource::K8sSecret { .. } => "k8sSecret",
            ObjectSource::File { .. } => "file",
            ObjectSource::Env { .. } => "env",
            ObjectSource::Template { .. } => "template",
        }
    }
}

/// Longest `vaultPath`: Vault's own paths are far shorter, and the HTTP
/// client cannot take a URL near 64 KiB.
const MAX_VAULT_PATH_BYTES: usize = 4096;

/// The keys that name a source, one of which an entry must set.
const SOURCE_KEYS: [&str; 7] = [
    "vaultPath",
    "awsSecretId",
    "ssmParameter",
    "k8sSecret",
    "file",
    "env",
    "template",
];

pub(super) fn parse(entry: &Entry) -> Result<ObjectSource, Error> {
    let source = which_source(entry)?;
    match source {
        "vaultPath" => vault(entry),
        "awsSecretId" => aws(entry),
        "ssmParameter" => ssm(entry),
        "k8sSecret" => k8s_secret(entry),
        "file" => file(entry),
        "template" => template(entry),
        _ => Ok(ObjectSource::Env {
            var: entry.required("env")?,
        }),
    }
}

/// The one source key set; keys that belong to another source are
/// mistakes, not extras.
fn which_source(entry: &Entry) -> Result<&'static str, Error> {
    let sources: Vec<&str> = SOURCE_KEYS.into_iter().filter(|k| entry.has(k)).collect();
    let source = match sources.as_slice() {
        [] => {
            return Err(entry.error(
                "source",
                "none given; set one of vaultPath, awsSecretId, ssmParameter, k8sSecret, file, env, template"
                    .into(),
            ));
        }
        [one] => *one,
        many => {
            return Err(entry.error("source", format!("set only one of {}", many.join(", "))));
        }
    };
    let allowed: &[&str] = match source {
        "vaultPath" => &["vaultPath", "vaultKey", "vaultVersion"],
        "awsSecretId" => &["awsSecretId", "jsonKey", "versionStage", "versionId"],
        "ssmParameter" => &["ssmParameter", "withDecryption"],
        "k8sSecret" => &["k8sSecret", "k8sKey"],
        "file" => &["file"],
        "template" => &["template", "templateRefs"],
        _ => &["env"],
    };
    if let Some(k) = entry
        .keys()
        .find(|k| !["objectName", "filePermission", "encoding"].contains(k) && !allowed.contains(k))
    {
        return Err(entry.error(k, format!("does not apply to a {source} object")));
    }
    Ok(source)
}

fn vault(entry: &Entry) -> Result<ObjectSource, Error> {
    let path = entry.required("vaultPath")?.trim_matches('/').to_string();
    if path
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(entry.error("vaultPath", "not a secret path".into()));
    }
    if path.len() > MAX_VAULT_PATH_BYTES {
        return Err(entry.error(
            "vaultPath",
            format!("longer than {MAX_VAULT_PATH_BYTES} bytes"),
        ));
    }
    let version = entry
        .optional("vaultVersion")
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| entry.error("vaultVersion", format!("{v:?} is not a version number")))
        })
        .transpose()?;
    Ok(ObjectSource::Vault {
        path,
        key: entry.required("vaultKey")?,
        version,
    })
}

fn aws(entry: &Entry) -> Result<ObjectSource, Error> {
    let version_stage = entry.optional("versionStage");
    let version_id = entry.optional("versionId");
    if version_stage.is_some() && version_id.is_some() {
        return Err(entry.error(
            "versionStage",
            "set versionId or versionStage, not both".into(),
        ));
    }
    Ok(ObjectSource::Aws {
        secret_id: entry.required("awsSecretId")?,
        json_key: entry.optional("jsonKey"),
        version_stage,
        version_id,
    })
}

fn ssm(entry: &Entry) -> Result<ObjectSource, Error> {
    let name = entry.required("ssmParameter")?;
    kernelseal_config::check_ssm_name(&name)
        .map_err(|why| entry.error("ssmParameter", format!("{name:?}: {why}")))?;
    let with_decryption = match entry.optional("withDecryption").as_deref() {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(entry.error("withDecryption", format!("{other:?} is not true or false")));
        }
    };
    Ok(ObjectSource::Ssm {
        name,
        with_decryption,
    })
}

fn k8s_secret(entry: &Entry) -> Result<ObjectSource, Error> {
    let name = entry.required("k8sSecret")?;
    // A DNS-1123 subdomain: no '/', so no other namespace or path.
    let dns = name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.']);
    if !dns {
        return Err(entry.error(
            "k8sSecret",
            format!("{name:?} is not a Secret name (the pod's own namespace is implied)"),
        ));
    }
    Ok(ObjectSource::K8sSecret {
        name,
        key: entry.required("k8sKey")?,
    })
}

fn file(entry: &Entry) -> Result<ObjectSource, Error> {
    let path = entry.required("file")?;
    if !path.starts_with('/') {
        return Err(entry.error("file", format!("{path:?} is not an absolute path")));
    }
    Ok(ObjectSource::File { path })
}

/// `template` with `templateRefs: "db=db-creds,host=db-host"`: each name
/// the text reads, and the object whose value it is. The text must compile
/// and read only those names; which objects they are is checked with the
/// whole list (see `check_template_refs`).
fn template(entry: &Entry) -> Result<ObjectSource, Error> {
    let text = entry.required("template")?;
    let listed = entry.required("templateRefs")?;
    let mut refs = BTreeMap::new();
    for pair in listed.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, object)) = pair.split_once('=') else {
            return Err(entry.error("templateRefs", format!("{pair:?} is not name=objectName")));
        };
        let (name, object) = (name.trim(), object.trim());
        if !kernelseal_config::is_template_identifier(name) || object.is_empty() {
            return Err(entry.error(
                "templateRefs",
                format!("{pair:?} is not name=objectName (a name is letters, digits and _)"),
            ));
        }
        if refs.insert(name.to_string(), object.to_string()).is_some() {
            return Err(entry.error("templateRefs", format!("{name} is given twice")));
        }
    }
    // The agent's own check: the text compiles and reads only the names
    // given; a name given and never read is a mistake too.
    let unread = kernelseal_config::check_template(&text, refs.keys().map(String::as_str))
        .map_err(|e| {
            let message = match e {
                // In a class the refs are `templateRefs`.
                kernelseal_config::TemplateProblem::UnknownVariable { name, .. } => {
                    format!("reads {name}, which templateRefs does not name")
                }
                syntax => syntax.to_string(),
            };
            entry.error("template", message)
        })?;
    if let Some(name) = unread.first() {
        return Err(entry.error(
            "templateRefs",
            format!("{name} is not read by the template"),
        ));
    }
    Ok(ObjectSource::Template { text, refs })
}
