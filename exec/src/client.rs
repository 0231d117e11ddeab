//! One request to the agent, retried until the deadline while the agent is
//! down or asks to retry.

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::secret_heap::SecretHeap;
use kernelseal_protocol::{
    EnvVar, ExecRequest, ExecResponse, MAX_RESPONSE_BYTES, NO_BINDING, ProtocolError,
    decode_response, encode, read_frame, write_frame,
};

pub enum Outcome {
    Delivered {
        env: Vec<EnvVar>,
        missing: Vec<String>,
        bindings: Vec<String>,
        protected: bool,
        warnings: Vec<String>,
    },
    /// No binding selects this process: a misconfiguration, a failure
    /// like any other, told apart for a clearer message. The agent's reason
    /// (`no binding matched: …`), for one line on stderr.
    NoBinding(String),
    /// The reason, for one line on stderr.
    Failed(String),
}

fn once(
    socket: &str,
    req: &ExecRequest,
    remaining: Duration,
    heap: &SecretHeap,
) -> Result<ExecResponse, ProtocolError> {
    let mut stream = UnixStream::connect(socket)?;
    let io_timeout = Some(remaining.max(Duration::from_millis(10)));
    stream.set_read_timeout(io_timeout)?;
    stream.set_write_timeout(io_timeout)?;
    // The encoded request may hold tokens: wiped once sent.
    let body = zeroize::Zeroizing::new(encode(req));
    write_frame(&mut stream, &body)?;
    // While the agent works on the answer: map the secret heap (and fault
    // its first pages in), so the reply and all built from it land there
    // and the set-up costs no time of its own.
    heap.activate();
    decode_response(read_frame(&mut stream, MAX_RESPONSE_BYTES)?)
}

/// The agent closes connections it cannot take (its connection limits): a
/// write to one must be an error to retry, not a SIGPIPE that kills the
/// wrapper. `kernelseal-exec` has no std runtime to ignore it; the launch
/// restores the default before exec.
fn ignore_sigpipe() {
    // SAFETY: setting a signal disposition has no memory preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Asks the agent, retrying until `timeout`. `heap` is activated once the
/// request is sent.
pub fn ask(socket: &str, req: &ExecRequest, timeout: Duration, heap: &SecretHeap) -> Outcome {
    ignore_sigpipe();
    // A timeout beyond what the clock can add is as good as forever.
    let deadline = Instant::now()
        .checked_add(timeout)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(u64::from(u32::MAX)));
    let mut backoff = Duration::from_millis(50);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        // The last answer worth retrying: a "no binding" reason as the agent
        // gave it, anything else with what failed in front.
        let last = match once(socket, req, remaining, heap) {
            Ok(ExecResponse::Ok {
                env,
                missing,
                bindings,
                protected,
                warnings,
                ..
            }) => {
                return Outcome::Delivered {
                    env,
                    missing,
                    bindings,
                    protected,
                    warnings,
                };
            }
            Ok(ExecResponse::NoBinding { .. }) => {
                return Outcome::NoBinding(format!(
                    "{NO_BINDING} (the agent, of an older release, says no more)"
                ));
            }
            Ok(ExecResponse::Refused {
                reason,
                retry: false,
                ..
            }) => {
                if reason.starts_with(NO_BINDING) {
                    return Outcome::NoBinding(reason);
                }
                return Outcome::Failed(format!("the agent refused: {reason}"));
            }
            // Not identified yet (a container the pod list does not show
            // yet): a later request may match.
            Ok(ExecResponse::Refused {
                reason,
                retry: true,
                ..
            }) if reason.starts_with(NO_BINDING) => reason,
            Ok(ExecResponse::Refused {
                reason,
                retry: true,
                ..
            }) => format!("the agent refused: {reason}"),
            // Protocol errors will not fix themselves.
            Err(
                e @ (ProtocolError::Malformed(_)
                | ProtocolError::Version(_)
                | ProtocolError::TooLarge { .. }),
            ) => {
                return Outcome::Failed(e.to_string());
            }
            Err(ProtocolError::Io(e)) => format!("agent at {socket} unavailable: {e}"),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            let why = format!("{last} (gave up after {:.1}s)", timeout.as_secs_f64());
            return match last.starts_with(NO_BINDING) {
                true => Outcome::NoBinding(why),
                false => Outcome::Failed(why),
            };
        }
        std::thread::sleep(backoff.min(remaining));
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
