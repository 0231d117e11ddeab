//! What the AWS services an `aws` provider reads (Secrets Manager, SSM
//! Parameter Store) share: one SDK configuration (region, profile,
//! credentials, one attempt per call, timeouts), a client per region with
//! the failover region's, the bound on an answer's size, and the mapping of
//! SDK errors to ours, which never quote what AWS said.

use std::future::Future;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::config::interceptors::BeforeDeserializationInterceptorContextMut;
use aws_sdk_secretsmanager::config::{ConfigBag, Intercept, Region, RuntimeComponents};
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

use crate::error::{Error, chain, transport_error};
use crate::limit::{Limited, MAX_ANSWER_BYTES, check_declared, exceeded_in};
use crate::settings::AwsSettings;

/// A service's client in the primary region and, if configured, in the
/// failover region.
pub(crate) struct Regional<C> {
    primary: (String, C),
    failover: Option<(String, C)>,
}

impl<C> Regional<C> {
    /// `client_for(region)` builds the client of one region.
    pub(crate) fn new(
        primary: &str,
        failover: Option<&str>,
        client_for: impl Fn(&str) -> C,
    ) -> Self {
        Regional {
            primary: (primary.to_string(), client_for(primary)),
            failover: failover.map(|r| (r.to_string(), client_for(r))),
        }
    }

    /// Runs `call` in the primary region and, when that fails in a way
    /// worth retrying (network, 5xx, throttling), once in the failover
    /// region. A refusal (404, 403) is the primary's answer and stands.
    pub(crate) async fn call<'c, T, F, Fut>(
        &'c self,
        provider: &str,
        reference: &str,
        call: F,
    ) -> Result<T, Error>
    where
        F: Fn(&'c str, &'c C) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let (region, client) = &self.primary;
        match call(region, client).await {
            Err(e) if e.is_retryable() => {
                let Some((fregion, fclient)) = &self.failover else {
                    return Err(e);
                };
                tracing::warn!(provider, reference, error = %e, failover = %fregion, "primary region failed; trying the failover region");
                call(fregion, fclient).await
            }
            other => other,
        }
    }
}

/// The provider's SDK configuration and its primary region. Loading is
/// async (profile files, IMDS), so providers call it on first use.
pub(crate) async fn load(
    provider: &str,
    settings: &AwsSettings,
    credentials: Option<&SharedCredentialsProvider>,
    reference: &str,
) -> Result<(SdkConfig, String), Error> {
    crate::install_crypto_provider();
    let s = settings;
    // One SDK attempt per call: the cache layer retries with its own
    // bounded backoff, and failover must not wait for three.
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(1))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(s.timeout.min(std::time::Duration::from_secs(3)))
                .operation_timeout(s.timeout)
                .build(),
        );
    if let Some(r) = &s.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(p) = &s.profile {
        loader = loader.profile_name(p);
    }
    if let Some(c) = credentials {
        loader = loader.credentials_provider(c.clone());
    }
    let sdk = loader.load().await;
    let region = sdk
        .region()
        .map(|r| r.as_ref().to_string())
        .ok_or_else(|| Error::Provider {
            reference: reference.to_string(),
            message: format!(
                "providers.{provider}: no AWS region: set region in the provider or AWS_REGION"
            ),
        })?;
    Ok((sdk, region))
}

/// Bounds every answer to [`MAX_ANSWER_BYTES`]: the SDK reads a whole body
/// before parsing it, so the bound has to sit between the connection and
/// the SDK. A declared length over the bound fails at once; any other body
/// fails as soon as more than the bound has arrived.
#[derive(Debug)]
pub(crate) struct BodyLimit;

impl Intercept for BodyLimit {
    fn name(&self) -> &'static str {
        "kernelseal-body-limit"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let response = context.response_mut();
        let declared = response
            .headers()
            .get("content-length")
            .and_then(|v| v.trim().parse().ok());
        check_declared(declared, MAX_ANSWER_BYTES)?;
        let body = response.take_body();
        *response.body_mut() =
            aws_smithy_types::body::SdkBody::from_body_1_x(Limited::new(body, MAX_ANSWER_BYTES));
        Ok(())
    }
}

/// Which service answered and what was asked of it, for error messages.
pub(crate) struct Asked<'a> {
    /// `AWS Secrets Manager`, `AWS SSM Parameter Store`.
    pub service: &'a str,
    /// What the ref names: `AWS secret app/db`, `SSM parameter /app/db`.
    pub item: &'a str,
    /// The error codes by which the service says the item does not exist.
    pub not_found: &'a [&'a str],
    pub region: &'a str,
}

/// Maps an SDK error; `Unavailable`/`Timeout` (network, 5xx) allow failover.
pub(crate) fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    e: &SdkError<E, HttpResponse>,
    rs: &str,
    asked: &Asked<'_>,
) -> Error {
    let Asked {
        service,
        item,
        not_found,
        region,
    } = asked;
    let what = format!("{item} in {region}");
    let unavailable = |message: String| Error::Unavailable {
        reference: rs.to_string(),
        what: format!("{service} in {region}"),
        message,
    };
    if let Some(x) = exceeded_in(e) {
        return Error::TooLarge {
            reference: rs.to_string(),
            what: format!("{service} in {region}"),
            limit: x.limit,
        };
    }
    match e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let err = se.err();
            let code = err.code().unwrap_or("");
            // The code if it is a known one, and the status; never AWS's
            // message, which can quote the request (see `crate::upstream`).
            let message = format!(
                "{} ({})",
                crate::aws_error_code(err.code()),
                crate::upstream::http_reason(status)
            );
            if not_found.contains(&code) || status == 404 {
                Error::NotFound {
                    reference: rs.to_string(),
                    what,
                    message,
                }
            } else if crate::upstream::is_unavailable(status) || code == "ThrottlingException" {
                unavailable(format!("HTTP {status}: {message}"))
            } else if status == 403 || code.contains("AccessDenied") || code.contains("Signature") {
                Error::Forbidden {
                    reference: rs.to_string(),
                    what,
                    message,
                }
            } else {
                Error::Upstream {
                    reference: rs.to_string(),
                    status: Some(status),
                    message,
                }
            }
        }
        SdkError::TimeoutError(_) => unavailable("timed out".into()),
        SdkError::ConstructionFailure(_) => Error::Upstream {
            reference: rs.to_string(),
            status: None,
            message: format!("cannot build the request: {}", chain(e)),
        },
        _ => {
            // Credentials are resolved before the request goes out; their
            // failure's chain carries STS's own message, which can quote the
            // request (a web identity token among it): the variant only.
            if let Some(c) = credentials_failure(e) {
                return credentials_error(c, rs, &format!("AWS credentials for {region}"));
            }
            transport_error(e, rs, &format!("{service} in {region}"))
        }
    }
}

/// The credentials failure somewhere in an error's chain, if any.
fn credentials_failure<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a CredentialsError> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(c) = err.downcast_ref::<CredentialsError>() {
            return Some(c);
        }
        cur = err.source();
    }
    None
}

/// A credentials failure by its variant alone: the chain below it carries
/// STS's own message, which can quote the request (a pod's token among it).
/// Timeouts and unhandled failures may pass; the rest is not worth a
/// failover or a retry.
pub(crate) fn credentials_error(e: &CredentialsError, reference: &str, what: &str) -> Error {
    let unavailable = |message: &str| Error::Unavailable {
        reference: reference.to_string(),
        what: what.to_string(),
        message: message.into(),
    };
    let refused = |message: &str| Error::Upstream {
        reference: reference.to_string(),
        status: None,
        message: message.into(),
    };
    match e {
        CredentialsError::ProviderTimedOut(_) => unavailable("the credential provider timed out"),
        CredentialsError::Unhandled(_) => unavailable("the credential provider failed"),
        CredentialsError::CredentialsNotLoaded(_) => refused("no credentials were loaded"),
        _ => refused("the credential provider refused the identity"),
    }
}
