//! What an upstream's error answer may contribute to our errors: its HTTP
//! status and, for AWS, an error code from a fixed list. Never its body.
//!
//! A CSI SecretProviderClass can point `vaultAddress` at any server, and
//! even a real server's error text can quote what it was sent (Vault and
//! the Kubernetes API echo names, a proxy echoes headers). Scrubbing the
//! token we sent out of that text is not enough: a body can carry it in
//! pieces, base64-encoded or inside a quoted `Status.message`, and the
//! text ends up in gRPC statuses, pod events and logs. So the error names
//! the status class and a short fixed reason, and nothing else.

/// Whether an HTTP status says the upstream is unavailable for now (a
/// server error or throttling), not that it refused: the cache serves a
/// stale value and retries through these, never through a refusal.
pub(crate) fn is_unavailable(status: u16) -> bool {
    status >= 500 || status == 429
}

/// A short fixed reason for an HTTP status.
pub(crate) fn http_reason(status: u16) -> &'static str {
    match status {
        400 => "bad request",
        401 => "unauthorized",
        403 => "permission denied",
        404 => "not found",
        405 => "method not allowed",
        409 => "conflict",
        412 => "precondition failed",
        413 => "request too large",
        422 => "unprocessable request",
        429 => "too many requests",
        500 => "internal server error",
        502 => "bad gateway",
        503 => "service unavailable",
        504 => "gateway timeout",
        402..=499 => "request refused",
        501..=599 => "server error",
        _ => "unexpected status",
    }
}

/// `"<who> answered <status> <reason>"`, e.g. `Vault answered 403
/// permission denied`.
pub(crate) fn answered(who: &str, status: u16) -> String {
    format!("{who} answered {status} {}", http_reason(status))
}

/// AWS error codes we pass on; any other code (a hostile or broken
/// endpoint can put anything there) becomes `error`.
const AWS_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "DecryptionFailure",
    "ExpiredToken",
    "ExpiredTokenException",
    "IDPCommunicationError",
    "IDPRejectedClaim",
    "IncompleteSignature",
    "InternalFailure",
    "InternalServerError",
    "InternalServiceError",
    "InvalidClientTokenId",
    "InvalidIdentityToken",
    "InvalidKeyId",
    "InvalidParameterException",
    "InvalidRequestException",
    "InvalidSignatureException",
    "MalformedPolicyDocument",
    "PackedPolicyTooLarge",
    "ParameterNotFound",
    "ParameterVersionNotFound",
    "RegionDisabledException",
    "ResourceNotFoundException",
    "ServiceUnavailable",
    "SignatureDoesNotMatch",
    "ThrottlingException",
    "UnrecognizedClientException",
];

/// The AWS error code if it is a known one, else `"error"`.
pub fn aws_error_code(code: Option<&str>) -> &'static str {
    code.and_then(|c| AWS_CODES.iter().find(|k| **k == c).copied())
        .unwrap_or("error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_codes() {
        assert_eq!(
            answered("Vault", 403),
            "Vault answered 403 permission denied"
        );
        assert_eq!(http_reason(418), "request refused");
        assert_eq!(http_reason(599), "server error");
        assert_eq!(
            aws_error_code(Some("AccessDeniedException")),
            "AccessDeniedException"
        );
        assert_eq!(aws_error_code(Some("eyJhbGciOiJSUzI1NiJ9")), "error");
        assert_eq!(aws_error_code(None), "error");
    }
}
