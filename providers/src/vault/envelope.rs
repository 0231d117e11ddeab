//! Vault's response envelope (`data`, `lease_*`, `auth`), as this provider
//! reads it.
//!
//! Not vaultrs's `EndpointResult`/`AuthInfo`: those require every field
//! Vault sends (`request_id`, `accessor`, `policies`, …) and refuse answers
//! that leave any out, hold the client token in a plain `String`, and
//! vaultrs's `kv2::read` turns the secret into the caller's type without
//! wiping the tree it parsed. Here every field but the one in use may be
//! missing, the token goes straight into a `SecretBox`, and the `data` tree
//! is wiped by its reader.

use secrecy::SecretBox;
use serde::Deserialize;
use serde_json::Value;

use crate::error::Error;

#[derive(Deserialize, Default)]
pub(super) struct Envelope {
    #[serde(default)]
    pub(super) data: Option<Value>,
    #[serde(default)]
    pub(super) lease_id: String,
    #[serde(default)]
    pub(super) lease_duration: u64,
    #[serde(default)]
    pub(super) renewable: bool,
    #[serde(default)]
    pub(super) auth: Option<AuthBlock>,
}

/// Only the lease of an answer: its `data` (the secret) is skipped by the
/// parser, never copied into a tree that would have to be wiped.
#[derive(Deserialize, Default)]
pub(super) struct LeaseFields {
    #[serde(default)]
    pub(super) lease_id: String,
    #[serde(default)]
    pub(super) lease_duration: u64,
    #[serde(default)]
    pub(super) renewable: bool,
}

impl LeaseFields {
    /// The lease fields of an answer; an unreadable one has none.
    pub(super) fn parse_or_default(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }
}

/// The `auth` block of a login or token renewal.
#[derive(Deserialize)]
pub(super) struct AuthBlock {
    pub(super) client_token: SecretBox<str>,
    #[serde(default)]
    pub(super) lease_duration: u64,
    #[serde(default)]
    pub(super) renewable: bool,
}

impl Envelope {
    /// Parses an answer; on failure, `what_failed` turns the category of the
    /// JSON error (never its text, which can quote the body) into the error.
    pub(super) fn parse(
        body: &[u8],
        what_failed: impl FnOnce(serde_json::error::Category) -> Error,
    ) -> Result<Self, Error> {
        serde_json::from_slice(body).map_err(|e| what_failed(e.classify()))
    }

    /// Parses an answer whose content is a bonus (renewals): anything
    /// unreadable is an empty envelope.
    pub(super) fn parse_or_default(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }
}
