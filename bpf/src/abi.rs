//! Rust mirrors of `bpf/include/kernelseal.h`. The layout test in
//! `tests/abi_layout.rs` checks each struct against the object's BTF.

pub const LAYOUT_VERSION: u32 = 4;

pub const MODE_DISABLED: u32 = 0;
pub const MODE_AUDIT: u32 = 1;
pub const MODE_ENFORCE: u32 = 2;

pub const POLICY_BLOCK_ENVIRON: u32 = 1 << 0;
pub const POLICY_BLOCK_MEM: u32 = 1 << 1;
pub const POLICY_BLOCK_MAPS: u32 = 1 << 2;
pub const POLICY_BLOCK_PTRACE: u32 = 1 << 3;
pub const POLICY_ALLOW_SELF_READ: u32 = 1 << 4;
pub const POLICY_AUDIT_ALL: u32 = 1 << 5;
pub const POLICY_INHERIT: u32 = 1 << 6;
pub const POLICY_EXEC_FILTER: u32 = 1 << 7;
pub const POLICY_BLOCK_PERF: u32 = 1 << 8;
pub const POLICY_PERFMON_FALLBACK: u32 = 1 << 9;
pub const POLICY_LOCK: u32 = 1 << 10;

pub const MARK_PROTECTED: u32 = 1 << 0;
pub const MARK_AGENT: u32 = 1 << 1;
pub const MARK_SELF: u32 = 1 << 2;

pub const KIND_NONE: u32 = 0;
pub const KIND_ENVIRON: u32 = 1;
pub const KIND_MEM: u32 = 2;
pub const KIND_MAPS: u32 = 3;
pub const KIND_PTRACE: u32 = 4;
pub const KIND_SELF_READ: u32 = 5;
pub const KIND_TRACED_EXEC: u32 = 6;
pub const KIND_FILE: u32 = 7;
pub const KIND_PERF: u32 = 8;
pub const KIND_PERF_EXEC: u32 = 9;
pub const KIND_FD: u32 = 10;
pub const KIND_CORE: u32 = 11;
pub const KIND_FILE_LINK: u32 = 12;
pub const KIND_STATE: u32 = 13;
pub const KIND_HANDOVER: u32 = 14;
pub const KIND_LOCK_BPF: u32 = 15;
pub const KIND_LOCK_KERNEL_CODE: u32 = 16;
pub const KIND_LOCKDOWN: u32 = 17;
pub const KIND_LOCK_STATE: u32 = 18;
pub const KIND_LOCK_PROBE: u32 = 19;
pub const KIND_LOCK_SELF_CODE: u32 = 20;

pub const SELF_AGENT: u32 = 1;
pub const SELF_HANDOVER: u32 = 2;

pub const DECISION_ALLOWED: u32 = 0;
pub const DECISION_DENIED: u32 = 1;
pub const DECISION_AUDIT: u32 = 2;

pub const EVENT_ACCESS: u32 = 1;
pub const EVENT_EXEC: u32 = 2;

pub const STAT_EVENTS_DROPPED: u32 = 0;
pub const STAT_DENIED: u32 = 1;
pub const STAT_AUDITED: u32 = 2;
pub const STAT_INHERITED: u32 = 3;
pub const STAT_EXEC_MARKED: u32 = 4;
pub const STAT_EXEC_EVENTS: u32 = 5;
pub const STAT_MAX: u32 = 6;

pub const COMM_LEN: usize = 16;
pub const BINARY_LEN: usize = 64;
pub const PATH_LEN: usize = 256;

pub const EXEC_MATCHED: u32 = 1 << 0;
pub const EXEC_PROTECTED: u32 = 1 << 1;

/// `struct ks_policy`
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawPolicy {
    pub mode: u32,
    pub flags: u32,
    pub secrets_dev: u64,
}

/// `struct ks_trust`
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawTrust {
    pub pin_dev: u64,
    pub pin_ino: u64,
    pub handover_until_ns: u64,
}

/// `struct ks_self_exe`
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawSelfExe {
    pub admitted_ns: u64,
    pub pid: u32,
    pub how: u32,
}

/// `struct ks_task_mark`
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawTaskMark {
    pub flags: u32,
    pub binding_id: u32,
    pub pending_kind: u32,
    pub owner_id: u32,
    pub pending_target: u64,
}

/// `struct ks_event`
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawEvent {
    pub event_type: u32,
    pub kind: u32,
    pub decision: u32,
    pub ptrace_mode: u32,
    pub accessor_pid: u32,
    pub accessor_tid: u32,
    pub accessor_uid: u32,
    pub target_pid: u32,
    pub target_tid: u32,
    pub binding_id: u32,
    pub timestamp_ns: u64,
    pub accessor_comm: [u8; COMM_LEN],
    pub target_comm: [u8; COMM_LEN],
}

/// `struct ks_exec_event`
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawExecEvent {
    pub event_type: u32,
    pub flags: u32,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub binding_id: u32,
    pub _pad: u32,
    pub cgroup_id: u64,
    pub timestamp_ns: u64,
    pub comm: [u8; COMM_LEN],
    pub filename: [u8; PATH_LEN],
}

/// `struct ks_binding`
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawBinding {
    pub binding_id: u32,
}

/// `struct ks_file_owner`
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawFileOwner {
    pub owner_id: u32,
}

/// `struct ks_file_key`: the kernel's `s_dev` (MAJOR << 20 | MINOR) and inode.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawFileKey {
    pub dev: u64,
    pub ino: u64,
}

/// `struct ks_binary_key`
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawBinaryKey {
    pub name: [u8; BINARY_LEN],
}

/// `struct ks_path_key`
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawPathKey {
    pub path: [u8; PATH_LEN],
}

// SAFETY: plain-old-data, every bit pattern is valid; aya copies these in and
// out of maps as raw bytes.
unsafe impl aya::Pod for RawPolicy {}
// SAFETY: as above.
unsafe impl aya::Pod for RawTaskMark {}
// SAFETY: as above.
unsafe impl aya::Pod for RawBinding {}
// SAFETY: as above.
unsafe impl aya::Pod for RawFileOwner {}
// SAFETY: as above.
unsafe impl aya::Pod for RawBinaryKey {}
// SAFETY: as above.
unsafe impl aya::Pod for RawPathKey {}
// SAFETY: as above.
unsafe impl aya::Pod for RawFileKey {}
// SAFETY: as above.
unsafe impl aya::Pod for RawTrust {}
// SAFETY: as above.
unsafe impl aya::Pod for RawSelfExe {}
