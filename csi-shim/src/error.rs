//! The crate's one error type.
//!
//! Every variant names what it is about (a parameter, an object, a file)
//! and carries only text that is safe to show in a pod's events: provider
//! errors are already scrubbed by `kernelseal-providers`, and nothing here
//! ever formats a secret value or a token.

use std::path::PathBuf;

/// Why a Mount (or the provider's start) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `attributes` (or `secrets`) is not the JSON map the driver sends.
    #[error("{field}: {message}")]
    Request { field: String, message: String },
    /// A SecretProviderClass parameter is invalid.
    #[error("parameter {parameter}: {message}")]
    Parameter { parameter: String, message: String },
    /// A field of one entry of `objects` is invalid.
    #[error("object {object}: {field}: {message}")]
    Object {
        object: String,
        field: String,
        message: String,
    },
    /// The object asks for something this provider refuses to serve (a
    /// local source not allowed by a flag, another namespace's Secret).
    #[error("object {object}: refused: {message}")]
    Refused { object: String, message: String },
    /// The pod's service-account token needed for remote auth is missing.
    #[error("object {object}: {message}")]
    MissingToken { object: String, message: String },
    /// Fetching the object's secret failed.
    #[error("object {object}: {source}")]
    Fetch {
        object: String,
        source: kernelseal_providers::Error,
    },
    /// The content is not in the declared `encoding`.
    #[error("object {object}: encoding: content is not valid {encoding}")]
    Encoding { object: String, encoding: String },
    /// The reply would exceed what the driver accepts.
    #[error(
        "the response would be {size} bytes, over the driver's {limit}-byte gRPC limit; split the objects over several SecretProviderClasses"
    )]
    TooLarge { size: usize, limit: usize },
    /// The HMAC key file for object versions is unusable.
    #[error("hmac key file {}: {message}", path.display())]
    KeyFile { path: PathBuf, message: String },
    /// The unix socket cannot be set up.
    #[error("socket {}: {message}", path.display())]
    Socket { path: PathBuf, message: String },
    /// A server (gRPC, health) failed.
    #[error("{what}: {message}")]
    Serve { what: String, message: String },
}

/// The driver's `error.code` vocabulary; we report through gRPC statuses
/// but keep the same split for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    InvalidParameters,
    ProviderError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::InvalidParameters => "InvalidParameters",
            Outcome::ProviderError => "ProviderError",
        }
    }
}

impl Error {
    /// Whether the request itself is wrong (fix the SecretProviderClass)
    /// or the provider could not serve a valid request.
    pub fn outcome(&self) -> Outcome {
        match self {
            Error::Request { .. }
            | Error::Parameter { .. }
            | Error::Object { .. }
            | Error::Refused { .. }
            | Error::MissingToken { .. } => Outcome::InvalidParameters,
            _ => Outcome::ProviderError,
        }
    }

    /// The gRPC status the driver receives. The message names the object
    /// and ends up in the pod's events, so it must stay free of secrets.
    pub fn to_status(&self) -> tonic::Status {
        use kernelseal_providers::Error as P;
        let msg = self.to_string();
        match self {
            Error::Request { .. } | Error::Parameter { .. } | Error::Object { .. } => {
                tonic::Status::invalid_argument(msg)
            }
            Error::Refused { .. } | Error::MissingToken { .. } => {
                tonic::Status::permission_denied(msg)
            }
            Error::Fetch { source, .. } => match source {
                P::NotFound { .. } | P::KeyNotFound { .. } => tonic::Status::not_found(msg),
                P::Forbidden { .. } | P::Auth { .. } => tonic::Status::permission_denied(msg),
                P::InvalidRef { .. } | P::Settings { .. } | P::Provider { .. } => {
                    tonic::Status::failed_precondition(msg)
                }
                // An upstream's answer over the maximum secret size.
                P::TooLarge { .. } | P::ValueTooLarge { .. } => {
                    tonic::Status::resource_exhausted(msg)
                }
                e if e.is_retryable() => tonic::Status::unavailable(msg),
                _ => tonic::Status::internal(msg),
            },
            Error::Encoding { .. } => tonic::Status::failed_precondition(msg),
            Error::TooLarge { .. } => tonic::Status::resource_exhausted(msg),
            _ => tonic::Status::internal(msg),
        }
    }
}
