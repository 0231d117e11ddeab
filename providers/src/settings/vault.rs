//! `type: vault`: address, TLS, defaults for refs, and how the provider
//! gets its token.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::DEFAULT_SA_TOKEN;
use super::fields::{Obj, segment, url};
use crate::error::Error;
use crate::reference::KvEngine;

pub(super) const VAULT_KEYS: &[&str] = &[
    "address",
    "namespace",
    "caCert",
    "tlsSkipVerify",
    "mount",
    "kvVersion",
    "timeout",
    "cacheTtl",
    "auth",
    "podAuth",
];
pub(super) const VAULT_AUTH_METHODS: &[&str] = &["token", "kubernetes", "approle"];
pub(super) const VAULT_TOKEN_KEYS: &[&str] = &["env", "file"];
pub(super) const VAULT_KUBERNETES_KEYS: &[&str] = &["role", "jwtFile", "mount"];
pub(super) const VAULT_POD_AUTH_KEYS: &[&str] = &["mount", "audience"];
pub(super) const VAULT_APPROLE_KEYS: &[&str] = &["roleId", "secretIdFile", "secretIdEnv", "mount"];

/// `type: vault`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultSettings {
    /// `https://vault:8200`; no trailing slash.
    pub address: String,
    /// Enterprise namespace, sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// PEM file with the CA(s) that sign Vault's certificate.
    pub ca_cert: Option<PathBuf>,
    /// Accept any certificate. For development only; logged as a warning.
    pub tls_skip_verify: bool,
    /// Default mount when a ref sets none (`secret`).
    pub mount: String,
    /// Default KV engine when a ref sets none (2).
    pub kv_version: KvEngine,
    pub auth: VaultAuth,
    /// How bindings with `identity: pod` log in as the calling pod.
    pub pod_auth: PodAuth,
    /// Per-request timeout of the HTTP client.
    pub timeout: Duration,
    pub cache_ttl: Option<Duration>,
}

/// `podAuth`: the kubernetes auth mount that logs pods in, and the
/// audience their tokens must carry for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAuth {
    /// `kubernetes` by default.
    pub mount: String,
    /// `vault` by default, as vault-csi-provider's.
    pub audience: String,
}

impl Default for PodAuth {
    fn default() -> Self {
        PodAuth {
            mount: "kubernetes".into(),
            audience: "vault".into(),
        }
    }
}

/// How the Vault provider gets its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultAuth {
    /// A token read from an environment variable (default `VAULT_TOKEN`).
    TokenEnv(String),
    /// A token read from a file (e.g. written by Vault Agent).
    TokenFile(PathBuf),
    /// `POST /v1/auth/{mount}/login` with `{role, jwt}` where the JWT is
    /// given, not read from a file: a caller that authenticates on behalf
    /// of someone else (the CSI provider logs in as each pod) holds it.
    KubernetesJwt {
        role: String,
        jwt: InlineJwt,
        mount: String,
    },
    /// `POST /v1/auth/{mount}/login` with `{role, jwt}`.
    Kubernetes {
        role: String,
        jwt_file: PathBuf,
        mount: String,
    },
    /// `POST /v1/auth/{mount}/login` with `{role_id, secret_id}`.
    AppRole {
        role_id: String,
        secret_id: SecretIdSource,
        mount: String,
    },
}

/// A service-account JWT held in memory for [`VaultAuth::KubernetesJwt`].
/// `Debug` never shows it; equality is identity (two settings are equal
/// only when they share the same token allocation).
#[derive(Clone)]
pub struct InlineJwt(std::sync::Arc<secrecy::SecretBox<str>>);

impl InlineJwt {
    pub fn new(jwt: &str) -> Self {
        InlineJwt(std::sync::Arc::new(secrecy::SecretBox::new(jwt.into())))
    }

    pub(crate) fn expose(&self) -> &str {
        use secrecy::ExposeSecret;
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for InlineJwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InlineJwt(<redacted>)")
    }
}

impl PartialEq for InlineJwt {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for InlineJwt {}

/// Where an AppRole secret_id comes from. Never inline in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretIdSource {
    Env(String),
    File(PathBuf),
}

impl VaultSettings {
    /// Vault at `address` with `auth`, every other setting at the default
    /// a config that leaves it out gets (mount `secret`, KV v2, 10 s).
    pub fn new(address: impl Into<String>, auth: VaultAuth) -> Self {
        VaultSettings {
            address: address.into(),
            namespace: None,
            ca_cert: None,
            tls_skip_verify: false,
            mount: "secret".into(),
            kv_version: KvEngine::V2,
            auth,
            pod_auth: PodAuth::default(),
            timeout: Duration::from_secs(10),
            cache_ttl: None,
        }
    }

    pub fn parse(provider: &str, settings: &BTreeMap<String, Value>) -> Result<Self, Error> {
        let mut o = Obj::root(provider, settings);
        o.only(VAULT_KEYS)?;
        let address = o.required("address")?;
        let address = url(&o, "address", address)?;
        let namespace = o.string("namespace")?;
        let ca_cert = o.string("caCert")?.map(PathBuf::from);
        let tls_skip_verify = o.boolean("tlsSkipVerify")?.unwrap_or(false);
        let mount = match o.string("mount")? {
            Some(m) => segment(&o, "mount", m)?,
            None => "secret".to_string(),
        };
        let kv_version = match o.string("kvVersion")?.as_deref() {
            None | Some("2") => KvEngine::V2,
            Some("1") => KvEngine::V1,
            Some(other) => return Err(o.err("kvVersion", format!("{other:?}: use 1 or 2"))),
        };
        let timeout = o.duration("timeout")?.unwrap_or(Duration::from_secs(10));
        let cache_ttl = o.duration("cacheTtl")?;
        let auth = match o.object("auth")? {
            None => VaultAuth::TokenEnv("VAULT_TOKEN".into()),
            Some(a) => parse_vault_auth(a)?,
        };
        let pod_auth = match o.object("podAuth")? {
            None => PodAuth::default(),
            Some(p) => parse_pod_auth(p)?,
        };
        o.finish()?;
        Ok(VaultSettings {
            address,
            namespace,
            ca_cert,
            tls_skip_verify,
            mount,
            kv_version,
            auth,
            pod_auth,
            timeout,
            cache_ttl,
        })
    }
}

fn parse_pod_auth(mut p: Obj<'_>) -> Result<PodAuth, Error> {
    p.only(VAULT_POD_AUTH_KEYS)?;
    let defaults = PodAuth::default();
    let mount = match p.string("mount")? {
        Some(m) => segment(&p, "mount", m)?,
        None => defaults.mount,
    };
    let audience = p.string("audience")?.unwrap_or(defaults.audience);
    p.finish()?;
    Ok(PodAuth { mount, audience })
}

fn parse_vault_auth(mut a: Obj<'_>) -> Result<VaultAuth, Error> {
    let set: Vec<&str> = VAULT_AUTH_METHODS
        .iter()
        .copied()
        .filter(|m| a.map.contains_key(m))
        .collect();
    if set.len() != 1 {
        let msg = format!(
            "exactly one of token, kubernetes, approle must be set (found {})",
            if set.is_empty() {
                "none".to_string()
            } else {
                set.join(", ")
            }
        );
        // Report an unknown key first: `auth: { kubernets: … }` is a typo, not "none".
        if set.is_empty()
            && let Some(k) = a.map.keys().next()
        {
            return Err(a.err(k, "unknown auth method; use token, kubernetes or approle"));
        }
        return Err(a.err_here(msg));
    }
    a.only(VAULT_AUTH_METHODS)?;
    let auth = match set[0] {
        "token" => {
            let mut t = a
                .object("token")?
                .ok_or_else(|| a.err("token", "must be a mapping with env or file"))?;
            t.only(VAULT_TOKEN_KEYS)?;
            let env = t.string("env")?;
            let file = t.string("file")?;
            let r = match (env, file) {
                (Some(e), None) => VaultAuth::TokenEnv(e),
                (None, Some(f)) => VaultAuth::TokenFile(PathBuf::from(f)),
                _ => {
                    return Err(t.err_here(
                        "set exactly one of env, file (a token is never written inline)",
                    ));
                }
            };
            t.finish()?;
            r
        }
        "kubernetes" => {
            let mut k = a
                .object("kubernetes")?
                .ok_or_else(|| a.err("kubernetes", "must be a mapping"))?;
            k.only(VAULT_KUBERNETES_KEYS)?;
            let role = k.required("role")?;
            let jwt_file = k
                .string("jwtFile")?
                .unwrap_or_else(|| DEFAULT_SA_TOKEN.to_string())
                .into();
            let mount = match k.string("mount")? {
                Some(m) => segment(&k, "mount", m)?,
                None => "kubernetes".into(),
            };
            k.finish()?;
            VaultAuth::Kubernetes {
                role,
                jwt_file,
                mount,
            }
        }
        _ => {
            let mut r = a
                .object("approle")?
                .ok_or_else(|| a.err("approle", "must be a mapping"))?;
            if r.map.contains_key("secretId") {
                return Err(r.err(
                    "secretId",
                    "a secret_id is a credential: give secretIdFile or secretIdEnv instead",
                ));
            }
            r.only(VAULT_APPROLE_KEYS)?;
            let role_id = r.required("roleId")?;
            let env = r.string("secretIdEnv")?;
            let file = r.string("secretIdFile")?;
            let secret_id = match (env, file) {
                (Some(e), None) => SecretIdSource::Env(e),
                (None, Some(f)) => SecretIdSource::File(f.into()),
                (None, None) => return Err(r.err("secretIdFile", "missing (or set secretIdEnv)")),
                _ => return Err(r.err("secretIdFile", "set secretIdFile or secretIdEnv, not both")),
            };
            let mount = match r.string("mount")? {
                Some(m) => segment(&r, "mount", m)?,
                None => "approle".into(),
            };
            r.finish()?;
            VaultAuth::AppRole {
                role_id,
                secret_id,
                mount,
            }
        }
    };
    a.finish()?;
    Ok(auth)
}
