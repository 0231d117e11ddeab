//! Vault's answers: the response envelope, and errors as `{"errors":[...]}`
//! with the texts Vault's request handling produces.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::tokens::Refusal;

pub(super) type Reply = Response;

fn json_reply(status: StatusCode, body: &Value) -> Reply {
    let mut reply = (status, axum::Json(body)).into_response();
    reply
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    reply
}

fn errors(status: StatusCode, errors: &[&str]) -> Reply {
    json_reply(status, &json!({ "errors": errors }))
}

/// A 200 answer: `data` and `auth` in Vault's envelope.
pub(super) fn answer(data: Value, auth: Value, mount_type: &str) -> Reply {
    json_reply(
        StatusCode::OK,
        &json!({
            "request_id": crate::sa_token::random_uuid(),
            "lease_id": "",
            "renewable": false,
            "lease_duration": 0,
            "data": data,
            "wrap_info": null,
            "warnings": null,
            "auth": auth,
            "mount_type": mount_type,
        }),
    )
}

/// A 200 answer carrying a lease: a dynamic secret's (with `data`) or a
/// renewal's (`data` null).
pub(super) fn leased(lease_id: &str, duration: u64, data: Value) -> Reply {
    json_reply(
        StatusCode::OK,
        &json!({
            "request_id": crate::sa_token::random_uuid(),
            "lease_id": lease_id,
            "renewable": true,
            "lease_duration": duration,
            "data": data,
            "wrap_info": null,
            "warnings": null,
            "auth": null,
        }),
    )
}

/// 204, Vault's answer to a write with nothing to say.
pub(super) fn no_content() -> Reply {
    let mut reply = StatusCode::NO_CONTENT.into_response();
    reply
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    reply
}

/// A request Vault refuses as malformed: the text of its 400.
pub(super) struct BadRequest(pub(super) String);

impl BadRequest {
    pub(super) fn reply(&self) -> Reply {
        bad_request(&self.0)
    }
}

/// A request body as Vault reads it: empty or a JSON object. A syntax
/// error's text names a position, never the body's content.
pub(super) fn json_object(body: &[u8]) -> Result<Map<String, Value>, BadRequest> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(BadRequest(
            "failed to parse JSON input: the body is not a JSON object".into(),
        )),
        Err(e) => Err(BadRequest(format!("failed to parse JSON input: {e}"))),
    }
}

pub(super) fn bad_request(message: &str) -> Reply {
    errors(StatusCode::BAD_REQUEST, &[message])
}

/// A login refused with the auth method's reason.
pub(super) fn forbidden(message: &str) -> Reply {
    errors(StatusCode::FORBIDDEN, &[message])
}

/// A login refused as `logical.ErrPermissionDenied`: a bad JWT, or one the
/// API server's TokenReview rejects.
pub(super) fn login_denied() -> Reply {
    forbidden("permission denied")
}

/// A request refused before its path: Vault wraps the token check's
/// errors in a multierror, except for a missing token.
pub(super) fn refused(why: Refusal) -> Reply {
    forbidden(match why {
        Refusal::NoToken => "permission denied",
        Refusal::InvalidToken => "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n",
        Refusal::Denied => "1 error occurred:\n\t* permission denied\n\n",
    })
}

/// KV's answer for a path or version that does not exist.
pub(super) fn not_found() -> Reply {
    errors(StatusCode::NOT_FOUND, &[])
}

/// A path no mount serves.
pub(super) fn no_route(path: &str) -> Reply {
    errors(
        StatusCode::NOT_FOUND,
        &[&format!(
            "no handler for route {path:?}. route entry not found."
        )],
    )
}

/// A method the path does not serve.
pub(super) fn method_not_allowed() -> Reply {
    errors(StatusCode::METHOD_NOT_ALLOWED, &[])
}
