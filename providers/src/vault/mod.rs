//! HashiCorp Vault: KV v1/v2 reads, token / kubernetes / approle auth,
//! token renewal and lease renewal, over plain HTTP(S) with reqwest.
//!
//! The API (design §6): `GET /v1/{mount}/data/{path}` (KV v2, optional
//! `?version=N`) → `data.data.{key}` and `data.metadata.version`; `GET
//! /v1/{mount}/{path}` (KV v1 and generic reads such as dynamic secrets) →
//! `data.{key}` with `lease_id`/`lease_duration`/`renewable`; `X-Vault-Token`
//! and `X-Vault-Namespace` headers; `POST /v1/auth/{mount}/login`; `POST
//! /v1/auth/token/renew-self`; `PUT /v1/sys/leases/renew`; errors as
//! `{"errors": [...]}`.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretBox};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use crate::SecretProvider;
use crate::env::wrong_kind;
use crate::error::{Error, chain, is_tls};
use crate::json::{take_value, wipe};
use crate::limit::{MAX_ANSWER_BYTES, MAX_VALUE_BYTES, ReadError, read_reqwest};
use crate::reference::{KvEngine, SecretRef, VaultRef};
use crate::settings::VaultSettings;
use crate::upstream::{answered, http_reason};
use crate::value::{Lease, Metadata, SecretValue, content_tag};

mod auth;

use auth::TokenState;

type Token = Arc<SecretBox<str>>;

/// Idle connections kept per Vault server for reuse.
const POOL_IDLE_PER_HOST: usize = 8;
/// How long an idle connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// One Vault server (one `providers:` entry of `type: vault`).
pub struct VaultProvider {
    name: String,
    settings: VaultSettings,
    http: reqwest::Client,
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

#[derive(Deserialize, Default)]
struct Response {
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    lease_id: String,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
    #[serde(default)]
    auth: Option<auth::AuthBlock>,
}

impl VaultProvider {
    /// Builds the HTTP client; nothing is contacted until the first fetch.
    pub fn new(name: &str, settings: VaultSettings) -> Result<Self, Error> {
        crate::install_crypto_provider();
        let settings_err = |field: &str, message: String| Error::Settings {
            provider: name.to_string(),
            field: field.to_string(),
            message,
        };
        let mut b = reqwest::Client::builder()
            // reqwest keeps every idle connection for 90 s by default: a
            // burst of N requests left N sockets open (1,780 after one CSI
            // Mount). A few are enough to reuse; the rest close at once.
            .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &settings.ca_cert {
            let pem = crate::file::read_setting_file(ca, "CA bundle", crate::file::MAX_CA_BYTES)
                .map_err(|e| settings_err("caCert", e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| settings_err("caCert", format!("{}: {}", ca.display(), chain(&e))))?;
            if certs.is_empty() {
                return Err(settings_err(
                    "caCert",
                    format!("{}: no PEM certificate found", ca.display()),
                ));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if settings.tls_skip_verify {
            tracing::warn!(
                provider = name,
                "tlsSkipVerify is set: Vault's certificate is not checked"
            );
            b = b.danger_accept_invalid_certs(true);
        }
        let http = b.build().map_err(|e| {
            settings_err(
                "address",
                format!("cannot build HTTP client: {}", chain(&e)),
            )
        })?;
        Ok(VaultProvider {
            name: name.to_string(),
            settings,
            http,
            state: Mutex::new(None),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn login_ref(&self) -> String {
        format!("providers.{} login", self.name)
    }

    fn what(&self) -> String {
        format!("Vault at {}", self.settings.address)
    }

    fn headers(&self, token: Option<&Token>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = token
            && let Ok(mut v) = HeaderValue::from_str(t.expose_secret())
        {
            // Keeps the token out of reqwest/hyper debug output.
            v.set_sensitive(true);
            h.insert("X-Vault-Token", v);
        }
        if let Some(ns) = &self.settings.namespace
            && let Ok(v) = HeaderValue::from_str(ns)
        {
            h.insert("X-Vault-Namespace", v);
        }
        h
    }

    /// Sends a request and returns the status and the body (at most
    /// [`MAX_ANSWER_BYTES`]) in a zeroizing buffer.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        reference: &str,
    ) -> Result<(u16, Zeroizing<Vec<u8>>), Error> {
        let resp = req
            .send()
            .await
            .map_err(|e| self.transport(&e, reference))?;
        let status = resp.status().as_u16();
        // Error answers are bounded too: a refusal can be as large as a value.
        let body = read_reqwest(resp, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| match e {
                ReadError::Exceeded(x) => Error::TooLarge {
                    reference: reference.to_string(),
                    what: self.what(),
                    limit: x.limit,
                },
                ReadError::Transport(e) => self.transport(&e, reference),
            })?;
        Ok((status, body))
    }

    fn transport(&self, e: &reqwest::Error, reference: &str) -> Error {
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

    fn location(&self, v: &VaultRef, r: &str) -> Result<(KvEngine, String, String), Error> {
        let engine = v.engine.unwrap_or(self.settings.kv_version);
        let mount = v
            .mount
            .as_deref()
            .map(|m| m.trim_matches('/').to_string())
            .unwrap_or_else(|| self.settings.mount.clone());
        let mut path = v.path.trim_matches('/').to_string();
        // Accept the full API path the original KernelSeal used
        // (`secret/data/app`) when no mount is given.
        if v.mount.is_none()
            && engine == KvEngine::V2
            && let Some(rest) = path.strip_prefix(&format!("{mount}/data/"))
        {
            path = rest.to_string();
        }
        let bad = |field: &str, message: String| Error::InvalidRef {
            reference: r.to_string(),
            field: format!("vaultRef.{field}"),
            message,
        };
        if path.is_empty()
            || path
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(bad("path", format!("{:?} is not a secret path", v.path)));
        }
        if mount.is_empty()
            || mount
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(bad("mount", format!("{mount:?} is not a mount path")));
        }
        if v.version.is_some() && engine == KvEngine::V1 {
            return Err(bad("version", "version pinning needs KV v2".into()));
        }
        Ok((engine, mount, path))
    }

    async fn read(&self, r: &SecretRef, v: &VaultRef) -> Result<SecretValue, Error> {
        let rs = r.to_string();
        let (engine, mount, path) = self.location(v, &rs)?;
        let url = match engine {
            KvEngine::V2 => format!("{}/v1/{mount}/data/{path}", self.settings.address),
            KvEngine::V1 => format!("{}/v1/{mount}/{path}", self.settings.address),
        };
        let what = format!("Vault secret {mount}/{path}");
        let mut relogged = false;
        loop {
            let token = self.token().await?;
            let mut req = self.http.get(&url).headers(self.headers(Some(&token)));
            if let Some(ver) = v.version {
                req = req.query(&[("version", ver)]);
            }
            tracing::debug!(provider = %self.name, reference = %rs, "vault read");
            let (status, body) = self.send(req, &rs).await?;
            match status {
                200..=299 => return self.parse(r, v, engine, &what, &body),
                403 if !relogged => {
                    tracing::warn!(provider = %self.name, reference = %rs, "vault permission denied; getting a new token and trying once more");
                    self.forget(&token).await;
                    relogged = true;
                }
                403 => {
                    return Err(Error::Forbidden {
                        reference: rs,
                        what,
                        message: self.refusal(status),
                    });
                }
                404 => {
                    return Err(Error::NotFound {
                        reference: rs,
                        what,
                        message: String::new(),
                    });
                }
                s if crate::upstream::is_unavailable(s) => {
                    return Err(Error::Unavailable {
                        reference: rs,
                        what: self.what(),
                        message: self.refusal(status),
                    });
                }
                _ => {
                    return Err(Error::Upstream {
                        reference: rs,
                        status: Some(status),
                        message: http_reason(status).into(),
                    });
                }
            }
        }
    }

    fn parse(
        &self,
        r: &SecretRef,
        v: &VaultRef,
        engine: KvEngine,
        what: &str,
        body: &[u8],
    ) -> Result<SecretValue, Error> {
        let rs = r.to_string();
        let mut resp: Response = serde_json::from_slice(body).map_err(|e| Error::Format {
            reference: rs.clone(),
            field: "vaultRef".into(),
            message: format!("answer is not Vault JSON ({:?} error)", e.classify()),
        })?;
        let mut data = resp.data.take().unwrap_or(Value::Null);
        let result = (|| {
            let (secret, version) = match engine {
                KvEngine::V2 => {
                    let version = data
                        .pointer("/metadata/version")
                        .and_then(Value::as_u64)
                        .map(|n| n.to_string());
                    (data.get_mut("data"), version)
                }
                KvEngine::V1 => (Some(&mut data), None),
            };
            let Some(Value::Object(map)) = secret else {
                return Err(Error::NotFound {
                    reference: rs.clone(),
                    what: what.to_string(),
                    message: "no data (version deleted or destroyed?)".into(),
                });
            };
            let Some(field) = map.get_mut(&v.key) else {
                return Err(Error::KeyNotFound {
                    reference: rs.clone(),
                    field: "vaultRef.key".into(),
                    key: v.key.clone(),
                    what: what.to_string(),
                });
            };
            let bytes = take_value(field);
            if bytes.len() > MAX_VALUE_BYTES {
                return Err(Error::ValueTooLarge {
                    reference: rs.clone(),
                    what: format!("{what} key {:?}", v.key),
                    limit: MAX_VALUE_BYTES,
                });
            }
            let mut meta = Metadata::new(rs.clone(), self.name.clone());
            meta.version = version.or_else(|| Some(content_tag(&bytes)));
            let lease_ttl =
                (resp.lease_duration > 0).then(|| Duration::from_secs(resp.lease_duration));
            meta.ttl = match (self.settings.cache_ttl, lease_ttl) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if !resp.lease_id.is_empty() {
                meta.lease = Some(Lease {
                    id: resp.lease_id.clone(),
                    duration: lease_ttl.unwrap_or_default(),
                    renewable: resp.renewable,
                });
            }
            Ok(SecretValue::new(bytes, meta))
        })();
        wipe(&mut data);
        result
    }

    /// `PUT /v1/sys/leases/renew` for a dynamic secret's lease.
    async fn renew_lease(&self, value: &SecretValue, lease: &Lease) -> Result<Duration, Error> {
        let rs = value.metadata().source.clone();
        let token = self.token().await?;
        let url = format!("{}/v1/sys/leases/renew", self.settings.address);
        let body = serde_json::json!({"lease_id": lease.id, "increment": lease.duration.as_secs()});
        let req = self
            .http
            .put(&url)
            .headers(self.headers(Some(&token)))
            .json(&body);
        let (status, resp) = self.send(req, &rs).await?;
        if !(200..300).contains(&status) {
            let message = self.refusal(status);
            return Err(if crate::upstream::is_unavailable(status) {
                Error::Unavailable {
                    reference: rs,
                    what: self.what(),
                    message,
                }
            } else {
                Error::Upstream {
                    reference: rs,
                    status: Some(status),
                    message: format!("lease renewal refused: {message}"),
                }
            });
        }
        let parsed: Response = serde_json::from_slice(&resp).unwrap_or_default();
        Ok(Duration::from_secs(parsed.lease_duration))
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
            Some(lease) if lease.renewable => self.renew_lease(value, lease).await.map(Some),
            _ => Ok(None),
        }
    }
}
