//! What an `oci-client` error means for the user: the registry could not
//! be reached, refused, has no such image, failed, or what it holds is no
//! image.

use oci_client::Reference;
use oci_client::errors::{OciDistributionError as E, OciEnvelope, OciErrorCode};

use super::{LookupError, PulledWith};

/// Longest part of a registry's error body quoted (it may be a page of
/// HTML from a proxy).
const QUOTED: usize = 200;

/// `e` of a lookup of `reference` made `with` these credentials.
pub(super) fn classify(e: E, reference: &Reference, with: &PulledWith) -> LookupError {
    let image = reference.whole();
    let registry = reference.resolve_registry().to_string();
    let failed = |why: String| LookupError::Failed {
        image: image.clone(),
        registry: registry.clone(),
        why,
    };
    let denied = |status| LookupError::Denied {
        image: image.clone(),
        registry: registry.clone(),
        status,
        with: with.clone(),
    };
    let not_found = |why: String| LookupError::NotFound {
        image: image.clone(),
        registry: registry.clone(),
        why,
    };
    match e {
        E::RequestError(r) if r.is_connect() || r.is_timeout() || r.is_request() => {
            LookupError::Unreachable {
                why: chain(&r),
                image,
                registry,
            }
        }
        E::UnauthorizedError { .. } => denied(401),
        E::AuthenticationFailure(_) => denied(401),
        E::RegistryError { envelope, .. } => match code_of(&envelope) {
            Some(OciErrorCode::Unauthorized) => denied(401),
            Some(OciErrorCode::Denied) => denied(403),
            Some(
                OciErrorCode::ManifestUnknown
                | OciErrorCode::NameUnknown
                | OciErrorCode::NotFound
                | OciErrorCode::BlobUnknown,
            ) => not_found(messages(&envelope)),
            _ => failed(messages(&envelope)),
        },
        E::ServerError { code, message, .. } => match code {
            401 | 403 => denied(code),
            404 => not_found(quote(&message)),
            _ => failed(format!("HTTP {code}: {}", quote(&message))),
        },
        E::ImageManifestNotFoundError(_) => LookupError::NotAnImage {
            image,
            why: "its index lists no linux image".into(),
        },
        E::ManifestParsingError(_)
        | E::VersionedParsingError(_)
        | E::UnsupportedMediaTypeError(_)
        | E::UnsupportedSchemaVersionError(_)
        | E::SpecViolationError(_)
        | E::JsonError(_)
        | E::ManifestEncodingError(_) => LookupError::NotAnImage {
            image,
            why: e.to_string(),
        },
        other => failed(chain(&other)),
    }
}

fn code_of(envelope: &OciEnvelope) -> Option<&OciErrorCode> {
    envelope.errors.first().map(|e| &e.code)
}

fn messages(envelope: &OciEnvelope) -> String {
    let text: Vec<String> = envelope
        .errors
        .iter()
        .map(|e| format!("{:?}: {}", e.code, e.message))
        .collect();
    quote(&text.join("; "))
}

fn quote(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(QUOTED) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// An error and its sources, `: `-joined, each said once (reqwest's own
/// message only names the URL; the reason is in its sources).
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}
