//! Client tokens: issued by a login (or by the test), expiring after their
//! TTL, renewed by `renew-self`, checked against the ACL on every request.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::acl::{self, Policy};
use crate::sa_token::random_uuid;

/// Vault's system default token TTL (768h): what a role without
/// `token_ttl` grants.
pub(super) const DEFAULT_TTL_SECS: u64 = 2_764_800;

/// Live tokens by their text.
#[derive(Default)]
pub(super) struct TokenStore {
    tokens: HashMap<String, TokenEntry>,
}

pub(super) struct TokenEntry {
    accessor: String,
    entity_id: String,
    /// Sorted, with `default`, as Vault lists them.
    policies: Vec<String>,
    metadata: Map<String, Value>,
    /// The TTL a renewal without `increment` grants again.
    ttl_secs: u64,
    expires_at: Instant,
}

/// Why a request is refused before it reaches its path.
pub(super) enum Refusal {
    /// No `X-Vault-Token`.
    NoToken,
    /// Unknown, revoked or expired.
    InvalidToken,
    /// Valid, but no policy grants the capability.
    Denied,
}

impl TokenStore {
    /// Issues a token with `policies` (and `default`) for `ttl_secs`
    /// (0: the system default); returns it and its entry.
    pub(super) fn issue(
        &mut self,
        policies: &[String],
        metadata: Map<String, Value>,
        ttl_secs: u64,
    ) -> (String, &TokenEntry) {
        let ttl_secs = if ttl_secs == 0 {
            DEFAULT_TTL_SECS
        } else {
            ttl_secs
        };
        let token = format!("hvs.{}", random_text(24));
        let entry = TokenEntry {
            accessor: random_text(24),
            entity_id: random_uuid(),
            policies: with_default(policies),
            metadata,
            ttl_secs,
            expires_at: Instant::now() + Duration::from_secs(ttl_secs),
        };
        let entry = self
            .tokens
            .entry(token.clone())
            .insert_entry(entry)
            .into_mut();
        (token, entry)
    }

    pub(super) fn revoke_all(&mut self) {
        self.tokens.clear();
    }

    /// The entry of `token` if `policies` grant it `capability` on `path`.
    pub(super) fn authorize(
        &mut self,
        token: Option<&str>,
        policies: &BTreeMap<String, Policy>,
        path: &str,
        capability: &str,
    ) -> Result<&mut TokenEntry, Refusal> {
        let token = token.ok_or(Refusal::NoToken)?;
        let live = self
            .tokens
            .get(token)
            .is_some_and(|e| e.expires_at > Instant::now());
        if !live {
            self.tokens.remove(token);
            return Err(Refusal::InvalidToken);
        }
        let entry = self.tokens.get_mut(token).ok_or(Refusal::InvalidToken)?;
        let builtin_default = Policy::vault_default();
        let granted = entry
            .policies
            .iter()
            .filter_map(|name| match policies.get(name) {
                Some(p) => Some(p),
                None if name == "default" => Some(&builtin_default),
                None => None,
            });
        if acl::allows(granted, path, capability) {
            Ok(entry)
        } else {
            Err(Refusal::Denied)
        }
    }
}

impl TokenEntry {
    /// Extends the token by `increment` seconds, or by its TTL when none;
    /// returns the new lease in seconds.
    pub(super) fn renew(&mut self, increment: Option<u64>) -> u64 {
        let lease = increment.filter(|i| *i > 0).unwrap_or(self.ttl_secs);
        self.expires_at = Instant::now() + Duration::from_secs(lease);
        lease
    }

    /// The `auth` block of a login or renewal answer.
    pub(super) fn auth_block(&self, client_token: &str, lease_secs: u64) -> Value {
        json!({
            "client_token": client_token,
            "accessor": self.accessor,
            "policies": self.policies,
            "token_policies": self.policies,
            "metadata": self.metadata,
            "lease_duration": lease_secs,
            "renewable": true,
            "entity_id": self.entity_id,
            "token_type": "service",
            "orphan": true,
            "mfa_requirement": null,
            "num_uses": 0,
        })
    }

    /// The `data` of `lookup-self`.
    pub(super) fn lookup_data(&self, client_token: &str) -> Value {
        let ttl = self
            .expires_at
            .saturating_duration_since(Instant::now())
            .as_secs();
        json!({
            "accessor": self.accessor,
            "creation_ttl": self.ttl_secs,
            "display_name": "kubernetes",
            "entity_id": self.entity_id,
            "explicit_max_ttl": 0,
            "id": client_token,
            "meta": self.metadata,
            "num_uses": 0,
            "orphan": true,
            "policies": self.policies,
            "renewable": true,
            "ttl": ttl,
            "type": "service",
        })
    }

    pub(super) fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }
}

/// Vault's policy list: lower case, `default` added, sorted, no repeats.
fn with_default(policies: &[String]) -> Vec<String> {
    let mut all: Vec<String> = policies.iter().map(|p| p.to_lowercase()).collect();
    all.push("default".to_string());
    all.sort();
    all.dedup();
    all
}

/// `n` random letters and digits.
fn random_text(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_authorize_expire_revoke() {
        let mut store = TokenStore::default();
        let policies = BTreeMap::from([(
            "app".to_string(),
            Policy::new().path("secret/data/app", &["read"]),
        )]);
        let (token, entry) = store.issue(&["App".to_string()], Map::new(), 0);
        assert_eq!(entry.policies, ["app", "default"]);
        assert_eq!(entry.ttl_secs(), DEFAULT_TTL_SECS);
        assert!(token.starts_with("hvs.") && token.len() == 28);
        let read = |s: &mut TokenStore, t: Option<&str>, path: &str| {
            s.authorize(t, &policies, path, "read").map(|_| ())
        };
        assert!(read(&mut store, Some(&token), "secret/data/app").is_ok());
        assert!(matches!(
            read(&mut store, Some(&token), "secret/data/other"),
            Err(Refusal::Denied)
        ));
        assert!(matches!(
            read(&mut store, None, "secret/data/app"),
            Err(Refusal::NoToken)
        ));
        assert!(matches!(
            read(&mut store, Some("hvs.nope"), "secret/data/app"),
            Err(Refusal::InvalidToken)
        ));
        // The built-in default policy lets a token renew itself.
        assert!(
            store
                .authorize(Some(&token), &policies, "auth/token/renew-self", "update")
                .is_ok()
        );

        let (short, _) = store.issue(&[], Map::new(), 1);
        store.tokens.get_mut(&short).unwrap().expires_at = Instant::now();
        assert!(matches!(
            read(&mut store, Some(&short), "secret/data/app"),
            Err(Refusal::InvalidToken)
        ));

        store.revoke_all();
        assert!(matches!(
            read(&mut store, Some(&token), "secret/data/app"),
            Err(Refusal::InvalidToken)
        ));
    }
}
