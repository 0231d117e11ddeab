//! What the stand-in starts with.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{DynamicRole, Policy, Role};

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
    /// Dynamic roles by creds path (`database/creds/app`).
    pub dynamic: BTreeMap<String, DynamicRole>,
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
            dynamic: BTreeMap::new(),
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

    /// A dynamic role read at `creds_path` (`database/creds/app`): each read
    /// issues a new credential with a lease of `role`'s TTLs.
    pub fn dynamic(mut self, creds_path: &str, role: DynamicRole) -> VaultSpec {
        self.dynamic.insert(creds_path.to_string(), role);
        self
    }
}
