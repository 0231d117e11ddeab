//! `kernelseal providers check`: resolve every `secretRefs` entry once and
//! report OK with source and version, or the error. Never a value.

use std::time::Duration;

use kernelseal_config::Config;

use crate::SecretProvider;
use crate::error::Error;
use crate::reference::SecretRef;
use crate::registry::Registry;
use crate::value::HeldLease;

/// Bound on one ref's check, so that a silent endpoint cannot hang the command.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The outcome of checking one `secretRefs` entry.
#[derive(Debug, Clone)]
pub struct RefCheck {
    /// `secrets[].name`.
    pub binding: String,
    /// `secretRefs[].name` (the env var or file name it is delivered as).
    pub secret: String,
    /// `envRef`, `vaultRef`, …
    pub source_kind: &'static str,
    /// The ref as text (`vaultRef vault-prod:app#api_key`).
    pub reference: String,
    /// The provider instance that served it, when one was found.
    pub provider: Option<String>,
    pub result: Result<CheckedValue, Error>,
}

/// What a successful check learned. Nothing secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedValue {
    pub version: Option<String>,
    pub lease: Option<Duration>,
    pub ttl: Option<Duration>,
}

impl RefCheck {
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }
}

impl std::fmt::Display for RefCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let provider = self.provider.as_deref().unwrap_or("-");
        match &self.result {
            Ok(v) => {
                write!(
                    f,
                    "OK   {}/{}  {} via {provider}",
                    self.binding, self.secret, self.reference
                )?;
                if let Some(ver) = &v.version {
                    write!(f, "  version={ver}")?;
                }
                if let Some(l) = v.lease {
                    write!(f, "  lease={}s", l.as_secs())?;
                }
                Ok(())
            }
            Err(e) => write!(
                f,
                "FAIL {}/{}  {} via {provider}: {e}",
                self.binding, self.secret, self.reference
            ),
        }
    }
}

/// Checks every ref of a validated config with a registry built from it.
/// A provider whose settings are invalid fails every ref (the error names
/// the provider and field).
pub async fn check_config(config: &Config) -> Vec<RefCheck> {
    match Registry::from_config(config) {
        Ok(reg) => check_with(&reg, config).await,
        Err(e) => each_ref(config)
            .into_iter()
            .map(|(binding, secret, kind, reference, _)| RefCheck {
                binding,
                secret,
                source_kind: kind,
                reference,
                provider: None,
                result: Err(e.clone()),
            })
            .collect(),
    }
}

type RefRow = (String, String, &'static str, String, SecretRef);

fn each_ref(config: &Config) -> Vec<RefRow> {
    let mut out = Vec::new();
    for b in &config.secrets {
        for sr in &b.value.secret_refs {
            let spec = &sr.value;
            let r = spec.source.value.clone();
            out.push((
                b.value.name.clone(),
                spec.naming.label(),
                r.kind(),
                r.to_string(),
                r,
            ));
        }
    }
    out
}

/// Checks every ref of `config` against an existing registry, in order,
/// fetching each once, concurrently.
pub async fn check_with(registry: &Registry, config: &Config) -> Vec<RefCheck> {
    let rows = each_ref(config);
    let futs = rows
        .into_iter()
        .map(|(binding, secret, kind, reference, r)| async move {
            // A template is rendered (each of its refs read from its own
            // provider): the check sees what a delivery would get.
            let (provider, result) = match &r {
                SecretRef::Template(_) => (
                    Some(crate::template::TEMPLATE_PROVIDER.to_string()),
                    checked(registry, &r).await,
                ),
                _ => match registry.resolve(&r) {
                    Err(e) => (None, Err(e)),
                    Ok((name, p)) => (Some(name), checked(&*p, &r).await),
                },
            };
            RefCheck {
                binding,
                secret,
                source_kind: kind,
                reference,
                provider,
                result,
            }
        });
    join_all(futs).await
}

/// Fetches `r` once, within [`CHECK_TIMEOUT`], keeping what is not secret.
/// A dynamic secret read by the check is revoked at once: it was read
/// for nobody.
async fn checked(p: &dyn SecretProvider, r: &SecretRef) -> Result<CheckedValue, Error> {
    let fetched = tokio::time::timeout(CHECK_TIMEOUT, p.fetch(r))
        .await
        .unwrap_or_else(|_| {
            Err(Error::Timeout {
                reference: r.to_string(),
                after: CHECK_TIMEOUT,
            })
        });
    if let Some(held) = fetched
        .as_ref()
        .ok()
        .filter(|_| r.is_dynamic())
        .and_then(HeldLease::of)
    {
        p.revoke_held(&held).await?;
    }
    fetched.map(|v| {
        let m = v.metadata();
        CheckedValue {
            version: m.version.clone(),
            lease: m.lease.as_ref().map(|l| l.duration),
            ttl: m.ttl,
        }
    })
}

/// Runs futures concurrently on the current task and keeps their order.
async fn join_all<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = handles.iter().map(|_| None).collect();
    let mut handles: Vec<Option<_>> = handles.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (h, o) in handles.iter_mut().zip(outs.iter_mut()) {
            if let Some(f) = h {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *o = Some(v);
                        *h = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outs.into_iter().flatten().collect()
}
