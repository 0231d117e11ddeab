//! The `aws` provider: AWS Secrets Manager (`GetSecretValue`, here) and
//! SSM Parameter Store (`ssm.rs`) through one SDK configuration, with a
//! failover region for server-side and network failures and per-region
//! endpoints (`aws_sdk.rs`).

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_secretsmanager::config::Region;
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

use crate::SecretProvider;
use crate::aws_sdk::{Asked, BodyLimit, Regional, classify, credentials_error};
use crate::env::wrong_kind;
use crate::error::Error;
use crate::json::select_key;
use crate::reference::{AwsRef, SecretRef, SsmPathRef, SsmRef};
use crate::settings::AwsSettings;
use crate::ssm::{SsmParameter, SsmPath, SsmReader};
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
    secrets_manager: Regional<aws_sdk_secretsmanager::Client>,
    ssm: Regional<aws_sdk_ssm::Client>,
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
                let s = &self.settings;
                let (sdk, region) =
                    crate::aws_sdk::load(&self.name, s, self.credentials.as_ref(), reference)
                        .await?;
                let failover = s.failover_region.as_deref();
                Ok(Clients {
                    secrets_manager: Regional::new(&region, failover, |region| {
                        let mut b = aws_sdk_secretsmanager::config::Builder::from(&sdk)
                            .region(Region::new(region.to_string()))
                            .interceptor(BodyLimit);
                        if let Some(url) = s.endpoints.get(region) {
                            b = b.endpoint_url(url);
                        }
                        aws_sdk_secretsmanager::Client::from_conf(b.build())
                    }),
                    ssm: Regional::new(&region, failover, |region| {
                        let mut b = aws_sdk_ssm::config::Builder::from(&sdk)
                            .region(aws_sdk_ssm::config::Region::new(region.to_string()))
                            .interceptor(BodyLimit);
                        if let Some(url) = s.ssm_endpoints.get(region) {
                            b = b.endpoint_url(url);
                        }
                        aws_sdk_ssm::Client::from_conf(b.build())
                    }),
                })
            })
            .await
    }

    fn ssm_reader<'a>(&'a self, client: &'a aws_sdk_ssm::Client, region: &'a str) -> SsmReader<'a> {
        SsmReader {
            client,
            region,
            provider: &self.name,
            cache_ttl: self.settings.cache_ttl,
        }
    }

    /// Every parameter below `path` (`GetParametersByPath`, all pages),
    /// with its value and version, in the failover region if the primary
    /// is unavailable. Delivering them is for the caller: no ref names
    /// them one by one.
    pub async fn ssm_parameters_by_path(&self, path: &SsmPath) -> Result<Vec<SsmParameter>, Error> {
        let rs = path.to_string();
        let clients = self.clients(&rs).await?;
        clients
            .ssm
            .call(&self.name, &rs, |region, client| {
                self.ssm_reader(client, region).by_path(path)
            })
            .await
    }

    async fn fetch_ssm(&self, reference: &SecretRef, p: &SsmRef) -> Result<SecretValue, Error> {
        let rs = reference.to_string();
        let clients = self.clients(&rs).await?;
        clients
            .ssm
            .call(&self.name, &rs, |region, client| {
                self.ssm_reader(client, region).one(reference, p)
            })
            .await
    }

    /// Every parameter below an `ssmRef: { path }`, as one JSON object
    /// (see [`crate::ssm::path_value`]).
    async fn fetch_ssm_path(
        &self,
        reference: &SecretRef,
        p: &SsmPathRef,
    ) -> Result<SecretValue, Error> {
        let path = SsmPath {
            path: p.path.clone(),
            recursive: p.recursive,
            with_decryption: p.with_decryption,
        };
        let params = self.ssm_parameters_by_path(&path).await?;
        let mut meta = Metadata::new(reference.to_string(), self.name.clone());
        meta.ttl = self.settings.cache_ttl;
        crate::ssm::path_value(&path, params, meta)
    }

    /// SSM refs read together: `GetParameters`, at most ten names a call.
    async fn fetch_ssm_many(
        &self,
        refs: &[(&SecretRef, &SsmRef)],
    ) -> Vec<Result<SecretValue, Error>> {
        let rs = refs.first().map(|(r, _)| r.to_string()).unwrap_or_default();
        let clients = match self.clients(&rs).await {
            Ok(c) => c,
            Err(e) => return refs.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut out = Vec::with_capacity(refs.len());
        for batch in refs.chunks(crate::ssm::BATCH_MAX) {
            let text = crate::ssm::batch_text(batch);
            let answered = clients
                .ssm
                .call(&self.name, &text, |region, client| {
                    self.ssm_reader(client, region).batch(batch)
                })
                .await;
            match answered {
                Ok(values) => out.extend(values),
                Err(e) => out.extend(batch.iter().map(|_| Err(e.clone()))),
            }
        }
        out
    }

    async fn get(
        &self,
        client: &aws_sdk_secretsmanager::Client,
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
            Err(e) => {
                return Err(classify(
                    &e,
                    &rs,
                    &Asked {
                        service: "AWS Secrets Manager",
                        item: &format!("AWS secret {}", a.secret_id),
                        not_found: &["ResourceNotFoundException"],
                        region,
                    },
                ));
            }
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
        let a = match reference {
            SecretRef::Aws(a) => a,
            SecretRef::Ssm(p) => return self.fetch_ssm(reference, p).await,
            SecretRef::SsmPath(p) => return self.fetch_ssm_path(reference, p).await,
            _ => return Err(wrong_kind(reference, "aws")),
        };
        let rs = reference.to_string();
        let clients = self.clients(&rs).await?;
        clients
            .secrets_manager
            .call(&self.name, &rs, |region, client| {
                self.get(client, region, reference, a)
            })
            .await
    }

    /// SSM refs are read in batches (`GetParameters`, ten names a call),
    /// one batch per setting of `withDecryption`; the others one by one.
    async fn fetch_many(&self, refs: &[SecretRef]) -> Vec<Result<SecretValue, Error>> {
        let mut out: Vec<Option<Result<SecretValue, Error>>> = vec![None; refs.len()];
        for decrypt in [true, false] {
            let (at, ssm): (Vec<usize>, Vec<(&SecretRef, &SsmRef)>) = refs
                .iter()
                .enumerate()
                .filter_map(|(i, r)| match r {
                    SecretRef::Ssm(p) if p.with_decryption == decrypt => Some((i, (r, p))),
                    _ => None,
                })
                .unzip();
            if ssm.is_empty() {
                continue;
            }
            for (i, v) in at.into_iter().zip(self.fetch_ssm_many(&ssm).await) {
                out[i] = Some(v);
            }
        }
        crate::fetch_rest(self, refs, out).await
    }
}
