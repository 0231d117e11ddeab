//! The agent socket protocol, version 1.
//!
//! One request and one response per connection, each a frame: a 4-byte
//! big-endian length, then that many bytes of JSON. Requests are small
//! (64 KiB at most); responses carry secret values (4 MiB at most). The
//! wrapper links this crate and nothing async, so it stays small.

#![forbid(unsafe_code)]

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

pub const PROTOCOL_VERSION: u32 = 1;
pub const MAX_REQUEST_BYTES: u32 = 64 * 1024;
pub const MAX_RESPONSE_BYTES: u32 = 4 * 1024 * 1024;
pub const DEFAULT_SOCKET: &str = "/run/kernelseal/kernelseal.sock";
/// Where the wrapper finds the pod's projected service-account tokens
/// (one file per audience) unless told otherwise.
pub const DEFAULT_TOKEN_DIR: &str = "/var/run/secrets/kernelseal.io/tokens";
/// Tokens one request carries at most (one per audience: Vault, STS…).
pub const MAX_TOKENS: usize = 3;
/// Longest token accepted: a projected token is about 1 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// How the reason of a refusal starts when no binding selects the caller.
/// A refusal rather than a message of its own, so that a wrapper of any
/// release treats a misconfigured app as a failure: an older wrapper ran
/// CMD without secrets, silently, on [`ExecResponse::NoBinding`].
pub const NO_BINDING: &str = "no binding matched";

/// What the wrapper asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub version: u32,
    /// Absolute path of the executable the caller will exec. A claim by the
    /// caller, not proof: bindings must not rely on it alone.
    pub binary: String,
    /// The pod's service-account tokens, for bindings that read as the
    /// pod (`identity: pod`). Claims, not proof: the agent checks them
    /// against the caller's pod, and Vault or STS verify the signature.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<ServiceAccountToken>,
}

/// A service-account token (a JWT) as the wrapper sends it. Wiped when
/// dropped; never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServiceAccountToken(String);

impl ServiceAccountToken {
    pub fn new(token: String) -> Self {
        ServiceAccountToken(token)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The token, moved out into memory that wipes itself.
    pub fn into_zeroizing(mut self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(std::mem::take(&mut self.0))
    }
}

impl Drop for ServiceAccountToken {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for ServiceAccountToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceAccountToken(<redacted>)")
    }
}

/// One environment variable to set. The value is wiped when dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

impl Drop for EnvVar {
    fn drop(&mut self) {
        self.value.zeroize();
    }
}

impl std::fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvVar")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExecResponse {
    /// Secrets for the caller, which the agent marked protected first
    /// (`protected: false` only in `mode: disabled`).
    Ok {
        version: u32,
        bindings: Vec<String>,
        env: Vec<EnvVar>,
        /// Secrets of the bindings that could not be resolved (names only);
        /// the wrapper's --on-error decides whether to run without them.
        missing: Vec<String>,
        protected: bool,
        warnings: Vec<String>,
    },
    /// No binding selects this caller and binary. Sent by agents of
    /// earlier releases; agents now answer [`ExecResponse::no_binding`].
    /// Both are a failure to the wrapper.
    NoBinding { version: u32 },
    /// The caller must not get secrets now; `retry` when it may work later
    /// (agent starting, provider down).
    Refused {
        version: u32,
        reason: String,
        retry: bool,
    },
}

impl ExecResponse {
    /// The refusal for a caller no binding selects: `details` say who it
    /// is (binary, uid, pod, container; never a value). `retry` when its
    /// identity was not complete yet (a container the pod list does not
    /// show yet), so a later request may match.
    pub fn no_binding(details: &str, retry: bool) -> Self {
        ExecResponse::Refused {
            version: PROTOCOL_VERSION,
            reason: format!("{NO_BINDING}: {details}"),
            retry,
        }
    }

    /// Whether this answer says that no binding selects the caller.
    pub fn is_no_binding(&self) -> bool {
        match self {
            ExecResponse::NoBinding { .. } => true,
            ExecResponse::Refused { reason, .. } => reason.starts_with(NO_BINDING),
            ExecResponse::Ok { .. } => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("i/o on the agent socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {size} bytes is over the {limit}-byte limit")]
    TooLarge { size: u32, limit: u32 },
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unsupported protocol version {0} (this side speaks {PROTOCOL_VERSION})")]
    Version(u32),
}

/// Writes one frame with a single write: a length prefix sent on its own
/// wakes the peer once for four bytes and again for the body. The copy it
/// makes is wiped: a body may hold values.
pub fn write_frame(w: &mut impl Write, body: &[u8]) -> Result<(), ProtocolError> {
    let len = u32::try_from(body.len()).map_err(|_| ProtocolError::TooLarge {
        size: u32::MAX,
        limit: MAX_RESPONSE_BYTES,
    })?;
    let mut frame = zeroize::Zeroizing::new(Vec::with_capacity(4 + body.len()));
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    w.write_all(&frame)?;
    w.flush()?;
    Ok(())
}

/// Counts what would be written.
struct ByteCount(usize);

impl Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A message encoded as one whole frame (length prefix, then the JSON
/// body), built in place, for a single write.
pub fn encode_frame<T: Serialize>(msg: &T) -> Vec<u8> {
    // Sized first, so the buffer never grows: a reallocation would free a
    // partial copy of the values unwiped.
    let mut counter = ByteCount(0);
    serde_json::to_writer(&mut counter, msg).expect("protocol messages always serialize");
    let mut frame = Vec::with_capacity(4 + counter.0);
    frame.extend_from_slice(&[0u8; 4]);
    serde_json::to_writer(&mut frame, msg).expect("protocol messages always serialize");
    let len = u32::try_from(frame.len() - 4).unwrap_or(u32::MAX);
    frame[..4].copy_from_slice(&len.to_be_bytes());
    frame
}

/// Reads one frame of at most `limit` bytes.
pub fn read_frame(r: &mut impl Read, limit: u32) -> Result<Vec<u8>, ProtocolError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let size = u32::from_be_bytes(len);
    if size > limit {
        return Err(ProtocolError::TooLarge { size, limit });
    }
    let mut body = vec![0u8; size as usize];
    r.read_exact(&mut body)?;
    Ok(body)
}

pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    serde_json::to_vec(msg).expect("protocol messages always serialize")
}

/// Decodes a request. Like [`decode_response`], the error never quotes
/// the input: a request may carry tokens.
pub fn decode_request(body: &[u8]) -> Result<ExecRequest, ProtocolError> {
    let req: ExecRequest = serde_json::from_slice(body).map_err(|e| malformed(&e))?;
    if req.tokens.len() > MAX_TOKENS {
        return Err(ProtocolError::Malformed(format!(
            "{} tokens (at most {MAX_TOKENS})",
            req.tokens.len()
        )));
    }
    if let Some(t) = req.tokens.iter().find(|t| t.0.len() > MAX_TOKEN_BYTES) {
        return Err(ProtocolError::Malformed(format!(
            "a token of {} bytes (at most {MAX_TOKEN_BYTES})",
            t.0.len()
        )));
    }
    if req.version != PROTOCOL_VERSION {
        return Err(ProtocolError::Version(req.version));
    }
    Ok(req)
}

/// The kind and place of a JSON error, never its text (which can quote
/// the input).
fn malformed(e: &serde_json::Error) -> ProtocolError {
    let place = match e.line() {
        0 => String::new(),
        line => format!(" at line {line} column {}", e.column()),
    };
    ProtocolError::Malformed(format!("{:?} error{place}", e.classify()))
}

/// Decodes a response. serde_json's error text can quote the input
/// ("invalid type: string \"…\""), so the error names only the kind and
/// place: a malformed response cannot leak a value through it.
pub fn decode_response(mut body: Vec<u8>) -> Result<ExecResponse, ProtocolError> {
    let res = serde_json::from_slice::<ExecResponse>(&body).map_err(|e| malformed(&e));
    body.zeroize();
    let res = res?;
    let version = match &res {
        ExecResponse::Ok { version, .. }
        | ExecResponse::NoBinding { version }
        | ExecResponse::Refused { version, .. } => *version,
    };
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::Version(version));
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_response_does_not_quote_its_values() {
        let body = br#"{"status":"ok","version":1,"bindings":"TOP-SECRET-VALUE"}"#.to_vec();
        let e = decode_response(body).unwrap_err().to_string();
        assert!(!e.contains("TOP-SECRET"), "{e}");
        assert!(e.contains("Data error"), "{e}");
    }

    #[test]
    fn a_whole_frame_reads_back_as_the_message() {
        let msg = ExecResponse::Refused {
            version: PROTOCOL_VERSION,
            reason: "no".into(),
            retry: false,
        };
        let frame = encode_frame(&msg);
        assert_eq!(
            u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize,
            frame.len() - 4
        );
        let body = read_frame(&mut &frame[..], MAX_RESPONSE_BYTES).unwrap();
        assert_eq!(decode_response(body).unwrap(), msg);
    }

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").unwrap();
        assert_eq!(read_frame(&mut buf.as_slice(), 16).unwrap(), b"hello");
        let e = read_frame(&mut buf.as_slice(), 4).unwrap_err();
        assert!(
            matches!(e, ProtocolError::TooLarge { size: 5, limit: 4 }),
            "{e}"
        );
        let e = read_frame(&mut [0u8, 0].as_slice(), 16).unwrap_err();
        assert!(matches!(e, ProtocolError::Io(_)), "short frame: {e}");
    }

    #[test]
    fn messages_round_trip_and_versions_are_checked() {
        let req = ExecRequest {
            version: 1,
            binary: "/usr/bin/app".into(),
            tokens: vec![],
        };
        assert_eq!(decode_request(&encode(&req)).unwrap(), req);
        assert!(
            !String::from_utf8(encode(&req)).unwrap().contains("tokens"),
            "no tokens, no field: an agent of an earlier release refuses unknown fields"
        );
        let e = decode_request(br#"{"version":2,"binary":"/x"}"#).unwrap_err();
        assert!(matches!(e, ProtocolError::Version(2)));
        assert!(decode_request(br#"{"version":1}"#).is_err());
        assert!(decode_request(br#"{"version":1,"binary":"/x","extra":1}"#).is_err());
        let res = ExecResponse::Ok {
            version: 1,
            bindings: vec!["b".into()],
            env: vec![EnvVar {
                name: "A".into(),
                value: "s3cret".into(),
            }],
            missing: vec![],
            protected: true,
            warnings: vec![],
        };
        assert_eq!(decode_response(encode(&res)).unwrap(), res);
    }

    #[test]
    fn no_binding_is_a_refusal_told_apart_from_the_others() {
        let nb = ExecResponse::no_binding("PID 7 (/usr/bin/app, uid 1000)", false);
        // What an older wrapper sees: a refusal, not `no_binding`.
        let wire = String::from_utf8(encode(&nb)).unwrap();
        assert!(wire.contains(r#""status":"refused""#), "{wire}");
        let back = decode_response(encode(&nb)).unwrap();
        assert!(back.is_no_binding());
        let ExecResponse::Refused { reason, retry, .. } = back else {
            panic!("{back:?}")
        };
        assert_eq!(reason, "no binding matched: PID 7 (/usr/bin/app, uid 1000)");
        assert!(!retry);
        let old = decode_response(br#"{"status":"no_binding","version":1}"#.to_vec()).unwrap();
        assert!(old.is_no_binding(), "an older agent's answer");
        let other = ExecResponse::Refused {
            version: PROTOCOL_VERSION,
            reason: "podIdentity: required and the caller is not in a Kubernetes pod".into(),
            retry: false,
        };
        assert!(!other.is_no_binding());
    }

    #[test]
    fn tokens_are_bounded_and_stay_out_of_debug_and_errors() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzZWNyZXQifQ.c2lnbmF0dXJl";
        let req = ExecRequest {
            version: 1,
            binary: "/usr/bin/app".into(),
            tokens: vec![ServiceAccountToken::new(jwt.into())],
        };
        let back = decode_request(&encode(&req)).unwrap();
        assert_eq!(back.tokens[0].expose(), jwt);
        assert!(!format!("{back:?}").contains(jwt));
        let wrong_type = format!(r#"{{"version":1,"binary":"/x","tokens":"{jwt}"}}"#);
        let e = decode_request(wrong_type.as_bytes()).unwrap_err();
        assert!(!e.to_string().contains(jwt), "{e}");
        let many = ExecRequest {
            tokens: vec![ServiceAccountToken::new("t".into()); MAX_TOKENS + 1],
            ..req.clone()
        };
        assert!(decode_request(&encode(&many)).is_err());
        let big = ExecRequest {
            tokens: vec![ServiceAccountToken::new("t".repeat(MAX_TOKEN_BYTES + 1))],
            ..req
        };
        let e = decode_request(&encode(&big)).unwrap_err();
        assert!(e.to_string().contains("at most 16384"), "{e}");
    }

    #[test]
    fn values_stay_out_of_debug_and_errors() {
        let v = EnvVar {
            name: "A".into(),
            value: "s3cret-value".into(),
        };
        assert!(!format!("{v:?}").contains("s3cret"));
        let broken = br#"{"status":"ok","version":1,"env":[{"name":"A","value":"s3cret-value"}],"bindings":[],"missing":[],"protected":"yes","warnings":[]}"#;
        let e = decode_response(broken.to_vec()).unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
}
