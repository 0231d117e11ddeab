//! The kubernetes auth method: roles and the login, checked as
//! vault-plugin-auth-kubernetes checks it (the order, statuses and texts
//! are listed in [`super`]'s documentation).

use serde_json::{Map, Value, json};

use super::Shared;
use super::reply::{self, Reply};
use crate::sa_token::{Jwt, unix_now};

/// go-jose's `DefaultLeeway`, which Vault's JWT validation applies to
/// `exp`, `nbf` and `iat`.
pub const CLOCK_SKEW_LEEWAY_SECS: i64 = 60;

/// A kubernetes auth role (`vault write auth/kubernetes/role/<name> ...`).
#[derive(Clone, Debug)]
pub struct Role {
    /// Names, or globs (`app-*`), or `["*"]` for any.
    pub bound_service_account_names: Vec<String>,
    /// Namespaces, or globs, or `["*"]` for any.
    pub bound_service_account_namespaces: Vec<String>,
    /// When set, the token's `aud` must hold it.
    pub audience: Option<String>,
    pub token_policies: Vec<String>,
    /// 0: Vault's system default (768h).
    pub token_ttl_secs: u64,
}

impl Role {
    /// A role bound to `names` in `namespaces` that grants `policies`, no
    /// audience, default TTL.
    pub fn new(names: &[&str], namespaces: &[&str], policies: &[&str]) -> Role {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Role {
            bound_service_account_names: owned(names),
            bound_service_account_namespaces: owned(namespaces),
            audience: None,
            token_policies: owned(policies),
            token_ttl_secs: 0,
        }
    }

    pub fn audience(mut self, audience: &str) -> Role {
        self.audience = Some(audience.to_string());
        self
    }

    pub fn token_ttl_secs(mut self, secs: u64) -> Role {
        self.token_ttl_secs = secs;
        self
    }

    /// Vault's checks when a role is written; a test that writes a role
    /// Vault would refuse fails here, with Vault's reason.
    pub(super) fn check(&self, name: &str) {
        for (field, values) in [
            (
                "bound_service_account_names",
                &self.bound_service_account_names,
            ),
            (
                "bound_service_account_namespaces",
                &self.bound_service_account_namespaces,
            ),
        ] {
            assert!(
                !values.is_empty(),
                "role {name}: {field:?} can not be empty"
            );
            assert!(
                values.len() == 1 || !values.iter().any(|v| v == "*"),
                "role {name}: {field:?} can not mix \"*\" with values"
            );
        }
    }
}

/// The service account a token names.
struct Account<'a> {
    name: &'a str,
    namespace: &'a str,
    uid: &'a str,
}

/// Answers a login request whose body is `body`.
pub(super) fn login(shared: &Shared, body: &[u8]) -> Reply {
    let fields = reply::json_object(body);
    shared.count_login(fields.as_ref().ok().and_then(|f| non_empty_str(f, "role")));
    let fields = match fields {
        Ok(f) => f,
        Err(bad) => return bad.reply(),
    };
    let Some(role_name) = non_empty_str(&fields, "role") else {
        return reply::bad_request("missing role");
    };
    let Some(jwt) = non_empty_str(&fields, "jwt") else {
        return reply::bad_request("missing jwt");
    };
    let mut state = shared.state();
    let Some(role) = state.roles.get(role_name).cloned() else {
        return reply::bad_request(&format!("invalid role name {role_name:?}"));
    };
    let Some(token) = Jwt::parse(jwt) else {
        return reply::login_denied();
    };
    let account = match admit(&role, &token.claims) {
        Ok(a) => a,
        Err(message) => return reply::forbidden(message),
    };
    if !token.signed_with(&shared.signing_key) || account.uid.is_empty() {
        return reply::login_denied();
    }
    let metadata = Map::from_iter([
        ("role".to_string(), json!(role_name)),
        ("service_account_name".to_string(), json!(account.name)),
        (
            "service_account_namespace".to_string(),
            json!(account.namespace),
        ),
        ("service_account_secret_name".to_string(), json!("")),
        ("service_account_uid".to_string(), json!(account.uid)),
    ]);
    let (client_token, entry) =
        state
            .tokens
            .issue(&role.token_policies, metadata, role.token_ttl_secs);
    let auth = entry.auth_block(&client_token, entry.ttl_secs());
    reply::answer(Value::Null, auth, "kubernetes")
}

fn non_empty_str<'a>(fields: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    fields
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Steps 3 to 5: the claims against the role.
fn admit<'a>(role: &Role, claims: &'a Value) -> Result<Account<'a>, &'static str> {
    if let Some(wanted) = &role.audience
        && !audiences(claims).any(|a| a == wanted)
    {
        return Err(
            "invalid audience (aud) claim: audience claim does not match any expected audience",
        );
    }
    check_times(claims)?;
    let account = account(claims);
    // A lone `*` is a glob that matches anything, as Vault's special case.
    if !matches_any(&role.bound_service_account_names, account.name) {
        return Err("service account name not authorized");
    }
    if !matches_any(&role.bound_service_account_namespaces, account.namespace) {
        return Err("namespace not authorized");
    }
    Ok(account)
}

/// `aud`, a string or an array of strings.
fn audiences(claims: &Value) -> impl Iterator<Item = &str> {
    let aud = &claims["aud"];
    aud.as_str().into_iter().chain(
        aud.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str),
    )
}

fn check_times(claims: &Value) -> Result<(), &'static str> {
    let now = unix_now();
    let time = |claim: &str| claims[claim].as_f64().map(|t| t as i64);
    if time("nbf").is_some_and(|nbf| now + CLOCK_SKEW_LEEWAY_SECS < nbf) {
        return Err("invalid not before (nbf) claim: token not yet valid");
    }
    if time("exp").is_some_and(|exp| now - CLOCK_SKEW_LEEWAY_SECS > exp) {
        return Err("invalid expiration time (exp) claim: token is expired");
    }
    if time("iat").is_some_and(|iat| now + CLOCK_SKEW_LEEWAY_SECS < iat) {
        return Err("invalid issued at (iat) claim: token issued in the future");
    }
    Ok(())
}

/// The account from a projected token's `kubernetes.io` claim, or from a
/// legacy secret token's flat `kubernetes.io/serviceaccount/...` claims.
fn account(claims: &Value) -> Account<'_> {
    fn text(v: &Value) -> &str {
        v.as_str().unwrap_or("")
    }
    let projected = &claims["kubernetes.io"];
    if projected.is_object() {
        let sa = &projected["serviceaccount"];
        return Account {
            name: text(&sa["name"]),
            namespace: text(&projected["namespace"]),
            uid: text(&sa["uid"]),
        };
    }
    Account {
        name: text(&claims["kubernetes.io/serviceaccount/service-account.name"]),
        namespace: text(&claims["kubernetes.io/serviceaccount/namespace"]),
        uid: text(&claims["kubernetes.io/serviceaccount/service-account.uid"]),
    }
}

fn matches_any(globs: &[String], value: &str) -> bool {
    globs.iter().any(|g| glob_match(g, value))
}

/// go-glob's match, which Vault's `StrListContainsGlob` uses: `*` stands
/// for any run of characters, anywhere in the pattern.
fn glob_match(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == value;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    let Some(mut rest) = value.strip_prefix(first) else {
        return false;
    };
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("app", "app"));
        assert!(!glob_match("app", "app2"));
        assert!(glob_match("app-*", "app-web"));
        assert!(glob_match("*-web", "app-web"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxcyyb"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn legacy_claims() {
        let claims = json!({
            "kubernetes.io/serviceaccount/namespace": "ns",
            "kubernetes.io/serviceaccount/service-account.name": "sa",
            "kubernetes.io/serviceaccount/service-account.uid": "u",
        });
        let a = account(&claims);
        assert_eq!((a.name, a.namespace, a.uid), ("sa", "ns", "u"));
    }
}
