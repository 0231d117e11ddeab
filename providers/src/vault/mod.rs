//! HashiCorp Vault: KV v1/v2 reads, token / kubernetes / approle auth,
//! token renewal and lease renewal.
//!
//! Requests are vaultrs's endpoints (`kv2::ReadSecretRequest`,
//! `auth::kubernetes::LoginWithKubernetesRequest`, …) with its middleware
//! for the token and namespace headers; sending, bounded reading, error
//! classification and parsing are this module's (see [`transport`] and
//! [`envelope`] for why, and docs/providers.md).
//!
//! The API (Vault's HTTP API, as docs/providers.md lists it): `GET
//! /v1/{mount}/data/{path}` (KV v2, optional `?version=N`) →
//! `data.data.{key}` and `data.metadata.version`; `GET /v1/{mount}/{path}`
//! (KV v1 and generic reads such as dynamic secrets) → `data.{key}` with
//! `lease_id`/`lease_duration`/`renewable`; `X-Vault-Token` and
//! `X-Vault-Namespace` headers; `POST /v1/auth/{mount}/login`; `POST
//! /v1/auth/token/renew-self`; `PUT /v1/sys/leases/renew`; errors as
//! `{"errors": [...]}`.

use std::sync::Arc;
use std::time::Duration;

use rustify::endpoint::Endpoint;
use secrecy::SecretBox;
use tokio::sync::Mutex;

use crate::SecretProvider;
use crate::env::wrong_kind;
use crate::error::{Error, chain, is_tls};
use crate::reference::SecretRef;
use crate::settings::{VaultAuth, VaultSettings};
use crate::upstream::answered;
use crate::value::{HeldLease, SecretValue};

mod auth;
mod client;
mod credentials;
mod envelope;
mod kv;
mod lease;
mod transport;

use auth::TokenState;
use transport::{Reply, SendError, Transport};

type Token = Arc<SecretBox<str>>;

/// One Vault server (one `providers:` entry of `type: vault`).
pub struct VaultProvider {
    name: String,
    settings: VaultSettings,
    transport: Transport,
    state: Mutex<Option<TokenState>>,
}

impl std::fmt::Debug for VaultProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultProvider")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl VaultProvider {
    /// Builds the HTTP client; nothing is contacted until the first fetch.
    pub fn new(name: &str, settings: VaultSettings) -> Result<Self, Error> {
        let client = client::build(name, &settings)?;
        let transport = Transport::new(client, &settings.address, settings.namespace.as_deref());
        Ok(VaultProvider {
            name: name.to_string(),
            settings,
            transport,
            state: Mutex::new(None),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A provider of the same server, over the same HTTP client (its
    /// connection pool and TLS roots, built once), whose login is `role`
    /// at the pod auth mount (`podAuth.mount`) with a pod's `jwt`: the
    /// per-identity logins of `identity: pod` and the CSI provider.
    pub fn with_pod_login(&self, name: &str, role: &str, jwt: &str) -> VaultProvider {
        let auth = VaultAuth::KubernetesJwt {
            role: role.to_string(),
            jwt: crate::InlineJwt::new(jwt),
            mount: self.settings.pod_auth.mount.clone(),
        };
        VaultProvider {
            name: name.to_string(),
            settings: VaultSettings {
                auth,
                ..self.settings.clone()
            },
            transport: self.transport.clone(),
            state: Mutex::new(None),
        }
    }

    fn login_ref(&self) -> String {
        format!("providers.{} login", self.name)
    }

    fn what(&self) -> String {
        format!("Vault at {}", self.settings.address)
    }

    /// Sends `endpoint` and returns Vault's answer, whatever its status;
    /// errors are for answers not read (network, TLS, timeout, too large).
    async fn call<E: Endpoint>(
        &self,
        endpoint: &E,
        token: Option<&Token>,
        reference: &str,
    ) -> Result<Reply, Error> {
        self.transport
            .send(endpoint, token)
            .await
            .map_err(|e| self.unanswered(e, reference))
    }

    fn unanswered(&self, e: SendError, reference: &str) -> Error {
        match e {
            SendError::TooLarge(x) => Error::TooLarge {
                reference: reference.to_string(),
                what: self.what(),
                limit: x.limit,
            },
            SendError::Transport(e) => self.transport_error(&e, reference),
            SendError::Build(e) => Error::Upstream {
                reference: reference.to_string(),
                status: None,
                message: format!("cannot build the Vault request: {}", chain(&e)),
            },
        }
    }

    fn transport_error(&self, e: &reqwest::Error, reference: &str) -> Error {
        let text = chain(e);
        if e.is_timeout() {
            Error::Timeout {
                reference: reference.to_string(),
                after: self.settings.timeout,
            }
        } else if is_tls(e) {
            Error::Tls {
                reference: reference.to_string(),
                message: format!("{text} (set caCert to the CA that signed Vault's certificate)"),
            }
        } else {
            Error::Unavailable {
                reference: reference.to_string(),
                what: self.what(),
                message: text,
            }
        }
    }

    /// What a Vault error answer may say: its status and a fixed reason,
    /// never its `errors` text, which can quote what it was sent (see
    /// [`crate::upstream`]).
    fn refusal(&self, status: u16) -> String {
        answered("Vault", status)
    }
}

#[async_trait::async_trait]
impl SecretProvider for VaultProvider {
    fn kind(&self) -> &'static str {
        "vault"
    }

    async fn fetch(&self, reference: &SecretRef) -> Result<SecretValue, Error> {
        match reference {
            SecretRef::Vault(v) => self.read(reference, v).await,
            other => Err(wrong_kind(other, "vault")),
        }
    }

    async fn authenticate(&self) -> Result<(), Error> {
        self.check_credentials().await
    }

    async fn renew(&self, value: &SecretValue) -> Result<Option<Duration>, Error> {
        match &value.metadata().lease {
            Some(lease) if lease.renewable => self
                .renew_lease(&value.metadata().source, lease)
                .await
                .map(Some),
            _ => Ok(None),
        }
    }

    async fn renew_held(&self, held: &HeldLease) -> Result<Option<Duration>, Error> {
        if !held.lease.renewable {
            return Ok(None);
        }
        self.renew_lease(&held.reference, &held.lease)
            .await
            .map(Some)
    }

    async fn revoke_held(&self, held: &HeldLease) -> Result<(), Error> {
        self.revoke_lease(&held.reference, &held.lease).await
    }
}
