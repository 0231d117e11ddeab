//! What the stand-in starts with.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Policy, Role};

/// What the stand-in holds when it starts.
pub struct VaultSpec {
    /// Where the kubernetes auth method is mounted (`kubernetes`).
    pub auth_mount: String,
    /// Where the KV v2 engine is mounted (`secret`).
    pub kv_mount: String,
    /// The key service-account tokens must be signed with
    /// ([`crate::sa_token::CLUSTER_KEY`]).
    pub signing_key: Vec<u8>,
    pub roles: BTreeMap<String, Role>,
    pub policies: BTreeMap<String, Policy>,
    /// Secrets by path under the KV mount, each a JSON object, version 1.
    pub secrets: BTreeMap<String, Value>,
}

impl Default for VaultSpec {
    fn default() -> VaultSpec {
        VaultSpec {
            auth_mount: "kubernetes".to_string(),
            kv_mount: "secret".to_string(),
            signing_key: crate::sa_token::CLUSTER_KEY.to_vec(),
            roles: BTreeMap::new(),
            policies: BTreeMap::new(),
            secrets: BTreeMap::new(),
        }
    }
}

impl VaultSpec {
    pub fn role(mut self, name: &str, role: Role) -> VaultSpec {
        self.roles.insert(name.to_string(), role);
        self
    }

    pub fn policy(mut self, name: &str, policy: Policy) -> VaultSpec {
        self.policies.insert(name.to_string(), policy);
        self
    }

    /// A secret at `path` under the KV mount (`team-a/app`), `data` a JSON
    /// object of keys.
    pub fn secret(mut self, path: &str, data: Value) -> VaultSpec {
        self.secrets.insert(path.to_string(), data);
        self
    }
}
