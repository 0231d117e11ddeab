/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The single source of every struct and constant that crosses the
 * kernel/user boundary. The Rust mirror lives in bpf/src/abi.rs and a unit
 * test checks its layout against the BTF of the compiled object.
 */
#ifndef KERNELSEAL_H
#define KERNELSEAL_H

/* Bumped whenever a map or struct layout changes (pins carry it). */
#define KS_LAYOUT_VERSION 4

/* policy.mode */
#define KS_MODE_DISABLED 0
#define KS_MODE_AUDIT 1
#define KS_MODE_ENFORCE 2

/* policy.flags */
#define KS_POLICY_BLOCK_ENVIRON (1u << 0)
#define KS_POLICY_BLOCK_MEM (1u << 1)
#define KS_POLICY_BLOCK_MAPS (1u << 2)
#define KS_POLICY_BLOCK_PTRACE (1u << 3)
#define KS_POLICY_ALLOW_SELF_READ (1u << 4)
#define KS_POLICY_AUDIT_ALL (1u << 5)
#define KS_POLICY_INHERIT (1u << 6)
/* kernelBinaryFilter: exec events only for configured binaries/paths. */
#define KS_POLICY_EXEC_FILTER (1u << 7)
/* blockPerf: perf events that can read a protected process's user memory
 * or registers (per-task on it; CPU-wide sampling user stack/registers). */
#define KS_POLICY_BLOCK_PERF (1u << 8)
/* Set by the agent on kernels >= 6.15, whose may_access_mm grants READ
 * access to perfmon-capable callers after a refusal: only there is a
 * refusal carried over to the capable hook. */
#define KS_POLICY_PERFMON_FALLBACK (1u << 9)
/* policy.lock: nothing but KernelSeal loads code into the kernel or opens
 * the kernel's own ways into memory, and KernelSeal's state stays until
 * reboot. The agent freezes the policy map after writing it. */
#define KS_POLICY_LOCK (1u << 10)

/* task_mark.flags */
#define KS_MARK_PROTECTED (1u << 0)
/* The agent itself: protected, and allowed to access protected tasks. */
#define KS_MARK_AGENT (1u << 1)
/* A process running a KernelSeal build the kernel trusts (ks_self_exes),
 * set at exec: it may open KernelSeal's maps and change its pins. */
#define KS_MARK_SELF (1u << 2)

/* Access kinds, in events and in the opener's pending classification. */
#define KS_KIND_NONE 0
#define KS_KIND_ENVIRON 1
#define KS_KIND_MEM 2
#define KS_KIND_MAPS 3
#define KS_KIND_PTRACE 4
#define KS_KIND_SELF_READ 5
/* A traced process exec'ing a protected binary: its tracer would keep access. */
#define KS_KIND_TRACED_EXEC 6
/* A delivered secret file opened by a process outside its owner's tree. */
#define KS_KIND_FILE 7
/* A perf event that could sample a protected process's memory/registers. */
#define KS_KIND_PERF 8
/* A protected process exec'ing while perf events monitor it: they would
 * keep sampling the new image. */
#define KS_KIND_PERF_EXEC 9
/* A file without a name (pipe, memfd, secret memory, deleted file) opened
 * through a protected process's /proc/P/fd or map_files link: the sibling
 * of pidfd_getfd. */
#define KS_KIND_FD 10
/* A protected process's core dump (a fatal signal, induced or genuine):
 * the core holds its memory, file and pipe handlers alike. */
#define KS_KIND_CORE 11
/* A hard link to, or a rename of, a delivered secret file (or over one):
 * the agent guards and cleans up by the inode it created, never by name. */
#define KS_KIND_FILE_LINK 12
/* KernelSeal's own state touched by another program: an fd of one of its
 * maps, removal or a move out of its pins, an unmount of their bpffs, a
 * write to a trusted KernelSeal binary. */
#define KS_KIND_STATE 13
/* A KernelSeal build admitted during the handover a stopping agent opened
 * (decision allowed): the next agent reports it. */
#define KS_KIND_HANDOVER 14
/* Lock mode (policy.lock) refusals; the event's ptrace_mode carries the
 * detail named with each. A BPF program that could read memory (detail:
 * cmd << 16 | helper << 8 | program type; helper 0: refused for its type,
 * 255: a kfunc or kernel variable), or a tracing attachment (detail:
 * cmd << 16 | attach type). */
#define KS_KIND_LOCK_BPF 15
/* A kernel module or kexec image handed to the kernel (firmware and LSM
 * policies are not refused: README, lock mode limits)
 * (detail: 1 << 16 | kernel_read_file id, or 2 << 16 | kernel_load_data id). */
#define KS_KIND_LOCK_KERNEL_CODE 16
/* A lockdown reason (detail: enum lockdown_reason of the running kernel):
 * /dev/mem, /proc/kcore, tracefs, kprobes, debugfs, MSRs, hibernation, ... */
#define KS_KIND_LOCKDOWN 17
/* KernelSeal's pins or their bpffs changed while locked, by any process,
 * KernelSeal's own binaries included. */
#define KS_KIND_LOCK_STATE 18
/* A perf event on the kprobe, uprobe or tracepoint PMU (detail: the PMU's
 * type). */
#define KS_KIND_LOCK_PROBE 19
/* A trusted KernelSeal process mapping executable code from another file
 * than its own binary (an interpreter, a preloaded or replaced library). */
#define KS_KIND_LOCK_SELF_CODE 20

/* ks_self_exe.how */
#define KS_SELF_AGENT 1
#define KS_SELF_HANDOVER 2

/* event.decision */
#define KS_DECISION_ALLOWED 0
#define KS_DECISION_DENIED 1
#define KS_DECISION_AUDIT 2

/* event.type */
#define KS_EVENT_ACCESS 1
#define KS_EVENT_EXEC 2

/* stats indexes (per-CPU array) */
#define KS_STAT_EVENTS_DROPPED 0
#define KS_STAT_DENIED 1
#define KS_STAT_AUDITED 2
#define KS_STAT_INHERITED 3
#define KS_STAT_EXEC_MARKED 4
#define KS_STAT_EXEC_EVENTS 5
#define KS_STAT_MAX 6

#define KS_COMM_LEN 16
/* Exec filter keys: a binary's basename, and an exact path. */
#define KS_BINARY_LEN 64
#define KS_PATH_LEN 256

/* exec_event.flags */
#define KS_EXEC_MATCHED (1u << 0)
#define KS_EXEC_PROTECTED (1u << 1)

struct ks_policy {
	__u32 mode;
	__u32 flags;
	/* Kernel dev_t of the tmpfs the agent writes delivered files to; opens
	 * on any other tmpfs skip the guarded-files lookup. 0: look up on every
	 * tmpfs (no file delivery, or guarded files elsewhere from an agent
	 * with another secrets directory). */
	__u64 secrets_dev;
};

/* What the programs need to know of KernelSeal itself (array, one entry). */
struct ks_trust {
	/* Kernel dev_t and inode of the pin root directory on bpffs; 0 when
	 * the agent does not pin. */
	__u64 pin_dev;
	__u64 pin_ino;
	/* CLOCK_MONOTONIC ns until which the next exec of a file named
	 * `kernelseal-core` (root's, not writable by others) is admitted as a new
	 * build; 0: closed. A stopping agent opens it, the next agent closes it. */
	__u64 handover_until_ns;
};

/* A trusted KernelSeal binary (ks_self_exes value; the key is its file). */
struct ks_self_exe {
	__u64 admitted_ns;
	__u32 pid;
	__u32 how;
};

/* Task-local storage value. One struct serves both roles a task can have:
 * a protected target (flags, binding_id) and an opener of procfs files
 * (pending_kind, pending_target), so a task costs at most one storage slot. */
struct ks_task_mark {
	__u32 flags;
	__u32 binding_id;
	/* Kind recorded by file_open for the ptrace_access_check that follows. */
	__u32 pending_kind;
	/* Owner id of the guarded files this task (and its descendants) may
	 * open; 0 for none. */
	__u32 owner_id;
	/* Set by ptrace_access_check for this opener: the refused (or, with
	 * pending_kind KS_KIND_FD, link-followed) protected target, as
	 * tgid << 32 | binding_id. A refusal makes the perfmon fallback of
	 * kernels >= 6.15 fail too (capable); a link makes the reopen of an
	 * unnamed file fail (file_open). 0 for none. */
	__u64 pending_target;
};

struct ks_event {
	__u32 type;
	__u32 kind;
	__u32 decision;
	__u32 ptrace_mode;
	__u32 accessor_pid;
	__u32 accessor_tid;
	__u32 accessor_uid;
	__u32 target_pid;
	__u32 target_tid;
	__u32 binding_id;
	__u64 timestamp_ns;
	char accessor_comm[KS_COMM_LEN];
	char target_comm[KS_COMM_LEN];
};

struct ks_exec_event {
	__u32 type;
	__u32 flags;
	__u32 pid;
	__u32 tid;
	__u32 ppid;
	__u32 uid;
	__u32 binding_id;
	__u32 _pad;
	__u64 cgroup_id;
	__u64 timestamp_ns;
	char comm[KS_COMM_LEN];
	char filename[KS_PATH_LEN];
};

/* Exec filter: value of both the binary and the path maps. */
struct ks_binding {
	__u32 binding_id;
};

/* A guarded secret file's owner (ks_guarded_files value): the owner id the
 * agent put in the mark of the process tree it delivered the file to. */
struct ks_file_owner {
	__u32 owner_id;
};

/* A guarded secret file: the kernel's s_dev and the inode number. */
struct ks_file_key {
	__u64 dev;
	__u64 ino;
};

struct ks_binary_key {
	char name[KS_BINARY_LEN];
};

struct ks_path_key {
	char path[KS_PATH_LEN];
};

#endif /* KERNELSEAL_H */
