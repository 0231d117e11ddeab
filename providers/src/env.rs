//! `envRef` and literal `value` sources: the agent's own environment.

use std::os::unix::ffi::OsStringExt;

use zeroize::Zeroizing;

use crate::SecretProvider;
use crate::error::Error;
use crate::reference::SecretRef;
use crate::value::{Metadata, SecretValue, content_tag};

/// Resolves `envRef` (from the agent's environment) and `value` literals.
#[derive(Debug, Default, Clone)]
pub struct EnvProvider;

#[async_trait::async_trait]
impl SecretProvider for EnvProvider {
    fn kind(&self) -> &'static str {
        "env"
    }

    async fn fetch(&self, reference: &SecretRef) -> Result<SecretValue, Error> {
        let bytes = match reference {
            SecretRef::Value(_) => {
                Zeroizing::new(reference.literal_bytes().unwrap_or_default().to_vec())
            }
            SecretRef::Env { var } => match std::env::var_os(var) {
                Some(v) => Zeroizing::new(v.into_vec()),
                None => {
                    return Err(Error::EnvNotSet {
                        reference: reference.to_string(),
                        var: var.clone(),
                    });
                }
            },
            other => return Err(wrong_kind(other, "env")),
        };
        let mut meta = Metadata::new(reference.to_string(), local_provider(reference));
        meta.version = Some(content_tag(&bytes));
        Ok(SecretValue::new(bytes, meta))
    }
}

pub(crate) fn wrong_kind(r: &SecretRef, provider: &str) -> Error {
    Error::Provider {
        reference: r.to_string(),
        message: format!("a {provider} provider cannot resolve a {}", r.kind()),
    }
}

/// Name of the built-in provider for the local kinds.
fn local_provider(r: &SecretRef) -> &'static str {
    match r {
        SecretRef::Value(_) => "value",
        SecretRef::Env { .. } => "env",
        SecretRef::File { .. } => "file",
        _ => "",
    }
}
