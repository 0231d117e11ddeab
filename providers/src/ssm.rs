//! AWS Systems Manager Parameter Store, read through an `aws` provider: a
//! parameter by name (`GetParameter`), several together (`GetParameters`,
//! at most ten names a call, AWS's limit) and every parameter below a path
//! (`GetParametersByPath`, page by page). A SecureString is decrypted when
//! the ref asks (`withDecryption`, the default); without it AWS answers the
//! ciphertext. The parameter's version is the value's, so that a new
//! version is a rotation.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ssm::types::Parameter;
use zeroize::Zeroizing;

use crate::aws_sdk::{Asked, classify};
use crate::error::Error;
use crate::reference::{SecretRef, SsmRef};
use crate::value::{Metadata, SecretValue, content_tag};

/// Most names one `GetParameters` call may carry.
pub(crate) const BATCH_MAX: usize = 10;
/// Most parameters one `GetParametersByPath` page may carry.
const PAGE_MAX: i32 = 10;
/// Pages read below one path before giving up: 100,000 parameters, the
/// most an account holds in one region. An endpoint that never stops
/// answering a next page is broken or hostile.
const PAGES_MAX: usize = 10_000;

const SERVICE: &str = "AWS SSM Parameter Store";
const NOT_FOUND: &[&str] = &["ParameterNotFound", "ParameterVersionNotFound"];

/// Every parameter below a path, as `GetParametersByPath` reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsmPath {
    /// The hierarchy to read: `/app/`, starting with `/`.
    pub path: String,
    /// Whether parameters in levels below `path` are read too, not only
    /// those directly in it.
    pub recursive: bool,
    /// Whether SecureStrings are decrypted.
    pub with_decryption: bool,
}

// Names the request without its content: used in errors and logs.
impl std::fmt::Display for SsmPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ssmRef path {}", self.path)?;
        if self.recursive {
            f.write_str(" (recursive)")?;
        }
        if !self.with_decryption {
            f.write_str(" (withDecryption: false)")?;
        }
        Ok(())
    }
}

/// One parameter read below a path: its full name and its value, whose
/// version ([`SsmParameter::version`]) is the parameter's.
#[derive(Debug, Clone)]
pub struct SsmParameter {
    pub name: String,
    pub value: SecretValue,
}

impl SsmParameter {
    /// The parameter's version (`1`, `2`, …).
    pub fn version(&self) -> Option<&str> {
        self.value.version()
    }
}

/// SSM reads in one region, for one provider.
#[derive(Clone, Copy)]
pub(crate) struct SsmReader<'a> {
    pub client: &'a aws_sdk_ssm::Client,
    pub region: &'a str,
    pub provider: &'a str,
    pub cache_ttl: Option<Duration>,
}

impl SsmReader<'_> {
    /// One parameter (`GetParameter`).
    pub(crate) async fn one(self, r: &SecretRef, p: &SsmRef) -> Result<SecretValue, Error> {
        let rs = r.to_string();
        tracing::debug!(provider = %self.provider, reference = %rs, region = self.region, "aws ssm GetParameter");
        let out = self
            .client
            .get_parameter()
            .name(&p.name)
            .with_decryption(p.with_decryption)
            .send()
            .await
            .map_err(|e| classify(&e, &rs, &self.asked(&parameter(&p.name))))?;
        let param = out.parameter.ok_or_else(|| Error::NotFound {
            reference: rs.clone(),
            what: format!("{} in {}", parameter(&p.name), self.region),
            message: "the answer holds no parameter".into(),
        })?;
        self.value(rs, param, &p.name)
    }

    /// Up to [`BATCH_MAX`] refs of one `withDecryption` in one
    /// `GetParameters` call. The outer error is the call's; the inner ones
    /// are each ref's (a name AWS lists in `InvalidParameters` is not found).
    pub(crate) async fn batch(
        self,
        refs: &[(&SecretRef, &SsmRef)],
    ) -> Result<Vec<Result<SecretValue, Error>>, Error> {
        let text = batch_text(refs);
        let mut names: Vec<&str> = refs.iter().map(|(_, p)| p.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        debug_assert!(names.len() <= BATCH_MAX);
        let decrypt = refs.first().is_some_and(|(_, p)| p.with_decryption);
        tracing::debug!(provider = %self.provider, reference = %text, region = self.region, count = names.len(), "aws ssm GetParameters");
        let out = self
            .client
            .get_parameters()
            .set_names(Some(names.iter().map(|n| n.to_string()).collect()))
            .with_decryption(decrypt)
            .send()
            .await
            .map_err(|e| classify(&e, &text, &self.asked("SSM parameters")))?;
        let invalid = out.invalid_parameters.unwrap_or_default();
        // Each name's value is made once, however many refs name it.
        let mut answered: BTreeMap<String, Parameter> = out
            .parameters
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| match p.name.clone() {
                Some(name) => Some((name, p)),
                None => {
                    discard(p);
                    None
                }
            })
            .collect();
        let mut made: BTreeMap<&str, Result<SecretValue, Error>> = BTreeMap::new();
        for (r, p) in refs {
            if made.contains_key(p.name.as_str()) {
                continue;
            }
            let rs = r.to_string();
            let v = match answered.remove(&p.name) {
                Some(param) => self.value(rs, param, &p.name),
                None => Err(Error::NotFound {
                    reference: rs,
                    what: format!("{} in {}", parameter(&p.name), self.region),
                    message: if invalid.contains(&p.name) {
                        "ParameterNotFound (InvalidParameters)".into()
                    } else {
                        "not in the answer".into()
                    },
                }),
            };
            made.insert(&p.name, v);
        }
        // AWS answers only the names asked for; anything else is wiped, not
        // left in the SDK's strings.
        answered.into_values().for_each(discard);
        Ok(refs
            .iter()
            .map(|(_, p)| made[p.name.as_str()].clone())
            .collect())
    }

    /// Every parameter below `path` (`GetParametersByPath`, all pages).
    pub(crate) async fn by_path(self, path: &SsmPath) -> Result<Vec<SsmParameter>, Error> {
        let rs = path.to_string();
        if !path.path.starts_with('/') {
            return Err(Error::InvalidRef {
                reference: rs,
                field: "ssmRef.path".into(),
                message: "a path starts with '/'".into(),
            });
        }
        let mut out = Vec::new();
        let mut next_token = None;
        for page in 1.. {
            if page > PAGES_MAX {
                return Err(Error::Upstream {
                    reference: rs,
                    status: None,
                    message: format!("more than {PAGES_MAX} pages of parameters; refused"),
                });
            }
            tracing::debug!(provider = %self.provider, reference = %rs, region = self.region, page, "aws ssm GetParametersByPath");
            let answer = self
                .client
                .get_parameters_by_path()
                .path(&path.path)
                .recursive(path.recursive)
                .with_decryption(path.with_decryption)
                .max_results(PAGE_MAX)
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| classify(&e, &rs, &self.asked(&format!("SSM path {}", path.path))))?;
            let mut params = answer.parameters.unwrap_or_default().into_iter();
            while let Some(param) = params.next() {
                let Some(name) = param.name.clone() else {
                    discard(param);
                    continue;
                };
                let as_ref = SecretRef::Ssm(SsmRef {
                    provider: None,
                    name: name.clone(),
                    with_decryption: path.with_decryption,
                    ttl: None,
                });
                match self.value(as_ref.to_string(), param, &name) {
                    Ok(value) => out.push(SsmParameter { name, value }),
                    Err(e) => {
                        // The page's other values are wiped, not just dropped.
                        params.for_each(discard);
                        return Err(e);
                    }
                }
            }
            match answer.next_token {
                Some(t) if !t.is_empty() => next_token = Some(t),
                _ => break,
            }
        }
        Ok(out)
    }

    fn asked<'b>(&'b self, item: &'b str) -> Asked<'b> {
        Asked {
            service: SERVICE,
            item,
            not_found: NOT_FOUND,
            region: self.region,
        }
    }

    /// Moves the parameter's value into secret memory; the SDK's string is
    /// wiped as it is dropped.
    fn value(self, rs: String, mut param: Parameter, name: &str) -> Result<SecretValue, Error> {
        let Some(text) = param.value.take() else {
            return Err(Error::NotFound {
                reference: rs,
                what: format!("{} value", parameter(name)),
                message: "the parameter has no Value".into(),
            });
        };
        let bytes = Zeroizing::new(text.into_bytes());
        let mut meta = Metadata::new(rs, self.provider);
        meta.version = Some(param.version.to_string());
        meta.ttl = self.cache_ttl;
        Ok(SecretValue::new(bytes, meta))
    }
}

/// The parameters read below `path` as one value: the JSON object
/// `{ name relative to the path: value }` (`/app/prod/db/password` below
/// `/app/prod/` is `db/password`), for a `keys: all` entry to take apart.
/// Its version changes when a parameter's does, or one comes or goes, so
/// that either is a rotation. No parameter at all is an error: a typo in
/// the path would otherwise deliver nothing, silently.
pub(crate) fn path_value(
    path: &SsmPath,
    params: Vec<SsmParameter>,
    mut meta: Metadata,
) -> Result<SecretValue, Error> {
    if params.is_empty() {
        return Err(Error::NotFound {
            reference: meta.source,
            what: format!("SSM parameters below {}", path.path),
            message: if path.recursive {
                "the path holds none".into()
            } else {
                "the path holds none directly (recursive: true reads the levels below it)".into()
            },
        });
    }
    let base = path.path.trim_end_matches('/');
    let relative = |name: &str| -> String {
        let rel = name
            .strip_prefix(base)
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(name);
        rel.trim_start_matches('/').to_string()
    };
    let mut entries: Vec<(String, &SsmParameter)> =
        params.iter().map(|p| (relative(&p.name), p)).collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let versions: String = entries
        .iter()
        .map(|(name, p)| format!("{name}\0{}\n", p.version().unwrap_or("")))
        .collect();
    let mut texts = Vec::with_capacity(entries.len());
    for (name, p) in &entries {
        // Parameter Store holds text; a value that is not is refused
        // rather than mangled.
        let text = p.value.expose_str().ok_or_else(|| Error::Format {
            reference: meta.source.clone(),
            field: "ssmRef.path".into(),
            message: format!("parameter {name:?} is not UTF-8 text"),
        })?;
        texts.push((name.as_str(), text));
    }
    let object = crate::json::object_of_strings(&texts);
    meta.version = Some(content_tag(versions.as_bytes()));
    Ok(SecretValue::new(object, meta))
}

/// A parameter not delivered: its value is wiped as it is dropped.
fn discard(mut param: Parameter) {
    drop(param.value.take().map(|v| Zeroizing::new(v.into_bytes())));
}

fn parameter(name: &str) -> String {
    format!("SSM parameter {name}")
}

/// The refs of one `GetParameters` call, for its errors and logs.
pub(crate) fn batch_text(refs: &[(&SecretRef, &SsmRef)]) -> String {
    let names: Vec<&str> = refs.iter().map(|(_, p)| p.name.as_str()).collect();
    format!("ssmRef {}", names.join(", "))
}
