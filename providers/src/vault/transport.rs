//! Sends one vaultrs endpoint to Vault and reads the answer within
//! [`MAX_ANSWER_BYTES`].
//!
//! vaultrs builds the request: the endpoint's path, method, query and JSON
//! body, then its `EndpointMiddleware` adds the API version, `X-Vault-Token`
//! and `X-Vault-Namespace`. The sending and the reading are ours: vaultrs
//! executes through rustify's reqwest client, which reads every answer
//! whole (`Response::bytes`) and turns error answers into `String`s that
//! vaultrs logs at ERROR, and an error answer can quote the token or the
//! login JWT it was sent (see [`crate::upstream`]).

use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use rustify::endpoint::{Endpoint, MiddleWare};
use secrecy::ExposeSecret;
use vaultrs::api::EndpointMiddleware;
use zeroize::{Zeroize, Zeroizing};

use super::Token;
use crate::limit::{Exceeded, MAX_ANSWER_BYTES, ReadError, read_reqwest};

/// The origin vaultrs builds requests against. Only the path and query are
/// kept and put under the configured address: the middleware puts the API
/// version in front of the whole path, before any path the address has
/// (Vault behind a proxy at `https://proxy/vault`).
const REQUEST_BASE: &str = "http://vault";

/// Vault's HTTP API version, the first path segment.
const API_VERSION: &str = "v1";

/// One Vault server's address and namespace over one HTTP client (a
/// clone shares the client and its connection pool).
#[derive(Clone)]
pub(super) struct Transport {
    http: reqwest::Client,
    /// `https://vault:8200`, no trailing slash.
    address: String,
    /// `X-Vault-Namespace`; `None` also when it cannot be a header value.
    namespace: Option<String>,
}

/// Vault's answer: its status and body, the body in zeroizing memory.
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) body: Zeroizing<Vec<u8>>,
}

/// Why no answer was read.
#[derive(Debug, thiserror::Error)]
pub(super) enum SendError {
    #[error("cannot build the request")]
    Build(#[source] rustify::errors::ClientError),
    #[error("the request failed")]
    Transport(#[source] reqwest::Error),
    #[error(transparent)]
    TooLarge(Exceeded),
}

impl Transport {
    pub(super) fn new(http: reqwest::Client, address: &str, namespace: Option<&str>) -> Self {
        Transport {
            http,
            address: address.to_string(),
            // vaultrs unwraps the header value it makes; one that cannot be
            // a header is left out, as before vaultrs.
            namespace: namespace.filter(|ns| header_safe(ns)).map(str::to_string),
        }
    }

    /// Sends `endpoint` with `token` (none for a login) and reads the answer.
    pub(super) async fn send<E: Endpoint>(
        &self,
        endpoint: &E,
        token: Option<&Token>,
    ) -> Result<Reply, SendError> {
        let response = self
            .prepare(endpoint, token)?
            .send()
            .await
            .map_err(SendError::Transport)?;
        let status = response.status().as_u16();
        // Error answers are bounded too: a refusal can be as large as a value.
        let body = read_reqwest(response, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| match e {
                ReadError::Exceeded(x) => SendError::TooLarge(x),
                ReadError::Transport(e) => SendError::Transport(e),
            })?;
        Ok(Reply { status, body })
    }

    /// The request vaultrs builds, moved under the configured address.
    fn prepare<E: Endpoint>(
        &self,
        endpoint: &E,
        token: Option<&Token>,
    ) -> Result<reqwest::RequestBuilder, SendError> {
        let (parts, body) = self.build(endpoint, token)?.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        // An endpoint without query fields still leaves an empty `?`.
        let url = format!("{}{}", self.address, path.trim_end_matches('?'));
        let outgoing = self.http.request(parts.method, url).headers(parts.headers);
        if body.is_empty() {
            return Ok(outgoing);
        }
        // Wiped when reqwest drops the last reference to it.
        Ok(outgoing
            .header(CONTENT_TYPE, "application/json")
            .body(Bytes::from_owner(Zeroizing::new(body))))
    }

    /// The request as vaultrs builds it, the token header marked sensitive.
    fn build<E: Endpoint>(
        &self,
        endpoint: &E,
        token: Option<&Token>,
    ) -> Result<http::Request<Vec<u8>>, SendError> {
        let mut request = endpoint.request(REQUEST_BASE).map_err(SendError::Build)?;
        let mut middleware = EndpointMiddleware {
            token: header_token(token),
            version: API_VERSION.to_string(),
            wrap: None,
            namespace: self.namespace.clone(),
        };
        let added = middleware.request(endpoint, &mut request);
        middleware.token.zeroize();
        added.map_err(SendError::Build)?;
        if let Some(value) = request.headers_mut().get_mut("X-Vault-Token") {
            // Keeps the token out of reqwest/hyper debug output.
            value.set_sensitive(true);
        }
        Ok(request)
    }
}

/// The token for the middleware, or empty (no header) when there is none
/// or it cannot be a header value: vaultrs unwraps the header value it
/// makes, and Vault answers 403 to a request without a token, as before.
fn header_token(token: Option<&Token>) -> String {
    match token.map(|t| t.expose_secret()) {
        Some(t) if header_safe(t) => t.to_string(),
        _ => String::new(),
    }
}

/// http's rule for a header value (`HeaderValue::from_str`), checked
/// without making one, which would be one more copy of the token.
fn header_safe(text: &str) -> bool {
    text.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use reqwest::header::HeaderValue;
    use secrecy::SecretBox;
    use vaultrs::api::auth::kubernetes::requests::LoginWithKubernetesRequest;
    use vaultrs::api::kv1::requests::GetSecretRequest;
    use vaultrs::api::kv2::requests::ReadSecretRequest;
    use vaultrs::api::token::requests::RenewTokenSelfRequest;

    use super::*;

    fn transport(address: &str, namespace: Option<&str>) -> Transport {
        crate::install_crypto_provider();
        Transport::new(reqwest::Client::new(), address, namespace)
    }

    fn prepared<E: Endpoint>(t: &Transport, e: &E, token: Option<&Token>) -> reqwest::Request {
        t.prepare(e, token).unwrap().build().unwrap()
    }

    fn token(text: &str) -> Token {
        Arc::new(SecretBox::new(text.into()))
    }

    #[test]
    fn urls_keep_a_path_in_the_address() {
        let t = transport("https://proxy.example/vault", None);
        let read = ReadSecretRequest {
            mount: "secret".into(),
            path: "team/app".into(),
            version: Some(3),
        };
        let r = prepared(&t, &read, None);
        assert_eq!(
            r.url().as_str(),
            "https://proxy.example/vault/v1/secret/data/team/app?version=3"
        );
        assert_eq!(r.method(), "GET");
        let latest = ReadSecretRequest {
            version: None,
            ..read
        };
        assert_eq!(
            prepared(&t, &latest, None).url().as_str(),
            "https://proxy.example/vault/v1/secret/data/team/app"
        );
        let kv1 = GetSecretRequest {
            mount: "database".into(),
            path: "creds/app".into(),
        };
        assert_eq!(
            prepared(&t, &kv1, None).url().as_str(),
            "https://proxy.example/vault/v1/database/creds/app"
        );
        // vaultrs 0.8 writes this path with a leading tab; it must not show.
        let renew = prepared(&t, &RenewTokenSelfRequest { increment: None }, None);
        assert_eq!(
            renew.url().as_str(),
            "https://proxy.example/vault/v1/auth/token/renew-self"
        );
        assert_eq!(renew.method(), "POST");
        assert!(renew.body().is_none());
    }

    #[test]
    fn headers_and_login_body() {
        let t = transport("http://127.0.0.1:8200", Some("team-a"));
        let login = LoginWithKubernetesRequest {
            mount: "k8s".into(),
            role: "app".into(),
            jwt: "eyJ.jwt".into(),
        };
        let r = prepared(&t, &login, None);
        assert_eq!(r.url().as_str(), "http://127.0.0.1:8200/v1/auth/k8s/login");
        assert!(r.headers().get("X-Vault-Token").is_none());
        assert_eq!(r.headers()["X-Vault-Namespace"], "team-a");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        let body: serde_json::Value =
            serde_json::from_slice(r.body().unwrap().as_bytes().unwrap()).unwrap();
        assert_eq!(body, serde_json::json!({"role": "app", "jwt": "eyJ.jwt"}));

        let read = GetSecretRequest {
            mount: "kv".into(),
            path: "x".into(),
        };
        let r = prepared(&t, &read, Some(&token("hvs.token")));
        let sent = &r.headers()["X-Vault-Token"];
        assert_eq!(sent, "hvs.token");
        assert!(sent.is_sensitive());
        assert!(!format!("{:?}", r.headers()).contains("hvs.token"));
        // A token or namespace that cannot be a header is left out (vaultrs
        // would panic on it); Vault then refuses the request.
        let t = transport("http://127.0.0.1:8200", Some("team\na"));
        let r = prepared(&t, &read, Some(&token("hvs.bad\ntoken")));
        assert!(r.headers().get("X-Vault-Token").is_none());
        assert!(r.headers().get("X-Vault-Namespace").is_none());
    }

    #[test]
    fn header_safe_is_http_rule() {
        for c in (0u8..=127).map(char::from).chain(['é', '€', '\u{10FFFF}']) {
            let text = format!("a{c}b");
            assert_eq!(
                header_safe(&text),
                HeaderValue::from_str(&text).is_ok(),
                "{c:?}"
            );
        }
    }
}
