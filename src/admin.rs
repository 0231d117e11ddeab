//! The agent's admin socket: `kernelseal protect` and `unprotect` ask the
//! running agent to change a mark instead of writing the pinned map
//! themselves, so the agent's tamper watchdog knows the change is
//! KernelSeal's own (a mark removed behind its back is put back; one it
//! removed itself is not).
//!
//! One request and one reply per connection, each one line of text:
//! `protect <pid> <pin dir>` or `unprotect <pid> <pin dir>`; the reply is
//! `ok <text to print>`, `err <message>`, or `elsewhere` from an agent
//! that pins under another directory (the CLI then writes the map itself).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_ADMIN_SOCKET: &str = "/run/kernelseal/admin.sock";
/// Requests are a verb, a PID and a path.
pub const MAX_REQUEST_BYTES: usize = 4096;
/// A mark change is a few syscalls; a silent agent is a stuck one.
pub const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Protect,
    Unprotect,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Protect => "protect",
            Op::Unprotect => "unprotect",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub op: Op,
    pub pid: u32,
    /// The pin directory the CLI was told: an agent pinning elsewhere is
    /// not the one whose maps it means.
    pub pin_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Done(String),
    Failed(String),
    Elsewhere,
}

impl Request {
    pub fn encode(&self) -> String {
        format!(
            "{} {} {}\n",
            self.op.as_str(),
            self.pid,
            self.pin_dir.display()
        )
    }

    pub fn parse(line: &str) -> Result<Self, String> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let mut parts = line.splitn(3, ' ');
        let op = match parts.next() {
            Some("protect") => Op::Protect,
            Some("unprotect") => Op::Unprotect,
            _ => return Err("unknown request".into()),
        };
        let pid = parts.next().and_then(|p| p.parse().ok()).ok_or("bad PID")?;
        let pin_dir = match parts.next() {
            Some(dir) if dir.starts_with('/') => PathBuf::from(dir),
            _ => return Err("bad pin directory".into()),
        };
        Ok(Request { op, pid, pin_dir })
    }
}

impl Reply {
    /// Newlines in a message would end the reply early: they become spaces.
    pub fn encode(&self) -> String {
        let one_line = |s: &str| s.replace('\n', " ");
        match self {
            Reply::Done(text) => format!("ok {}\n", one_line(text)),
            Reply::Failed(msg) => format!("err {}\n", one_line(msg)),
            Reply::Elsewhere => "elsewhere\n".into(),
        }
    }

    pub fn parse(line: &str) -> Result<Self, String> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        if let Some(text) = line.strip_prefix("ok ") {
            return Ok(Reply::Done(text.to_string()));
        }
        if let Some(msg) = line.strip_prefix("err ") {
            return Ok(Reply::Failed(msg.to_string()));
        }
        if line == "elsewhere" {
            return Ok(Reply::Elsewhere);
        }
        Err(format!("unexpected reply from the agent: {line:?}"))
    }
}

/// Why the agent was not asked.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// No agent listens there (none running, or one killed with its socket
    /// left behind): the pinned map is the only way.
    #[error("no agent listens on {0}")]
    NoAgent(String),
    #[error("the agent socket {path}: {reason}")]
    Broken { path: String, reason: String },
}

/// Sends one request to the agent on `socket` and reads its reply.
pub fn ask(socket: &Path, request: &Request) -> Result<Reply, AskError> {
    let broken = |reason: String| AskError::Broken {
        path: socket.display().to_string(),
        reason,
    };
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(AskError::NoAgent(socket.display().to_string()));
        }
        Err(e) => return Err(broken(e.to_string())),
    };
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .and_then(|()| stream.write_all(request.encode().as_bytes()))
        .map_err(|e| broken(e.to_string()))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .take(MAX_REQUEST_BYTES as u64 * 4)
        .read_line(&mut line)
        .map_err(|e| broken(e.to_string()))?;
    Reply::parse(&line).map_err(broken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let req = Request {
            op: Op::Unprotect,
            pid: 4242,
            pin_dir: PathBuf::from("/sys/fs/bpf/with space"),
        };
        assert_eq!(req.encode(), "unprotect 4242 /sys/fs/bpf/with space\n");
        assert_eq!(Request::parse(&req.encode()).unwrap(), req);
    }

    #[test]
    fn bad_requests_are_refused() {
        for (line, why) in [
            ("chmod 1 /x", "unknown request"),
            ("protect x /x", "bad PID"),
            ("protect 1", "bad pin directory"),
            ("protect 1 relative", "bad pin directory"),
            ("", "unknown request"),
        ] {
            assert_eq!(Request::parse(line).unwrap_err(), why, "{line:?}");
        }
    }

    #[test]
    fn replies_round_trip_on_one_line() {
        for reply in [
            Reply::Done("[PROTECT] PID 1 marked".into()),
            Reply::Failed("no process with PID 9".into()),
            Reply::Elsewhere,
        ] {
            assert_eq!(Reply::parse(&reply.encode()).unwrap(), reply);
        }
        let two = Reply::Failed("a\nb".into()).encode();
        assert_eq!(two, "err a b\n");
        assert!(Reply::parse("maybe").is_err());
    }

    #[test]
    fn a_missing_socket_means_no_agent() {
        let req = Request {
            op: Op::Protect,
            pid: 1,
            pin_dir: PathBuf::from("/sys/fs/bpf/kernelseal"),
        };
        let path = std::env::temp_dir().join(format!("ks-admin-none-{}", std::process::id()));
        assert!(matches!(ask(&path, &req), Err(AskError::NoAgent(_))));
    }
}
