use std::io;

/// Everything that can go wrong between KernelSeal and the kernel.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("kernel BTF is not available at /sys/kernel/btf/vmlinux: {reason}")]
    NoBtf { reason: String },
    #[error("loading the BPF object failed: {reason}")]
    Object { reason: String },
    #[error("the kernel refused LSM program {program}: {reason}")]
    LsmRefused {
        program: &'static str,
        reason: String,
    },
    #[error("map {map} is missing from the BPF object or has the wrong type")]
    MissingMap { map: &'static str },
    #[error("{op} on map {map} failed: {source}")]
    Map {
        op: &'static str,
        map: &'static str,
        source: io::Error,
    },
    #[error("reading /proc for PID {pid} failed: {reason}")]
    ProcRead { pid: u32, reason: String },
    #[error("no process with PID {pid}")]
    NoSuchProcess { pid: u32 },
    #[error("PID {pid} is a kernel thread; only user processes can be protected")]
    KernelThread { pid: u32 },
    #[error("cannot open a pidfd for PID {pid}: {source}")]
    Pidfd { pid: u32, source: io::Error },
    #[error(
        "no running agent: its pinned maps are not under {dir} ({reason}); start `kernelseal agent`"
    )]
    NotPinned { dir: String, reason: String },
    #[error("pinning {what} at {path} failed: {reason}")]
    Pin {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("exec filter {what} {value:?}: {reason}")]
    FilterEntry {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "the programs pinned under {dir} belong to a KernelSeal build that does not trust this \
         binary: stop the running agent with SIGTERM (it hands the pins over to the next build \
         started within 10 minutes) and start this one, or reboot; on a node locked by \
         policy.lock only a reboot admits another build"
    )]
    Untrusted { dir: String },
    #[error("pinned programs under {dir} are incomplete or unreadable: {reason}")]
    Adopt { dir: String, reason: String },
    #[error("reading BPF events failed: {source}")]
    Events { source: io::Error },
    #[error(
        "this node is locked (policy.lock): KernelSeal's policy cannot change until reboot \
         ({what} refused)"
    )]
    Locked { what: &'static str },
    #[error("freezing the policy map for lock mode failed: {source}")]
    Freeze {
        #[source]
        source: std::io::Error,
    },
}
