//! The agent socket: identify the caller, read its request, and answer
//! with the delivery of [`crate::deliver`] (protect, verify, and only then
//! the values) or the refusal.

use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kernelseal_protocol::{
    ExecRequest, ExecResponse, MAX_REQUEST_BYTES, PROTOCOL_VERSION, ProtocolError, decode_request,
    encode_frame,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tracing::warn;

use crate::admission::{Admission, ConnLimits, Limit, Slot};
use crate::deliver::{Occasion, Refusal, deliver};
use crate::error::{InjectError, SocketProblem};
use crate::identity::Caller;
use crate::pod_token::PodToken;
use crate::socket_log::{Event, SocketLog};
use crate::state::{ServingState, Shared};

/// A request must arrive this fast: an idle client cannot hold a
/// connection. The wrapper sends its request as it connects.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A reply the caller does not read is dropped after this.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// accept() out of descriptors: wait this long before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How often the counts of ended log windows are written.
const LOG_FLUSH: Duration = Duration::from_secs(1);

/// Binds the socket: a socket left by a dead agent is replaced; a live
/// agent's socket or any other file is refused, never removed.
pub fn bind(path: &Path, group: Option<u32>) -> Result<UnixListener, InjectError> {
    let err = |problem: SocketProblem| InjectError::Socket {
        path: path.display().to_string(),
        problem,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| {
            err(SocketProblem::CreateDir {
                dir: dir.display().to_string(),
                source,
            })
        })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(err(SocketProblem::InUse));
            }
            std::fs::remove_file(path).map_err(|e| err(SocketProblem::RemoveStale(e)))?;
            warn!(
                "[SOCKET] replaced a stale socket at {} (left by an agent that died)",
                path.display()
            );
        }
        Ok(_) => return Err(err(SocketProblem::NotASocket)),
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|e| err(e.into()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| err(e.into()))?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|source| err(SocketProblem::Chown { gid, source }))?;
    }
    Ok(listener)
}

/// What the socket server needs besides the listener and the delivery.
pub struct ServeOptions {
    pub limits: ConnLimits,
    /// Counts the connections closed unserved.
    pub metrics: Arc<crate::Metrics>,
}

/// The accept loop's state, shared with the connection tasks.
struct Server {
    shared: Shared,
    admission: Arc<Admission>,
    limits: ConnLimits,
    log: SocketLog,
}

/// Serves until the process ends; each connection in its own task, within
/// the limits of `opts`.
pub async fn serve(listener: UnixListener, shared: Shared, opts: ServeOptions) {
    let server = Arc::new(Server {
        shared,
        admission: Admission::new(opts.limits),
        limits: opts.limits,
        log: SocketLog::new(opts.metrics),
    });
    let mut flush = tokio::time::interval(LOG_FLUSH);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    server.admit(stream);
                    // Lets the new connection's task read its request before
                    // the next accept: a burst accepted in one go must not
                    // evict it as idle before it had the chance.
                    tokio::task::yield_now().await;
                }
                Err(e) => server.accept_failed(e).await,
            },
            _ = flush.tick() => server.log.flush(),
        }
    }
}

/// Whether to pause before the next accept. Out of descriptors or memory
/// the next accept fails the same way: retrying at once would only spin
/// (and log), while the idle connections time out and free descriptors.
fn accept_backoff(e: &std::io::Error) -> Option<Duration> {
    match e.raw_os_error() {
        // One peer gave up, or a signal came: the next accept may succeed.
        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO) => None,
        _ => Some(ACCEPT_BACKOFF),
    }
}

/// Whether a whole request already waits in the socket. The wrapper writes
/// its request as it connects, so under load it is there by the time the
/// connection is accepted, and such a connection is never taken for idle.
fn request_queued(stream: &UnixStream) -> bool {
    let fd = stream.as_raw_fd();
    let mut len = [0u8; 4];
    // SAFETY: recv into a 4-byte buffer; MSG_PEEK leaves the bytes queued.
    let n = unsafe {
        libc::recv(
            fd,
            len.as_mut_ptr().cast(),
            len.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n != 4 {
        return false;
    }
    let size = u32::from_be_bytes(len);
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD stores the number of queued bytes in an int.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut queued) };
    rc == 0 && size <= MAX_REQUEST_BYTES && i64::from(queued) >= 4 + i64::from(size)
}

impl Server {
    /// Takes a new connection in, or closes it at once (dropped) when its
    /// uid's or the agent's connections are all being served.
    fn admit(self: &Arc<Self>, stream: UnixStream) {
        let uid = match crate::identity::peer_uid(&stream) {
            Ok(uid) => uid,
            Err(e) => {
                let line = format_args!("[SOCKET] request failed: {e}");
                self.log.record(Event::RequestFailed, line);
                return;
            }
        };
        match self.admission.admit(uid, !request_queued(&stream)) {
            Ok((slot, evicted)) => {
                if let Some(ev) = evicted {
                    self.log.record(
                        Event::Evicted,
                        format_args!(
                            "[SOCKET] closed an idle connection of uid {} (no request yet) to make room under {}",
                            ev.uid,
                            self.limit_text(ev.limit)
                        ),
                    );
                }
                let server = self.clone();
                tokio::spawn(async move { server.connection(stream, slot).await });
            }
            Err(limit) => {
                let ev = match limit {
                    Limit::Uid => Event::UidLimit,
                    Limit::Agent => Event::AgentLimit,
                };
                self.log.record(
                    ev,
                    format_args!(
                        "[SOCKET] refused a connection from uid {uid}: {} reached and every connection is being served",
                        self.limit_text(limit)
                    ),
                );
            }
        }
    }

    fn limit_text(&self, limit: Limit) -> String {
        match limit {
            Limit::Uid => format!("the limit of {} connections per uid", self.limits.per_uid),
            Limit::Agent => format!("the agent's limit of {} connections", self.limits.total),
        }
    }

    async fn accept_failed(&self, e: std::io::Error) {
        self.log.record(
            Event::AcceptFailed,
            format_args!("[SOCKET] accept failed: {e}"),
        );
        if let Some(pause) = accept_backoff(&e) {
            tokio::time::sleep(pause).await;
        }
    }

    /// One connection, start to end; its place is freed when `slot` drops.
    async fn connection(&self, stream: UnixStream, slot: Slot) {
        let state = self.shared.read().await.clone();
        let Err(e) = handle(stream, &slot, &state).await else {
            return;
        };
        match e {
            // Logged when it was evicted.
            ConnError::Evicted => {}
            ConnError::RequestTimeout { .. } => self.log.record(
                Event::RequestTimeout,
                format_args!("[SOCKET] closed a connection: {e}"),
            ),
            ConnError::ReplyTimeout { .. } => self.log.record(
                Event::ReplyTimeout,
                format_args!("[SOCKET] closed a connection: {e}"),
            ),
            ConnError::BadRequest { .. } | ConnError::ReplyFailed { .. } | ConnError::Failed(_) => {
                self.log.record(
                    Event::RequestFailed,
                    format_args!("[SOCKET] request failed: {e}"),
                )
            }
        }
    }
}

/// How a connection ended without being served.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("closed to make room (no request yet)")]
    Evicted,
    #[error("PID {pid} (uid {uid}) sent no request within {}s", REQUEST_TIMEOUT.as_secs())]
    RequestTimeout { pid: u32, uid: u32 },
    #[error("PID {pid} (uid {uid}) did not take its reply within {}s", REPLY_TIMEOUT.as_secs())]
    ReplyTimeout { pid: u32, uid: u32 },
    #[error("PID {pid}: bad request: {problem}")]
    BadRequest {
        pid: u32,
        #[source]
        problem: RequestProblem,
    },
    #[error("PID {pid}: sending the reply failed: {source}")]
    ReplyFailed { pid: u32, source: std::io::Error },
    #[error(transparent)]
    Failed(#[from] InjectError),
}

/// What is wrong with a request as it arrived.
#[derive(Debug, thiserror::Error)]
enum RequestProblem {
    #[error(transparent)]
    Read(#[from] std::io::Error),
    #[error("request of {size} bytes is over the {MAX_REQUEST_BYTES}-byte limit")]
    TooLarge { size: u32 },
    #[error("early eof")]
    EarlyEof,
    #[error(transparent)]
    Decode(#[from] ProtocolError),
}

async fn read_request(stream: &mut UnixStream) -> Result<ExecRequest, RequestProblem> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let size = u32::from_be_bytes(len);
    if size > MAX_REQUEST_BYTES {
        return Err(RequestProblem::TooLarge { size });
    }
    // Grown as bytes arrive, not allocated from the claimed size: a peer
    // that announces 64 KiB and sends nothing costs nothing. Wiped: it may
    // hold tokens.
    let mut body = zeroize::Zeroizing::new(Vec::new());
    (&mut *stream)
        .take(u64::from(size))
        .read_to_end(&mut body)
        .await?;
    if body.len() < size as usize {
        return Err(RequestProblem::EarlyEof);
    }
    Ok(decode_request(&body)?)
}

async fn reply(stream: &mut UnixStream, res: &ExecResponse) -> std::io::Result<()> {
    // The encoded response holds the values: wiped when sent. One write,
    // so the wrapper wakes once.
    let frame = zeroize::Zeroizing::new(encode_frame(res));
    stream.write_all(&frame).await?;
    stream.flush().await
}

fn refused(reason: impl Into<String>, retry: bool) -> ExecResponse {
    ExecResponse::Refused {
        version: PROTOCOL_VERSION,
        reason: reason.into(),
        retry,
    }
}

async fn handle(
    mut stream: UnixStream,
    slot: &Slot,
    state: &ServingState,
) -> Result<(), ConnError> {
    let caller = Caller::of(&stream)?;
    let req = match read_unless_evicted(&mut stream, slot, &caller).await {
        Ok(r) => r,
        Err(ConnError::BadRequest { pid, problem }) => {
            let why = refused(format!("bad request: {problem}"), false);
            let _ = send(&mut stream, &why, &caller).await;
            return Err(ConnError::BadRequest { pid, problem });
        }
        Err(e) => return Err(e),
    };
    if !slot.mark_busy() {
        return Err(ConnError::Evicted);
    }
    let res = respond(&caller, req, state).await;
    if let ExecResponse::Refused { .. } = &res {
        state.metrics.secrets_denied.inc();
    }
    send(&mut stream, &res, &caller).await
}

/// The request, unless it is late or the connection is closed to make
/// room first.
async fn read_unless_evicted(
    stream: &mut UnixStream,
    slot: &Slot,
    caller: &Caller,
) -> Result<ExecRequest, ConnError> {
    tokio::select! {
        read = tokio::time::timeout(REQUEST_TIMEOUT, read_request(stream)) => match read {
            Ok(Ok(req)) => Ok(req),
            Ok(Err(problem)) => Err(ConnError::BadRequest { pid: caller.pid, problem }),
            Err(_) => Err(ConnError::RequestTimeout { pid: caller.pid, uid: caller.uid }),
        },
        () = slot.evicted() => Err(ConnError::Evicted),
    }
}

/// Replies within [`REPLY_TIMEOUT`]: a caller that does not read cannot
/// hold the connection.
async fn send(
    stream: &mut UnixStream,
    res: &ExecResponse,
    caller: &Caller,
) -> Result<(), ConnError> {
    match tokio::time::timeout(REPLY_TIMEOUT, reply(stream, res)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(ConnError::ReplyFailed {
            pid: caller.pid,
            source,
        }),
        Err(_) => Err(ConnError::ReplyTimeout {
            pid: caller.pid,
            uid: caller.uid,
        }),
    }
}

/// The answer to a wrapper's request: its delivery, or why not.
async fn respond(caller: &Caller, req: ExecRequest, state: &ServingState) -> ExecResponse {
    let ExecRequest { binary, tokens, .. } = req;
    let tokens: Vec<PodToken> = tokens
        .into_iter()
        .map(|t| PodToken::new(t.into_zeroizing()))
        .collect();
    let occasion = Occasion::Request {
        binary: &binary,
        tokens: &tokens,
    };
    match deliver(state, caller, occasion).await {
        Ok(d) => ExecResponse::Ok {
            version: PROTOCOL_VERSION,
            bindings: d.bindings,
            env: d.env,
            missing: d.missing,
            protected: d.protected,
            warnings: d.warnings,
        },
        Err(refusal) => refusal_reply(caller, &refusal),
    }
}

/// The refusal as the wrapper is told it (a "no binding matched" one is
/// told apart by its prefix: [`ExecResponse::is_no_binding`]).
fn refusal_reply(caller: &Caller, refusal: &Refusal) -> ExecResponse {
    match refusal {
        Refusal::NoBinding {
            pid,
            uid,
            program,
            pod,
            ..
        } => warn!(
            // The path as this host writes it: what a cgroupPath selector
            // for this caller must name.
            pid, binary = %program, cgroup = caller.cgroup(),
            "[INJECT] no binding matched PID {pid} ({program}, uid {uid}{pod})"
        ),
        Refusal::Protect(_) | Refusal::AsPod { .. } => warn!(
            pid = caller.pid,
            "[INJECT] refusing PID {}: {refusal}", caller.pid
        ),
        _ => {}
    }
    refused(refusal.reason(), refusal.retry())
}

/// Removes the socket file on shutdown.
pub fn unbind(path: &PathBuf) {
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn accept_pauses_when_out_of_descriptors_only() {
        let err = std::io::Error::from_raw_os_error;
        assert_eq!(accept_backoff(&err(libc::EMFILE)), Some(ACCEPT_BACKOFF));
        assert_eq!(accept_backoff(&err(libc::ENFILE)), Some(ACCEPT_BACKOFF));
        assert_eq!(accept_backoff(&err(libc::ECONNABORTED)), None);
    }

    #[tokio::test]
    async fn a_request_counts_as_queued_once_whole() {
        let (mut client, server) = std::os::unix::net::UnixStream::pair().unwrap();
        server.set_nonblocking(true).unwrap();
        let server = UnixStream::from_std(server).unwrap();
        assert!(!request_queued(&server), "nothing sent");
        let req = ExecRequest {
            version: PROTOCOL_VERSION,
            binary: "/bin/sh".into(),
            tokens: vec![],
        };
        let frame = encode_frame(&req);
        client.write_all(&frame[..frame.len() - 1]).unwrap();
        assert!(!request_queued(&server), "one byte short");
        client.write_all(&frame[frame.len() - 1..]).unwrap();
        assert!(request_queued(&server));
    }
}
