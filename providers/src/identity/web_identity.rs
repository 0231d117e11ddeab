//! AWS credentials for one pod: `AssumeRoleWithWebIdentity` with the pod's
//! projected service-account token (audience `sts.amazonaws.com`), as the
//! AWS provider for the CSI driver does. The SDK's own web identity
//! provider reads the token from a file; this one holds it in memory.

use std::time::SystemTime;

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, future};
use aws_sdk_sts::error::ProvideErrorMetadata;
use secrecy::{ExposeSecret, SecretBox};

pub struct PodWebIdentity {
    role_arn: String,
    token: SecretBox<str>,
    session_name: String,
    region: Option<String>,
}

impl std::fmt::Debug for PodWebIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodWebIdentity")
            .field("role_arn", &self.role_arn)
            .field("session_name", &self.session_name)
            .finish_non_exhaustive()
    }
}

impl PodWebIdentity {
    pub fn new(
        role_arn: String,
        token: &str,
        session_name: String,
        region: Option<String>,
    ) -> Self {
        PodWebIdentity {
            role_arn,
            token: SecretBox::new(token.into()),
            session_name,
            region,
        }
    }

    async fn assume(&self) -> Result<Credentials, CredentialsError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).no_credentials();
        if let Some(r) = &self.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        let conf = loader.load().await;
        let sts = aws_sdk_sts::Client::new(&conf);
        let out = sts
            .assume_role_with_web_identity()
            .role_arn(&self.role_arn)
            .role_session_name(&self.session_name)
            .web_identity_token(self.token.expose_secret())
            .send()
            .await
            .map_err(|e| {
                // Code and message only: never the request, which holds the token.
                let (text, refused) = match e.as_service_error() {
                    Some(se) => (
                        // A known code only, never STS's message: a hostile
                        // or broken endpoint can quote the token in it.
                        crate::aws_error_code(se.code()).to_string(),
                        e.raw_response()
                            .is_some_and(|r| !crate::upstream::is_unavailable(r.status().as_u16())),
                    ),
                    None => (format!("STS unreachable ({})", short_kind(&e)), false),
                };
                let text = format!("AssumeRoleWithWebIdentity for {}: {text}", self.role_arn);
                // A refusal is STS's word on the token; anything else only
                // says STS could not be asked (the Mount may be retried).
                if refused {
                    CredentialsError::provider_error(text)
                } else {
                    CredentialsError::unhandled(text)
                }
            })?;
        let c = out.credentials().ok_or_else(|| {
            CredentialsError::provider_error("AssumeRoleWithWebIdentity returned no credentials")
        })?;
        let expiry = SystemTime::try_from(*c.expiration()).ok();
        Ok(Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            expiry,
            "kernelseal-csi-web-identity",
        ))
    }
}

fn short_kind<E, R>(e: &aws_sdk_sts::error::SdkError<E, R>) -> &'static str {
    use aws_sdk_sts::error::SdkError;
    match e {
        SdkError::TimeoutError(_) => "timeout",
        SdkError::DispatchFailure(_) => "dispatch failure",
        SdkError::ResponseError(_) => "bad response",
        SdkError::ConstructionFailure(_) => "request construction",
        _ => "error",
    }
}

impl ProvideCredentials for PodWebIdentity {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.assume())
    }
}
