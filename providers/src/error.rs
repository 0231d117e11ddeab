//! The crate's one error type.
//!
//! Every variant names what it is about (a ref, a provider and field) and
//! carries only text that is safe to print: messages are built from
//! upstream error descriptions, never from bodies that could hold a value,
//! and tokens are scrubbed before they get here. Variants hold `String`s
//! rather than source errors so that an error can be cloned to every waiter
//! of a single-flight fetch.

use std::path::PathBuf;
use std::time::Duration;

/// Why a secret could not be fetched or a provider could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A provider's entry in `providers:` is invalid.
    #[error("providers.{provider}.{field}: {message}")]
    Settings {
        provider: String,
        field: String,
        message: String,
    },
    /// The ref names no usable provider (unknown name, wrong type, ambiguous).
    #[error("{reference}: provider: {message}")]
    Provider { reference: String, message: String },
    /// A field of the ref itself is unusable (jsonKey on binary…).
    #[error("{reference}: {field}: {message}")]
    InvalidRef {
        reference: String,
        field: String,
        message: String,
    },
    /// `envRef` names a variable the agent does not have.
    #[error("{reference}: environment variable {var} is not set in the agent's environment")]
    EnvNotSet { reference: String, var: String },
    /// `fileRef` could not be read. (The ref text already names the path.)
    #[error("{reference}: {problem}")]
    File {
        reference: String,
        path: PathBuf,
        problem: FileProblem,
    },
    /// The secret (Kubernetes Secret, Vault path, AWS secret) does not exist.
    #[error("{reference}: {what} not found{}", detail_suffix(message))]
    NotFound {
        reference: String,
        what: String,
        message: String,
    },
    /// The secret exists but has no such key.
    #[error("{reference}: {field}: key {key:?} not found in {what}")]
    KeyNotFound {
        reference: String,
        field: String,
        key: String,
        what: String,
    },
    /// The backend refused access (RBAC 403, Vault permission denied, AWS AccessDenied).
    #[error("{reference}: access to {what} denied: {message}")]
    Forbidden {
        reference: String,
        what: String,
        message: String,
    },
    /// The content is not what the ref asks for (malformed JSON, binary where text is needed).
    #[error("{reference}: {field}: {message}")]
    Format {
        reference: String,
        field: String,
        message: String,
    },
    /// Logging in to a provider failed (Vault kubernetes/approle login, token file).
    #[error("providers.{provider}: authentication failed: {message}")]
    Auth { provider: String, message: String },
    /// Network failure or server-side error: worth retrying or failing over.
    #[error("{reference}: {what} unavailable: {message}")]
    Unavailable {
        reference: String,
        what: String,
        message: String,
    },
    /// The backend answered with an error that fits no other variant.
    #[error("{reference}: {}{message}", status.map(|s| format!("HTTP {s}: ")).unwrap_or_default())]
    Upstream {
        reference: String,
        status: Option<u16>,
        message: String,
    },
    /// TLS could not be set up or the peer's certificate was refused.
    #[error("{reference}: TLS: {message}")]
    Tls { reference: String, message: String },
    /// One attempt took longer than the per-call timeout.
    #[error("{reference}: no answer within {after:?}")]
    Timeout { reference: String, after: Duration },
    /// The upstream's answer is larger than any secret may be (see
    /// [`MAX_ANSWER_BYTES`](crate::MAX_ANSWER_BYTES)); it was not read.
    #[error(
        "{reference}: {what} answered more than {limit} bytes, the maximum secret size; refused"
    )]
    TooLarge {
        reference: String,
        what: String,
        limit: usize,
    },
    /// One value in an answer is over the per-value bound (see
    /// [`MAX_VALUE_BYTES`](crate::MAX_VALUE_BYTES)); it was dropped.
    #[error(
        "{reference}: {what}: the value is over {limit} bytes, the maximum value size; refused"
    )]
    ValueTooLarge {
        reference: String,
        what: String,
        limit: usize,
    },
    /// A template's ref could not be fetched; `error` says why.
    #[error("{reference}: ref {name}: {error}")]
    TemplateRefFailed {
        reference: String,
        name: String,
        error: Box<Error>,
    },
    /// A template reads a ref it was given no value for.
    #[error("{reference}: ref {name} has no value to render with")]
    TemplateRefMissing { reference: String, name: String },
    /// A template reads `name.key` and the ref's JSON object has no such key.
    #[error("{reference}: ref {name} has no key {key:?} (the template reads {name}.{key})")]
    TemplateKeyMissing {
        reference: String,
        name: String,
        key: String,
    },
    /// A template reads `name.key` but the ref's value is not a JSON object.
    #[error(
        "{reference}: ref {name} is not a JSON object, so it has no key {key:?} (the template \
         reads {name}.{key})"
    )]
    TemplateNotObject {
        reference: String,
        name: String,
        key: String,
    },
    /// The template did not render: the engine's error kind and line, or
    /// a ref that is not text.
    #[error("{reference}: {message}")]
    Template { reference: String, message: String },
}

fn detail_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// What was wrong with a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileProblem {
    #[error("no such file")]
    Missing,
    #[error("is a directory, not a file")]
    IsDirectory,
    #[error("is not a regular file")]
    NotRegular,
    /// Read beneath an allowed directory: a component below it is a
    /// symlink, which is never followed there.
    #[error("a symlink on the path below the allowed directory; symlinks are not followed there")]
    Symlink,
    /// Read beneath an allowed directory: the path is not a clean one below it.
    #[error("is not a clean path below the allowed directory")]
    NotBeneath,
    #[error("is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: u64, limit: u64 },
    #[error("permission denied for the agent (uid {uid}); check the file's owner and mode")]
    PermissionDenied { uid: u32 },
    #[error("{0}")]
    Io(String),
}

impl Error {
    /// Whether another attempt could succeed: network and server-side
    /// failures are, a missing key or a 403 is not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::TemplateRefFailed { error, .. } => error.is_retryable(),
            Error::Unavailable { .. } | Error::Timeout { .. } => true,
            Error::Upstream { status, .. } => status.is_none_or(crate::upstream::is_unavailable),
            _ => false,
        }
    }

    /// Whether the upstream could not be asked (timeouts, connection
    /// errors, 5xx, 429) rather than answered. Only these may be bridged
    /// with a value cached earlier: a refusal (401/403/404, a login
    /// refused) or a malformed or oversized answer is the upstream's word
    /// and must reach the caller.
    pub fn is_availability(&self) -> bool {
        match self {
            Error::TemplateRefFailed { error, .. } => error.is_availability(),
            Error::Unavailable { .. } | Error::Timeout { .. } => true,
            Error::Upstream {
                status: Some(s), ..
            } => crate::upstream::is_unavailable(*s),
            _ => false,
        }
    }
}

/// Joins an error and its sources into one line. Library errors keep the
/// useful part (connection refused, certificate unknown) in their sources.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

/// A request that got no answer: a TLS failure, or `what` unavailable
/// (which a failover or a retry may cure).
pub(crate) fn transport_error(
    err: &(dyn std::error::Error + 'static),
    reference: &str,
    what: &str,
) -> Error {
    let message = chain(err);
    if is_tls(err) {
        Error::Tls {
            reference: reference.to_string(),
            message,
        }
    } else {
        Error::Unavailable {
            reference: reference.to_string(),
            what: what.to_string(),
            message,
        }
    }
}

/// Whether an error is a TLS failure rather than a plain network one, so
/// that the user is pointed at `caCert`/`tlsSkipVerify`. rustls errors hide
/// inside `io::Error`s, whose `source()` skips them, so look inside those too.
pub(crate) fn is_tls(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        cur = e.source();
    }
    let t = chain(err).to_ascii_lowercase();
    // Wrappers that erase the type leave rustls's Display texts.
    [
        "certificate",
        "tls",
        "handshake",
        "corrupt message",
        "fatal alert",
        "peer is incompatible",
        "peer misbehaved",
    ]
    .iter()
    .any(|needle| t.contains(needle))
}
