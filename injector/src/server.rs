//! The agent socket: identify the caller, select its bindings, resolve the
//! secrets, mark the caller protected, verify the mark, and only then reply
//! with the values.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kernelseal_bpf::Marks;
use kernelseal_protocol::{
    EnvVar, ExecRequest, ExecResponse, MAX_REQUEST_BYTES, PROTOCOL_VERSION, decode_request,
    encode_frame,
};
use kernelseal_providers::Cache;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::RwLock;
use tracing::{info, warn};

use crate::admission::{Admission, ConnLimits, Limit, Slot};
use crate::error::InjectError;
use crate::identity::Caller;
use crate::pod_identity::pod_identity;
use crate::select::{PreparedBinding, matches};
use crate::socket_log::{Event, SocketLog};

/// Tells a file-delivery app where its files are.
pub const SECRETS_DIR_VAR: &str = "KERNELSEAL_SECRETS_DIR";

/// A request must arrive this fast: an idle client cannot hold a
/// connection. The wrapper sends its request as it connects.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A reply the caller does not read is dropped after this.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// accept() out of descriptors: wait this long before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How often the counts of ended log windows are written.
const LOG_FLUSH: Duration = Duration::from_secs(1);

/// What a delivery needs, swapped whole on reload.
pub struct Delivery {
    pub bindings: Vec<PreparedBinding>,
    pub cache: Cache,
    /// `None` in `mode: disabled`: secrets are delivered unprotected.
    pub marks: Option<Arc<Marks>>,
    /// `policy.mode: enforce`: a traced caller is refused, not just logged.
    pub enforce: bool,
    pub metrics: Arc<crate::Metrics>,
    /// Processes delivered to, for rotation (outlives a reload).
    pub live: Arc<crate::LiveSet>,
    /// Where `delivery: file` bindings write: `None` until a config with
    /// such a binding opened the secrets directory.
    pub files: Option<Arc<crate::FileStore>>,
    /// Dropped with this delivery: stops its rotation watcher.
    pub stop_watch: Option<tokio::sync::oneshot::Sender<()>>,
    /// `None` when pod identity is disabled or not available here.
    pub pods: Option<Arc<crate::PodIndex>>,
    pub pod_identity: kernelseal_config::PodIdentityMode,
}

impl Delivery {
    /// The file store, for a `delivery: file` binding.
    pub(crate) fn file_store(&self) -> Result<&Arc<crate::FileStore>, InjectError> {
        self.files.as_ref().ok_or_else(|| InjectError::Files {
            path: "(none)".into(),
            reason: "no secrets directory is open: the config had no delivery: file binding".into(),
        })
    }
}

pub type Shared = Arc<RwLock<Arc<Delivery>>>;

/// Binds the socket: a socket left by a dead agent is replaced; a live
/// agent's socket or any other file is refused, never removed.
pub fn bind(path: &Path, group: Option<u32>) -> Result<UnixListener, InjectError> {
    let err = |reason: String| InjectError::Socket {
        path: path.display().to_string(),
        reason,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(err("another agent is serving on it".into()));
            }
            std::fs::remove_file(path)
                .map_err(|e| err(format!("removing the stale socket: {e}")))?;
            warn!(
                "[SOCKET] replaced a stale socket at {} (left by an agent that died)",
                path.display()
            );
        }
        Ok(_) => {
            return Err(err(
                "exists and is not a socket; refusing to remove it".into()
            ));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| err(e.to_string()))?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| err(format!("chown to gid {gid}: {e}")))?;
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
        let delivery = self.shared.read().await.clone();
        let Err(e) = handle(stream, &slot, &delivery).await else {
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
            ConnError::BadRequest { .. } | ConnError::Failed(_) => self.log.record(
                Event::RequestFailed,
                format_args!("[SOCKET] request failed: {e}"),
            ),
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
    #[error("PID {pid}: bad request: {reason}")]
    BadRequest { pid: u32, reason: String },
    #[error(transparent)]
    Failed(#[from] InjectError),
}

async fn read_request(stream: &mut UnixStream) -> Result<ExecRequest, String> {
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|e| e.to_string())?;
    let size = u32::from_be_bytes(len);
    if size > MAX_REQUEST_BYTES {
        return Err(format!(
            "request of {size} bytes is over the {MAX_REQUEST_BYTES}-byte limit"
        ));
    }
    // Grown as bytes arrive, not allocated from the claimed size: a peer
    // that announces 64 KiB and sends nothing costs nothing.
    let mut body = Vec::new();
    (&mut *stream)
        .take(u64::from(size))
        .read_to_end(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    if body.len() < size as usize {
        return Err("early eof".into());
    }
    decode_request(&body).map_err(|e| e.to_string())
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

async fn handle(mut stream: UnixStream, slot: &Slot, d: &Delivery) -> Result<(), ConnError> {
    let caller = Caller::of(&stream)?;
    let req = match read_unless_evicted(&mut stream, slot, &caller).await {
        Ok(r) => r,
        Err(ConnError::BadRequest { pid, reason }) => {
            let why = refused(format!("bad request: {reason}"), false);
            let _ = send(&mut stream, &why, &caller).await;
            return Err(ConnError::BadRequest { pid, reason });
        }
        Err(e) => return Err(e),
    };
    if !slot.mark_busy() {
        return Err(ConnError::Evicted);
    }
    let res = respond(&caller, &req, d).await;
    if let ExecResponse::Refused { .. } = &res {
        d.metrics.secrets_denied.inc();
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
            Ok(Err(reason)) => Err(ConnError::BadRequest { pid: caller.pid, reason }),
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
        Ok(Err(e)) => Err(ConnError::Failed(InjectError::Socket {
            path: "peer".into(),
            reason: e.to_string(),
        })),
        Err(_) => Err(ConnError::ReplyTimeout {
            pid: caller.pid,
            uid: caller.uid,
        }),
    }
}

async fn respond(caller: &Caller, req: &ExecRequest, d: &Delivery) -> ExecResponse {
    let pods = match pod_identity(caller, d).await {
        Ok(p) => p,
        Err((reason, retry)) => return refused(reason, retry),
    };
    let pod_caller = pods.caller();
    let selected: Vec<&PreparedBinding> = d
        .bindings
        .iter()
        .filter(|b| matches(b, caller, &req.binary, pod_caller))
        .collect();
    if selected.is_empty() {
        // A wrapped app without its secrets is a misconfiguration: refused,
        // so the wrapper fails rather than starting it empty. A pod or
        // container the list does not show yet may match on a retry.
        let pod = pods.describe();
        let retry = pods.incomplete() && d.bindings.iter().any(|b| b.needs_pod_identity());
        warn!(
            pid = caller.pid,
            binary = %req.binary,
            "[INJECT] no binding matched PID {} ({}, uid {}{pod})",
            caller.pid,
            req.binary,
            caller.uid
        );
        let who = format!(
            "PID {} ({}, uid {}{pod})",
            caller.pid, req.binary, caller.uid
        );
        return ExecResponse::no_binding(&who, retry);
    }
    // The same variable from two bindings: which wins would be arbitrary.
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    for b in &selected {
        for (name, _) in &b.refs {
            if let Some(other) = owner.insert(name, &b.name)
                && other != b.name
            {
                return refused(
                    format!(
                        "{name} is delivered by both binding {other:?} and {:?}: a config error",
                        b.name
                    ),
                    false,
                );
            }
        }
    }
    let mut env = Vec::new();
    let mut files: Vec<(String, kernelseal_providers::SecretValue)> = Vec::new();
    let mut missing = Vec::new();
    let mut warnings = Vec::new();
    for b in &selected {
        let mut got = 0;
        for (name, sref) in &b.refs {
            let started = std::time::Instant::now();
            let fetched = d.cache.get(sref).await;
            let provider = sref.provider_name().unwrap_or(sref.kind());
            d.metrics
                .observe_fetch(provider, started.elapsed(), fetched.is_ok());
            match fetched {
                Ok(v) if b.delivery == kernelseal_config::Delivery::File => {
                    files.push((name.clone(), v));
                    got += 1;
                }
                Ok(v) => match v.expose_str().filter(|s| !s.contains('\0')) {
                    Some(s) => {
                        env.push(EnvVar {
                            name: name.clone(),
                            value: s.to_string(),
                        });
                        got += 1;
                    }
                    None => {
                        missing.push(name.clone());
                        warnings.push(format!("{name}: value is not text without NUL bytes; cannot go in the environment"));
                    }
                },
                Err(e) => {
                    warn!(binding = %b.name, secret = %name, "[INJECT] {name} of binding {} failed: {e}", b.name);
                    missing.push(name.clone());
                    warnings.push(format!("{name}: {e}"));
                }
            }
        }
        if got == 0 && !b.refs.is_empty() {
            return refused(
                format!(
                    "no secret of binding {:?} could be resolved: {}",
                    b.name,
                    warnings.join("; ")
                ),
                true,
            );
        }
    }
    // Protect, verify, and only then release. A file delivery's id goes in
    // the mark first, so the files are guarded for this tree alone.
    let owner_id = if files.is_empty() {
        0
    } else {
        crate::files::next_owner_id()
    };
    let protected = match &d.marks {
        Some(marks) => {
            if let Err(why) =
                crate::protect::protect_caller(marks, caller, selected[0].id, owner_id, d.enforce)
            {
                warn!(
                    pid = caller.pid,
                    "[INJECT] refusing PID {}: {why}", caller.pid
                );
                return refused(why, false);
            }
            info!(
                pid = caller.pid,
                "[PROTECT] PID {} marked as protected", caller.pid
            );
            true
        }
        None => {
            warn!(
                pid = caller.pid,
                "[WARN] delivering to PID {} UNPROTECTED (mode disabled)", caller.pid
            );
            false
        }
    };
    let mut delivered_files = None;
    if !files.is_empty() {
        let result = caller
            .pidfd
            .try_clone()
            .map_err(|e| InjectError::Identity(e.to_string()))
            .and_then(|fd| {
                d.file_store()?
                    .deliver(caller.pid, caller.uid, caller.gid, owner_id, &files, fd)
            });
        match result {
            Ok(written) => {
                info!(
                    pid = caller.pid,
                    "[FILE] Secrets written to {} for PID {}",
                    written.path().display(),
                    caller.pid
                );
                env.push(EnvVar {
                    name: SECRETS_DIR_VAR.into(),
                    value: written.path().display().to_string(),
                });
                delivered_files = Some(written);
            }
            Err(e) => return refused(format!("writing the secret files failed: {e}"), true),
        }
    }
    track(d, caller, &selected, delivered_files.as_ref());
    // Secrets delivered: env variables and file names (the directory
    // variable is a location, not a secret).
    let names: Vec<&str> = env
        .iter()
        .map(|v| v.name.as_str())
        .filter(|n| *n != SECRETS_DIR_VAR)
        .chain(files.iter().map(|(n, _)| n.as_str()))
        .collect();
    d.metrics.secrets_injected.inc_by(names.len() as u64);
    let bindings: Vec<String> = selected.iter().map(|b| b.name.clone()).collect();
    info!(pid = caller.pid, uid = caller.uid, bindings = ?bindings, "[INJECT] Secrets injected into PID {}: [{}]", caller.pid, names.join(", "));
    ExecResponse::Ok {
        version: PROTOCOL_VERSION,
        bindings,
        env,
        missing,
        protected,
        warnings,
    }
}

/// Remembers a process delivered to, so rotations reach it: one entry per
/// binding, with its files when the binding delivers files.
pub(crate) fn track(
    d: &Delivery,
    caller: &Caller,
    selected: &[&PreparedBinding],
    delivered: Option<&Arc<crate::DeliveredFiles>>,
) {
    for b in selected {
        let pidfd = match caller.pidfd.try_clone() {
            Ok(p) => p,
            Err(e) => {
                warn!(
                    pid = caller.pid,
                    "[ROTATE] PID {} will not hear of rotations: {e}", caller.pid
                );
                return;
            }
        };
        let files = match (delivered, &d.files, b.delivery) {
            (Some(written), Some(store), kernelseal_config::Delivery::File) => {
                Some(crate::rotate::LiveFiles {
                    store: store.clone(),
                    files: written.clone(),
                    names: b
                        .refs
                        .iter()
                        .filter_map(|(n, r)| Some((r.cache_key()?, n.clone())))
                        .collect(),
                })
            }
            _ => None,
        };
        d.live.add(crate::rotate::Live {
            pid: caller.pid,
            pidfd,
            binding: b.name.clone(),
            on_rotate: b.on_rotate.clone(),
            keys: b.refs.iter().filter_map(|(_, r)| r.cache_key()).collect(),
            files,
        });
    }
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
        };
        let frame = encode_frame(&req);
        client.write_all(&frame[..frame.len() - 1]).unwrap();
        assert!(!request_queued(&server), "one byte short");
        client.write_all(&frame[frame.len() - 1..]).unwrap();
        assert!(request_queued(&server));
    }
}
