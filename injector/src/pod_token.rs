//! A pod's projected service-account token, as a caller presents it to be
//! read upstream with its own identity. The agent never trusts it blindly:
//! its claims — decoded here, not verified; Vault or STS verify the
//! signature when the token is used — must name the pod the kernel says is
//! calling (pod UID, namespace, service account), carry the audience the
//! provider expects, and not have expired. Otherwise the caller is refused
//! before any upstream call, with a reason that never quotes the token.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::pods::PodInfo;

/// Longest token accepted: a projected token is about 1 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A service-account token in zeroizing memory; never printed.
pub struct PodToken(Zeroizing<String>);

impl PodToken {
    pub fn new(token: Zeroizing<String>) -> Self {
        PodToken(token)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PodToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PodToken(<redacted>)")
    }
}

/// What a token says about whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    pub pod_uid: String,
    pub namespace: String,
    pub service_account: String,
    pub audiences: Vec<String>,
    /// Seconds since the epoch.
    pub expires: u64,
}

/// Why a token is refused. Names claims (not secret), never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("the service-account token is over {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("the service-account token is not a JWT: {0}")]
    Malformed(&'static str),
    #[error(
        "the service-account token is not bound to a pod (a projected token of the pod is \
         needed, not a legacy Secret-based one)"
    )]
    NotBoundToPod,
    #[error(
        "the service-account token belongs to pod {token_pod} ({namespace}/{service_account}), \
         not to the calling pod {caller_pod}"
    )]
    OtherPod {
        token_pod: String,
        namespace: String,
        service_account: String,
        caller_pod: String,
    },
    #[error(
        "the service-account token names {namespace}/{service_account}, but the calling pod \
         runs as {caller_namespace}/{caller_service_account}"
    )]
    OtherServiceAccount {
        namespace: String,
        service_account: String,
        caller_namespace: String,
        caller_service_account: String,
    },
    #[error("the service-account token is not for audience {want:?} (it is for {have:?})")]
    WrongAudience { want: String, have: Vec<String> },
    #[error("the service-account token expired {ago} s ago")]
    Expired { ago: u64 },
}

/// Reads a token's claims without verifying its signature.
pub fn claims(token: &PodToken) -> Result<TokenClaims, TokenRefusal> {
    let text = token.expose().trim();
    if text.len() > MAX_TOKEN_BYTES {
        return Err(TokenRefusal::TooLarge);
    }
    let mut parts = text.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenRefusal::Malformed("not three dot-separated parts"));
    };
    let json = Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| TokenRefusal::Malformed("the claims are not base64url"))?,
    );
    let raw: RawClaims = serde_json::from_slice(&json)
        .map_err(|_| TokenRefusal::Malformed("the claims are not the JSON of a token"))?;
    let k8s = raw.kubernetes.ok_or(TokenRefusal::NotBoundToPod)?;
    let pod = k8s.pod.ok_or(TokenRefusal::NotBoundToPod)?;
    Ok(TokenClaims {
        pod_uid: pod.uid,
        namespace: k8s.namespace,
        service_account: k8s.serviceaccount.name,
        audiences: match raw.aud {
            Audience::One(a) => vec![a],
            Audience::Many(a) => a,
        },
        expires: raw.exp,
    })
}

/// The token's claims when they name `caller`, carry `audience` and have
/// not expired at `now`.
pub fn check(
    token: &PodToken,
    caller: &PodInfo,
    audience: &str,
    now: SystemTime,
) -> Result<TokenClaims, TokenRefusal> {
    let c = claims(token)?;
    if c.pod_uid != caller.uid {
        return Err(TokenRefusal::OtherPod {
            token_pod: c.pod_uid,
            namespace: c.namespace,
            service_account: c.service_account,
            caller_pod: caller.uid.clone(),
        });
    }
    if c.namespace != caller.namespace || c.service_account != caller.service_account {
        return Err(TokenRefusal::OtherServiceAccount {
            namespace: c.namespace,
            service_account: c.service_account,
            caller_namespace: caller.namespace.clone(),
            caller_service_account: caller.service_account.clone(),
        });
    }
    if !c.audiences.iter().any(|a| a == audience) {
        return Err(TokenRefusal::WrongAudience {
            want: audience.into(),
            have: c.audiences,
        });
    }
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if c.expires <= now {
        return Err(TokenRefusal::Expired {
            ago: now - c.expires,
        });
    }
    Ok(c)
}

#[derive(Deserialize)]
struct RawClaims {
    aud: Audience,
    exp: u64,
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<KubernetesClaims>,
}

/// `aud` is a string or a list (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct KubernetesClaims {
    namespace: String,
    pod: Option<Named>,
    serviceaccount: NamedAccount,
}

#[derive(Deserialize)]
struct Named {
    uid: String,
}

#[derive(Deserialize)]
struct NamedAccount {
    name: String,
}

/// Tokens shaped as the kubelet projects them, unsigned (the agent never
/// verifies the signature), for tests here and of the deliveries.
#[cfg(test)]
pub(crate) mod test_tokens {
    use base64::Engine;
    use zeroize::Zeroizing;

    use super::PodToken;

    pub(crate) const SIGNATURE: &str = "c2lnbmF0dXJlLW5vdC1jaGVja2Vk";

    pub(crate) fn jwt(claims: serde_json::Value) -> PodToken {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let header = b64(br#"{"alg":"RS256","kid":"k"}"#);
        let payload = b64(claims.to_string().as_bytes());
        PodToken::new(Zeroizing::new(format!("{header}.{payload}.{SIGNATURE}")))
    }

    pub(crate) fn projected(
        uid: &str,
        ns: &str,
        sa: &str,
        aud: serde_json::Value,
        exp: u64,
    ) -> PodToken {
        jwt(serde_json::json!({
            "aud": aud,
            "exp": exp,
            "iss": "https://kubernetes.default.svc",
            "sub": format!("system:serviceaccount:{ns}:{sa}"),
            "kubernetes.io": {
                "namespace": ns,
                "pod": { "name": "app-0", "uid": uid },
                "serviceaccount": { "name": sa, "uid": "sa-uid" }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::time::Duration;

    use super::*;

    use super::test_tokens::{SIGNATURE, jwt, projected};

    fn pod(uid: &str, ns: &str, sa: &str) -> PodInfo {
        PodInfo {
            uid: uid.into(),
            namespace: ns.into(),
            name: "app-0".into(),
            labels: BTreeMap::new(),
            service_account: sa.into(),
            containers: HashMap::new(),
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn the_callers_own_token_passes() {
        let t = projected("uid-a", "shop", "web", serde_json::json!(["vault"]), 2_000);
        let c = check(&t, &pod("uid-a", "shop", "web"), "vault", at(1_000)).unwrap();
        assert_eq!(c.service_account, "web");
        let single = projected("uid-a", "shop", "web", serde_json::json!("vault"), 2_000);
        assert!(check(&single, &pod("uid-a", "shop", "web"), "vault", at(1_000)).is_ok());
    }

    #[test]
    fn another_pods_token_is_refused() {
        let t = projected("uid-b", "shop", "web", serde_json::json!(["vault"]), 2_000);
        let e = check(&t, &pod("uid-a", "shop", "web"), "vault", at(1_000)).unwrap_err();
        assert!(matches!(e, TokenRefusal::OtherPod { .. }), "{e}");
        assert!(e.to_string().contains("uid-b") && e.to_string().contains("uid-a"));
    }

    #[test]
    fn a_token_naming_another_account_is_refused() {
        let t = projected(
            "uid-a",
            "shop",
            "admin",
            serde_json::json!(["vault"]),
            2_000,
        );
        let e = check(&t, &pod("uid-a", "shop", "web"), "vault", at(1_000)).unwrap_err();
        assert!(matches!(e, TokenRefusal::OtherServiceAccount { .. }), "{e}");
    }

    #[test]
    fn audience_and_expiry_are_checked() {
        let t = projected(
            "uid-a",
            "shop",
            "web",
            serde_json::json!(["sts.amazonaws.com"]),
            2_000,
        );
        let e = check(&t, &pod("uid-a", "shop", "web"), "vault", at(1_000)).unwrap_err();
        assert!(matches!(e, TokenRefusal::WrongAudience { .. }), "{e}");
        let t = projected("uid-a", "shop", "web", serde_json::json!(["vault"]), 2_000);
        let e = check(&t, &pod("uid-a", "shop", "web"), "vault", at(2_030)).unwrap_err();
        assert_eq!(e, TokenRefusal::Expired { ago: 30 });
    }

    #[test]
    fn tokens_without_a_pod_and_garbage_are_refused() {
        let legacy = jwt(serde_json::json!({
            "aud": "vault", "exp": 2_000,
            "kubernetes.io": { "namespace": "shop", "serviceaccount": { "name": "web" } }
        }));
        assert_eq!(claims(&legacy).unwrap_err(), TokenRefusal::NotBoundToPod);
        for bad in ["", "a.b", "a.b.c.d", "a.!!!.c", "a.bm90IGpzb24.c"] {
            let t = PodToken::new(Zeroizing::new(bad.to_string()));
            assert!(
                matches!(claims(&t), Err(TokenRefusal::Malformed(_))),
                "{bad}"
            );
        }
        let huge = PodToken::new(Zeroizing::new("a".repeat(MAX_TOKEN_BYTES + 1)));
        assert_eq!(claims(&huge).unwrap_err(), TokenRefusal::TooLarge);
    }

    #[test]
    fn the_token_never_shows() {
        let t = projected("uid-b", "shop", "web", serde_json::json!(["vault"]), 2_000);
        let e = check(&t, &pod("uid-a", "shop", "web"), "vault", at(1_000)).unwrap_err();
        let payload = t.expose().split('.').nth(1).unwrap().to_string();
        for text in [format!("{t:?}"), e.to_string(), format!("{e:?}")] {
            assert!(!text.contains(SIGNATURE), "{text}");
            assert!(!text.contains(&payload), "{text}");
        }
    }
}
