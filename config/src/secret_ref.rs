//! `SecretRef`: one secret's source, as the parser produces it (see
//! `source.rs`) and the providers fetch it. A ref always names exactly one
//! kind of source, and its durations are already parsed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretBox};

use crate::template::TemplateRef;

/// One secret to fetch.
#[derive(Clone)]
pub enum SecretRef {
    /// A literal from the config. Kept in a zeroizing box; never printed.
    Value(Arc<SecretBox<str>>),
    Env {
        var: String,
    },
    File {
        path: PathBuf,
        json_key: Option<String>,
        /// Re-read interval for rotation (`fileRef: { ttl: … }`).
        ttl: Option<Duration>,
    },
    Kubernetes(KubernetesRef),
    Vault(VaultRef),
    Aws(AwsRef),
    Ssm(SsmRef),
    /// Every parameter below a path: one JSON object, for `keys: all`.
    SsmPath(SsmPathRef),
    /// A text rendered over other refs (see `template.rs`); shared, so that
    /// every delivery of one config renders the same template.
    Template(Arc<TemplateRef>),
}

/// A key of a Kubernetes Secret. Without a namespace, the provider's
/// (settings, in-cluster namespace file, kubeconfig context) applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesRef {
    pub namespace: Option<String>,
    pub name: String,
    pub key: String,
}

/// KV engine version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvEngine {
    /// KV v1, and any generic read (dynamic secrets: `database/creds/app`),
    /// shared through the cache like any other secret.
    V1,
    V2,
    /// A generic read whose answer is one process's own: read anew for
    /// every delivery, never cached or shared, its lease renewed while the
    /// process lives and revoked when it exits.
    Dynamic,
}

impl KvEngine {
    /// The config's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            KvEngine::V1 => "kv1",
            KvEngine::V2 => "kv2",
            KvEngine::Dynamic => "dynamic",
        }
    }
}

/// A key of a Vault secret. `mount` and `engine` fall back to the provider's
/// settings (`mount`, default `secret`; `kvVersion`, default 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultRef {
    pub provider: Option<String>,
    pub mount: Option<String>,
    /// Relative to the mount; the provider adds KV v2's `data/`.
    pub path: String,
    /// The key of the secret's data; without it, the whole data map is one
    /// value holding a JSON object.
    pub key: Option<String>,
    pub version: Option<u64>,
    pub engine: Option<KvEngine>,
    /// Per-ref cache TTL override.
    pub ttl: Option<Duration>,
}

/// A secret in AWS Secrets Manager. At most one of `version_id` and
/// `version_stage` is set (the parser refuses both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsRef {
    pub provider: Option<String>,
    pub secret_id: String,
    pub json_key: Option<String>,
    pub version_id: Option<String>,
    pub version_stage: Option<String>,
    pub ttl: Option<Duration>,
}

/// A parameter in AWS Systems Manager Parameter Store, read through an
/// `aws` provider (the same regions, endpoints and credentials as awsRef).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsmRef {
    pub provider: Option<String>,
    /// The parameter's name: `/app/db/password`, or a plain `name`.
    pub name: String,
    /// Whether a SecureString is decrypted (KMS) before delivery; without
    /// it, AWS answers a SecureString's ciphertext.
    pub with_decryption: bool,
    pub ttl: Option<Duration>,
}

/// Every parameter below a path in Parameter Store
/// (`ssmRef: { path: /app/prod/ }`), read through an `aws` provider. Its
/// value is one JSON object, `{ name relative to the path: value }`, which
/// the entry's `keys: all` takes apart (the parser refuses any other use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsmPathRef {
    pub provider: Option<String>,
    /// The hierarchy: `/app/prod/` (a trailing `/` is optional).
    pub path: String,
    /// Whether levels below `path` are read too (`/app/prod/db/password`
    /// is `db/password`), not only the parameters directly in it.
    pub recursive: bool,
    pub with_decryption: bool,
    pub ttl: Option<Duration>,
}

impl SecretRef {
    /// A literal value ref (tests, tools).
    pub fn literal(value: &str) -> Self {
        SecretRef::Value(Arc::new(SecretBox::new(value.into())))
    }

    /// The config's name for this kind of source.
    pub fn kind(&self) -> &'static str {
        match self {
            SecretRef::Value(_) => "value",
            SecretRef::Env { .. } => "envRef",
            SecretRef::File { .. } => "fileRef",
            SecretRef::Kubernetes(_) => "secretKeyRef",
            SecretRef::Vault(_) => "vaultRef",
            SecretRef::Aws(_) => "awsRef",
            SecretRef::Ssm(_) | SecretRef::SsmPath(_) => "ssmRef",
            SecretRef::Template(_) => "template",
        }
    }

    /// The provider instance named by the ref, if any.
    pub fn provider_name(&self) -> Option<&str> {
        match self {
            SecretRef::Vault(v) => v.provider.as_deref(),
            SecretRef::Aws(a) => a.provider.as_deref(),
            SecretRef::Ssm(p) => p.provider.as_deref(),
            SecretRef::SsmPath(p) => p.provider.as_deref(),
            _ => None,
        }
    }

    /// Per-ref TTL override.
    pub fn ttl(&self) -> Option<Duration> {
        match self {
            SecretRef::Vault(v) => v.ttl,
            SecretRef::Aws(a) => a.ttl,
            SecretRef::Ssm(p) => p.ttl,
            SecretRef::SsmPath(p) => p.ttl,
            SecretRef::File { ttl, .. } => *ttl,
            _ => None,
        }
    }

    /// Cache key: the ref's text. Literal values are not cached (there is
    /// nothing to fetch), so their key never needs to name the content;
    /// nor are dynamic secrets, whose every read is one process's own. A
    /// template is not cached either: its refs are, each under its own key,
    /// and it is rendered from them.
    pub fn cache_key(&self) -> Option<String> {
        match self {
            SecretRef::Value(_) | SecretRef::Template(_) => None,
            _ if self.is_dynamic() => None,
            _ => Some(self.to_string()),
        }
    }

    /// Whether every delivery reads this ref anew (`engine: dynamic`).
    pub fn is_dynamic(&self) -> bool {
        matches!(
            self,
            SecretRef::Vault(VaultRef {
                engine: Some(KvEngine::Dynamic),
                ..
            })
        )
    }

    /// The refs a fetch of this one reads: a template's refs, or itself.
    pub fn fetched_refs(&self) -> impl Iterator<Item = &SecretRef> {
        let (one, template) = match self {
            SecretRef::Template(t) => (None, Some(t.refs.values())),
            _ => (Some(self), None),
        };
        one.into_iter().chain(template.into_iter().flatten())
    }

    /// The literal's bytes, for the provider that delivers them; `None` for
    /// every other kind.
    pub fn literal_bytes(&self) -> Option<&[u8]> {
        match self {
            SecretRef::Value(v) => Some(v.expose_secret().as_bytes()),
            _ => None,
        }
    }
}

// Display names the ref without its content: used in errors, logs, metadata.
impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Value(_) => f.write_str("value <literal>"),
            SecretRef::Env { var } => write!(f, "envRef {var}"),
            SecretRef::File { path, json_key, .. } => {
                write!(f, "fileRef {}", path.display())?;
                if let Some(k) = json_key {
                    write!(f, "#{k}")?;
                }
                Ok(())
            }
            SecretRef::Kubernetes(k) => {
                f.write_str("secretKeyRef ")?;
                if let Some(ns) = &k.namespace {
                    write!(f, "{ns}/")?;
                }
                write!(f, "{}#{}", k.name, k.key)
            }
            SecretRef::Vault(v) => {
                f.write_str("vaultRef ")?;
                if let Some(p) = &v.provider {
                    write!(f, "{p}:")?;
                }
                if let Some(m) = &v.mount {
                    write!(f, "{}/", m.trim_matches('/'))?;
                }
                f.write_str(&v.path)?;
                if let Some(key) = &v.key {
                    write!(f, "#{key}")?;
                }
                if let Some(ver) = v.version {
                    write!(f, "@v{ver}")?;
                }
                if let Some(e) = v.engine {
                    write!(f, " ({})", e.as_str())?;
                }
                Ok(())
            }
            SecretRef::Aws(a) => {
                f.write_str("awsRef ")?;
                if let Some(p) = &a.provider {
                    write!(f, "{p}:")?;
                }
                f.write_str(&a.secret_id)?;
                if let Some(k) = &a.json_key {
                    write!(f, "#{k}")?;
                }
                if let Some(v) = &a.version_id {
                    write!(f, "@{v}")?;
                }
                if let Some(s) = &a.version_stage {
                    write!(f, "@{s}")?;
                }
                Ok(())
            }
            // The cache keys on this text: a ciphertext and its plaintext
            // must not share an entry.
            SecretRef::Ssm(p) => {
                f.write_str("ssmRef ")?;
                if let Some(name) = &p.provider {
                    write!(f, "{name}:")?;
                }
                f.write_str(&p.name)?;
                if !p.with_decryption {
                    f.write_str(" (withDecryption: false)")?;
                }
                Ok(())
            }
            SecretRef::SsmPath(p) => {
                f.write_str("ssmRef ")?;
                if let Some(name) = &p.provider {
                    write!(f, "{name}:")?;
                }
                write!(f, "path {}", p.path)?;
                if p.recursive {
                    f.write_str(" (recursive)")?;
                }
                if !p.with_decryption {
                    f.write_str(" (withDecryption: false)")?;
                }
                Ok(())
            }
            SecretRef::Template(t) => write!(f, "{t}"),
        }
    }
}

impl std::fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretRef({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_never_displayed() {
        let r = SecretRef::literal("hunter2");
        assert!(!format!("{r} {r:?}").contains("hunter2"));
        assert_eq!(r.cache_key(), None);
    }

    #[test]
    fn ssm_ciphertext_and_plaintext_have_their_own_cache_keys() {
        let plain = SsmRef {
            provider: Some("prod".into()),
            name: "/app/db/password".into(),
            with_decryption: true,
            ttl: None,
        };
        let cipher = SsmRef {
            with_decryption: false,
            ..plain.clone()
        };
        let (plain, cipher) = (SecretRef::Ssm(plain), SecretRef::Ssm(cipher));
        assert_eq!(plain.to_string(), "ssmRef prod:/app/db/password");
        assert_ne!(plain.cache_key(), cipher.cache_key());
        assert_eq!(plain.kind(), "ssmRef");
        assert_eq!(plain.provider_name(), Some("prod"));
    }

    #[test]
    fn an_ssm_path_is_its_own_cache_entry() {
        let path = SsmPathRef {
            provider: None,
            path: "/app/prod/".into(),
            recursive: true,
            with_decryption: true,
            ttl: None,
        };
        let flat = SsmPathRef {
            recursive: false,
            ..path.clone()
        };
        let (path, flat) = (SecretRef::SsmPath(path), SecretRef::SsmPath(flat));
        assert_eq!(path.to_string(), "ssmRef path /app/prod/ (recursive)");
        assert_ne!(path.cache_key(), flat.cache_key());
        let one = SecretRef::Ssm(SsmRef {
            provider: None,
            name: "/app/prod/".into(),
            with_decryption: true,
            ttl: None,
        });
        assert_ne!(flat.cache_key(), one.cache_key());
        assert_eq!(path.kind(), "ssmRef");
    }

    #[test]
    fn a_template_shows_its_refs_but_neither_its_text_nor_a_literal() {
        let t = SecretRef::Template(Arc::new(TemplateRef {
            text: "user=app password=hunter3 {{ pw }} {{ host }}".into(),
            refs: [
                ("pw".to_string(), SecretRef::literal("hunter2")),
                ("host".to_string(), SecretRef::Env { var: "HOST".into() }),
            ]
            .into(),
        }));
        let shown = format!("{t} {t:?}");
        assert_eq!(
            t.to_string(),
            "template(host: envRef HOST, pw: value <literal>)"
        );
        assert!(!shown.contains("hunter"), "{shown}");
        assert_eq!(t.cache_key(), None);
        assert_eq!(t.kind(), "template");
        assert_eq!(t.fetched_refs().count(), 2);
    }
}
