//! KV reads: v2 (`{mount}/data/{path}`, optional `?version=N`) and v1,
//! which also reads dynamic secrets (`database/creds/app`) with their lease.

use std::time::Duration;

use serde_json::Value;
use vaultrs::api::kv1::requests::GetSecretRequest;
use vaultrs::api::kv2::requests::ReadSecretRequest;

use super::VaultProvider;
use super::envelope::{Envelope, LeaseFields};
use crate::error::Error;
use crate::json::{take_value, to_bytes, wipe};
use crate::limit::MAX_VALUE_BYTES;
use crate::reference::{KvEngine, SecretRef, VaultRef};
use crate::upstream::http_reason;
use crate::value::{Lease, Metadata, SecretValue, content_tag};

/// Longest mount plus path of a ref: Vault's own paths are far shorter.
const MAX_LOCATION_BYTES: usize = 4096;

/// Where a ref points: engine, mount and path, checked.
struct Location {
    engine: KvEngine,
    mount: String,
    path: String,
}

impl VaultProvider {
    fn location(&self, v: &VaultRef, r: &str) -> Result<Location, Error> {
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
        // vaultrs re-parses the URL it was given with `/v1` in front and
        // panics when that crosses http's URI limit: refuse far before.
        if mount.len() + path.len() > MAX_LOCATION_BYTES {
            return Err(bad(
                "path",
                format!("mount and path together exceed {MAX_LOCATION_BYTES} bytes"),
            ));
        }
        if v.version.is_some() && engine != KvEngine::V2 {
            return Err(bad("version", "version pinning needs KV v2".into()));
        }
        Ok(Location {
            engine,
            mount,
            path,
        })
    }

    pub(super) async fn read(&self, r: &SecretRef, v: &VaultRef) -> Result<SecretValue, Error> {
        let rs = r.to_string();
        let at = self.location(v, &rs)?;
        let what = format!("Vault secret {}/{}", at.mount, at.path);
        let mut relogged = false;
        loop {
            let token = self.token().await?;
            tracing::debug!(provider = %self.name, reference = %rs, "vault read");
            let reply = match at.engine {
                KvEngine::V2 => {
                    let read = ReadSecretRequest {
                        mount: at.mount.clone(),
                        path: at.path.clone(),
                        version: v.version,
                    };
                    self.call(&read, Some(&token), &rs).await?
                }
                KvEngine::V1 | KvEngine::Dynamic => {
                    let read = GetSecretRequest {
                        mount: at.mount.clone(),
                        path: at.path.clone(),
                    };
                    self.call(&read, Some(&token), &rs).await?
                }
            };
            let status = reply.status;
            match status {
                200..=299 => {
                    let parsed = self.parse(r, v, at.engine, &what, &reply.body);
                    if parsed.is_err() {
                        self.revoke_unused(&rs, &reply.body).await;
                    }
                    return parsed;
                }
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

    /// A credential Vault issued in an answer that is not delivered (a
    /// missing key, an oversized value) is revoked now, not left to its TTL.
    async fn revoke_unused(&self, rs: &str, body: &[u8]) {
        let answer = LeaseFields::parse_or_default(body);
        if answer.lease_id.is_empty() {
            return;
        }
        let lease = Lease {
            id: answer.lease_id.clone(),
            duration: Duration::from_secs(answer.lease_duration),
            renewable: answer.renewable,
        };
        if let Err(e) = self.revoke_lease(rs, &lease).await {
            tracing::warn!(provider = %self.name, reference = %rs, "revoking the lease of an answer not delivered: {e}");
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
        let mut resp = Envelope::parse(body, |category| Error::Format {
            reference: rs.clone(),
            field: "vaultRef".into(),
            message: format!("answer is not Vault JSON ({category:?} error)"),
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
                KvEngine::V1 | KvEngine::Dynamic => (Some(&mut data), None),
            };
            let Some(Value::Object(map)) = secret else {
                return Err(Error::NotFound {
                    reference: rs.clone(),
                    what: what.to_string(),
                    message: "no data (version deleted or destroyed?)".into(),
                });
            };
            let bytes = match &v.key {
                Some(key) => match map.get_mut(key) {
                    Some(field) => take_value(field),
                    None => {
                        return Err(Error::KeyNotFound {
                            reference: rs.clone(),
                            field: "vaultRef.key".into(),
                            key: key.clone(),
                            what: what.to_string(),
                        });
                    }
                },
                // The tree is wiped below, with the rest of the answer.
                None => to_bytes(map),
            };
            if bytes.len() > MAX_VALUE_BYTES {
                return Err(Error::ValueTooLarge {
                    reference: rs.clone(),
                    what: match &v.key {
                        Some(key) => format!("{what} key {key:?}"),
                        None => what.to_string(),
                    },
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
}
