//! Typed settings of each provider type, parsed from the `providers:` map.
//!
//! The config crate keeps a provider's settings as free-form JSON; this
//! module owns their schema. Parsing is strict (unknown keys are refused, so
//! a typo such as `tlsSkipVerfy` cannot silently change behaviour) and every
//! error names the full field path: `providers.vault-prod.auth.kubernetes.role: missing`.

use crate::error::Error;

mod aws;
mod fields;
mod kubernetes;
mod vault;

use aws::{AWS_KEYS, AWS_POD_AUTH_KEYS};
pub use aws::{AwsSettings, STS_AUDIENCE};
use kubernetes::KUBERNETES_KEYS;
pub use kubernetes::KubernetesSettings;
pub use vault::{InlineJwt, PodAuth, SecretIdSource, VaultAuth, VaultSettings};
use vault::{
    VAULT_APPROLE_KEYS, VAULT_AUTH_METHODS, VAULT_KEYS, VAULT_KUBERNETES_KEYS, VAULT_POD_AUTH_KEYS,
    VAULT_TOKEN_KEYS,
};

/// Default projected service-account token, used for Vault kubernetes auth.
pub const DEFAULT_SA_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

// The keys each mapping accepts (`*_KEYS` in each provider's module). Every
// parser refuses any other key up front (`Obj::only`), so these lists are
// the schema; the configuration reference's test checks that each one
// parses and that it is documented.
/// Every setting each provider type accepts, as `(type, dotted path)`:
/// `("vault", "auth.kubernetes.role")`. `endpoints` and `ssmEndpoints`
/// (aws) are maps whose keys are region names.
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
    add("vault", "podAuth.", VAULT_POD_AUTH_KEYS);
    add("aws", "", AWS_KEYS);
    add("aws", "podAuth.", AWS_POD_AUTH_KEYS);
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{Value, json};

    use super::*;
    use crate::reference::KvEngine;

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
                "endpoints" | "ssmEndpoints" => json!({"eu-west-1": "https://x.example"}),
                "auth" => json!({"kubernetes": {"role": "app"}}),
                "region" => json!("eu-west-1"),
                "failoverRegion" => json!("eu-central-1"),
                "mount" => json!("kv"),
                "podAuth" => json!({"audience": "vault"}),
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
