//! Kubernetes projected service-account tokens, minted for tests.
//!
//! A token has the claims the API server writes into a projected token
//! (Kubernetes 1.30 and later): `iss`, `sub`
//! (`system:serviceaccount:<namespace>:<name>`), `aud` (an array), `exp`,
//! `iat`, `nbf`, `jti`, and `kubernetes.io` with the namespace, the service
//! account, and (for a token bound to a pod) the pod and its node.
//!
//! Left out: the API server signs with RS256 or ES256 under its
//! service-account key; these tokens are signed with HS256 under a shared
//! test key, so that a stand-in can check the signature where the real peer
//! asks the API server (Vault's TokenReview) without a key pair.

use aws_lc_rs::{digest, hmac};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// The key the stand-in cluster signs its tokens with: the default of
/// [`crate::vault::VaultSpec`].
pub const CLUSTER_KEY: &[u8] = b"kernelseal-standin-cluster-service-account-key";

/// The `iss` of tokens the stand-in cluster mints.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The `kid` in the header: the API server names its key the same way.
const KEY_ID: &str = "kernelseal-standin";

/// The shortest life the API server gives a projected token (10 minutes).
const MIN_LIFETIME_SECS: i64 = 600;

/// What a token says. Built with [`TokenSpec::new`], then changed field by
/// field (`TokenSpec { audiences: vec![..], ..TokenSpec::new(..) }`).
#[derive(Clone, Debug)]
pub struct TokenSpec {
    pub issuer: String,
    pub namespace: String,
    pub service_account: String,
    /// The service account's UID; [`TokenSpec::new`] derives it from the
    /// namespace and name, so that every pod of one account shows the same.
    pub service_account_uid: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub node_name: String,
    pub audiences: Vec<String>,
    /// Seconds from now until `exp`; negative for a token already expired.
    /// Vault, like the API server, accepts a token up to a minute past
    /// `exp` (clock-skew leeway): a token it refuses as expired needs less
    /// than -60.
    pub expires_in_secs: i64,
    /// A token not bound to a pod (`kubectl create token` without
    /// `--bound-object-kind Pod`): no `pod` and no `node` claim.
    pub omit_pod: bool,
}

impl TokenSpec {
    /// A pod's projected token for audience `vault`, valid for an hour, on
    /// node `standin-node`.
    pub fn new(namespace: &str, service_account: &str, pod_name: &str, pod_uid: &str) -> TokenSpec {
        TokenSpec {
            issuer: ISSUER.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
            service_account_uid: derived_uid(&format!(
                "serviceaccount/{namespace}/{service_account}"
            )),
            pod_name: pod_name.to_string(),
            pod_uid: pod_uid.to_string(),
            node_name: "standin-node".to_string(),
            audiences: vec!["vault".to_string()],
            expires_in_secs: 3600,
            omit_pod: false,
        }
    }

    /// The claims, in the API server's JSON.
    pub fn claims(&self) -> Value {
        let now = unix_now();
        let exp = now + self.expires_in_secs;
        // A token is never issued after it expires.
        let iat = now.min(exp - MIN_LIFETIME_SECS);
        let mut kubernetes = json!({
            "namespace": self.namespace,
            "serviceaccount": { "name": self.service_account, "uid": self.service_account_uid },
        });
        if !self.omit_pod {
            kubernetes["pod"] = json!({ "name": self.pod_name, "uid": self.pod_uid });
            kubernetes["node"] = json!({
                "name": self.node_name,
                "uid": derived_uid(&format!("node/{}", self.node_name)),
            });
        }
        json!({
            "aud": self.audiences,
            "exp": exp,
            "iat": iat,
            "iss": self.issuer,
            "jti": random_uuid(),
            "kubernetes.io": kubernetes,
            "nbf": iat,
            "sub": format!("system:serviceaccount:{}:{}", self.namespace, self.service_account),
        })
    }
}

/// A token with `spec`'s claims, signed (HS256) with `key`.
pub fn mint(spec: &TokenSpec, key: &[u8]) -> String {
    let header = json!({ "alg": "HS256", "kid": KEY_ID });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(spec.claims().to_string())
    );
    let tag = hmac::sign(&hmac_key(key), signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// [`mint`] with the signature's first byte flipped: well-formed, claims
/// intact, refused by whoever checks the signature with `key`.
pub fn mint_with_bad_signature(spec: &TokenSpec, key: &[u8]) -> String {
    let token = mint(spec, key);
    let (signing_input, signature) = token.rsplit_once('.').expect("mint makes three parts");
    let mut bytes = URL_SAFE_NO_PAD
        .decode(signature)
        .expect("mint encodes base64url");
    bytes[0] ^= 0x01;
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A JWT taken apart, its signature not yet checked.
pub(crate) struct Jwt {
    pub(crate) claims: Value,
    alg: Option<String>,
    signing_input: String,
    signature: Vec<u8>,
}

impl Jwt {
    /// Three base64url parts, a JSON object header and claims; `None` for
    /// anything else.
    pub(crate) fn parse(token: &str) -> Option<Jwt> {
        let mut parts = token.split('.');
        let (header, claims, signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let json = |part: &str| -> Option<Value> {
            let value: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()?;
            value.is_object().then_some(value)
        };
        let header = json(header)?;
        Some(Jwt {
            claims: json(claims)?,
            alg: header["alg"].as_str().map(str::to_string),
            signing_input: token[..token.len() - signature.len() - 1].to_string(),
            signature: URL_SAFE_NO_PAD.decode(signature).ok()?,
        })
    }

    /// Whether it carries a valid HS256 signature under `key`.
    pub(crate) fn signed_with(&self, key: &[u8]) -> bool {
        self.alg.as_deref() == Some("HS256")
            && hmac::verify(
                &hmac_key(key),
                self.signing_input.as_bytes(),
                &self.signature,
            )
            .is_ok()
    }
}

fn hmac_key(key: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, key)
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A UUID-shaped string: random (version 4 layout).
pub(crate) fn random_uuid() -> String {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    uuid_text(&bytes)
}

/// A UUID-shaped string that is the same for the same `name`.
fn derived_uid(name: &str) -> String {
    let d = digest::digest(&digest::SHA256, name.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&d.as_ref()[..16]);
    uuid_text(&bytes)
}

fn uuid_text(b: &[u8; 16]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TokenSpec {
        TokenSpec::new(
            "team-a",
            "app",
            "app-7d9f",
            "0b6c5f9e-1111-4c2a-9d7e-2f6a1b3c4d5e",
        )
    }

    #[test]
    fn claims_are_shaped_as_the_api_server_writes_them() {
        let token = mint(&spec(), CLUSTER_KEY);
        let jwt = Jwt::parse(&token).unwrap();
        let c = &jwt.claims;
        assert_eq!(c["sub"], "system:serviceaccount:team-a:app");
        assert_eq!(c["aud"], json!(["vault"]));
        assert_eq!(c["iss"], ISSUER);
        let k = &c["kubernetes.io"];
        assert_eq!(k["namespace"], "team-a");
        assert_eq!(k["serviceaccount"]["name"], "app");
        assert_eq!(k["pod"]["name"], "app-7d9f");
        assert_eq!(k["pod"]["uid"], "0b6c5f9e-1111-4c2a-9d7e-2f6a1b3c4d5e");
        assert_eq!(k["node"]["name"], "standin-node");
        let (iat, exp) = (c["iat"].as_i64().unwrap(), c["exp"].as_i64().unwrap());
        assert_eq!(exp - iat, 3600);
        assert_eq!(c["nbf"], c["iat"]);
        // Two pods of one account: one account UID.
        let other = TokenSpec::new("team-a", "app", "app-x", "u2");
        assert_eq!(other.service_account_uid, spec().service_account_uid);
        assert_ne!(
            TokenSpec::new("team-b", "app", "p", "u").service_account_uid,
            spec().service_account_uid
        );
    }

    #[test]
    fn signature_checks() {
        let good = Jwt::parse(&mint(&spec(), CLUSTER_KEY)).unwrap();
        assert!(good.signed_with(CLUSTER_KEY));
        assert!(!good.signed_with(b"another key"));
        let bad = Jwt::parse(&mint_with_bad_signature(&spec(), CLUSTER_KEY)).unwrap();
        assert!(!bad.signed_with(CLUSTER_KEY));
        assert_eq!(bad.claims["sub"], good.claims["sub"]);
        for junk in ["", "a.b", "a.b.c", "a.b.c.d", "e30.e30.", "W10.e30.AA"] {
            assert!(
                Jwt::parse(junk).is_none_or(|j| !j.signed_with(CLUSTER_KEY)),
                "{junk}"
            );
        }
    }

    #[test]
    fn expired_and_unbound_tokens() {
        let expired = TokenSpec {
            expires_in_secs: -120,
            omit_pod: true,
            ..spec()
        };
        let c = expired.claims();
        assert!(c["exp"].as_i64().unwrap() < unix_now() - 100);
        assert!(c["iat"].as_i64().unwrap() < c["exp"].as_i64().unwrap());
        assert!(c["kubernetes.io"].get("pod").is_none());
        assert!(c["kubernetes.io"].get("node").is_none());
    }
}
