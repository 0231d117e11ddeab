//! Typed settings of each provider type, parsed from the `providers:` map.
//!
//! The config crate keeps a provider's settings as free-form JSON; this
//! module owns their schema. Parsing is strict (unknown keys are refused, so
//! a typo such as `tlsSkipVerfy` cannot silently change behaviour) and every
//! error names the full field path: `providers.vault-prod.auth.kubernetes.role: missing`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::error::Error;
use kernelseal_config::parse_duration;

use crate::reference::KvEngine;

/// Default projected service-account token, used for Vault kubernetes auth.
pub const DEFAULT_SA_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

// The keys each mapping accepts. Every parser below refuses any other key
// up front (`Obj::only`), so these lists are the schema; the configuration
// reference's test checks that each one parses and that it is documented.
const VAULT_KEYS: &[&str] = &[
    "address",
    "namespace",
    "caCert",
    "tlsSkipVerify",
    "mount",
    "kvVersion",
    "timeout",
    "cacheTtl",
    "auth",
];
const VAULT_AUTH_METHODS: &[&str] = &["token", "kubernetes", "approle"];
const VAULT_TOKEN_KEYS: &[&str] = &["env", "file"];
const VAULT_KUBERNETES_KEYS: &[&str] = &["role", "jwtFile", "mount"];
const VAULT_APPROLE_KEYS: &[&str] = &["roleId", "secretIdFile", "secretIdEnv", "mount"];
const AWS_KEYS: &[&str] = &[
    "region",
    "failoverRegion",
    "endpoints",
    "profile",
    "timeout",
    "cacheTtl",
];
const KUBERNETES_KEYS: &[&str] = &["kubeconfig", "context", "namespace", "cacheTtl"];

/// Every setting each provider type accepts, as `(type, dotted path)`:
/// `("vault", "auth.kubernetes.role")`. `endpoints` (aws) is a map whose
/// keys are region names.
pub fn known_settings() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut add = |kind: &'static str, prefix: &str, keys: &[&str]| {
        out.extend(keys.iter().map(|k| (kind, format!("{prefix}{k}"))));
    };
    add("vault", "", VAULT_KEYS);
    add("vault", "auth.", VAULT_AUTH_METHODS);
    add("vault", "auth.token.", VAULT_TOKEN_KEYS);
    add("vault", "auth.kubernetes.", VAULT_KUBERNETES_KEYS);
    add("vault", "auth.approle.", VAULT_APPROLE_KEYS);
    add("aws", "", AWS_KEYS);
    add("kubernetes", "", KUBERNETES_KEYS);
    out
}

/// One provider's parsed settings, by its `type`.
#[derive(Debug, Clone)]
pub enum ProviderSettings {
    Vault(VaultSettings),
    Aws(AwsSettings),
    Kubernetes(KubernetesSettings),
}

impl ProviderSettings {
    /// Parses the settings of provider `name` according to its `type`.
    pub fn parse(name: &str, spec: &kernelseal_config::ProviderSpec) -> Result<Self, Error> {
        Ok(match spec.kind.as_str() {
            "vault" => Self::Vault(VaultSettings::parse(name, &spec.settings)?),
            "aws" => Self::Aws(AwsSettings::parse(name, &spec.settings)?),
            "kubernetes" => Self::Kubernetes(KubernetesSettings::parse(name, &spec.settings)?),
            other => {
                return Err(Error::Settings {
                    provider: name.to_string(),
                    field: "type".into(),
                    message: format!(
                        "unknown provider type {other:?}; use vault, aws or kubernetes"
                    ),
                });
            }
        })
    }
}

/// Parses every provider's settings, as the agent does at start, without
/// building a client, reading a file or contacting anything
/// (`kernelseal config validate`).
pub fn check_settings(config: &kernelseal_config::Config) -> Result<(), Error> {
    for (name, spec) in &config.providers {
        ProviderSettings::parse(name, &spec.value)?;
    }
    Ok(())
}

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
    /// Per-request timeout of the HTTP client.
    pub timeout: Duration,
    pub cache_ttl: Option<Duration>,
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

/// `type: aws`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AwsSettings {
    /// Primary region; without it the SDK's chain (`AWS_REGION`, profile) decides.
    pub region: Option<String>,
    /// Tried when the primary fails with a 5xx or a network error.
    pub failover_region: Option<String>,
    /// Endpoint per region (local stacks, VPC endpoints). `AWS_ENDPOINT_URL`
    /// applies to every region where this map has no entry.
    pub endpoints: BTreeMap<String, String>,
    /// Named profile of the shared config files.
    pub profile: Option<String>,
    pub timeout: Duration,
    pub cache_ttl: Option<Duration>,
}

/// `type: kubernetes`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KubernetesSettings {
    /// A kubeconfig file; without it: in-cluster service account, then `KUBECONFIG`/`~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// Namespace for refs that name none.
    pub namespace: Option<String>,
    pub cache_ttl: Option<Duration>,
}

/// A JSON object being read, with its field path, refusing unknown keys.
struct Obj<'a> {
    provider: &'a str,
    path: String,
    map: BTreeMap<&'a str, &'a Value>,
}

impl<'a> Obj<'a> {
    fn root(provider: &'a str, settings: &'a BTreeMap<String, Value>) -> Self {
        Obj {
            provider,
            path: String::new(),
            map: settings.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        }
    }

    fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn err(&self, key: &str, message: impl Into<String>) -> Error {
        Error::Settings {
            provider: self.provider.to_string(),
            field: self.field(key),
            message: message.into(),
        }
    }

    fn string(&mut self, key: &str) -> Result<Option<String>, Error> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(self.err(key, "must not be empty"))
            }
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(self.err(key, "must be a string")),
        }
    }

    fn required(&mut self, key: &str) -> Result<String, Error> {
        self.string(key)?.ok_or_else(|| self.err(key, "missing"))
    }

    fn boolean(&mut self, key: &str) -> Result<Option<bool>, Error> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.err(key, "must be true or false")),
        }
    }

    fn duration(&mut self, key: &str) -> Result<Option<Duration>, Error> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(|s| Some(Duration::from_secs(s)))
                .ok_or_else(|| self.err(key, "must be a whole number of seconds or like 30s")),
            Some(Value::String(s)) => parse_duration(s)
                .map(Some)
                .map_err(|e| self.err(key, e.to_string())),
            Some(_) => Err(self.err(key, "must be a duration like 30s, 5m")),
        }
    }

    fn object(&mut self, key: &str) -> Result<Option<Obj<'a>>, Error> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Obj {
                provider: self.provider,
                path: self.field(key),
                map: m.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            })),
            Some(_) => Err(self.err(key, "must be a mapping")),
        }
    }

    /// Refuses any key not in `keys`, before anything is read.
    fn only(&self, keys: &[&str]) -> Result<(), Error> {
        match self.map.keys().find(|k| !keys.contains(k)) {
            None => Ok(()),
            Some(k) => Err(self.err(k, "unknown setting")),
        }
    }

    /// Refuses keys nobody read.
    fn finish(self) -> Result<(), Error> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(self.err(k, "unknown setting")),
        }
    }
}

fn url(o: &Obj<'_>, key: &str, text: String) -> Result<String, Error> {
    if !(text.starts_with("http://") || text.starts_with("https://")) {
        return Err(o.err(key, format!("{text:?} is not an http:// or https:// URL")));
    }
    Ok(text.trim_end_matches('/').to_string())
}

fn segment(o: &Obj<'_>, key: &str, text: String) -> Result<String, Error> {
    let t = text.trim_matches('/').to_string();
    if t.is_empty() || t.split('/').any(|s| s == ".." || s == "." || s.is_empty()) {
        return Err(o.err(key, format!("{text:?} is not a mount path")));
    }
    Ok(t)
}

impl VaultSettings {
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
        o.finish()?;
        Ok(VaultSettings {
            address,
            namespace,
            ca_cert,
            tls_skip_verify,
            mount,
            kv_version,
            auth,
            timeout,
            cache_ttl,
        })
    }
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
        return Err(Error::Settings {
            provider: a.provider.to_string(),
            field: a.path.clone(),
            message: msg,
        });
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
                    return Err(Error::Settings {
                        provider: t.provider.to_string(),
                        field: t.path.clone(),
                        message: "set exactly one of env, file (a token is never written inline)"
                            .into(),
                    });
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

impl AwsSettings {
    pub fn parse(provider: &str, settings: &BTreeMap<String, Value>) -> Result<Self, Error> {
        let mut o = Obj::root(provider, settings);
        o.only(AWS_KEYS)?;
        let region = o.string("region")?;
        let failover_region = o.string("failoverRegion")?;
        if failover_region.is_some() && failover_region == region {
            return Err(o.err("failoverRegion", "is the same as region"));
        }
        let mut endpoints = BTreeMap::new();
        if let Some(mut e) = o.object("endpoints")? {
            let keys: Vec<String> = e.map.keys().map(|k| k.to_string()).collect();
            for k in keys {
                let v = e.required(&k)?;
                let v = url(&e, &k, v)?;
                endpoints.insert(k, v);
            }
            e.finish()?;
        }
        let profile = o.string("profile")?;
        let timeout = o.duration("timeout")?.unwrap_or(Duration::from_secs(10));
        let cache_ttl = o.duration("cacheTtl")?;
        o.finish()?;
        Ok(AwsSettings {
            region,
            failover_region,
            endpoints,
            profile,
            timeout,
            cache_ttl,
        })
    }
}

impl KubernetesSettings {
    pub fn parse(provider: &str, settings: &BTreeMap<String, Value>) -> Result<Self, Error> {
        let mut o = Obj::root(provider, settings);
        o.only(KUBERNETES_KEYS)?;
        let kubeconfig = o.string("kubeconfig")?.map(PathBuf::from);
        let context = o.string("context")?;
        let namespace = o.string("namespace")?;
        let cache_ttl = o.duration("cacheTtl")?;
        o.finish()?;
        Ok(KubernetesSettings {
            kubeconfig,
            context,
            namespace,
            cache_ttl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn vault_kubernetes_defaults() {
        let s = VaultSettings::parse(
            "vp",
            &map(
                json!({"address": "https://vault:8200/", "auth": {"kubernetes": {"role": "app"}}}),
            ),
        )
        .unwrap();
        assert_eq!(s.address, "https://vault:8200");
        assert_eq!(s.mount, "secret");
        assert_eq!(s.kv_version, KvEngine::V2);
        assert_eq!(
            s.auth,
            VaultAuth::Kubernetes {
                role: "app".into(),
                jwt_file: DEFAULT_SA_TOKEN.into(),
                mount: "kubernetes".into()
            }
        );
    }

    #[test]
    fn inline_jwt_is_never_printed() {
        let a = VaultAuth::KubernetesJwt {
            role: "web".into(),
            jwt: InlineJwt::new("eyJ.pod-token.sig"),
            mount: "kubernetes".into(),
        };
        assert!(!format!("{a:?}").contains("pod-token"));
        assert_eq!(a.clone(), a);
        let b = VaultAuth::KubernetesJwt {
            role: "web".into(),
            jwt: InlineJwt::new("eyJ.pod-token.sig"),
            mount: "kubernetes".into(),
        };
        // Equality is identity: comparing settings never compares tokens.
        assert_ne!(a, b);
    }

    #[test]
    fn every_listed_setting_is_read_and_others_are_refused() {
        // A valid settings map per type, with room for the key under test.
        fn base(kind: &str, path: &str) -> Value {
            let auth = match path.split('.').nth(1) {
                Some("token") if path.ends_with(".file") => json!({"token": {}}),
                Some("token") => json!({"token": {"env": "VAULT_TOKEN"}}),
                Some("approle") if path.ends_with("secretIdEnv") => {
                    json!({"approle": {"roleId": "r"}})
                }
                Some("approle") => json!({"approle": {"roleId": "r", "secretIdFile": "/f"}}),
                _ => json!({"kubernetes": {"role": "app"}}),
            };
            match kind {
                "vault" => json!({"address": "https://v:8200", "auth": auth}),
                _ => json!({}),
            }
        }
        fn sample(key: &str) -> Value {
            match key {
                "address" => json!("https://x.example"),
                "tlsSkipVerify" => json!(false),
                "kvVersion" => json!(1),
                "timeout" | "cacheTtl" => json!("30s"),
                "endpoints" => json!({"eu-west-1": "https://x.example"}),
                "auth" => json!({"kubernetes": {"role": "app"}}),
                "region" => json!("eu-west-1"),
                "failoverRegion" => json!("eu-central-1"),
                "mount" => json!("kv"),
                _ => json!("/some/value"),
            }
        }
        fn parse(kind: &str, v: Value) -> Result<(), Error> {
            let m = map(v);
            match kind {
                "vault" => VaultSettings::parse("p", &m).map(drop),
                "aws" => AwsSettings::parse("p", &m).map(drop),
                _ => KubernetesSettings::parse("p", &m).map(drop),
            }
        }
        let known = known_settings();
        assert!(known.len() > 20, "{known:?}");
        for (kind, path) in &known {
            let segs: Vec<&str> = path.split('.').collect();
            let (last, parents) = segs.split_last().unwrap();
            let mut ok = base(kind, path);
            let mut typo = base(kind, path);
            for (doc, extra) in [(&mut ok, None), (&mut typo, Some(format!("{last}Typo")))] {
                let mut at = &mut *doc;
                for p in parents {
                    at = at.as_object_mut().unwrap().entry(*p).or_insert(json!({}));
                }
                let obj = at.as_object_mut().unwrap();
                if parents.first() == Some(&"auth") && parents.len() == 1 {
                    // An auth method: replace the base's.
                    obj.clear();
                    obj.insert(
                        last.to_string(),
                        base(kind, &format!("auth.{last}.x"))["auth"][*last].take(),
                    );
                } else {
                    obj.insert(last.to_string(), sample(last));
                }
                if let Some(k) = extra {
                    obj.insert(k, json!("x"));
                }
            }
            if let Err(e) = parse(kind, ok) {
                panic!("{kind} {path}: {e}");
            }
            let e = parse(kind, typo).expect_err(path).to_string();
            assert!(e.contains(&format!("{last}Typo")), "{kind} {path}: {e}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let e = VaultSettings::parse(
            "vault-prod",
            &map(json!({"address": "https://v", "auth": {"kubernetes": {}}})),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "providers.vault-prod.auth.kubernetes.role: missing"
        );
        let e = VaultSettings::parse("v", &map(json!({"auth": {}}))).unwrap_err();
        assert_eq!(e.to_string(), "providers.v.address: missing");
        let e = VaultSettings::parse("v", &map(json!({"address": "vault:8200"}))).unwrap_err();
        assert!(e.to_string().starts_with("providers.v.address: "), "{e}");
        let e = VaultSettings::parse(
            "v",
            &map(json!({"address": "http://v", "tlsSkipVerfy": true})),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "providers.v.tlsSkipVerfy: unknown setting");
        let e = VaultSettings::parse(
            "v",
            &map(json!({"address": "http://v", "auth": {"approle": {"roleId": "r", "secretId": "s3cr3t"}}})),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"));
        assert!(
            e.to_string()
                .starts_with("providers.v.auth.approle.secretId"),
            "{e}"
        );
        let e = VaultSettings::parse(
            "v",
            &map(json!({"address": "http://v", "auth": {"token": {"env": "A"}, "approle": {}}})),
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("providers.v.auth: exactly one"),
            "{e}"
        );
        let e = AwsSettings::parse("a", &map(json!({"endpoints": {"us-east-1": 5}}))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "providers.a.endpoints.us-east-1: \"5\" is not an http:// or https:// URL"
        );
        let e = KubernetesSettings::parse("k", &map(json!({"cacheTtl": "5y"}))).unwrap_err();
        assert!(e.to_string().starts_with("providers.k.cacheTtl: "), "{e}");
    }
}
