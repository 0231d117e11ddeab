//! Reading a `source:` into a [`SecretRef`]. The mapping is read as written
//! (every kind optional, strict about unknown fields), then turned into the
//! one kind it names: zero or several kinds, an unreadable `ttl`, or both
//! `versionId` and `versionStage` are parse errors, located at the source
//! and naming its field path. A `template`'s refs are sources of their own,
//! read the same way; their errors name the path below the template
//! (`source.template.refs.db.awsRef.ttl`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretBox;
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use zeroize::Zeroize;

use crate::duration::parse_duration;
use crate::secret_ref::{AwsRef, KubernetesRef, KvEngine, SecretRef, SsmPathRef, SsmRef, VaultRef};
use crate::source_path;
use crate::template::{self, TemplateProblem, TemplateRef};

/// Why a `source:` mapping does not make a [`SecretRef`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SourceError {
    #[error(
        "exactly one of value, envRef, fileRef, secretKeyRef, vaultRef, awsRef, ssmRef, \
         template must be set (found {})",
        found_list(found)
    )]
    NotExactlyOne { found: Vec<&'static str> },
    /// The duration text is left out: it could be an aliased secret.
    #[error("{reason}")]
    Ttl {
        kind: &'static str,
        reason: &'static str,
    },
    #[error("set versionId or versionStage, not both")]
    AwsVersionIdAndStage,
    /// A dynamic secret is read anew for every delivery: it has neither a
    /// pinned version nor a cache lifetime.
    #[error("engine: dynamic is read anew for every delivery; {field} does not apply to it")]
    DynamicWith { field: &'static str },
    #[error("set exactly one of name (one parameter) and path (every parameter below it)")]
    SsmNameOrPath,
    #[error("recursive goes with path: a name is one parameter")]
    SsmRecursiveWithName,
    /// The template's text does not compile or reads an unknown variable.
    #[error("{0}")]
    TemplateText(TemplateProblem),
    #[error(
        "the ref name {name} is not an identifier (letters, digits and _, not starting with a digit)"
    )]
    TemplateRefName { name: String },
    #[error("is not read by the template; remove it")]
    TemplateRefUnused { name: String },
    #[error("a template's refs are sources, not templates")]
    TemplateNested { name: String },
    /// One of the template's refs is itself unusable.
    #[error("{error}")]
    TemplateRef {
        name: String,
        error: Box<SourceError>,
    },
}

fn found_list(found: &[&str]) -> String {
    if found.is_empty() {
        "none".to_string()
    } else {
        found.join(", ")
    }
}

impl SourceError {
    /// The field below `source` the error is about, if not the source itself.
    fn field(&self) -> Option<String> {
        match self {
            SourceError::NotExactlyOne { .. } => None,
            SourceError::Ttl { kind, .. } => Some(format!("{kind}.ttl")),
            SourceError::AwsVersionIdAndStage => Some("awsRef.versionStage".to_string()),
            SourceError::DynamicWith { field } => Some(format!("vaultRef.{field}")),
            SourceError::SsmNameOrPath => Some("ssmRef".to_string()),
            SourceError::SsmRecursiveWithName => Some("ssmRef.recursive".to_string()),
            SourceError::TemplateText(_) => Some("template.text".to_string()),
            SourceError::TemplateRefName { .. } => Some("template.refs".to_string()),
            SourceError::TemplateRefUnused { name } => Some(format!("template.refs.{name}")),
            SourceError::TemplateNested { name } => Some(format!("template.refs.{name}.template")),
            SourceError::TemplateRef { name, error } => Some(match error.field() {
                Some(below) => format!("template.refs.{name}.{below}"),
                None => format!("template.refs.{name}"),
            }),
        }
    }
}

/// A source as written: exactly one field must be set.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SourceSpec {
    /// A literal value. Useful for tests; keep real secrets out of config files.
    value: Option<Literal>,
    env_ref: Option<String>,
    #[serde(default, deserialize_with = "path_or_file_ref")]
    file_ref: Option<FileRefSpec>,
    secret_key_ref: Option<SecretKeyRefSpec>,
    vault_ref: Option<VaultRefSpec>,
    aws_ref: Option<AwsRefSpec>,
    ssm_ref: Option<SsmRefSpec>,
    template: Option<TemplateSpec>,
}

/// A text rendered over other sources.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TemplateSpec {
    text: String,
    /// The variables the text reads: name → any source but a template.
    #[serde(default)]
    refs: BTreeMap<String, SourceSpec>,
}

/// The mapping form of `fileRef`, strict like every other section: a
/// misspelt `jsonKey` must not silently deliver the whole file.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct FileRefSpec {
    path: String,
    json_key: Option<String>,
    /// How often the file is re-read for rotation, e.g. `30s` (default: the
    /// cache's 5 minutes).
    ttl: Option<String>,
}

/// A key of a Kubernetes Secret.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SecretKeyRefSpec {
    name: String,
    key: String,
    namespace: Option<String>,
}

/// A key of a Vault KV secret. `path` is relative to `mount`; the provider
/// adds KV v2's `data/`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct VaultRefSpec {
    provider: Option<String>,
    mount: Option<String>,
    path: String,
    key: Option<String>,
    version: Option<u64>,
    engine: Option<EngineSpec>,
    /// Per-ref cache TTL override, e.g. `30s`, `5m`.
    ttl: Option<String>,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum EngineSpec {
    Kv1,
    Kv2,
    Dynamic,
}

/// A secret in AWS Secrets Manager.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AwsRefSpec {
    provider: Option<String>,
    secret_id: String,
    json_key: Option<String>,
    version_id: Option<String>,
    version_stage: Option<String>,
    ttl: Option<String>,
}

/// A parameter in AWS Systems Manager Parameter Store (`name`), or every
/// parameter below a path (`path`, for `keys: all`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SsmRefSpec {
    provider: Option<String>,
    name: Option<String>,
    path: Option<String>,
    /// With `path`: read the levels below it too (default false).
    recursive: Option<bool>,
    /// Decrypt a SecureString (default true).
    with_decryption: Option<bool>,
    ttl: Option<String>,
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        SourceSpec::deserialize(deserializer)?
            .into_ref()
            .map_err(|e| {
                let at = source_path::current();
                match e.field() {
                    Some(field) => de::Error::custom(format!("{at}.{field}: {e}")),
                    None => de::Error::custom(format!("{at}: {e}")),
                }
            })
    }
}

impl SourceSpec {
    fn set_fields(&self) -> Vec<&'static str> {
        [
            ("value", self.value.is_some()),
            ("envRef", self.env_ref.is_some()),
            ("fileRef", self.file_ref.is_some()),
            ("secretKeyRef", self.secret_key_ref.is_some()),
            ("vaultRef", self.vault_ref.is_some()),
            ("awsRef", self.aws_ref.is_some()),
            ("ssmRef", self.ssm_ref.is_some()),
            ("template", self.template.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }

    fn into_ref(self) -> Result<SecretRef, SourceError> {
        let found = self.set_fields();
        if found.len() != 1 {
            return Err(SourceError::NotExactlyOne { found });
        }
        let SourceSpec {
            value,
            env_ref,
            file_ref,
            secret_key_ref,
            vault_ref,
            aws_ref,
            ssm_ref,
            template,
        } = self;
        if let Some(Literal(v)) = value {
            return Ok(SecretRef::Value(Arc::new(v)));
        }
        if let Some(var) = env_ref {
            return Ok(SecretRef::Env { var });
        }
        if let Some(f) = file_ref {
            return Ok(SecretRef::File {
                path: PathBuf::from(f.path),
                json_key: f.json_key,
                ttl: ttl("fileRef", f.ttl)?,
            });
        }
        if let Some(k) = secret_key_ref {
            return Ok(SecretRef::Kubernetes(KubernetesRef {
                namespace: k.namespace,
                name: k.name,
                key: k.key,
            }));
        }
        if let Some(v) = vault_ref {
            if matches!(v.engine, Some(EngineSpec::Dynamic)) {
                if v.version.is_some() {
                    return Err(SourceError::DynamicWith { field: "version" });
                }
                if v.ttl.is_some() {
                    return Err(SourceError::DynamicWith { field: "ttl" });
                }
            }
            return Ok(SecretRef::Vault(VaultRef {
                provider: v.provider,
                mount: v.mount,
                path: v.path,
                key: v.key,
                version: v.version,
                engine: v.engine.map(|e| match e {
                    EngineSpec::Kv1 => KvEngine::V1,
                    EngineSpec::Kv2 => KvEngine::V2,
                    EngineSpec::Dynamic => KvEngine::Dynamic,
                }),
                ttl: ttl("vaultRef", v.ttl)?,
            }));
        }
        if let Some(t) = template {
            return t.into_ref();
        }
        if let Some(p) = ssm_ref {
            return ssm(p);
        }
        let a = aws_ref.ok_or(SourceError::NotExactlyOne { found })?;
        if a.version_id.is_some() && a.version_stage.is_some() {
            return Err(SourceError::AwsVersionIdAndStage);
        }
        Ok(SecretRef::Aws(AwsRef {
            provider: a.provider,
            secret_id: a.secret_id,
            json_key: a.json_key,
            version_id: a.version_id,
            version_stage: a.version_stage,
            ttl: ttl("awsRef", a.ttl)?,
        }))
    }
}

/// `ssmRef`: one parameter by `name`, or every one below `path`.
fn ssm(p: SsmRefSpec) -> Result<SecretRef, SourceError> {
    let with_decryption = p.with_decryption.unwrap_or(true);
    let ttl = ttl("ssmRef", p.ttl)?;
    match (p.name, p.path) {
        (Some(name), None) => {
            if p.recursive.is_some() {
                return Err(SourceError::SsmRecursiveWithName);
            }
            Ok(SecretRef::Ssm(SsmRef {
                provider: p.provider,
                name,
                with_decryption,
                ttl,
            }))
        }
        (None, Some(path)) => Ok(SecretRef::SsmPath(SsmPathRef {
            provider: p.provider,
            path,
            recursive: p.recursive.unwrap_or(false),
            with_decryption,
            ttl,
        })),
        _ => Err(SourceError::SsmNameOrPath),
    }
}

impl TemplateSpec {
    fn into_ref(self) -> Result<SecretRef, SourceError> {
        let unused = template::check(&self.text, self.refs.keys().map(String::as_str))
            .map_err(SourceError::TemplateText)?;
        if let Some(name) = unused.first() {
            return Err(SourceError::TemplateRefUnused {
                name: name.to_string(),
            });
        }
        let mut refs = BTreeMap::new();
        for (name, spec) in self.refs {
            if !template::is_identifier(&name) {
                return Err(SourceError::TemplateRefName { name });
            }
            if spec.template.is_some() {
                return Err(SourceError::TemplateNested { name });
            }
            match spec.into_ref() {
                Ok(r) => refs.insert(name, r),
                Err(e) => {
                    return Err(SourceError::TemplateRef {
                        name,
                        error: Box::new(e),
                    });
                }
            };
        }
        Ok(SecretRef::Template(Arc::new(TemplateRef {
            text: self.text,
            refs,
        })))
    }
}

fn ttl(kind: &'static str, text: Option<String>) -> Result<Option<Duration>, SourceError> {
    text.map(|t| {
        parse_duration(&t).map_err(|e| SourceError::Ttl {
            kind,
            reason: e.reason(),
        })
    })
    .transpose()
}

/// A literal `value`, moved into zeroizing memory as it is read; the
/// string the parser hands over is wiped when it is owned.
struct Literal(SecretBox<str>);

impl<'de> Deserialize<'de> for Literal {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LiteralVisitor;
        impl Visitor<'_> for LiteralVisitor {
            type Value = Literal;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Literal, E> {
                Ok(Literal(SecretBox::new(Box::from(v))))
            }
            fn visit_string<E: de::Error>(self, mut v: String) -> Result<Literal, E> {
                let literal = self.visit_str(&v);
                v.zeroize();
                literal
            }
        }
        deserializer.deserialize_string(LiteralVisitor)
    }
}

/// `fileRef: /path` or `fileRef: { path: /path, jsonKey: k, ttl: 30s }`.
fn path_or_file_ref<'de, D: de::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<FileRefSpec>, D::Error> {
    struct FileRefVisitor;
    impl<'de> Visitor<'de> for FileRefVisitor {
        type Value = Option<FileRefSpec>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a path, or a mapping with path, jsonKey, ttl")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(FileRefSpec {
                path: v.to_string(),
                json_key: None,
                ttl: None,
            }))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            FileRefSpec::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    deserializer.deserialize_any(FileRefVisitor)
}
