//! The HTTP side: which path is which call, the client token, the ACL
//! check before any path is served, and the counting.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use serde_json::Value;

use super::kv::{KvStore, Missing};
use super::leases::LeaseStore;
use super::reply::{self, BadRequest, Reply};
use super::tokens::TokenEntry;
use super::{Shared, login};

const RENEW_SELF: &str = "auth/token/renew-self";
const LOOKUP_SELF: &str = "auth/token/lookup-self";
const RENEW_LEASE: &str = "sys/leases/renew";
const REVOKE_LEASE: &str = "sys/leases/revoke";
const LOOKUP_LEASE: &str = "sys/leases/lookup";

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let Some(path) = uri.path().strip_prefix("/v1/") else {
        return reply::no_route(uri.path());
    };
    if path == shared.login_path {
        return match method {
            Method::POST | Method::PUT => login::login(&shared, &body),
            _ => reply::method_not_allowed(),
        };
    }
    let Some(capability) = capability(&method, uri.query()) else {
        return reply::method_not_allowed();
    };
    let kv_path = path.strip_prefix(shared.kv_data_prefix.as_str());
    match (path, kv_path, capability) {
        (RENEW_SELF, _, _) => shared.count_renewal(),
        (_, Some(p), "read") => shared.count_read(p),
        _ => {}
    }
    let token = client_token(&headers);
    let mut guard = shared.state();
    let state = &mut *guard;
    let entry = match state
        .tokens
        .authorize(token, &state.policies, path, capability)
    {
        Ok(entry) => entry,
        Err(why) => return reply::refused(why),
    };
    match (path, kv_path, capability) {
        (RENEW_SELF, _, "update") => renew_self(entry, token.unwrap_or_default(), &body),
        (LOOKUP_SELF, _, "read") => reply::answer(
            entry.lookup_data(token.unwrap_or_default()),
            Value::Null,
            "token",
        ),
        (RENEW_LEASE, _, "update") => renew_lease(&mut state.leases, &body),
        (REVOKE_LEASE, _, "update") => revoke_lease(&mut state.leases, &body),
        (LOOKUP_LEASE, _, "update") => lookup_lease(&mut state.leases, &body),
        (_, Some(p), "read") => read_kv(&state.kv, p, uri.query()),
        (_, None, "read") if state.leases.is_creds_path(path) => {
            issue_credential(&mut state.leases, path)
        }
        (RENEW_SELF | LOOKUP_SELF | RENEW_LEASE | REVOKE_LEASE | LOOKUP_LEASE, _, _)
        | (_, Some(_), _) => reply::method_not_allowed(),
        _ => reply::no_route(path),
    }
}

fn renew_self(entry: &mut TokenEntry, client_token: &str, body: &[u8]) -> Reply {
    let increment = match reply::json_object(body).and_then(|f| increment(&f)) {
        Ok(i) => i,
        Err(bad) => return bad.reply(),
    };
    let lease = entry.renew(increment);
    reply::answer(Value::Null, entry.auth_block(client_token, lease), "token")
}

fn issue_credential(leases: &mut LeaseStore, creds_path: &str) -> Reply {
    match leases.issue(creds_path) {
        Some((lease_id, duration, data)) => reply::leased(&lease_id, duration, data),
        None => reply::no_route(creds_path),
    }
}

/// The `lease_id` of a `sys/leases/*` body: Vault's 400 when it is missing.
fn lease_id(
    body: &[u8],
    missing: &str,
) -> Result<(String, serde_json::Map<String, Value>), BadRequest> {
    let fields = reply::json_object(body)?;
    match fields.get("lease_id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => Ok((id.to_string(), fields)),
        _ => Err(BadRequest(missing.into())),
    }
}

fn renew_lease(leases: &mut LeaseStore, body: &[u8]) -> Reply {
    let (id, fields) = match lease_id(body, "lease_id must be specified") {
        Ok(parsed) => parsed,
        Err(bad) => return bad.reply(),
    };
    let increment = match increment(&fields) {
        Ok(i) => i,
        Err(bad) => return bad.reply(),
    };
    match leases.renew(&id, increment) {
        Some(duration) => reply::leased(&id, duration, Value::Null),
        None => reply::bad_request("lease not found"),
    }
}

/// 204 whether or not the lease exists, as Vault answers.
fn revoke_lease(leases: &mut LeaseStore, body: &[u8]) -> Reply {
    match lease_id(body, "lease_id must be specified") {
        Ok((id, _)) => {
            leases.revoke(&id);
            reply::no_content()
        }
        Err(bad) => bad.reply(),
    }
}

fn lookup_lease(leases: &mut LeaseStore, body: &[u8]) -> Reply {
    match lease_id(body, "missing lease_id") {
        Ok((id, _)) => match leases.lookup(&id) {
            Some(data) => reply::answer(data, Value::Null, "system"),
            None => reply::bad_request("invalid lease"),
        },
        Err(bad) => bad.reply(),
    }
}

fn read_kv(kv: &KvStore, path: &str, query: Option<&str>) -> Reply {
    match kv.read(path, query) {
        Ok(data) => reply::answer(data, Value::Null, "kv"),
        Err(Missing::NotFound) => reply::not_found(),
        Err(Missing::BadVersion) => {
            reply::bad_request("error converting input for field \"version\": not an integer")
        }
    }
}

/// The ACL capability a request needs, by Vault's method mapping.
fn capability(method: &Method, query: Option<&str>) -> Option<&'static str> {
    let listing = query.is_some_and(|q| q.split('&').any(|p| p == "list=true"));
    Some(match method.as_str() {
        "GET" if listing => "list",
        "GET" => "read",
        "POST" | "PUT" => "update",
        "DELETE" => "delete",
        "PATCH" => "patch",
        "LIST" => "list",
        _ => return None,
    })
}

/// `X-Vault-Token`, else `Authorization: Bearer`, as Vault accepts both.
fn client_token(headers: &HeaderMap) -> Option<&str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    header("x-vault-token")
        .or_else(|| header("authorization").and_then(|v| v.strip_prefix("Bearer ")))
        .filter(|t| !t.is_empty())
}

/// renew-self's `increment`: seconds, as a number or as `"3600"`, `"60m"`,
/// `"1h"`; none or 0 for the token's own TTL.
fn increment(fields: &serde_json::Map<String, Value>) -> Result<Option<u64>, BadRequest> {
    let bad = || BadRequest("error converting input for field \"increment\"".into());
    match fields.get("increment") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(bad),
        Some(Value::String(s)) => duration_secs(s).map(Some).ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

fn duration_secs(text: &str) -> Option<u64> {
    let (digits, unit) = match text.char_indices().last()? {
        (i, 's') => (&text[..i], 1),
        (i, 'm') => (&text[..i], 60),
        (i, 'h') => (&text[..i], 3600),
        _ => (text, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_to_capabilities() {
        assert_eq!(capability(&Method::GET, None), Some("read"));
        assert_eq!(capability(&Method::GET, Some("list=true")), Some("list"));
        assert_eq!(capability(&Method::PUT, None), Some("update"));
        assert_eq!(capability(&Method::HEAD, None), None);
    }

    #[test]
    fn increments() {
        assert_eq!(duration_secs("90"), Some(90));
        assert_eq!(duration_secs("90s"), Some(90));
        assert_eq!(duration_secs("2m"), Some(120));
        assert_eq!(duration_secs("1h"), Some(3600));
        assert_eq!(duration_secs("h"), None);
        assert_eq!(duration_secs(""), None);
        assert_eq!(duration_secs("1d"), None);
    }
}
