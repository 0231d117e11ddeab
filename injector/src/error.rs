//! Why the delivery side could not do something. Never carries a secret
//! value.
//!
//! An error's text is whole: it names the underlying error too, which is
//! also its `source`, so a log line or a refusal shows the error as it is
//! and a caller can still match on the cause. (A chain printer therefore
//! meets a cause twice; the binary's exit message prints each cause once.)

use std::io;

/// Why a delivery, or setting the delivery side up, did not happen.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("cannot identify the caller: SO_PEERCRED: {0}")]
    PeerCred(#[source] io::Error),
    #[error("cannot identify the caller: {0}")]
    CallerPidfd(#[source] kernelseal_bpf::BpfError),
    #[error("cannot identify the caller: PID {pid} changed while being identified")]
    CallerChanged { pid: u32 },
    /// The node's pod list could not be read: the caller's pod is unknown.
    #[error("listing the pods of node {node}: {source}")]
    PodList {
        node: String,
        source: Box<kube::Error>,
    },
    /// A service account's annotations could not be read.
    #[error("reading service account {namespace}/{name}: {source}")]
    ServiceAccount {
        namespace: String,
        name: String,
        source: Box<kube::Error>,
    },
    /// The caller's pidfd, kept for its files' cleanup, could not be
    /// duplicated.
    #[error("duplicating the pidfd of PID {pid}: {source}")]
    Pidfd { pid: u32, source: io::Error },
    #[error("socket {path}: {problem}")]
    Socket {
        path: String,
        #[source]
        problem: SocketProblem,
    },
    #[error("secret files at {path}: {problem}")]
    Files {
        path: String,
        #[source]
        problem: FilesProblem,
    },
}

/// What went wrong setting up the agent socket.
#[derive(Debug, thiserror::Error)]
pub enum SocketProblem {
    #[error("creating {dir}: {source}")]
    CreateDir { dir: String, source: io::Error },
    #[error("another agent is serving on it")]
    InUse,
    #[error("removing the stale socket: {0}")]
    RemoveStale(#[source] io::Error),
    #[error("exists and is not a socket; refusing to remove it")]
    NotASocket,
    #[error("chown to gid {gid}: {source}")]
    Chown { gid: u32, source: io::Error },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What went wrong with the secrets directory or a delivery's files.
#[derive(Debug, thiserror::Error)]
pub enum FilesProblem {
    /// A refusal of the file store's own, with its reason.
    #[error("{0}")]
    Refused(&'static str),
    #[error("cannot open it as a directory (not a symlink): {0}")]
    OpenRoot(#[source] io::Error),
    /// The root path no longer leads to the held directory, and cannot
    /// even be looked at.
    #[error("{} ({source})", crate::files::ROOT_CHANGED)]
    RootGone { source: io::Error },
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<&'static str> for FilesProblem {
    fn from(reason: &'static str) -> Self {
        FilesProblem::Refused(reason)
    }
}
