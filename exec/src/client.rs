//! One request to the agent, retried until the deadline while the agent is
//! down or asks to retry.

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::secret_heap::SecretHeap;
use kernelseal_protocol::{
    EnvVar, ExecRequest, ExecResponse, MAX_RESPONSE_BYTES, PROTOCOL_VERSION, ProtocolError,
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
    NoBinding,
    /// The reason, for one line on stderr.
    Failed(String),
}

fn once(
    socket: &str,
    binary: &str,
    remaining: Duration,
    heap: &SecretHeap,
) -> Result<ExecResponse, ProtocolError> {
    let mut stream = UnixStream::connect(socket)?;
    let io_timeout = Some(remaining.max(Duration::from_millis(10)));
    stream.set_read_timeout(io_timeout)?;
    stream.set_write_timeout(io_timeout)?;
    let req = ExecRequest {
        version: PROTOCOL_VERSION,
        binary: binary.to_string(),
    };
    write_frame(&mut stream, &encode(&req))?;
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
pub fn ask(socket: &str, binary: &str, timeout: Duration, heap: &SecretHeap) -> Outcome {
    ignore_sigpipe();
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(50);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let last = match once(socket, binary, remaining, heap) {
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
            Ok(ExecResponse::NoBinding { .. }) => return Outcome::NoBinding,
            Ok(ExecResponse::Refused {
                reason,
                retry: false,
                ..
            }) => {
                return Outcome::Failed(format!("the agent refused: {reason}"));
            }
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
            return Outcome::Failed(format!(
                "{last} (gave up after {:.1}s)",
                timeout.as_secs_f64()
            ));
        }
        std::thread::sleep(backoff.min(remaining));
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
