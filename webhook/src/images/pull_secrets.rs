//! A pod's pull secrets, read from the API server as the kubelet reads
//! them: one `get` of each Secret its `imagePullSecrets` names, in the
//! pod's own namespace, only when one of its images is looked up. Never a
//! `list` or `watch`: the webhook needs `get` on `secrets` and nothing
//! else.
//!
//! The pod as the API server sends it to the webhook already carries its
//! service account's pull secrets: the ServiceAccount admission plugin
//! adds them to a pod that names none
//! (<https://kubernetes.io/docs/reference/access-authn-authz/service-accounts-admin/#serviceaccount-admission-controller>),
//! and the API server runs it before the mutating webhooks (its plugin
//! order, `AllOrderedPlugins` in `pkg/kubeapiserver/options/plugins.go`).
//! The pod's list is the whole list.
//!
//! A secret that does not exist, or holds no registry credential (another
//! type), is skipped with a warning naming it, as the kubelet skips it;
//! one the webhook may not read, or a docker config it cannot parse, fails
//! the lookup naming `namespace/name`. What a secret holds is kept
//! [`SECRET_TTL`] at most, wiped from memory when dropped, and never
//! logged.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

use super::docker_config::{self, Entry};
use super::{LookupError, PullContext};

/// How long a secret read is believed: a rotated password is used within
/// this time.
pub const SECRET_TTL: Duration = Duration::from_secs(30);

/// Secrets kept at most before the oldest go.
const MAX_SECRETS: usize = 1024;

/// The registry credentials of one Secret.
#[derive(Debug)]
pub struct PullSecret {
    pub name: String,
    pub entries: Vec<Entry>,
}

type Read = Result<Option<Arc<PullSecret>>, LookupError>;

struct Slot {
    read: Arc<OnceCell<Read>>,
    created: Instant,
}

/// Reads pods' pull secrets through the API server.
pub struct PullSecrets {
    client: kube::Client,
    kept: Mutex<HashMap<(String, String), Slot>>,
}

impl PullSecrets {
    /// `client`'s identity needs `get` on `secrets` in every namespace
    /// whose pods' images are looked up.
    pub fn new(client: kube::Client) -> PullSecrets {
        PullSecrets {
            client,
            kept: Mutex::default(),
        }
    }

    /// The pull secrets of the pod that hold registry credentials, in its
    /// order.
    pub(super) async fn read(
        &self,
        pull: &PullContext,
    ) -> Result<Vec<Arc<PullSecret>>, LookupError> {
        let reads = futures_util::future::join_all(
            pull.secret_names
                .iter()
                .map(|name| self.one(&pull.namespace, name)),
        )
        .await;
        let mut found = Vec::with_capacity(reads.len());
        for read in reads {
            if let Some(secret) = read? {
                found.push(secret);
            }
        }
        Ok(found)
    }

    /// One secret: kept, being read, or read now.
    async fn one(&self, namespace: &str, name: &str) -> Read {
        let key = (namespace.to_string(), name.to_string());
        let cell = self.slot(&key);
        let read = cell.get_or_init(|| self.get(namespace, name)).await.clone();
        // Only a secret found is kept: a missing one may be created any
        // moment, and a failure should be retried.
        if !matches!(read, Ok(Some(_))) {
            let mut kept = self.lock();
            if kept.get(&key).is_some_and(|s| Arc::ptr_eq(&s.read, &cell)) {
                kept.remove(&key);
            }
        }
        read
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Slot>> {
        // Nothing panics while it is held; a poisoned map is still whole.
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn slot(&self, key: &(String, String)) -> Arc<OnceCell<Read>> {
        let now = Instant::now();
        let mut kept = self.lock();
        if let Some(slot) = kept.get(key)
            && !(slot.read.initialized() && now.duration_since(slot.created) >= SECRET_TTL)
        {
            return slot.read.clone();
        }
        if kept.len() >= MAX_SECRETS {
            kept.retain(|_, s| now.duration_since(s.created) < SECRET_TTL);
            while kept.len() >= MAX_SECRETS {
                let Some(oldest) = kept
                    .iter()
                    .min_by_key(|(_, s)| s.created)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                kept.remove(&oldest);
            }
        }
        let read = Arc::new(OnceCell::new());
        kept.insert(
            key.clone(),
            Slot {
                read: read.clone(),
                created: now,
            },
        );
        read
    }

    async fn get(&self, namespace: &str, name: &str) -> Read {
        let failed = |why: String| LookupError::PullSecret {
            namespace: namespace.to_string(),
            secret: name.to_string(),
            why,
        };
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let Some(secret) = api
            .get_opt(name)
            .await
            .map_err(|e| failed(api_failure(&e)))?
        else {
            tracing::warn!(
                namespace,
                secret = name,
                "[WEBHOOK] pull secret {namespace}/{name} does not exist: skipped (as the kubelet skips it)"
            );
            return Ok(None);
        };
        let data: BTreeMap<String, Zeroizing<Vec<u8>>> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, Zeroizing::new(v.0)))
            .collect();
        match docker_config::parse(secret.type_.as_deref(), &data) {
            Ok(Ok(entries)) => Ok(Some(Arc::new(PullSecret {
                name: name.to_string(),
                entries,
            }))),
            Ok(Err(unusable)) => {
                tracing::warn!(
                    namespace,
                    secret = name,
                    "[WEBHOOK] pull secret {namespace}/{name} holds no registry credential ({unusable}): skipped"
                );
                Ok(None)
            }
            Err(malformed) => Err(failed(malformed.to_string())),
        }
    }
}

/// What went wrong reading a secret, without anything of its content: the
/// API's own message for a refusal, the reason for a forbidden `get`.
fn api_failure(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if status.code == 403 => format!(
            "the webhook may not read it (403: {}): its service account needs get on \
             secrets (deploy/manifests/webhook/pull-secrets-rbac.yaml; the chart's \
             webhook.pullSecrets)",
            status.message
        ),
        kube::Error::Api(status) => format!(
            "the API server answered {}: {}",
            status.code, status.message
        ),
        // serde's message may quote what it read.
        kube::Error::SerdeError(_) => "the API server's answer is not a Secret".to_string(),
        other => super::failure::chain(other),
    }
}
