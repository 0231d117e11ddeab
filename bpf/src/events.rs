//! Decoding the ring-buffer events the LSM programs emit.

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use crate::abi::{self, RawEvent, RawExecEvent};
use crate::error::BpfError;

/// What was accessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessKind {
    Environ,
    Mem,
    Maps,
    Ptrace,
    SelfRead,
    /// A traced process exec'ing a protected binary.
    TracedExec,
    /// A delivered secret file opened outside its owner's process tree.
    SecretFile,
    /// A perf event that could sample a protected process's memory or
    /// registers.
    Perf,
    /// A protected process exec'ing while perf events monitor it.
    PerfExec,
    /// An unnamed file (pipe, memfd, secret memory, deleted file) reopened
    /// through a protected process's /proc/P/fd or map_files link.
    FdReopen,
    /// A protected process's core dump.
    CoreDump,
    /// A hard link to, or a rename of (or over), a delivered secret file.
    SecretFileLink,
    /// KernelSeal's own maps, pins, bpffs or binary touched by another
    /// program.
    State,
    /// A new KernelSeal build admitted during a handover (allowed).
    Handover,
    /// Lock mode: a bpf(2) load, attach or detach by another program.
    LockBpf,
    /// Lock mode: a kernel module or kexec image handed to the kernel.
    LockKernelCode,
    /// Lock mode: one of the kernel's lockdown reasons (/dev/mem,
    /// /proc/kcore, tracefs, kprobes, ...).
    Lockdown,
    /// Lock mode: KernelSeal's pins, bpffs or binary, by any program.
    LockState,
    /// Lock mode: a perf event on the kprobe, uprobe or tracepoint PMU.
    LockProbe,
    /// Lock mode: a KernelSeal process mapping code from another file.
    LockSelfCode,
    Unknown(u32),
}

impl AccessKind {
    fn from_raw(v: u32) -> Self {
        match v {
            abi::KIND_ENVIRON => AccessKind::Environ,
            abi::KIND_MEM => AccessKind::Mem,
            abi::KIND_MAPS => AccessKind::Maps,
            abi::KIND_PTRACE => AccessKind::Ptrace,
            abi::KIND_SELF_READ => AccessKind::SelfRead,
            abi::KIND_TRACED_EXEC => AccessKind::TracedExec,
            abi::KIND_FILE => AccessKind::SecretFile,
            abi::KIND_PERF => AccessKind::Perf,
            abi::KIND_PERF_EXEC => AccessKind::PerfExec,
            abi::KIND_FD => AccessKind::FdReopen,
            abi::KIND_CORE => AccessKind::CoreDump,
            abi::KIND_FILE_LINK => AccessKind::SecretFileLink,
            abi::KIND_STATE => AccessKind::State,
            abi::KIND_HANDOVER => AccessKind::Handover,
            abi::KIND_LOCK_BPF => AccessKind::LockBpf,
            abi::KIND_LOCK_KERNEL_CODE => AccessKind::LockKernelCode,
            abi::KIND_LOCKDOWN => AccessKind::Lockdown,
            abi::KIND_LOCK_STATE => AccessKind::LockState,
            abi::KIND_LOCK_PROBE => AccessKind::LockProbe,
            abi::KIND_LOCK_SELF_CODE => AccessKind::LockSelfCode,
            other => AccessKind::Unknown(other),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AccessKind::Environ => "environ",
            AccessKind::Mem => "mem",
            AccessKind::Maps => "maps",
            AccessKind::Ptrace => "ptrace",
            AccessKind::SelfRead => "self-read",
            AccessKind::TracedExec => "traced-exec",
            AccessKind::SecretFile => "secret-file",
            AccessKind::Perf => "perf",
            AccessKind::PerfExec => "perf-exec",
            AccessKind::FdReopen => "fd-reopen",
            AccessKind::CoreDump => "core-dump",
            AccessKind::SecretFileLink => "secret-file-link",
            AccessKind::State => "kernelseal-state",
            AccessKind::Handover => "handover",
            AccessKind::LockBpf => "lock-bpf",
            AccessKind::LockKernelCode => "lock-kernel-code",
            AccessKind::Lockdown => "lockdown",
            AccessKind::LockState => "lock-state",
            AccessKind::LockProbe => "lock-probe",
            AccessKind::LockSelfCode => "lock-self-code",
            AccessKind::Unknown(_) => "unknown",
        }
    }
}

/// What the kernel did about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Allowed,
    Denied,
    Audit,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Denied => "denied",
            Decision::Audit => "audit",
        }
    }
}

/// One access to a protected process, as reported by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEvent {
    pub kind: AccessKind,
    pub decision: Decision,
    pub ptrace_mode: u32,
    pub accessor_pid: u32,
    pub accessor_tid: u32,
    pub accessor_uid: u32,
    pub accessor_comm: String,
    pub target_pid: u32,
    pub target_tid: u32,
    pub target_comm: String,
    pub binding_id: u32,
    pub timestamp_ns: u64,
}

impl AccessEvent {
    /// Decodes one ring-buffer record; `None` for a record of another type
    /// or size (a newer object than this decoder).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<RawEvent>() {
            return None;
        }
        // SAFETY: the length is checked and RawEvent is plain old data;
        // read_unaligned copes with the ring buffer's 8-byte alignment.
        let raw: RawEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        if raw.event_type != abi::EVENT_ACCESS {
            return None;
        }
        Some(AccessEvent {
            kind: AccessKind::from_raw(raw.kind),
            decision: match raw.decision {
                abi::DECISION_DENIED => Decision::Denied,
                abi::DECISION_AUDIT => Decision::Audit,
                _ => Decision::Allowed,
            },
            ptrace_mode: raw.ptrace_mode,
            accessor_pid: raw.accessor_pid,
            accessor_tid: raw.accessor_tid,
            accessor_uid: raw.accessor_uid,
            accessor_comm: comm(&raw.accessor_comm),
            target_pid: raw.target_pid,
            target_tid: raw.target_tid,
            target_comm: comm(&raw.target_comm),
            binding_id: raw.binding_id,
            timestamp_ns: raw.timestamp_ns,
        })
    }
}

/// An exec seen by the `sched_process_exec` tracepoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecEvent {
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub cgroup_id: u64,
    pub comm: String,
    pub filename: String,
    /// The binding the exec matched (0: none).
    pub binding_id: u32,
    /// The process was marked at this exec (or already was).
    pub protected: bool,
    pub timestamp_ns: u64,
}

impl ExecEvent {
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<RawExecEvent>() {
            return None;
        }
        // SAFETY: length checked; plain old data; unaligned read.
        let raw: RawExecEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        if raw.event_type != abi::EVENT_EXEC {
            return None;
        }
        Some(ExecEvent {
            pid: raw.pid,
            tid: raw.tid,
            ppid: raw.ppid,
            uid: raw.uid,
            cgroup_id: raw.cgroup_id,
            comm: comm(&raw.comm),
            filename: comm(&raw.filename),
            binding_id: raw.binding_id,
            protected: raw.flags & abi::EXEC_PROTECTED != 0,
            timestamp_ns: raw.timestamp_ns,
        })
    }

    /// The basename of the exec'd file name: what `selector.binary` matches.
    pub fn binary(&self) -> &str {
        self.filename.rsplit('/').next().unwrap_or(&self.filename)
    }
}

/// One record of the ring buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Access(AccessEvent),
    Exec(ExecEvent),
}

impl Event {
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < 4 {
            return None;
        }
        match u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) {
            abi::EVENT_ACCESS => AccessEvent::decode(bytes).map(Event::Access),
            abi::EVENT_EXEC => ExecEvent::decode(bytes).map(Event::Exec),
            _ => None,
        }
    }
}

fn comm(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The asynchronous stream of access events.
pub struct EventStream {
    fd: AsyncFd<RingBuf<MapData>>,
}

impl EventStream {
    pub(crate) fn new(ring: RingBuf<MapData>) -> Result<Self, BpfError> {
        // SAFETY: the RingBuf owns its map fd and returns the same fd from
        // every as_raw_fd() call; the AsyncFd owns the RingBuf, so the fd
        // stays open for the AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) };
        let fd = fd.map_err(|e| BpfError::Events { source: e.into() })?;
        Ok(EventStream { fd })
    }

    /// Waits for the next batch of events.
    pub async fn next_batch(&mut self) -> Result<Vec<Event>, BpfError> {
        loop {
            let mut guard = self
                .fd
                .readable_mut()
                .await
                .map_err(|source| BpfError::Events { source })?;
            let ring = guard.get_inner_mut();
            let mut out = Vec::new();
            while let Some(item) = ring.next() {
                if let Some(ev) = Event::decode(&item) {
                    out.push(ev);
                }
            }
            guard.clear_ready();
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_raw_event() {
        let mut raw = RawEvent {
            event_type: abi::EVENT_ACCESS,
            kind: abi::KIND_ENVIRON,
            decision: abi::DECISION_DENIED,
            accessor_pid: 9999,
            target_pid: 5678,
            ..Default::default()
        };
        raw.accessor_comm[..3].copy_from_slice(b"cat");
        raw.target_comm[..5].copy_from_slice(b"sleep");
        // SAFETY: RawEvent is plain old data.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const RawEvent).cast::<u8>(),
                std::mem::size_of::<RawEvent>(),
            )
        };
        let ev = AccessEvent::decode(bytes).unwrap();
        assert_eq!(ev.kind, AccessKind::Environ);
        assert_eq!(ev.decision, Decision::Denied);
        assert_eq!(ev.accessor_comm, "cat");
        assert_eq!(ev.target_comm, "sleep");
        assert_eq!((ev.accessor_pid, ev.target_pid), (9999, 5678));
        assert!(AccessEvent::decode(&bytes[..10]).is_none(), "short record");
        assert_eq!(Event::decode(bytes), Some(Event::Access(ev)));
    }

    #[test]
    fn decodes_an_exec_event() {
        let mut raw = RawExecEvent {
            event_type: abi::EVENT_EXEC,
            flags: abi::EXEC_MATCHED | abi::EXEC_PROTECTED,
            pid: 5678,
            tid: 5678,
            ppid: 1234,
            uid: 0,
            binding_id: 3,
            _pad: 0,
            cgroup_id: 7194,
            timestamp_ns: 1,
            comm: [0; abi::COMM_LEN],
            filename: [0; abi::PATH_LEN],
        };
        raw.comm[..5].copy_from_slice(b"sleep");
        raw.filename[..14].copy_from_slice(b"/usr/bin/sleep");
        // SAFETY: RawExecEvent is plain old data.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const RawExecEvent).cast::<u8>(),
                std::mem::size_of::<RawExecEvent>(),
            )
        };
        let Some(Event::Exec(ev)) = Event::decode(bytes) else {
            panic!("exec event")
        };
        assert_eq!(ev.binary(), "sleep");
        assert_eq!(
            (ev.pid, ev.ppid, ev.cgroup_id, ev.binding_id),
            (5678, 1234, 7194, 3)
        );
        assert!(ev.protected);
    }
}
