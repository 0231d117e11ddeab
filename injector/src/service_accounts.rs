//! The IAM role a service account is annotated with
//! (`eks.amazonaws.com/role-arn`, as IRSA's webhook reads it), for
//! `identity: pod` bindings that name none. One `get` of the service
//! account, cached for a minute; STS's trust policy, not this lookup,
//! decides whether the pod may assume the role.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use tokio::sync::Mutex;

use crate::error::InjectError;

/// The annotation IRSA's pod identity webhook reads.
pub const ROLE_ARN_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

/// How long an answer (or its absence) is believed.
const TTL: Duration = Duration::from_secs(60);

/// Service accounts remembered before the table starts afresh.
const MAX_ACCOUNTS: usize = 4096;

type Key = (String, String);

pub struct ServiceAccountRoles {
    client: kube::Client,
    cache: Mutex<HashMap<Key, (Instant, Option<String>)>>,
}

impl ServiceAccountRoles {
    pub fn new(client: kube::Client) -> Self {
        ServiceAccountRoles {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The role ARN of `namespace/name`, `None` when it has no annotation
    /// (or does not exist).
    pub async fn role_arn(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>, InjectError> {
        let key = (namespace.to_string(), name.to_string());
        if let Some((at, arn)) = self.cache.lock().await.get(&key)
            && at.elapsed() < TTL
        {
            return Ok(arn.clone());
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let sa = api
            .get_opt(name)
            .await
            .map_err(|e| InjectError::ServiceAccount {
                namespace: namespace.to_string(),
                name: name.to_string(),
                source: Box::new(e),
            })?;
        let arn = sa
            .and_then(|s| s.metadata.annotations)
            .and_then(|mut a| a.remove(ROLE_ARN_ANNOTATION))
            .filter(|a| !a.trim().is_empty());
        let mut cache = self.cache.lock().await;
        if cache.len() >= MAX_ACCOUNTS {
            cache.clear();
        }
        cache.insert(key, (Instant::now(), arn.clone()));
        Ok(arn)
    }
}
