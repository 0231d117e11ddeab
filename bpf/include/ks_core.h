/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The few kernel types the programs read, declared with
 * preserve_access_index so that libbpf/aya relocate every field against the
 * running kernel's BTF (CO-RE). Only the fields used are listed; their order
 * and the absence of the others do not matter.
 */
#ifndef KS_CORE_H
#define KS_CORE_H

typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef int pid_t;
typedef _Bool bool;
#define true 1
#define false 0

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_RINGBUF = 27,
	BPF_MAP_TYPE_TASK_STORAGE = 29,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
	BPF_F_NO_PREALLOC = 1,
};

enum {
	BPF_LOCAL_STORAGE_GET_F_CREATE = 1,
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct pid;
struct user_namespace;

typedef struct {
	unsigned int val;
} kuid_t;

typedef struct {
	__u64 val;
} kernel_cap_t;

struct cred {
	kuid_t uid;
	kuid_t euid;
	kernel_cap_t cap_effective;
};

struct perf_event_context {
	int nr_events;
};

struct mm_struct {
	struct file *exe_file;
};

struct task_struct {
	unsigned int flags;
	struct mm_struct *mm;
	struct perf_event_context *perf_event_ctxp;
	unsigned int ptrace;
	pid_t pid;
	pid_t tgid;
	struct task_struct *group_leader;
	struct task_struct *real_parent;
	struct pid *thread_pid;
	const struct cred *cred;
	char comm[16];
};

struct super_block {
	unsigned long s_magic;
	unsigned int s_dev;
};

struct qstr {
	unsigned int len;
	const unsigned char *name;
};

struct inode;

struct dentry {
	struct qstr d_name;
	struct dentry *d_parent;
	struct inode *d_inode;
};

struct path {
	struct dentry *dentry;
};

struct inode {
	unsigned short i_mode;
	kuid_t i_uid;
	struct super_block *i_sb;
	unsigned long i_ino;
	unsigned int i_nlink;
};

struct file {
	struct path f_path;
	struct inode *f_inode;
	unsigned int f_mode;
};

struct linux_binprm {
	struct file *file;
	const char *filename;
};

struct bpf_map;

struct vfsmount {
	struct super_block *mnt_sb;
};

struct perf_event_attr {
	__u32 type;
	__u64 sample_type;
	__u64 exclude_callchain_user : 1;
};

struct hw_perf_event {
	struct task_struct *target;
};

struct pmu {
	const char *name;
	int type;
};

struct perf_event {
	struct perf_event_attr attr;
	struct hw_perf_event hw;
	struct pmu *pmu;
};

union bpf_attr;

struct bpf_insn {
	__u8 code;
	__u8 dst_reg : 4;
	__u8 src_reg : 4;
	__s16 off;
	__s32 imm;
};

/* CO-RE matches a field of enum type only with an enum of the same name. */
enum bpf_prog_type {
	BPF_PROG_TYPE_UNSPEC = 0,
};

struct bpf_prog {
	__u32 len;
	enum bpf_prog_type type;
	struct bpf_insn insnsi[];
};

/* What the kernel reads or is handed (kernel_read_file, kernel_load_data);
 * values relocated by name (CO-RE). */
enum kernel_read_file_id {
	READING_UNKNOWN,
	READING_FIRMWARE,
	READING_MODULE,
	READING_KEXEC_IMAGE,
	READING_KEXEC_INITRAMFS,
	READING_POLICY,
	READING_X509_CERTIFICATE,
	READING_MODULE_COMPRESSED,
};

enum kernel_load_data_id {
	LOADING_UNKNOWN,
	LOADING_FIRMWARE,
	LOADING_MODULE,
	LOADING_KEXEC_IMAGE,
	LOADING_KEXEC_INITRAMFS,
	LOADING_POLICY,
	LOADING_X509_CERTIFICATE,
	LOADING_MODULE_COMPRESSED,
};

struct proc_inode {
	struct pid *pid;
	struct inode vfs_inode;
};

#pragma clang attribute pop

#define PF_SIGNALED 0x00000400
#define PF_KTHREAD 0x00200000
#define PROC_SUPER_MAGIC 0x9fa0
#define TMPFS_MAGIC 0x01021994
#define PIPEFS_MAGIC 0x50495045
#define SECRETMEM_MAGIC 0x5345434d
#define BPF_FS_MAGIC 0xcafe4a11
#define SYSFS_MAGIC 0x62656572

#define FMODE_WRITE 0x2
#define S_IFMT 00170000
#define S_IFREG 0100000
#define S_IWGRP 00020
#define S_IWOTH 00002
#define S_IXUGO 00111

/* perf_event_attr.sample_type bits that copy user memory or registers. */
#define PERF_SAMPLE_CALLCHAIN (1U << 5)
#define PERF_SAMPLE_REGS_USER (1U << 12)
#define PERF_SAMPLE_STACK_USER (1U << 13)
#define PERF_SAMPLE_REGS_INTR (1U << 18)

#define CAP_SYS_ADMIN 21
#define CAP_PERFMON 38

#define PTRACE_MODE_READ 0x01
#define PTRACE_MODE_ATTACH 0x02
#define PTRACE_MODE_NOAUDIT 0x04
#define PTRACE_MODE_FSCREDS 0x08
#define PTRACE_MODE_REALCREDS 0x10

/* bpf(2) commands (UAPI) */
#define BPF_PROG_LOAD 5
#define BPF_PROG_ATTACH 8
#define BPF_RAW_TRACEPOINT_OPEN 17
#define BPF_LINK_CREATE 28

#define PROT_EXEC 0x4

#define EPERM 1
#define EACCES 13

#endif /* KS_CORE_H */
