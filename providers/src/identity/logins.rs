//! Providers that log in as one pod, with that pod's service-account
//! token: a Vault kubernetes-auth login, or AWS web identity. The CSI
//! provider and the agent's `identity: pod` reads build them alike.

use std::sync::Arc;

use aws_credential_types::provider::SharedCredentialsProvider;

use super::{PodWebIdentity, Subject};
use crate::{AwsProvider, AwsSettings, SecretProvider, VaultProvider};

/// A provider of `server` (its settings and HTTP client) whose login is
/// `role` at its pod auth mount (`podAuth.mount`) with `jwt`.
pub fn vault_as_pod(
    server: &VaultProvider,
    name: &str,
    role: &str,
    jwt: &str,
) -> Arc<dyn SecretProvider> {
    Arc::new(server.with_pod_login(name, role, jwt))
}

/// An AWS provider of `settings` whose credentials come from
/// `AssumeRoleWithWebIdentity` of `role_arn` with `jwt`, in a session
/// named after the pod's service account.
pub fn aws_as_pod(
    name: &str,
    settings: &AwsSettings,
    role_arn: &str,
    jwt: &str,
    subject: &Subject,
) -> Arc<dyn SecretProvider> {
    let creds = PodWebIdentity::new(
        role_arn.to_string(),
        jwt,
        session_name(subject),
        settings.region.clone(),
    );
    Arc::new(AwsProvider::with_credentials(
        name,
        settings.clone(),
        SharedCredentialsProvider::new(creds),
    ))
}

/// An STS session name from the pod's identity (`[\w+=,.@-]`, ≤ 64), so
/// CloudTrail shows whose read it was.
pub fn session_name(s: &Subject) -> String {
    let raw = format!("kernelseal-{}-{}", s.namespace, s.service_account);
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_are_what_sts_accepts() {
        let s = Subject {
            namespace: "shop".into(),
            service_account: "web:front/end".into(),
        };
        assert_eq!(session_name(&s), "kernelseal-shop-web-front-end");
        let long = Subject {
            namespace: "n".repeat(80),
            service_account: "sa".into(),
        };
        assert_eq!(session_name(&long).len(), 64);
    }
}
