//! The registry: named provider instances built from `providers:`, and
//! dispatch of each ref to its provider.

use std::collections::BTreeMap;
use std::sync::Arc;

use kernelseal_config::Config;

use crate::aws::AwsProvider;
use crate::env::EnvProvider;
use crate::error::Error;
use crate::file::FileProvider;
use crate::kubernetes::KubernetesProvider;
use crate::reference::{SecretRef, TemplateRef};
use crate::settings::{
    AwsSettings, KubernetesSettings, ProviderSettings, VaultAuth, VaultSettings,
};
use crate::template::{Fetched, fetch_and_render};
use crate::value::HeldLease;
use crate::vault::VaultProvider;
use crate::{SecretProvider, SecretValue};

/// All providers of one configuration. It is itself a [`SecretProvider`]
/// that dispatches by ref kind and provider name.
///
/// A ref that names no provider uses the only instance of its type; with
/// none configured, a default instance: Kubernetes in-cluster/kubeconfig,
/// AWS with the SDK's standard region and credential chains, and Vault from
/// `VAULT_ADDR` + `VAULT_TOKEN` when `VAULT_ADDR` is set.
pub struct Registry {
    env: Arc<EnvProvider>,
    file: Arc<FileProvider>,
    named: BTreeMap<String, Arc<dyn SecretProvider>>,
    defaults: BTreeMap<&'static str, Arc<dyn SecretProvider>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let named: BTreeMap<&str, &str> = self
            .named
            .iter()
            .map(|(k, v)| (k.as_str(), v.kind()))
            .collect();
        f.debug_struct("Registry").field("named", &named).finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    /// Only the built-in providers (env, value, file) and the defaults.
    pub fn new() -> Self {
        let mut defaults: BTreeMap<&'static str, Arc<dyn SecretProvider>> = BTreeMap::new();
        defaults.insert(
            "kubernetes",
            Arc::new(KubernetesProvider::new(
                "kubernetes",
                KubernetesSettings::default(),
            )),
        );
        defaults.insert(
            "aws",
            Arc::new(AwsProvider::new(
                "aws",
                AwsSettings {
                    timeout: std::time::Duration::from_secs(10),
                    ..AwsSettings::default()
                },
            )),
        );
        if let Ok(addr) = std::env::var("VAULT_ADDR") {
            let mut m = BTreeMap::new();
            m.insert("address".to_string(), serde_json::Value::String(addr));
            // A bad VAULT_ADDR surfaces when a vaultRef is resolved.
            if let Ok(mut s) = VaultSettings::parse("vault", &m) {
                s.auth = VaultAuth::TokenEnv("VAULT_TOKEN".into());
                if let Ok(p) = VaultProvider::new("vault", s) {
                    defaults.insert("vault", Arc::new(p));
                }
            }
        }
        Registry {
            env: Arc::new(EnvProvider),
            file: Arc::new(FileProvider::default()),
            named: BTreeMap::new(),
            defaults,
        }
    }

    /// Builds every provider of `config.providers`, validating its settings.
    /// Nothing is contacted: clients connect on first fetch.
    pub fn from_config(config: &Config) -> Result<Self, Error> {
        let mut reg = Registry::new();
        for (name, spec) in &config.providers {
            let p: Arc<dyn SecretProvider> = match ProviderSettings::parse(name, &spec.value)? {
                ProviderSettings::Vault(s) => Arc::new(VaultProvider::new(name, s)?),
                ProviderSettings::Aws(s) => Arc::new(AwsProvider::new(name, s)),
                ProviderSettings::Kubernetes(s) => Arc::new(KubernetesProvider::new(name, s)),
            };
            reg.named.insert(name.clone(), p);
        }
        Ok(reg)
    }

    /// Adds or replaces a named provider (embedding, tests).
    pub fn insert(&mut self, name: &str, provider: Arc<dyn SecretProvider>) {
        self.named.insert(name.to_string(), provider);
    }

    /// Replaces the file provider (e.g. with another size limit).
    pub fn set_file_provider(&mut self, p: FileProvider) {
        self.file = Arc::new(p);
    }

    /// The file provider, for reads beneath a directory
    /// ([`FileProvider::fetch_beneath`]).
    pub fn file_provider(&self) -> &FileProvider {
        &self.file
    }

    /// The provider that serves `r`, and its instance name. A template has
    /// none of its own: [`Registry::fetch`] renders it over its refs, each
    /// resolved here.
    pub fn resolve(&self, r: &SecretRef) -> Result<(String, Arc<dyn SecretProvider>), Error> {
        let want = match r {
            SecretRef::Template(_) => {
                return Err(Error::Provider {
                    reference: r.to_string(),
                    message: "a template is rendered over its refs, not read from a provider"
                        .into(),
                });
            }
            SecretRef::Value(_) => return Ok(("value".into(), self.env.clone())),
            SecretRef::Env { .. } => return Ok(("env".into(), self.env.clone())),
            SecretRef::File { .. } => return Ok(("file".into(), self.file.clone())),
            SecretRef::Kubernetes(_) => "kubernetes",
            SecretRef::Vault(_) => "vault",
            // Parameter Store is read with the same account, regions and
            // credentials as Secrets Manager.
            SecretRef::Aws(_) | SecretRef::Ssm(_) | SecretRef::SsmPath(_) => "aws",
        };
        let field = || format!("{}.provider", r.kind());
        if let Some(name) = r.provider_name() {
            return match self.named.get(name) {
                Some(p) if p.kind() == want => Ok((name.to_string(), p.clone())),
                Some(p) => Err(Error::InvalidRef {
                    reference: r.to_string(),
                    field: field(),
                    message: format!("provider {name:?} is of type {}, not {want}", p.kind()),
                }),
                None => Err(Error::InvalidRef {
                    reference: r.to_string(),
                    field: field(),
                    message: format!("no provider named {name:?} in providers"),
                }),
            };
        }
        let of_kind: Vec<(&String, &Arc<dyn SecretProvider>)> = self
            .named
            .iter()
            .filter(|(_, p)| p.kind() == want)
            .collect();
        match of_kind.as_slice() {
            [(name, p)] => Ok(((*name).clone(), (*p).clone())),
            [] => self
                .defaults
                .get(want)
                .map(|p| (want.to_string(), p.clone()))
                .ok_or_else(|| Error::Provider {
                    reference: r.to_string(),
                    message: format!(
                        "no {want} provider configured (add one under providers:, or set VAULT_ADDR)"
                    ),
                }),
            many => Err(Error::InvalidRef {
                reference: r.to_string(),
                field: field(),
                message: format!(
                    "{} providers of type {want} are configured ({}); name one",
                    many.len(),
                    many.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                ),
            }),
        }
    }
}

impl Registry {
    /// Fetches each of a template's refs from its provider, then renders.
    async fn render(&self, reference: &SecretRef, t: &TemplateRef) -> Result<SecretValue, Error> {
        let Fetched { values, rendered } =
            fetch_and_render(t, &reference.to_string(), |inner| self.fetch(inner)).await;
        // Nobody outside the agent's lease table would renew or revoke a
        // dynamic credential read here (a check, an embedder): it ends now
        // rather than at its TTL, whether or not the template rendered.
        for (name, value) in &values {
            let dynamic = t.refs.get(name).is_some_and(SecretRef::is_dynamic);
            if let Some(held) = HeldLease::of(value).filter(|_| dynamic)
                && let Err(e) = self.revoke_held(&held).await
            {
                tracing::warn!(reference = %held.reference, "revoking a dynamic secret read for a template: {e}");
            }
        }
        rendered
    }
}

#[async_trait::async_trait]
impl SecretProvider for Registry {
    fn kind(&self) -> &'static str {
        "registry"
    }

    async fn fetch(&self, reference: &SecretRef) -> Result<SecretValue, Error> {
        if let SecretRef::Template(t) = reference {
            return self.render(reference, t).await;
        }
        let (_, p) = self.resolve(reference)?;
        p.fetch(reference).await
    }

    /// Refs of one provider instance are handed to it together, so that it
    /// can batch them (SSM: `GetParameters`, ten names a call); templates
    /// and refs that resolve to no provider one by one.
    async fn fetch_many(&self, refs: &[SecretRef]) -> Vec<Result<SecretValue, Error>> {
        let mut out: Vec<Option<Result<SecretValue, Error>>> = vec![None; refs.len()];
        let mut groups: BTreeMap<String, (Arc<dyn SecretProvider>, Vec<usize>)> = BTreeMap::new();
        for (i, r) in refs.iter().enumerate() {
            match (r, self.resolve(r)) {
                (SecretRef::Template(_), _) => {}
                (_, Ok((name, p))) => groups.entry(name).or_insert((p, Vec::new())).1.push(i),
                (_, Err(e)) => out[i] = Some(Err(e)),
            }
        }
        for (p, at) in groups.into_values() {
            let group: Vec<SecretRef> = at.iter().map(|&i| refs[i].clone()).collect();
            for (i, v) in at.into_iter().zip(p.fetch_many(&group).await) {
                out[i] = Some(v);
            }
        }
        crate::fetch_rest(self, refs, out).await
    }

    async fn renew(&self, value: &SecretValue) -> Result<Option<std::time::Duration>, Error> {
        match self.issuer(&value.metadata().provider) {
            Some(p) => p.renew(value).await,
            None => Ok(None),
        }
    }

    async fn renew_held(&self, held: &HeldLease) -> Result<Option<std::time::Duration>, Error> {
        match self.issuer(&held.provider) {
            Some(p) => p.renew_held(held).await,
            None => Ok(None),
        }
    }

    /// A lease whose provider is gone from the config (a reload, a restart
    /// with another config) cannot be revoked: say so, so that it is kept
    /// and tried again rather than forgotten.
    async fn revoke_held(&self, held: &HeldLease) -> Result<(), Error> {
        match self.issuer(&held.provider) {
            Some(p) => p.revoke_held(held).await,
            None => Err(Error::Provider {
                reference: held.reference.clone(),
                message: format!(
                    "no provider named {:?} is configured to revoke its lease",
                    held.provider
                ),
            }),
        }
    }
}

impl Registry {
    /// The provider instance a value or lease came from, by its name.
    fn issuer(&self, name: &str) -> Option<&Arc<dyn SecretProvider>> {
        self.named.get(name).or_else(|| self.defaults.get(name))
    }
}
