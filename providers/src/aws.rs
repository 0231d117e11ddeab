//! AWS Secrets Manager: `GetSecretValue` with the AWS SDK, a failover region
//! for server-side and network failures, and per-region endpoints.

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::interceptors::BeforeDeserializationInterceptorContextMut;
use aws_sdk_secretsmanager::config::{ConfigBag, Intercept, Region, RuntimeComponents};
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

use crate::SecretProvider;
use crate::env::wrong_kind;
use crate::error::{Error, chain, is_tls};
use crate::json::select_key;
use crate::limit::{Limited, MAX_ANSWER_BYTES, check_declared, exceeded_in};
use crate::reference::{AwsRef, SecretRef};
use crate::settings::AwsSettings;
use crate::value::{Metadata, SecretValue};

/// One AWS account/region setup (one `providers:` entry of `type: aws`, or
/// the default one that uses the SDK's standard chains).
pub struct AwsProvider {
    name: String,
    settings: AwsSettings,
    credentials: Option<SharedCredentialsProvider>,
    // Loading the SDK config is async (profile files, IMDS), so clients are
    // built on first use.
    clients: OnceCell<Clients>,
}

struct Clients {
    primary: (String, Client),
    failover: Option<(String, Client)>,
}

impl std::fmt::Debug for AwsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsProvider")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl AwsProvider {
    /// Credentials from the standard chain: env, web identity (IRSA),
    /// profile, container and instance metadata.
    pub fn new(name: &str, settings: AwsSettings) -> Self {
        AwsProvider {
            name: name.to_string(),
            settings,
            credentials: None,
            clients: OnceCell::new(),
        }
    }

    /// Explicit credentials, for embedding and tests.
    pub fn with_credentials(
        name: &str,
        settings: AwsSettings,
        credentials: SharedCredentialsProvider,
    ) -> Self {
        AwsProvider {
            credentials: Some(credentials),
            ..AwsProvider::new(name, settings)
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    async fn clients(&self, reference: &str) -> Result<&Clients, Error> {
        self.clients
            .get_or_try_init(|| async {
                crate::install_crypto_provider();
                let s = &self.settings;
                // One SDK attempt per call: the cache layer retries with its
                // own bounded backoff, and failover must not wait for three.
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
                if let Some(c) = &self.credentials {
                    loader = loader.credentials_provider(c.clone());
                }
                let sdk = loader.load().await;
                let region = sdk
                    .region()
                    .map(|r| r.as_ref().to_string())
                    .ok_or_else(|| Error::Provider {
                        reference: reference.to_string(),
                        message: format!(
                            "providers.{}: no AWS region: set region in the provider or AWS_REGION",
                            self.name
                        ),
                    })?;
                let client_for = |region: &str| {
                    let mut b = aws_sdk_secretsmanager::config::Builder::from(&sdk)
                        .region(Region::new(region.to_string()));
                    if let Some(url) = s.endpoints.get(region) {
                        b = b.endpoint_url(url);
                    }
                    b = b.interceptor(BodyLimit);
                    Client::from_conf(b.build())
                };
                Ok(Clients {
                    primary: (region.clone(), client_for(&region)),
                    failover: s
                        .failover_region
                        .as_ref()
                        .map(|r| (r.clone(), client_for(r))),
                })
            })
            .await
    }

    async fn get(
        &self,
        client: &Client,
        region: &str,
        r: &SecretRef,
        a: &AwsRef,
    ) -> Result<SecretValue, Error> {
        let rs = r.to_string();
        tracing::debug!(provider = %self.name, reference = %rs, region, "aws GetSecretValue");
        let out = client
            .get_secret_value()
            .secret_id(&a.secret_id)
            .set_version_id(a.version_id.clone())
            .set_version_stage(a.version_stage.clone())
            .send()
            .await;
        let mut out = match out {
            Ok(o) => o,
            Err(e) => return Err(classify(&e, &rs, &a.secret_id, region)),
        };
        let version = out.version_id.take();
        let raw = if let Some(s) = out.secret_string.take() {
            Zeroizing::new(s.into_bytes())
        } else if let Some(b) = out.secret_binary.take() {
            Zeroizing::new(b.into_inner())
        } else {
            return Err(Error::NotFound {
                reference: rs,
                what: format!("AWS secret {} value", a.secret_id),
                message: "neither SecretString nor SecretBinary is set".into(),
            });
        };
        drop(out);
        let bytes = match &a.json_key {
            Some(k) => select_key(
                &raw,
                k,
                &rs,
                "awsRef.jsonKey",
                &format!("AWS secret {}", a.secret_id),
            )?,
            None => raw,
        };
        let mut meta = Metadata::new(rs, self.name.clone());
        meta.version = version;
        meta.ttl = self.settings.cache_ttl;
        Ok(SecretValue::new(bytes, meta))
    }
}

/// Bounds every answer to [`MAX_ANSWER_BYTES`]: the SDK reads a whole body
/// before parsing it, so the bound has to sit between the connection and
/// the SDK. A declared length over the bound fails at once; any other body
/// fails as soon as more than the bound has arrived.
#[derive(Debug)]
struct BodyLimit;

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

/// Maps an SDK error; `Unavailable`/`Timeout` (network, 5xx) allow failover.
fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    e: &SdkError<E, aws_sdk_secretsmanager::config::http::HttpResponse>,
    rs: &str,
    secret_id: &str,
    region: &str,
) -> Error {
    let what = format!("AWS secret {secret_id} in {region}");
    if let Some(x) = exceeded_in(e) {
        return Error::TooLarge {
            reference: rs.to_string(),
            what: format!("AWS Secrets Manager in {region}"),
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
            if code == "ResourceNotFoundException" || status == 404 {
                Error::NotFound {
                    reference: rs.to_string(),
                    what,
                    message,
                }
            } else if crate::upstream::is_unavailable(status) || code == "ThrottlingException" {
                Error::Unavailable {
                    reference: rs.to_string(),
                    what: format!("AWS Secrets Manager in {region}"),
                    message: format!("HTTP {status}: {message}"),
                }
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
        SdkError::TimeoutError(_) => Error::Unavailable {
            reference: rs.to_string(),
            what: format!("AWS Secrets Manager in {region}"),
            message: "timed out".into(),
        },
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
            let text = chain(e);
            if is_tls(e) {
                Error::Tls {
                    reference: rs.to_string(),
                    message: text,
                }
            } else {
                Error::Unavailable {
                    reference: rs.to_string(),
                    what: format!("AWS Secrets Manager in {region}"),
                    message: text,
                }
            }
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
fn credentials_error(e: &CredentialsError, reference: &str, what: &str) -> Error {
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

#[async_trait::async_trait]
impl SecretProvider for AwsProvider {
    fn kind(&self) -> &'static str {
        "aws"
    }

    /// Resolves the explicit credentials (for a pod's web identity: an STS
    /// `AssumeRoleWithWebIdentity` with its token). The standard chain has
    /// no caller of its own to check.
    async fn authenticate(&self) -> Result<(), Error> {
        use aws_credential_types::provider::ProvideCredentials;
        let Some(c) = &self.credentials else {
            return Ok(());
        };
        match c.provide_credentials().await {
            Ok(_) => Ok(()),
            Err(e) => Err(
                match credentials_error(
                    &e,
                    &format!("providers.{} login", self.name),
                    "AWS credentials",
                ) {
                    // A refusal of the identity itself is the provider's login
                    // failing, not one ref's.
                    Error::Upstream { message, .. } => Error::Auth {
                        provider: self.name.clone(),
                        message,
                    },
                    other => other,
                },
            ),
        }
    }

    async fn fetch(&self, reference: &SecretRef) -> Result<SecretValue, Error> {
        let SecretRef::Aws(a) = reference else {
            return Err(wrong_kind(reference, "aws"));
        };
        let clients = self.clients(&reference.to_string()).await?;
        let (region, client) = &clients.primary;
        match self.get(client, region, reference, a).await {
            Err(e) if e.is_retryable() => {
                let Some((fregion, fclient)) = &clients.failover else {
                    return Err(e);
                };
                tracing::warn!(provider = %self.name, reference = %reference, error = %e, failover = %fregion, "primary region failed; trying the failover region");
                self.get(fclient, fregion, reference, a).await
            }
            other => other,
        }
    }
}
