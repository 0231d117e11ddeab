//! Per-pod identities for remote sources: a Vault kubernetes login and an
//! AWS web identity with the pod's own service-account token, so every pod
//! reads exactly what its own identity may read. The slots, their admission
//! of tokens and their bounds are the providers' shared mechanism
//! ([`kernelseal_providers::identity`]); this module keys them by the
//! SecretProviderClass's parameters and names the Mount's object in errors.

use std::sync::Arc;
use std::time::Duration;

use kernelseal_providers::identity::{
    Slot, Slots, Subject, Upstreams, aws_as_pod, fingerprint, vault_as_pod,
};
use kernelseal_providers::{
    AwsProvider, AwsSettings, CacheOptions, Error as PError, KvEngine, PodAuth, SecretProvider,
    VaultAuth, VaultProvider, VaultSettings,
};
use secrecy::ExposeSecret;

use crate::error::Error;
use crate::params::{AwsParams, VaultParams};

/// Builds a provider holding one token, for its check.
type Builder<'a> = Box<dyn FnOnce() -> Arc<dyn SecretProvider> + Send + 'a>;

/// All per-identity slots.
pub struct Identities {
    opts: CacheOptions,
    upstreams: Arc<Upstreams>,
    vault: Slots<(VaultParams, Subject)>,
    aws: Slots<(AwsParams, Subject)>,
}

impl Identities {
    pub fn new(opts: CacheOptions, upstreams: Arc<Upstreams>) -> Self {
        Identities {
            opts,
            upstreams,
            vault: Slots::default(),
            aws: Slots::default(),
        }
    }

    /// The Vault slot of `subject`, once `token` is accepted by a Vault
    /// kubernetes login (within the TTL). `object` names the Mount's object
    /// in a refusal.
    pub async fn vault(
        &self,
        p: &VaultParams,
        subject: &Subject,
        token: &secrecy::SecretBox<str>,
        object: &str,
    ) -> Result<Arc<Slot>, Error> {
        let fp = fingerprint(token.expose_secret());
        let name = format!("vault@{}/{}", subject.namespace, subject.service_account);
        let settings = VaultSettings {
            address: p.address.clone(),
            namespace: p.namespace.clone(),
            ca_cert: None,
            tls_skip_verify: false,
            mount: "secret".into(),
            kv_version: KvEngine::V2,
            // Replaced by the pod's login; the token never comes from here.
            auth: VaultAuth::TokenEnv(String::new()),
            pod_auth: PodAuth {
                mount: p.mount_path.clone(),
                audience: p.audience.clone(),
            },
            timeout: Duration::from_secs(10),
            cache_ttl: None,
        };
        let build = || {
            let server = VaultProvider::new(&name, settings)?;
            Ok(vault_as_pod(&server, &name, &p.role, token.expose_secret()))
        };
        let slot = self.vault.get_or_make((p.clone(), subject.clone()), || {
            let limit = self.upstreams.limit(&format!("vault:{}", p.address));
            Slot::new("vault", &self.opts, limit)
        });
        slot.admit(&fp, build).await.map_err(|e| match e {
            PError::Settings { .. } => Error::Parameter {
                parameter: "vaultAddress".into(),
                message: e.to_string(),
            },
            source => Error::Fetch {
                object: object.to_string(),
                source,
            },
        })?;
        Ok(slot)
    }

    /// The AWS slot of `subject`: web identity with `token` for `roleArn`
    /// once STS accepts the token (within the TTL), or (token `None`) the
    /// node's own credential chain.
    pub async fn aws(
        &self,
        p: &AwsParams,
        subject: &Subject,
        token: Option<&secrecy::SecretBox<str>>,
        object: &str,
    ) -> Result<Arc<Slot>, Error> {
        let settings = AwsSettings {
            region: p.region.clone(),
            failover_region: p.failover_region.clone(),
            timeout: Duration::from_secs(10),
            ..AwsSettings::default()
        };
        let name = format!("aws@{}/{}", subject.namespace, subject.service_account);
        let (fp, build): (Vec<u8>, Builder) = match (token, &p.role_arn) {
            (Some(t), Some(arn)) => {
                let jwt = t.expose_secret();
                (
                    fingerprint(jwt),
                    Box::new(move || aws_as_pod(&name, &settings, arn, jwt, subject)),
                )
            }
            // No pod token: the node's identity, nothing of the pod's to check.
            _ => (
                Vec::new(),
                Box::new(move || {
                    Arc::new(AwsProvider::new("aws-node", settings)) as Arc<dyn SecretProvider>
                }),
            ),
        };
        let slot = self.aws.get_or_make((p.clone(), subject.clone()), || {
            let region = p.region.as_deref().unwrap_or("default");
            Slot::new(
                "aws",
                &self.opts,
                self.upstreams.limit(&format!("aws:{region}")),
            )
        });
        slot.admit(&fp, || Ok(build()))
            .await
            .map_err(|source| Error::Fetch {
                object: object.to_string(),
                source,
            })?;
        Ok(slot)
    }
}
