//! The agent's reads for bindings with `identity: pod`: each Vault or AWS
//! ref is read by a login of the calling pod (its token, its role), in
//! the slot of (provider, role, namespace, service account). Pods that
//! share a service account and role share the login and the cache.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use tokio::sync::broadcast;

use kernelseal_config::Config;

use super::{Slot, Slots, Subject, Upstreams, fingerprint, logins};
use crate::settings::{AwsSettings, ProviderSettings, VaultSettings};
use crate::{CacheOptions, Error, SecretRef, SecretValue, VaultProvider, VersionChange};

/// Version changes waiting for the rotation watcher, over all identities.
const CHANGES_QUEUED: usize = 256;

/// Who reads: the pod's identity, its token for the provider's audience,
/// and the role its login asks for.
pub struct PodLogin<'a> {
    pub subject: &'a Subject,
    pub token: &'a str,
    /// The Vault role, or the IAM role ARN.
    pub role: &'a str,
}

/// The kind of login a ref read as the pod takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginKind {
    /// Vault kubernetes auth: the role is a Vault role name.
    Vault,
    /// STS web identity: the role is an IAM role ARN.
    Aws,
}

/// The provider a ref is read through as the pod.
#[derive(Debug, Clone, Copy)]
pub struct PodProvider<'a> {
    pub name: &'a str,
    pub kind: LoginKind,
    /// What the pod's token must carry in `aud` for this provider.
    pub audience: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SlotKey {
    provider: String,
    role: String,
    subject: Subject,
}

impl SlotKey {
    /// The identity as rotation keys name it.
    fn identity(&self) -> String {
        format!(
            "{}@{}@{}/{}",
            self.provider, self.role, self.subject.namespace, self.subject.service_account
        )
    }
}

/// A version change of a value read as a pod. Its `change.key` names the
/// identity as well as the ref ([`PodReads::rotation_key`]): the same ref
/// read by two service accounts changes for each on its own.
#[derive(Clone)]
pub struct PodChange {
    pub change: VersionChange,
    slot: Weak<Slot>,
}

impl PodChange {
    /// The new value, as the identity's login reads it.
    pub async fn value(&self) -> Option<SecretValue> {
        self.slot.upgrade()?.get(&self.change.reference).await.ok()
    }
}

/// One configured Vault: its settings, and a provider whose HTTP client
/// every identity's login shares (one connection pool, TLS roots read
/// once).
struct VaultServer {
    settings: VaultSettings,
    server: VaultProvider,
}

/// The configured Vault and AWS providers, and one slot per identity.
pub struct PodReads {
    vault: BTreeMap<String, VaultServer>,
    aws: BTreeMap<String, AwsSettings>,
    opts: CacheOptions,
    upstreams: Arc<Upstreams>,
    slots: Slots<SlotKey>,
    changes: broadcast::Sender<PodChange>,
}

impl PodReads {
    /// From the config's `providers:`; nothing is contacted.
    pub fn from_config(
        config: &Config,
        opts: CacheOptions,
        upstreams: Arc<Upstreams>,
    ) -> Result<Self, Error> {
        let mut vault = BTreeMap::new();
        let mut aws = BTreeMap::new();
        for (name, spec) in &config.providers {
            match ProviderSettings::parse(name, &spec.value)? {
                ProviderSettings::Vault(s) => {
                    let server = VaultProvider::new(name, s.clone())?;
                    vault.insert(
                        name.clone(),
                        VaultServer {
                            settings: s,
                            server,
                        },
                    );
                }
                ProviderSettings::Aws(s) => {
                    aws.insert(name.clone(), s);
                }
                ProviderSettings::Kubernetes(_) => {}
            }
        }
        Ok(PodReads {
            vault,
            aws,
            opts,
            upstreams,
            slots: Slots::default(),
            changes: broadcast::channel(CHANGES_QUEUED).0,
        })
    }

    /// Version changes of values read as pods, for rotations.
    pub fn subscribe(&self) -> broadcast::Receiver<PodChange> {
        self.changes.subscribe()
    }

    /// The key under which a rotation of `r` read by `login` is announced
    /// ([`PodChange`]); `None` for a ref not read as the pod.
    pub fn rotation_key(&self, r: &SecretRef, login: &PodLogin<'_>) -> Option<String> {
        let p = self.provider_of(r)?;
        let key = SlotKey {
            provider: p.name.to_string(),
            role: login.role.to_string(),
            subject: login.subject.clone(),
        };
        Some(format!("{}|{}", key.identity(), r.cache_key()?))
    }

    /// A new slot: its changes are forwarded, qualified by its identity.
    fn made(&self, key: &SlotKey, slot: Arc<Slot>) -> Arc<Slot> {
        let mut changes = slot.follow_changes();
        let (tx, weak, identity) = (self.changes.clone(), Arc::downgrade(&slot), key.identity());
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(mut change) => {
                        change.key = format!("{identity}|{}", change.key);
                        let _ = tx.send(PodChange {
                            change,
                            slot: weak.clone(),
                        });
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("[ROTATE] {n} version change(s) of {identity} missed");
                    }
                    // The slot is gone (a reload, or the table was full).
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        slot
    }

    /// The provider `r` is read through as the pod: the one it names, or
    /// the only one of its type. `None` for a source that is not remote
    /// (read by the agent as ever) or names no configured provider (config
    /// validation refuses that).
    pub fn provider_of(&self, r: &SecretRef) -> Option<PodProvider<'_>> {
        match r {
            SecretRef::Vault(v) => {
                let (name, s) = configured(&self.vault, v.provider.as_deref())?;
                Some(PodProvider {
                    name,
                    kind: LoginKind::Vault,
                    audience: &s.settings.pod_auth.audience,
                })
            }
            SecretRef::Aws(_) | SecretRef::Ssm(_) | SecretRef::SsmPath(_) => {
                let (name, s) = configured(&self.aws, r.provider_name())?;
                Some(PodProvider {
                    name,
                    kind: LoginKind::Aws,
                    audience: &s.pod_audience,
                })
            }
            _ => None,
        }
    }

    /// `r` as `login` may read it: from the identity's cache, or upstream
    /// once the token has passed a login (within the cache TTL).
    pub async fn get(&self, r: &SecretRef, login: &PodLogin<'_>) -> Result<SecretValue, Error> {
        let slot = self.admitted(r, login).await?;
        slot.get(r).await
    }

    async fn admitted(&self, r: &SecretRef, login: &PodLogin<'_>) -> Result<Arc<Slot>, Error> {
        let p = self.provider_of(r).ok_or_else(|| Error::Auth {
            provider: r.kind().into(),
            message: "no configured provider reads this ref as the pod".into(),
        })?;
        let key = SlotKey {
            provider: p.name.to_string(),
            role: login.role.to_string(),
            subject: login.subject.clone(),
        };
        let s = login.subject;
        let name = format!("{}@{}/{}", p.name, s.namespace, s.service_account);
        let fp = fingerprint(login.token);
        match p.kind {
            LoginKind::Vault => {
                let vault = &self.vault[p.name];
                let slot = self.slots.get_or_make(key.clone(), || {
                    let address = &vault.settings.address;
                    let limit = self.upstreams.limit(&format!("vault:{address}"));
                    self.made(&key, Slot::new("vault", &self.opts, limit))
                });
                slot.admit(&fp, || {
                    Ok(logins::vault_as_pod(
                        &vault.server,
                        &name,
                        login.role,
                        login.token,
                    ))
                })
                .await?;
                Ok(slot)
            }
            LoginKind::Aws => {
                let settings = &self.aws[p.name];
                let slot = self.slots.get_or_make(key, || {
                    let region = settings.region.as_deref().unwrap_or("default");
                    Slot::new(
                        "aws",
                        &self.opts,
                        self.upstreams.limit(&format!("aws:{region}")),
                    )
                });
                slot.admit(&fp, || {
                    Ok(logins::aws_as_pod(
                        &name,
                        settings,
                        login.role,
                        login.token,
                        s,
                    ))
                })
                .await?;
                Ok(slot)
            }
        }
    }
}

/// The provider named, or the only one of its type (as the registry picks).
fn configured<'m, S>(map: &'m BTreeMap<String, S>, name: Option<&str>) -> Option<(&'m str, &'m S)> {
    match name {
        Some(n) => map.get_key_value(n),
        None if map.len() == 1 => map.iter().next(),
        None => None,
    }
    .map(|(k, v)| (k.as_str(), v))
}
