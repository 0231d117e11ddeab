// SPDX-License-Identifier: GPL-2.0-only
/*
 * The bench's floor: KernelSeal's hooks (bpf/src/kernel.rs LSM_PROGRAMS and
 * the exec tracepoint) with programs that decide nothing. Attached, they
 * cost what any BPF-LSM program on these hooks costs (the static call, the
 * BPF trampoline, __bpf_prog_enter/exit); the bench sets that against the
 * real programs to show what KernelSeal's code adds above it.
 *
 * Same section names and argument lists as the programs in bpf/src/bpf,
 * so the trampolines save the same arguments. Each returns the verdict it
 * was given, so an earlier LSM's refusal stands, as in the real programs.
 */
#include "ks_core.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("lsm/file_open")
int BPF_PROG(file_open, struct file *file, int ret)
{
	return ret;
}

SEC("lsm/ptrace_access_check")
int BPF_PROG(ptrace_access_check, struct task_struct *child, unsigned int mode, int ret)
{
	return ret;
}

SEC("lsm/capable")
int BPF_PROG(capable, const struct cred *cred, struct user_namespace *ns, int cap,
	     unsigned int opts, int ret)
{
	return ret;
}

SEC("lsm/task_alloc")
int BPF_PROG(task_alloc, struct task_struct *task, unsigned long clone_flags, int ret)
{
	return ret;
}

SEC("lsm/bprm_check_security")
int BPF_PROG(bprm_check_security, struct linux_binprm *bprm, int ret)
{
	return ret;
}

/* A void hook: no verdict to pass on. */
SEC("lsm/bprm_committing_creds")
int BPF_PROG(bprm_committing_creds, struct linux_binprm *bprm)
{
	return 0;
}

SEC("lsm/perf_event_alloc")
int BPF_PROG(perf_event_alloc, struct perf_event *event, int ret)
{
	return ret;
}

SEC("lsm/cred_prepare")
int BPF_PROG(cred_prepare, struct cred *new, const struct cred *old, unsigned int gfp, int ret)
{
	return ret;
}

SEC("lsm/inode_link")
int BPF_PROG(inode_link, struct dentry *old_dentry, struct inode *dir, struct dentry *new_dentry,
	     int ret)
{
	return ret;
}

SEC("lsm/inode_rename")
int BPF_PROG(inode_rename, struct inode *old_dir, struct dentry *old_dentry,
	     struct inode *new_dir, struct dentry *new_dentry, int ret)
{
	return ret;
}

SEC("lsm/bpf_map")
int BPF_PROG(bpf_map, struct bpf_map *map, unsigned int fmode, int ret)
{
	return ret;
}

SEC("lsm/inode_unlink")
int BPF_PROG(inode_unlink, struct inode *dir, struct dentry *dentry, int ret)
{
	return ret;
}

SEC("lsm/sb_umount")
int BPF_PROG(sb_umount, struct vfsmount *mnt, int flags, int ret)
{
	return ret;
}

/* Lock mode's hooks: their programs read no earlier verdict (its position
 * in the arguments differs between kernels); allowing is the verdict. */
SEC("lsm/bpf")
int BPF_PROG(bpf, int cmd, union bpf_attr *attr)
{
	return 0;
}

SEC("lsm/bpf_prog_load")
int BPF_PROG(bpf_prog_load, struct bpf_prog *prog)
{
	return 0;
}

SEC("lsm/kernel_read_file")
int BPF_PROG(kernel_read_file, struct file *file, enum kernel_read_file_id id)
{
	return 0;
}

SEC("lsm/kernel_load_data")
int BPF_PROG(kernel_load_data, enum kernel_load_data_id id)
{
	return 0;
}

SEC("lsm/locked_down")
int BPF_PROG(locked_down, int what)
{
	return 0;
}

SEC("lsm/mmap_file")
int BPF_PROG(mmap_file, struct file *file, unsigned long reqprot, unsigned long prot,
	     unsigned long flags, int ret)
{
	return ret;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(sched_process_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return 0;
}
