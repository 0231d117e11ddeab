//! ACL policies: a path (exact, `*` prefix glob at the end, `+` for one
//! segment) and its capabilities, matched as Vault matches them.
//!
//! Vault does not add up the rules that match a request: the rules of all
//! the token's policies are merged per path (capabilities joined, `deny`
//! winning), then the one most specific path decides alone — an exact path
//! first, else the highest by Vault's priority (later first wildcard, not a
//! prefix, fewer `+`, longer). So a broad `read` is cut off by a narrower
//! `deny`, and a narrower rule without `read` denies what a broad one
//! grants.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// One ACL policy: `path "<glob>" { capabilities = [...] }` blocks.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub paths: Vec<PathRule>,
}

/// One `path` block of a policy.
#[derive(Clone, Debug)]
pub struct PathRule {
    /// As Vault writes it: `secret/data/team-a/app`, `secret/data/team-a/*`,
    /// `secret/data/+/shared`.
    pub path: String,
    /// `read`, `list`, `create`, `update`, `delete`, `deny`, …
    pub capabilities: Vec<String>,
}

impl Policy {
    pub fn new() -> Policy {
        Policy::default()
    }

    /// Adds `path "<path>" { capabilities = [...] }`.
    pub fn path(mut self, path: &str, capabilities: &[&str]) -> Policy {
        self.paths.push(PathRule {
            path: path.to_string(),
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        });
        self
    }

    /// The part of Vault's built-in `default` policy that the stand-in
    /// serves: a token may renew and look up itself, and renew and look up
    /// leases. Revoking a lease is not in it: a policy must grant
    /// `update` on `sys/leases/revoke`.
    pub(super) fn vault_default() -> Policy {
        Policy::new()
            .path("auth/token/renew-self", &["update"])
            .path("auth/token/lookup-self", &["read"])
            .path("sys/leases/renew", &["update"])
            .path("sys/leases/lookup", &["update"])
    }
}

/// Whether `policies` together grant `capability` on `path` (an API path
/// without `/v1/`).
pub(super) fn allows<'a>(
    policies: impl IntoIterator<Item = &'a Policy>,
    path: &str,
    capability: &str,
) -> bool {
    let merged = merge(policies);
    let decisive = merged
        .get_key_value(path)
        .filter(|(pattern, _)| !is_wildcard(pattern))
        .map(|(_, caps)| caps)
        .or_else(|| best_wildcard(&merged, path));
    decisive.is_some_and(|caps| !caps.contains("deny") && caps.contains(capability))
}

/// The capabilities per path pattern over all policies.
fn merge<'a>(
    policies: impl IntoIterator<Item = &'a Policy>,
) -> BTreeMap<&'a str, BTreeSet<&'a str>> {
    let mut merged: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for rule in policies.into_iter().flat_map(|p| &p.paths) {
        merged
            .entry(rule.path.as_str())
            .or_default()
            .extend(rule.capabilities.iter().map(String::as_str));
    }
    merged
}

fn is_wildcard(pattern: &str) -> bool {
    pattern.ends_with('*') || pattern.contains('+')
}

/// The capabilities of the highest-priority wildcard pattern matching
/// `path`, if any does.
fn best_wildcard<'a>(
    merged: &'a BTreeMap<&str, BTreeSet<&str>>,
    path: &str,
) -> Option<&'a BTreeSet<&'a str>> {
    merged
        .iter()
        .filter(|(pattern, _)| is_wildcard(pattern))
        .filter_map(|(pattern, caps)| wildcard_match(pattern, path).map(|m| (m, caps)))
        .max_by(|(a, _), (b, _)| a.priority().cmp(&b.priority()))
        .map(|(_, caps)| caps)
}

/// How a wildcard pattern matched: what Vault ranks matches by.
struct Match<'p> {
    /// Byte offset of the first `+` (or, for a plain prefix glob, of `*`).
    first_wildcard: usize,
    is_prefix: bool,
    plus_segments: usize,
    /// The pattern without its trailing `*`.
    stem: &'p str,
}

impl Match<'_> {
    /// Larger is more specific.
    fn priority(&self) -> (usize, bool, Reverse<usize>, usize, Reverse<&str>) {
        (
            self.first_wildcard,
            !self.is_prefix,
            Reverse(self.plus_segments),
            self.stem.len(),
            Reverse(self.stem),
        )
    }
}

fn wildcard_match<'p>(pattern: &'p str, path: &str) -> Option<Match<'p>> {
    let is_prefix = pattern.ends_with('*');
    let stem = pattern.strip_suffix('*').unwrap_or(pattern);
    let Some(first_plus) = stem.find('+') else {
        // A plain prefix glob: a string prefix, not segment-aware.
        return path.starts_with(stem).then_some(Match {
            first_wildcard: stem.len(),
            is_prefix: true,
            plus_segments: 0,
            stem,
        });
    };
    let wanted: Vec<&str> = stem.split('/').collect();
    let given: Vec<&str> = path.split('/').collect();
    if given.len() < wanted.len() || (!is_prefix && given.len() != wanted.len()) {
        return None;
    }
    let last = wanted.len() - 1;
    let mut plus_segments = 0;
    for (i, (w, g)) in wanted.iter().zip(&given).enumerate() {
        if *w == "+" {
            plus_segments += 1;
        } else if w != g && !(is_prefix && i == last && g.starts_with(w)) {
            return None;
        }
    }
    Some(Match {
        first_wildcard: first_plus,
        is_prefix,
        plus_segments,
        stem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn can_read(p: &[Policy], path: &str) -> bool {
        allows(p, path, "read")
    }

    #[test]
    fn exact_prefix_and_segment_paths() {
        let p = [Policy::new()
            .path("secret/data/team-a/app", &["read"])
            .path("secret/data/shared/*", &["read"])
            .path("secret/data/+/common", &["read", "list"])];
        assert!(can_read(&p, "secret/data/team-a/app"));
        assert!(!can_read(&p, "secret/data/team-a/app2"));
        assert!(!can_read(&p, "secret/data/team-a"));
        assert!(can_read(&p, "secret/data/shared/x/y"));
        // A prefix glob is a string prefix: `shared/*` does not hold `shared`.
        assert!(!can_read(&p, "secret/data/shared"));
        assert!(can_read(&p, "secret/data/team-b/common"));
        assert!(!can_read(&p, "secret/data/team-b/common/more"));
        assert!(!can_read(&p, "secret/metadata/team-a/app"));
        assert!(!allows(&p, "secret/data/team-a/app", "update"));
        assert!(!can_read(&[], "secret/data/team-a/app"));
    }

    #[test]
    fn most_specific_rule_decides_alone() {
        let broad = Policy::new().path("secret/data/*", &["read"]);
        let narrow = Policy::new().path("secret/data/team-b/*", &["list"]);
        let p = [broad.clone(), narrow];
        assert!(can_read(&p, "secret/data/team-a/app"));
        assert!(!can_read(&p, "secret/data/team-b/app"));
        let deny = Policy::new().path("secret/data/team-a/app", &["deny"]);
        assert!(!can_read(&[broad.clone(), deny], "secret/data/team-a/app"));
        // Same path in two policies: capabilities joined, deny wins.
        let also = Policy::new().path("secret/data/*", &["list"]);
        assert!(can_read(&[broad.clone(), also], "secret/data/x"));
        let denied = Policy::new().path("secret/data/*", &["deny"]);
        assert!(!can_read(&[broad, denied], "secret/data/x"));
    }

    #[test]
    fn priority_between_wildcards() {
        // Later first wildcard wins: `+` at the third segment over `*` at
        // the second.
        let p = [Policy::new()
            .path("secret/data/*", &["read"])
            .path("secret/data/team-a/+", &["list"])];
        assert!(!can_read(&p, "secret/data/team-a/app"));
        assert!(can_read(&p, "secret/data/team-b/app"));
        // Not a prefix beats prefix at the same first wildcard.
        let p = [Policy::new()
            .path("secret/data/+/app*", &["read"])
            .path("secret/data/+/app", &["list"])];
        assert!(!can_read(&p, "secret/data/x/app"));
        assert!(can_read(&p, "secret/data/x/apple"));
    }
}
