// SPDX-License-Identifier: GPL-2.0-only
/*
 * KernelSeal's kernel side: protection marks in task-local storage, set from
 * user space through a pidfd, and the LSM hooks that refuse every way of
 * reading a protected process from outside (README: Security model).
 */
#include "ks_core.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "kernelseal.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ks_task_mark);
} ks_marks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ks_policy);
} ks_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} ks_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KS_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} ks_stats SEC(".maps");

/* Delivered secret files (on tmpfs) and the owner id of each. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ks_file_key);
	__type(value, struct ks_file_owner);
} ks_guarded_files SEC(".maps");

/* Exec filter: bindings selected by binary (basename) or by exact path. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct ks_binary_key);
	__type(value, struct ks_binding);
} ks_exec_binaries SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct ks_path_key);
	__type(value, struct ks_binding);
} ks_exec_paths SEC(".maps");

/* Where KernelSeal's pins live and whether a handover is open. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ks_trust);
} ks_trust SEC(".maps");

/* The KernelSeal binaries (by file) whose processes may touch its state:
 * the agent's own, and builds admitted during a handover. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct ks_file_key);
	__type(value, struct ks_self_exe);
} ks_self_exes SEC(".maps");

/* Per-CPU scratch for the filename: too large for the 512-byte stack. */
struct ks_exec_scratch {
	struct ks_path_key path;
	struct ks_binary_key binary;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ks_exec_scratch);
} ks_scratch SEC(".maps");

/* Keeps struct ks_event in the object's BTF (the maps already carry the
 * others), where the Rust layout test reads it. */
const volatile struct ks_event _ks_event_btf = {};
const volatile struct ks_exec_event _ks_exec_event_btf = {};
const volatile struct ks_file_key _ks_file_key_btf = {};

/* The programs, by concern; each part uses only those included before it. */
#include "common.bpf.h"
#include "lock.bpf.h"
#include "state.bpf.h"
#include "files.bpf.h"
#include "proc.bpf.h"
#include "copies.bpf.h"
#include "exec.bpf.h"

/* Every open on the system passes here. A regular file with a name pays a
 * few compares of fields already loaded: plain BTF pointer loads (the
 * verifier turns them into fault-safe loads, CO-RE relocates the offsets)
 * and no helper call. */
SEC("lsm/file_open")
int BPF_PROG(file_open, struct file *file, int ret)
{
	struct inode *inode;
	unsigned long magic;

	if (ret)
		return ret;
	inode = file->f_inode;
	if (file->f_mode & FMODE_WRITE) {
		ret = guard_self_exe(file);
		if (ret)
			return ret;
	}
	magic = inode->i_sb->s_magic;
	if (magic == TMPFS_MAGIC) {
		ret = guard_file(file);
		if (ret || inode->i_nlink)
			return ret;
		return unnamed_open();
	}
	if (magic == PROC_SUPER_MAGIC)
		return proc_open(file);
	if (magic == PIPEFS_MAGIC || magic == SECRETMEM_MAGIC || !inode->i_nlink)
		return unnamed_open();
	return 0;
}

/* A rename on bpffs may move a pin; on tmpfs, a delivered file. */
SEC("lsm/inode_rename")
int BPF_PROG(inode_rename, struct inode *old_dir, struct dentry *old_dentry,
	     struct inode *new_dir, struct dentry *new_dentry, int ret)
{
	if (ret)
		return ret;
	if (old_dir->i_sb->s_magic == BPF_FS_MAGIC)
		return guard_pins(old_dentry, new_dentry);
	return guard_names(old_dentry, new_dentry);
}

