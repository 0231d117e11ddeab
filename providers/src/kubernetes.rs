//! Kubernetes Secrets through the API server (`GET
//! /api/v1/namespaces/{ns}/secrets/{name}`) with the `kube` client:
//! in-cluster service account, `KUBECONFIG`, or a kubeconfig named in the
//! provider settings.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::Resource;
use tokio::sync::OnceCell;
use zeroize::{Zeroize, Zeroizing};

use crate::SecretProvider;
use crate::env::wrong_kind;
use crate::error::{Error, chain, transport_error};
use crate::limit::{MAX_ANSWER_BYTES, ReadError, read_body};
use crate::reference::SecretRef;
use crate::settings::KubernetesSettings;
use crate::upstream::answered;
use crate::value::{Metadata, SecretValue};

/// One Kubernetes API (one `providers:` entry of `type: kubernetes`, or the
/// default in-cluster/kubeconfig one).
pub struct KubernetesProvider {
    name: String,
    settings: KubernetesSettings,
    // Built on first use: an agent configured for Kubernetes may start before
    // the API is reachable, and local configs never need it.
    client: OnceCell<(kube::Client, String)>,
}

impl std::fmt::Debug for KubernetesProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesProvider")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl KubernetesProvider {
    pub fn new(name: &str, settings: KubernetesSettings) -> Self {
        KubernetesProvider {
            name: name.to_string(),
            settings,
            client: OnceCell::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    async fn client(&self, reference: &str) -> Result<&(kube::Client, String), Error> {
        self.client
            .get_or_try_init(|| async {
                crate::install_crypto_provider();
                let no_config = |message: String| Error::Provider {
                    reference: reference.to_string(),
                    message: format!("providers.{}: no Kubernetes API: {message}", self.name),
                };
                let options = KubeConfigOptions {
                    context: self.settings.context.clone(),
                    ..Default::default()
                };
                let mut config = if let Some(path) = &self.settings.kubeconfig {
                    let kc = Kubeconfig::read_from(path).map_err(|e| Error::Settings {
                        provider: self.name.clone(),
                        field: "kubeconfig".into(),
                        message: chain(&e),
                    })?;
                    kube::Config::from_custom_kubeconfig(kc, &options)
                        .await
                        .map_err(|e| no_config(chain(&e)))?
                } else if self.settings.context.is_some() {
                    kube::Config::from_kubeconfig(&options)
                        .await
                        .map_err(|e| no_config(chain(&e)))?
                } else {
                    // In-cluster service account or KUBECONFIG / ~/.kube/config.
                    kube::Config::infer()
                        .await
                        .map_err(|e| no_config(chain(&e)))?
                };
                // kube's defaults suit watches (read 295 s); a GET of a
                // Secret that takes longer than this will not come.
                config.connect_timeout = Some(Duration::from_secs(10));
                config.read_timeout = Some(Duration::from_secs(30));
                // kube's retry layer honours `Retry-After` for up to 15
                // tries, so a 429 became our call timeout instead of an
                // answer; the cache retries with its own bounded backoff.
                config.default_retry = false;
                let ns = self
                    .settings
                    .namespace
                    .clone()
                    .unwrap_or_else(|| config.default_namespace.clone());
                let client = kube::Client::try_from(config).map_err(|e| no_config(chain(&e)))?;
                Ok((client, ns))
            })
            .await
    }
    /// `GET` of one Secret through `Client::send`, so that the answer is
    /// read within [`MAX_ANSWER_BYTES`] (`Api::get` would collect any
    /// size), with the API's `Status` errors mapped as before.
    async fn get_secret(
        &self,
        client: &kube::Client,
        ns: &str,
        name: &str,
        key: &str,
        rs: &str,
        what: &str,
    ) -> Result<Secret, Error> {
        let transport = |e: &kube::Error| transport_error(e, rs, "Kubernetes API");
        let req = kube::core::Request::new(Secret::url_path(&(), Some(ns)))
            .get(name, &Default::default())
            .map_err(|e| Error::InvalidRef {
                reference: rs.to_string(),
                field: "secretKeyRef.name".into(),
                message: chain(&e),
            })?;
        let resp = client
            .send(req.map(kube::client::Body::from))
            .await
            .map_err(|e| transport(&e))?;
        let status = resp.status().as_u16();
        // read_body refuses an announced length over the bound before
        // reading, and stops a streamed body past it.
        let body = read_body(resp.into_body(), MAX_ANSWER_BYTES)
            .await
            .map_err(|e| match e {
                ReadError::Exceeded(x) => Error::TooLarge {
                    reference: rs.to_string(),
                    what: "Kubernetes API".into(),
                    limit: x.limit,
                },
                ReadError::Transport(e) => transport(&e),
            })?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map_err(|e| Error::Format {
                reference: rs.to_string(),
                field: "secretKeyRef".into(),
                message: format!("answer is not a Secret ({:?} error)", e.classify()),
            });
        }
        // The status alone, never the body: a `Status.message` quotes what
        // the server was sent, and a proxy's page could say anything.
        drop(body);
        let message = format!("{} (key {key:?})", answered("Kubernetes API", status));
        let (rs, what) = (rs.to_string(), what.to_string());
        Err(match status {
            404 => Error::NotFound {
                reference: rs,
                what,
                message,
            },
            401 | 403 => Error::Forbidden {
                reference: rs,
                what,
                message,
            },
            c if crate::upstream::is_unavailable(c) => Error::Unavailable {
                reference: rs,
                what: "Kubernetes API".into(),
                message,
            },
            c => Error::Upstream {
                reference: rs,
                status: Some(c),
                message,
            },
        })
    }
}

#[async_trait::async_trait]
impl SecretProvider for KubernetesProvider {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    async fn fetch(&self, reference: &SecretRef) -> Result<SecretValue, Error> {
        let SecretRef::Kubernetes(k) = reference else {
            return Err(wrong_kind(reference, "kubernetes"));
        };
        let rs = reference.to_string();
        let (client, default_ns) = self.client(&rs).await?;
        let ns = k.namespace.as_deref().unwrap_or(default_ns);
        let what = format!("Secret {ns}/{}", k.name);
        tracing::debug!(provider = %self.name, reference = %rs, "kubernetes get secret");
        let mut secret = self
            .get_secret(client, ns, &k.name, &k.key, &rs, &what)
            .await?;
        let mut data = secret.data.take().unwrap_or_default();
        let picked = data.remove(&k.key).map(|b| Zeroizing::new(b.0));
        // The other keys of the Secret are secrets too.
        data.values_mut().for_each(|b| b.0.zeroize());
        if let Some(sd) = secret.string_data.as_mut() {
            sd.values_mut().for_each(|s| s.zeroize());
        }
        let Some(bytes) = picked else {
            return Err(Error::KeyNotFound {
                reference: rs,
                field: "secretKeyRef.key".into(),
                key: k.key.clone(),
                what,
            });
        };
        let mut meta = Metadata::new(rs, self.name.clone());
        meta.version = secret.metadata.resource_version.clone();
        meta.ttl = self.settings.cache_ttl;
        Ok(SecretValue::new(bytes, meta))
    }
}
