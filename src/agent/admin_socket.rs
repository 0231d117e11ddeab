//! The agent's side of the admin socket ([`crate::admin`]): marks changed
//! for `kernelseal protect | unprotect` go through the agent's own marks
//! handle, so the tamper watchdog records them as the agent's.
//!
//! Only a process that could have written the pinned maps itself is served
//! (CAP_BPF or CAP_SYS_ADMIN in the agent's user namespace): the socket
//! gives nobody a power they did not have, while `/run/kernelseal` is often
//! mounted into application pods for the wrapper's socket.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::anyhow;
use kernelseal_bpf::Marks;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

use crate::admin::{self, Op, Reply, Request};
use crate::exit::Failure;

/// Binds the admin socket (mode 0600) and serves it until the agent exits.
pub fn start(socket: &Path, marks: Arc<Marks>, pin_dir: PathBuf) -> Result<(), Failure> {
    let listener = kernelseal_injector::bind(socket, None).map_err(Failure::runtime)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Failure::runtime(anyhow!("admin socket {}: {e}", socket.display())))?;
    }
    tokio::spawn(serve(listener, marks, pin_dir));
    info!("[OK] admin socket on {}", socket.display());
    Ok(())
}

async fn serve(listener: UnixListener, marks: Arc<Marks>, pin_dir: PathBuf) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors: the peer waits in the backlog meanwhile.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let (marks, pin_dir) = (marks.clone(), pin_dir.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(admin::TIMEOUT, answer(stream, &marks, &pin_dir)).await;
        });
    }
}

async fn answer(mut stream: UnixStream, marks: &Marks, pin_dir: &Path) -> std::io::Result<()> {
    let (uid, peer) = match stream.peer_cred() {
        Ok(c) => (c.uid(), c.pid().unwrap_or(0) as u32),
        Err(_) => return Ok(()),
    };
    let mut line = String::new();
    BufReader::new(&mut stream)
        .take(admin::MAX_REQUEST_BYTES as u64)
        .read_line(&mut line)
        .await?;
    let reply = match Request::parse(&line) {
        Err(why) => {
            warn!("[ADMIN] bad request from PID {peer} (uid {uid}): {why}");
            Reply::Failed(why)
        }
        Ok(req) if req.pin_dir != pin_dir => Reply::Elsewhere,
        Ok(req) => match peer_may_write_maps(&stream, peer) {
            Err(why) => {
                warn!(
                    "[ADMIN] refused kernelseal {} {} from PID {peer} (uid {uid}): {why}",
                    req.op.as_str(),
                    req.pid
                );
                Reply::Failed(format!("the agent refuses: {why}"))
            }
            Ok(()) => {
                let reply = change(marks, &req);
                let outcome = match &reply {
                    Reply::Done(_) => "done".to_string(),
                    Reply::Failed(e) => format!("failed: {e}"),
                    Reply::Elsewhere => "not this agent's".to_string(),
                };
                info!(
                    "[ADMIN] kernelseal {} {} from PID {peer} (uid {uid}): {outcome}",
                    req.op.as_str(),
                    req.pid
                );
                reply
            }
        },
    };
    stream.write_all(reply.encode().as_bytes()).await
}

/// SO_PEERPIDFD (Linux 6.5+): names the peer for as long as it lives.
const SO_PEERPIDFD: libc::c_int = 77;

fn peer_pidfd(stream: &UnixStream) -> Option<OwnedFd> {
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into an int.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&mut fd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    // SAFETY: on success the kernel returned a new fd we own.
    (rc == 0 && fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The peer's capabilities, read from /proc by PID. A peer that exited
/// after sending could have had its PID reused by a more privileged
/// process: where the kernel gives a pidfd, the peer must still be alive
/// after the read.
fn peer_may_write_maps(stream: &UnixStream, pid: u32) -> Result<(), String> {
    let pidfd = peer_pidfd(stream);
    crate::caps::peer_may_write_maps(pid)?;
    match pidfd {
        Some(fd) if !kernelseal_bpf::pidfd_alive(fd.as_fd()) => {
            Err("it exited before it could be identified".into())
        }
        _ => Ok(()),
    }
}

fn change(marks: &Marks, req: &Request) -> Reply {
    if req.op == Op::Unprotect
        && let Err(e) = crate::marks_cli::refuse_on_locked_node(&req.pin_dir)
    {
        return Reply::Failed(e.to_string());
    }
    let done = match req.op {
        Op::Protect => marks
            .protect(req.pid, 0)
            .map(|p| crate::marks_cli::protected_line(&p)),
        Op::Unprotect => marks
            .unprotect(req.pid)
            .map(|p| crate::marks_cli::unprotected_line(&p)),
    };
    match done {
        Ok(line) => Reply::Done(line),
        Err(e) => Reply::Failed(e.to_string()),
    }
}
