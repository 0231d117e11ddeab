//! Bindings with `identity: pod`: the caller's service-account tokens are
//! checked against the pod the kernel says is calling — before anything
//! is read upstream — and each remote ref is then read by a login of that
//! pod ([`kernelseal_providers::identity::PodReads`]).

use std::time::SystemTime;

use kernelseal_providers::SecretRef;
use kernelseal_providers::identity::{LoginKind, PodLogin, PodReads, Subject};

use super::Refusal;
use crate::pod_identity::PodIdentity;
use crate::pod_token::{PodToken, TokenRefusal, check};
use crate::select::PreparedBinding;

/// Why a binding that reads as the pod cannot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AsPodRefusal {
    #[error("the caller is not a pod known on this node{pod}")]
    NotAPod { pod: String, retry: bool },
    #[error(
        "the wrapper sent no service-account token for audience {audience:?} (mount a projected \
         token with that audience in {dir}, or pass --token-file)",
        dir = kernelseal_protocol::DEFAULT_TOKEN_DIR
    )]
    NoToken { audience: String },
    #[error(transparent)]
    Token(#[from] TokenRefusal),
    #[error(
        "it reads AWS as the pod but no IAM role is named: set identity.awsRoleArn on the \
         binding or annotate service account {namespace}/{service_account} with {annotation}",
        annotation = crate::ROLE_ARN_ANNOTATION
    )]
    NoAwsRole {
        namespace: String,
        service_account: String,
    },
    #[error("the IAM role of the pod's service account could not be read: {0}")]
    AwsRoleUnknown(String),
}

impl AsPodRefusal {
    pub(crate) fn retry(&self) -> bool {
        matches!(
            self,
            AsPodRefusal::NotAPod { retry: true, .. } | AsPodRefusal::AwsRoleUnknown(_)
        )
    }
}

/// The checked identity a delivery reads its `identity: pod` refs with.
pub(crate) struct PodLogins<'t> {
    subject: Subject,
    /// Tokens checked for the pod, with the audience each was checked for.
    tokens: Vec<(String, &'t PodToken)>,
    /// The service account's annotated IAM role, for bindings naming none.
    annotated_role: Option<String>,
}

impl<'t> PodLogins<'t> {
    /// Checks, for every remote ref of a selected `identity: pod` binding,
    /// that the caller is a known pod and sent a token of that pod for
    /// the provider's audience. `None` when no selected binding reads as
    /// the pod.
    pub(crate) async fn check(
        reads: &PodReads,
        index: Option<&crate::PodIndex>,
        pods: &PodIdentity,
        selected: &[&PreparedBinding],
        tokens: &'t [PodToken],
        now: SystemTime,
    ) -> Result<Option<PodLogins<'t>>, Refusal> {
        let as_pod: Vec<&PreparedBinding> = selected
            .iter()
            .copied()
            .filter(|b| b.identity.is_pod())
            .collect();
        let Some(first) = as_pod.first() else {
            return Ok(None);
        };
        let refuse = |binding: &PreparedBinding, why: AsPodRefusal| Refusal::AsPod {
            binding: binding.name.clone(),
            why: Box::new(why),
        };
        let Some(pod) = pods.pod() else {
            let why = AsPodRefusal::NotAPod {
                pod: pods.describe(),
                retry: pods.incomplete(),
            };
            return Err(refuse(first, why));
        };
        let mut logins = PodLogins {
            subject: Subject {
                namespace: pod.namespace.clone(),
                service_account: pod.service_account.clone(),
            },
            tokens: Vec::new(),
            annotated_role: None,
        };
        for b in as_pod {
            // A template's refs are each read as the pod.
            for sref in b.refs.iter().flat_map(|(_, r)| r.fetched_refs()) {
                let Some(p) = reads.provider_of(sref) else {
                    continue;
                };
                if p.kind == LoginKind::Aws
                    && b.identity.aws_role_arn.is_none()
                    && logins.annotated_role.is_none()
                {
                    let arn = annotated_role(index, &logins.subject).await;
                    logins.annotated_role = Some(arn.map_err(|why| refuse(b, why))?);
                }
                if logins.token_for(p.audience).is_some() {
                    continue;
                }
                let token = pick(tokens, pod, p.audience, now).map_err(|why| refuse(b, why))?;
                logins.tokens.push((p.audience.to_string(), token));
            }
        }
        Ok(Some(logins))
    }

    fn token_for(&self, audience: &str) -> Option<&'t PodToken> {
        self.tokens
            .iter()
            .find(|(a, _)| a == audience)
            .map(|(_, t)| *t)
    }

    /// The login that reads `sref` of binding `b`; `None` for a ref that
    /// is not read as the pod (a local source).
    pub(crate) fn login<'a>(
        &'a self,
        reads: &PodReads,
        b: &'a PreparedBinding,
        sref: &SecretRef,
    ) -> Option<PodLogin<'a>> {
        let p = reads.provider_of(sref)?;
        let role = match p.kind {
            LoginKind::Vault => b
                .identity
                .vault_role
                .as_deref()
                .unwrap_or(&self.subject.service_account),
            LoginKind::Aws => b
                .identity
                .aws_role_arn
                .as_deref()
                .or(self.annotated_role.as_deref())?,
        };
        Some(PodLogin {
            subject: &self.subject,
            token: self.token_for(p.audience)?.expose(),
            role,
        })
    }
}

/// The IAM role the pod's service account is annotated with.
async fn annotated_role(
    index: Option<&crate::PodIndex>,
    subject: &Subject,
) -> Result<String, AsPodRefusal> {
    let none = || AsPodRefusal::NoAwsRole {
        namespace: subject.namespace.clone(),
        service_account: subject.service_account.clone(),
    };
    let index = index.ok_or_else(none)?;
    match index
        .accounts
        .role_arn(&subject.namespace, &subject.service_account)
        .await
    {
        Ok(Some(arn)) => Ok(arn),
        Ok(None) => Err(none()),
        Err(e) => Err(AsPodRefusal::AwsRoleUnknown(e.to_string())),
    }
}

/// The token for `audience`: the first one sent that carries it, checked
/// against the caller's pod. Any token of another pod, legacy or broken is
/// refused outright, even when a good one follows: a caller holding
/// another pod's token is worth refusing, not working around.
fn pick<'t>(
    tokens: &'t [PodToken],
    pod: &crate::PodInfo,
    audience: &str,
    now: SystemTime,
) -> Result<&'t PodToken, AsPodRefusal> {
    for t in tokens {
        match check(t, pod, audience, now) {
            Ok(_) => return Ok(t),
            Err(TokenRefusal::WrongAudience { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AsPodRefusal::NoToken {
        audience: audience.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use kernelseal_providers::identity::PodReads;
    use serde_json::json;

    use super::*;
    use crate::pod_token::test_tokens::projected;

    const UID: &str = "7c1e9a52-0d3b-4f6e-8a21-5b9d0c4e2f17";

    fn reads_and_bindings(secrets: &str) -> (PodReads, Vec<PreparedBinding>) {
        let text = format!(
            "providers:\n  vault: {{ type: vault, address: 'https://vault:8200' }}\n  aws: {{ type: aws, region: eu-west-1 }}\nsecrets:\n{secrets}"
        );
        let config = kernelseal_config::parse_str(&text, "t").unwrap().config;
        let reads = PodReads::from_config(&config, Default::default(), Default::default()).unwrap();
        (reads, crate::prepare(&config))
    }

    fn web_pod() -> crate::PodInfo {
        crate::PodInfo {
            uid: UID.into(),
            namespace: "shop".into(),
            name: "web-0".into(),
            labels: Default::default(),
            service_account: "web".into(),
            containers: Default::default(),
        }
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000)
    }

    const VAULT_BINDING: &str = "  - name: web\n    selector: { serviceAccount: web }\n    identity: pod\n    secretRefs:\n      - { name: DB, source: { vaultRef: { path: web/db, key: password } } }\n      - { name: LOCAL, source: { envRef: HOME } }\n";

    fn refusal(r: Result<Option<PodLogins<'_>>, Refusal>) -> AsPodRefusal {
        match r {
            Err(Refusal::AsPod { why, .. }) => *why,
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("not refused"),
        }
    }

    #[tokio::test]
    async fn the_pods_own_token_logs_in_with_its_service_account_as_role() {
        let (reads, bindings) = reads_and_bindings(VAULT_BINDING);
        let b = &bindings[0];
        let tokens = [
            projected(UID, "shop", "web", json!(["sts.amazonaws.com"]), 2_000),
            projected(UID, "shop", "web", json!(["vault"]), 2_000),
        ];
        let pods = PodIdentity::in_pod(web_pod());
        let logins = PodLogins::check(&reads, None, &pods, &[b], &tokens, now())
            .await
            .unwrap()
            .unwrap();
        let (_, vault_ref) = &b.refs[0];
        let login = logins.login(&reads, b, vault_ref).unwrap();
        assert_eq!(login.role, "web");
        assert_eq!(
            login.token,
            tokens[1].expose(),
            "the token for audience vault"
        );
        assert_eq!(login.subject.namespace, "shop");
        let (_, env_ref) = &b.refs[1];
        assert!(
            logins.login(&reads, b, env_ref).is_none(),
            "read by the agent"
        );
    }

    #[tokio::test]
    async fn nothing_to_check_without_a_binding_that_reads_as_the_pod() {
        let agent = VAULT_BINDING.replace("    identity: pod\n", "");
        let (reads, bindings) = reads_and_bindings(&agent);
        let r = PodLogins::check(
            &reads,
            None,
            &PodIdentity::host(),
            &[&bindings[0]],
            &[],
            now(),
        )
        .await;
        assert!(r.unwrap().is_none());
    }

    #[tokio::test]
    async fn refusals_come_before_any_read_and_say_why() {
        let (reads, bindings) = reads_and_bindings(VAULT_BINDING);
        let b = &bindings[0];
        let pods = PodIdentity::in_pod(web_pod());
        let host =
            refusal(PodLogins::check(&reads, None, &PodIdentity::host(), &[b], &[], now()).await);
        assert!(
            matches!(host, AsPodRefusal::NotAPod { retry: false, .. }),
            "{host}"
        );
        let none = refusal(PodLogins::check(&reads, None, &pods, &[b], &[], now()).await);
        assert_eq!(
            none,
            AsPodRefusal::NoToken {
                audience: "vault".into()
            }
        );
        let other = [projected(
            "0000-other",
            "shop",
            "web",
            json!(["vault"]),
            2_000,
        )];
        let e = refusal(PodLogins::check(&reads, None, &pods, &[b], &other, now()).await);
        assert!(
            matches!(e, AsPodRefusal::Token(TokenRefusal::OtherPod { .. })),
            "{e}"
        );
        // Another pod's token is refused even when the caller's own follows.
        let both = [
            projected("0000-other", "shop", "web", json!(["vault"]), 2_000),
            projected(UID, "shop", "web", json!(["vault"]), 2_000),
        ];
        let e = refusal(PodLogins::check(&reads, None, &pods, &[b], &both, now()).await);
        assert!(
            matches!(e, AsPodRefusal::Token(TokenRefusal::OtherPod { .. })),
            "{e}"
        );
        let expired = [projected(UID, "shop", "web", json!(["vault"]), 999)];
        let e = refusal(PodLogins::check(&reads, None, &pods, &[b], &expired, now()).await);
        assert!(
            matches!(e, AsPodRefusal::Token(TokenRefusal::Expired { .. })),
            "{e}"
        );
        let r = Refusal::AsPod {
            binding: "web".into(),
            why: Box::new(AsPodRefusal::NoToken {
                audience: "vault".into(),
            }),
        };
        assert_eq!(
            r.reason(),
            "binding \"web\" reads as the pod (identity: pod): the wrapper sent no \
             service-account token for audience \"vault\" (mount a projected token with that \
             audience in /var/run/secrets/kernelseal.io/tokens, or pass --token-file)"
        );
        assert!(!r.retry());
    }

    #[tokio::test]
    async fn aws_needs_a_role_arn() {
        let aws = "  - name: web\n    selector: { serviceAccount: web }\n    identity: pod\n    secretRefs:\n      - { name: KEY, source: { awsRef: { secretId: web/key } } }\n";
        let (reads, bindings) = reads_and_bindings(aws);
        let pods = PodIdentity::in_pod(web_pod());
        let tokens = [projected(
            UID,
            "shop",
            "web",
            json!(["sts.amazonaws.com"]),
            2_000,
        )];
        let e =
            refusal(PodLogins::check(&reads, None, &pods, &[&bindings[0]], &tokens, now()).await);
        assert_eq!(
            e,
            AsPodRefusal::NoAwsRole {
                namespace: "shop".into(),
                service_account: "web".into()
            }
        );
        let with_arn = aws.replace(
            "identity: pod",
            "identity: { mode: pod, awsRoleArn: 'arn:aws:iam::111122223333:role/web' }",
        );
        let (reads, bindings) = reads_and_bindings(&with_arn);
        let b = &bindings[0];
        let logins = PodLogins::check(&reads, None, &pods, &[b], &tokens, now())
            .await
            .unwrap()
            .unwrap();
        let login = logins.login(&reads, b, &b.refs[0].1).unwrap();
        assert_eq!(login.role, "arn:aws:iam::111122223333:role/web");
    }
}
