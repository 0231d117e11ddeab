//! `identity:` of a binding: whose credentials read its Vault and AWS
//! secrets. `agent` (the default) is the agent's own provider login;
//! `pod` logs in with the calling pod's service-account token, so Vault's
//! and AWS's own policies for that service account decide what it reads.
//!
//! Written `identity: pod`, or as a mapping when the role is not the
//! default: `identity: { vaultRole: web, awsRoleArn: arn:… }` (`mode`
//! defaults to `pod` there).

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// Whose login reads a binding's remote secrets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityMode {
    /// The provider's own configured login (the agent's identity).
    #[default]
    Agent,
    /// A login with the calling pod's projected service-account token.
    Pod,
}

impl IdentityMode {
    /// The config's spelling, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityMode::Agent => "agent",
            IdentityMode::Pod => "pod",
        }
    }
}

/// A binding's `identity`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub mode: IdentityMode,
    /// The Vault kubernetes-auth role of the login; by default the pod's
    /// service-account name.
    pub vault_role: Option<String>,
    /// The IAM role `AssumeRoleWithWebIdentity` assumes; by default the
    /// service account's `eks.amazonaws.com/role-arn` annotation.
    pub aws_role_arn: Option<String>,
}

impl Identity {
    pub fn is_pod(&self) -> bool {
        self.mode == IdentityMode::Pod
    }
}

/// The mapping form of `identity`. It exists to name the pod's roles, so
/// its `mode` is `pod` unless it says otherwise.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct IdentitySpec {
    #[serde(default = "pod")]
    mode: IdentityMode,
    #[serde(default)]
    vault_role: Option<String>,
    #[serde(default)]
    aws_role_arn: Option<String>,
}

fn pod() -> IdentityMode {
    IdentityMode::Pod
}

impl<'de> Deserialize<'de> for Identity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IdentityVisitor)
    }
}

struct IdentityVisitor;

impl<'de> Visitor<'de> for IdentityVisitor {
    type Value = Identity;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("`agent`, `pod`, or a mapping { mode, vaultRole, awsRoleArn }")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Identity, E> {
        let mode = match v {
            "agent" => IdentityMode::Agent,
            "pod" => IdentityMode::Pod,
            other => {
                return Err(E::custom(format!(
                    "identity {other:?} is unknown; use agent, pod, or a mapping {{ mode, \
                     vaultRole, awsRoleArn }}"
                )));
            }
        };
        Ok(Identity {
            mode,
            ..Identity::default()
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Identity, A::Error> {
        let spec = IdentitySpec::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Identity {
            mode: spec.mode,
            vault_role: spec.vault_role,
            aws_role_arn: spec.aws_role_arn,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        identity: Identity,
    }

    fn parse(text: &str) -> Result<Identity, String> {
        serde_saphyr::from_str::<Holder>(text)
            .map(|h| h.identity)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn short_and_long_forms() {
        assert_eq!(parse("identity: pod").unwrap().mode, IdentityMode::Pod);
        assert_eq!(parse("identity: agent").unwrap(), Identity::default());
        let long =
            parse("identity: { mode: pod, vaultRole: web, awsRoleArn: 'arn:aws:iam::1:role/w' }")
                .unwrap();
        assert_eq!(long.vault_role.as_deref(), Some("web"));
        assert_eq!(long.aws_role_arn.as_deref(), Some("arn:aws:iam::1:role/w"));
        let implied = parse("identity: { vaultRole: web }").unwrap();
        assert_eq!(implied.mode, IdentityMode::Pod);
        let typo = parse("identity: pods").unwrap_err();
        assert!(typo.contains("use agent, pod"), "{typo}");
        let unknown = parse("identity: { mode: pod, role: x }").unwrap_err();
        assert!(unknown.contains("role"), "{unknown}");
    }
}
