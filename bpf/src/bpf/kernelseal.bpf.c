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

/* Delivered secret files (on tmpfs) and the delivery that owns each. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ks_file_key);
	__type(value, struct ks_binding);
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

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&ks_stats, &idx);

	if (v)
		*v += 1;
}

static __always_inline struct ks_policy *policy(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&ks_policy, &zero);
}

static __always_inline struct ks_task_mark *mark_of(struct task_struct *t)
{
	return bpf_task_storage_get(&ks_marks, t, 0, 0);
}

/* A task is protected when it or its thread-group leader carries the mark:
 * threads created before the mark are covered through the leader. */
static __always_inline struct ks_task_mark *protection_of(struct task_struct *t)
{
	struct task_struct *leader = t->group_leader;
	struct ks_task_mark *m = mark_of(t);

	if (m && (m->flags & KS_MARK_PROTECTED))
		return m;
	/* Most /proc readers ask about a process, whose task is its leader:
	 * a second storage lookup of the same task would cost every ps. */
	if (leader == t)
		return 0;
	m = mark_of(leader);
	if (m && (m->flags & KS_MARK_PROTECTED))
		return m;
	return 0;
}

static __always_inline bool is_agent(struct task_struct *t)
{
	struct task_struct *leader = t->group_leader;
	struct ks_task_mark *m = mark_of(t);

	if (m && (m->flags & KS_MARK_AGENT))
		return true;
	if (leader == t)
		return false;
	m = mark_of(leader);
	return m && (m->flags & KS_MARK_AGENT);
}

static __always_inline bool is_self(struct task_struct *t)
{
	struct task_struct *leader = t->group_leader;
	struct ks_task_mark *m = mark_of(t);

	if (m && (m->flags & KS_MARK_SELF))
		return true;
	if (leader == t)
		return false;
	m = mark_of(leader);
	return m && (m->flags & KS_MARK_SELF);
}

static __always_inline struct ks_trust *trust(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&ks_trust, &zero);
}

static __always_inline void emit_to(__u32 kind, __u32 decision, __u32 mode, __u32 target_pid,
				    __u32 target_tid, struct task_struct *target, __u32 binding_id)
{
	struct ks_event *e = bpf_ringbuf_reserve(&ks_events, sizeof(*e), 0);
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	if (!e) {
		stat_inc(KS_STAT_EVENTS_DROPPED);
		return;
	}
	e->type = KS_EVENT_ACCESS;
	e->kind = kind;
	e->decision = decision;
	e->ptrace_mode = mode;
	e->accessor_pid = pid_tgid >> 32;
	e->accessor_tid = (__u32)pid_tgid;
	e->accessor_uid = (__u32)bpf_get_current_uid_gid();
	e->target_pid = target_pid;
	e->target_tid = target_tid;
	e->binding_id = binding_id;
	e->timestamp_ns = bpf_ktime_get_ns();
	bpf_get_current_comm(e->accessor_comm, sizeof(e->accessor_comm));
	if (target)
		BPF_CORE_READ_STR_INTO(&e->target_comm, target, comm);
	else
		__builtin_memset(e->target_comm, 0, sizeof(e->target_comm));
	bpf_ringbuf_submit(e, 0);
}

static __always_inline void emit(__u32 kind, __u32 decision, __u32 mode,
				 struct task_struct *target, __u32 binding_id)
{
	emit_to(kind, decision, mode, BPF_CORE_READ(target, tgid), BPF_CORE_READ(target, pid),
		target, binding_id);
}

/* Logs and counts a refusal (enforce) or an audited access; returns the
 * hook's verdict. `target` may be 0 when only its ids are known. */
static __always_inline int decide_ids(const struct ks_policy *p, __u32 kind, __u32 target_pid,
				      __u32 target_tid, struct task_struct *target,
				      __u32 binding_id, int err)
{
	bool deny = p->mode == KS_MODE_ENFORCE;

	emit_to(kind, deny ? KS_DECISION_DENIED : KS_DECISION_AUDIT, 0, target_pid, target_tid,
		target, binding_id);
	stat_inc(deny ? KS_STAT_DENIED : KS_STAT_AUDITED);
	return deny ? err : 0;
}

static __always_inline int decide(const struct ks_policy *p, __u32 kind,
				  struct task_struct *target, __u32 binding_id, int err)
{
	return decide_ids(p, kind, BPF_CORE_READ(target, tgid), BPF_CORE_READ(target, pid), target,
			  binding_id, err);
}

/* What an opener's pending_target records: the protected target's process
 * and binding. */
static __always_inline __u64 pending_of(struct task_struct *child, struct ks_task_mark *target)
{
	return (__u64)BPF_CORE_READ(child, tgid) << 32 | target->binding_id;
}

static __always_inline bool kind_blocked(const struct ks_policy *p, __u32 kind)
{
	switch (kind) {
	case KS_KIND_ENVIRON:
		return p->flags & KS_POLICY_BLOCK_ENVIRON;
	case KS_KIND_MEM:
		return p->flags & KS_POLICY_BLOCK_MEM;
	case KS_KIND_MAPS:
		return p->flags & KS_POLICY_BLOCK_MAPS;
	case KS_KIND_PTRACE:
	case KS_KIND_FD:
		return p->flags & KS_POLICY_BLOCK_PTRACE;
	}
	return false;
}

/* The procfs file kinds that expose a process's memory or environment.
 * Only files under /proc/<pid>/ and /proc/<pid>/task/<tid>/ carry these
 * names, so the name on a procfs superblock is enough. */
static __always_inline __u32 classify_proc_name(const unsigned char *name, __u32 len)
{
	char buf[16] = {};

	if (len < 3 || len > 12)
		return KS_KIND_NONE;
	if (bpf_probe_read_kernel(buf, len & 15, name))
		return KS_KIND_NONE;
	if (len == 7 && buf[0] == 'e' && buf[1] == 'n' && buf[2] == 'v' && buf[3] == 'i' &&
	    buf[4] == 'r' && buf[5] == 'o' && buf[6] == 'n')
		return KS_KIND_ENVIRON;
	if (len == 3 && buf[0] == 'm' && buf[1] == 'e' && buf[2] == 'm')
		return KS_KIND_MEM;
	/* maps family: maps, smaps, smaps_rollup, numa_maps, pagemap */
	if (len == 4 && buf[0] == 'm' && buf[1] == 'a' && buf[2] == 'p' && buf[3] == 's')
		return KS_KIND_MAPS;
	if (len == 5 && buf[0] == 's' && buf[1] == 'm' && buf[2] == 'a' && buf[3] == 'p' &&
	    buf[4] == 's')
		return KS_KIND_MAPS;
	if (len == 12 && buf[0] == 's' && buf[1] == 'm' && buf[2] == 'a' && buf[3] == 'p' &&
	    buf[4] == 's' && buf[5] == '_' && buf[6] == 'r')
		return KS_KIND_MAPS;
	if (len == 9 && buf[0] == 'n' && buf[1] == 'u' && buf[2] == 'm' && buf[3] == 'a' &&
	    buf[4] == '_')
		return KS_KIND_MAPS;
	if (len == 7 && buf[0] == 'p' && buf[1] == 'a' && buf[2] == 'g' && buf[3] == 'e' &&
	    buf[4] == 'm' && buf[5] == 'a' && buf[6] == 'p')
		return KS_KIND_MAPS;
	return KS_KIND_NONE;
}

static __always_inline struct pid *proc_pid_of(struct file *file)
{
	struct proc_inode *pi;

	/* container_of(inode, struct proc_inode, vfs_inode), relocated. */
	pi = (void *)file->f_inode - bpf_core_field_offset(struct proc_inode, vfs_inode);
	return BPF_CORE_READ(pi, pid);
}

static __always_inline struct ks_binding *guarded(__u64 dev, struct inode *inode)
{
	struct ks_file_key key = { .dev = dev, .ino = inode->i_ino };

	return bpf_map_lookup_elem(&ks_guarded_files, &key);
}

/* A delivered secret file opens only for its owner's process tree (and the
 * agent, which wrote it), root included. */
static __always_inline int guard_file(struct file *file)
{
	struct task_struct *cur;
	struct ks_task_mark *m;
	struct ks_binding *owner;
	struct ks_policy *p;
	__u64 dev;

	p = policy();
	if (!p || p->mode == KS_MODE_DISABLED)
		return 0;
	dev = file->f_inode->i_sb->s_dev;
	/* /tmp, /dev/shm, Secret volumes…: one compare instead of a hash
	 * lookup on every open there. */
	if (p->secrets_dev && p->secrets_dev != dev)
		return 0;
	owner = guarded(dev, file->f_inode);
	/* The agent guards a delivery's directory before it creates a file in
	 * it: a file opened before its own guard (fanotify hands a listener an
	 * fd to the agent's fresh temporary file) is covered through it. */
	if (!owner)
		owner = guarded(dev, file->f_path.dentry->d_parent->d_inode);
	if (!owner)
		return 0;
	cur = bpf_get_current_task_btf();
	if (is_agent(cur))
		return 0;
	m = mark_of(cur);
	if (m && m->file_owner == owner->binding_id)
		return 0;
	m = mark_of(cur->group_leader);
	if (m && m->file_owner == owner->binding_id)
		return 0;
	return decide(p, KS_KIND_FILE, cur, owner->binding_id, -EACCES);
}

/* ---- KernelSeal's own state -------------------------------------------- */

/* Every map of this object: an fd of any of them (read-only ones too: a
 * program loaded with one may still write the map) is KernelSeal's alone. */
static __always_inline bool is_ours(struct bpf_map *map)
{
	return map == (void *)&ks_marks || map == (void *)&ks_policy ||
	       map == (void *)&ks_events || map == (void *)&ks_stats ||
	       map == (void *)&ks_guarded_files || map == (void *)&ks_exec_binaries ||
	       map == (void *)&ks_exec_paths || map == (void *)&ks_scratch ||
	       map == (void *)&ks_trust || map == (void *)&ks_self_exes;
}

/* A change to KernelSeal's state by a process that is not a trusted
 * KernelSeal binary (nor the agent): refused in enforce, logged. */
static __always_inline int refuse_state(void)
{
	struct task_struct *cur = bpf_get_current_task_btf();
	struct ks_policy *p = policy();

	if (!p || p->mode == KS_MODE_DISABLED || is_self(cur) || is_agent(cur))
		return 0;
	return decide(p, KS_KIND_STATE, cur, 0, -EPERM);
}

/* Whether a dentry is the pin root or below it (the layout is three levels
 * deep; a few more are walked for safety). */
static __always_inline bool under_pin_root(const struct ks_trust *t, struct dentry *d)
{
	struct dentry *parent;
	struct inode *inode;
	int i;

	for (i = 0; i < 6; i++) {
		if (!d)
			return false;
		inode = d->d_inode;
		if (inode && inode->i_ino == t->pin_ino && inode->i_sb->s_dev == t->pin_dev)
			return true;
		parent = d->d_parent;
		if (parent == d)
			return false;
		d = parent;
	}
	return false;
}

/* Removing a pin drops the kernel's last reference to a link once the agent
 * is gone, and the program detaches; moving one out of the tree lets it be
 * removed there. Renames inside the tree (the agent's own bookkeeping) and
 * empty directories stay free. */
static __always_inline int guard_pins(struct dentry *old, struct dentry *new)
{
	struct ks_trust *t = trust();

	if (!t || !t->pin_ino || !under_pin_root(t, old))
		return 0;
	if (new && under_pin_root(t, new->d_parent) && !new->d_inode)
		return 0;
	return refuse_state();
}

SEC("lsm/bpf_map")
int BPF_PROG(bpf_map, struct bpf_map *map, unsigned int fmode, int ret)
{
	if (ret)
		return ret;
	if (!is_ours(map))
		return 0;
	return refuse_state();
}

SEC("lsm/inode_unlink")
int BPF_PROG(inode_unlink, struct inode *dir, struct dentry *dentry, int ret)
{
	if (ret)
		return ret;
	if (dir->i_sb->s_magic != BPF_FS_MAGIC)
		return 0;
	return guard_pins(dentry, 0);
}

/* Unmounting the bpffs that holds the pins ends them all at once. */
SEC("lsm/sb_umount")
int BPF_PROG(sb_umount, struct vfsmount *mnt, int flags, int ret)
{
	struct super_block *sb = mnt->mnt_sb;
	struct ks_trust *t;

	if (ret)
		return ret;
	if (sb->s_magic != BPF_FS_MAGIC)
		return 0;
	t = trust();
	if (!t || !t->pin_dev || sb->s_dev != t->pin_dev)
		return 0;
	return refuse_state();
}

/* A trusted binary opened for writing would become any program at its next
 * exec while keeping its trust (by file). Only executables pay the lookup. */
static __always_inline int guard_self_exe(struct file *file)
{
	struct inode *inode = file->f_inode;
	struct ks_file_key key;

	if ((inode->i_mode & S_IFMT) != S_IFREG || !(inode->i_mode & S_IXUGO))
		return 0;
	key.dev = inode->i_sb->s_dev;
	key.ino = inode->i_ino;
	if (!bpf_map_lookup_elem(&ks_self_exes, &key))
		return 0;
	return refuse_state();
}

/* Whether `name` is exactly "kernelseal". */
static __always_inline bool named_kernelseal(struct dentry *d)
{
	char buf[12] = {};

	if (d->d_name.len != 10 || bpf_probe_read_kernel(buf, 10, d->d_name.name))
		return false;
	return buf[0] == 'k' && buf[1] == 'e' && buf[2] == 'r' && buf[3] == 'n' &&
	       buf[4] == 'e' && buf[5] == 'l' && buf[6] == 's' && buf[7] == 'e' &&
	       buf[8] == 'a' && buf[9] == 'l';
}

/* A new KernelSeal build started while a handover is open (a stopping
 * agent opened it): trusted from now on, reported to the next agent. One
 * build per handover. */
static __always_inline bool admit_by_handover(struct linux_binprm *bprm, struct ks_file_key *key)
{
	struct inode *inode = bprm->file->f_inode;
	struct ks_self_exe admitted = {};
	struct task_struct *cur;
	struct ks_trust *t = trust();
	__u64 now = bpf_ktime_get_ns();

	if (!t || !t->handover_until_ns || now > t->handover_until_ns)
		return false;
	if (inode->i_uid.val != 0 || (inode->i_mode & (S_IWGRP | S_IWOTH)) ||
	    !named_kernelseal(bprm->file->f_path.dentry))
		return false;
	cur = bpf_get_current_task_btf();
	admitted.admitted_ns = now;
	admitted.pid = cur->tgid;
	admitted.how = KS_SELF_HANDOVER;
	if (bpf_map_update_elem(&ks_self_exes, key, &admitted, BPF_NOEXIST))
		return false;
	t->handover_until_ns = 0;
	emit_to(KS_KIND_HANDOVER, KS_DECISION_ALLOWED, 0, cur->tgid, cur->pid, cur, 0);
	return true;
}

/* KS_MARK_SELF follows the image: set when a trusted binary is exec'd (not
 * under a tracer, which could drive it), cleared when anything else is. */
static __always_inline void mark_self(struct linux_binprm *bprm, struct task_struct *cur)
{
	struct inode *inode = bprm->file->f_inode;
	struct ks_file_key key = { .dev = inode->i_sb->s_dev, .ino = inode->i_ino };
	struct ks_task_mark *m;

	if (!cur->ptrace &&
	    (bpf_map_lookup_elem(&ks_self_exes, &key) || admit_by_handover(bprm, &key))) {
		m = bpf_task_storage_get(&ks_marks, cur, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (m)
			m->flags |= KS_MARK_SELF;
		return;
	}
	m = mark_of(cur);
	if (m)
		m->flags &= ~KS_MARK_SELF;
}

/*
 * Classifies procfs opens for the ptrace_access_check that do_dentry_open
 * triggers next, and resets the opener's pending state so a refused open
 * cannot leave a stale record behind.
 */
static __always_inline int proc_open(struct file *file)
{
	struct task_struct *cur;
	struct ks_task_mark *m;
	struct ks_policy *p;
	__u32 kind, len;

	p = policy();
	if (!p || p->mode == KS_MODE_DISABLED)
		return 0;

	len = file->f_path.dentry->d_name.len;
	kind = classify_proc_name(file->f_path.dentry->d_name.name, len);
	cur = bpf_get_current_task_btf();
	m = bpf_task_storage_get(&ks_marks, cur, 0,
				 kind ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
	if (!m)
		return 0;
	m->pending_kind = kind;
	m->pending_target = 0;

	/* Self-access never reaches ptrace_access_check, so allowSelfRead can
	 * only be enforced here. */
	if (kind && !(p->flags & KS_POLICY_ALLOW_SELF_READ) &&
	    (m->flags & KS_MARK_PROTECTED || protection_of(cur))) {
		struct pid *target = proc_pid_of(file);

		if (target == cur->thread_pid || target == cur->group_leader->thread_pid)
			return decide(p, KS_KIND_SELF_READ, cur, m->binding_id, -EACCES);
	}
	return 0;
}

/* A file without a name can only be opened through a magic link: the
 * /proc/P/fd/N or /proc/P/map_files/… of the process that holds it.
 * ptrace_access_check recorded the link's protected owner for this opener;
 * refuse the reopen like pidfd_getfd. */
static __always_inline int unnamed_open(void)
{
	struct task_struct *cur = bpf_get_current_task_btf();
	struct ks_task_mark *m = mark_of(cur);
	struct ks_policy *p;
	__u64 target;

	if (!m || m->pending_kind != KS_KIND_FD)
		return 0;
	target = m->pending_target;
	m->pending_kind = KS_KIND_NONE;
	m->pending_target = 0;
	p = policy();
	if (!p || p->mode == KS_MODE_DISABLED || !target || !kind_blocked(p, KS_KIND_FD))
		return 0;
	return decide_ids(p, KS_KIND_FD, target >> 32, target >> 32, 0, (__u32)target, -EACCES);
}

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

/* The guard of a delivered file, or of a file replaced by a rename over it,
 * on the secrets directory's filesystem. */
static __always_inline struct ks_binding *guarded_entry(const struct ks_policy *p,
							struct dentry *dentry)
{
	struct inode *inode = dentry->d_inode;
	__u64 dev;

	if (!inode)
		return 0;
	dev = inode->i_sb->s_dev;
	if (inode->i_sb->s_magic != TMPFS_MAGIC || (p->secrets_dev && p->secrets_dev != dev))
		return 0;
	return guarded(dev, inode);
}

/* Links and renames of a delivered file, or over one, refused to everyone
 * but the agent (which renames its guarded temporary file into place): a
 * second name for a guarded inode, or a guarded name moved onto another
 * owner's, would make cleanup by name unguard the wrong file. */
static __always_inline int guard_names(struct dentry *old, struct dentry *new)
{
	struct ks_binding *owner;
	struct ks_policy *p;

	p = policy();
	if (!p || p->mode == KS_MODE_DISABLED)
		return 0;
	owner = guarded_entry(p, old);
	if (!owner && new)
		owner = guarded_entry(p, new);
	if (!owner || is_agent(bpf_get_current_task_btf()))
		return 0;
	return decide(p, KS_KIND_FILE_LINK, bpf_get_current_task_btf(), owner->binding_id, -EPERM);
}

SEC("lsm/inode_link")
int BPF_PROG(inode_link, struct dentry *old_dentry, struct inode *dir, struct dentry *new_dentry,
	     int ret)
{
	if (ret)
		return ret;
	return guard_names(old_dentry, 0);
}

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

/* Whether the kernel is about to ask perfmon_capable() for this refused
 * check (may_access_mm, 6.15+: READ mode, environ and maps; mem is ATTACH):
 * only then may the capable hook refuse, and only a caller that holds one
 * of the two capabilities reaches it (commoncap refuses the others first),
 * so no refusal is left behind to cost a later, unrelated capable(). */
static __always_inline bool perfmon_fallback_follows(const struct ks_policy *p,
						     struct task_struct *cur, unsigned int mode)
{
	__u64 caps;

	if (!(p->flags & KS_POLICY_PERFMON_FALLBACK) || !(mode & PTRACE_MODE_FSCREDS) ||
	    !(mode & PTRACE_MODE_READ))
		return false;
	caps = cur->cred->cap_effective.val;
	return caps & (1ULL << CAP_PERFMON | 1ULL << CAP_SYS_ADMIN);
}

/* The gate: every path that reads another process's memory or environment
 * asks here (procfs opens, ptrace attach/seize, process_vm_readv,
 * pidfd_getfd). */
SEC("lsm/ptrace_access_check")
int BPF_PROG(ptrace_access_check, struct task_struct *child, unsigned int mode, int ret)
{
	struct task_struct *cur;
	struct ks_task_mark *target, *opener;
	struct ks_policy *p;
	__u32 kind, decision;
	bool quiet = mode & PTRACE_MODE_NOAUDIT;

	if (ret)
		return ret;
	p = policy();
	if (!p || p->mode == KS_MODE_DISABLED)
		return 0;
	target = protection_of(child);
	if (!target) {
		/* A running KernelSeal binary may change KernelSeal's state:
		 * whoever could attach to it (or write its memory) could too. */
		if ((mode & PTRACE_MODE_ATTACH) && is_self(child))
			return refuse_state();
		return 0;
	}

	cur = bpf_get_current_task_btf();
	opener = mark_of(cur);
	if (mode & PTRACE_MODE_FSCREDS) {
		kind = opener ? opener->pending_kind : KS_KIND_NONE;
		if (opener)
			opener->pending_kind = KS_KIND_NONE;
		/* /proc/P/{ns,fd,cwd,exe,stat,...}: ps, top, lsof, the kubelet and
		 * runc need these; they expose no memory. A link followed from
		 * here is remembered: an unnamed file it leads to is refused. */
		if (kind == KS_KIND_NONE || kind == KS_KIND_FD) {
			if (quiet || is_agent(cur))
				return 0;
			opener = bpf_task_storage_get(&ks_marks, cur, 0,
						      BPF_LOCAL_STORAGE_GET_F_CREATE);
			if (opener) {
				opener->pending_kind = KS_KIND_FD;
				opener->pending_target = pending_of(child, target);
			}
			return 0;
		}
	} else {
		kind = KS_KIND_PTRACE;
	}

	if (is_agent(cur) || !kind_blocked(p, kind)) {
		if ((p->flags & KS_POLICY_AUDIT_ALL) && !quiet)
			emit(kind, KS_DECISION_ALLOWED, mode, child, target->binding_id);
		return 0;
	}

	decision = p->mode == KS_MODE_ENFORCE ? KS_DECISION_DENIED : KS_DECISION_AUDIT;
	if (!quiet) {
		emit(kind, decision, mode, child, target->binding_id);
		stat_inc(decision == KS_DECISION_DENIED ? KS_STAT_DENIED : KS_STAT_AUDITED);
	}
	if (decision != KS_DECISION_DENIED)
		return 0;
	if (opener && perfmon_fallback_follows(p, cur, mode))
		opener->pending_target = pending_of(child, target);
	return -EPERM;
}

/* Kernels >= 6.15 grant READ-mode mm access (environ, maps) to
 * perfmon-capable callers after ptrace_access_check refused, through
 * perfmon_capable(): capable(CAP_PERFMON) || capable(CAP_SYS_ADMIN). Refuse
 * both for the opener whose check was just refused. Every open path, also
 * the kernel's own on a listener's behalf (fanotify's dentry_open), asks
 * here, where a second hook after the open would see only some of them. */
SEC("lsm/capable")
int BPF_PROG(capable, const struct cred *cred, struct user_namespace *ns, int cap,
	     unsigned int opts, int ret)
{
	struct ks_task_mark *m;

	if (ret)
		return ret;
	if (cap != CAP_PERFMON && cap != CAP_SYS_ADMIN)
		return 0;
	m = mark_of(bpf_get_current_task_btf());
	if (!m || !m->pending_target || m->pending_kind == KS_KIND_FD)
		return 0;
	/* perfmon_capable asks CAP_PERFMON first; the CAP_SYS_ADMIN question
	 * ends it (a caller without CAP_PERFMON never reaches this hook for
	 * it, commoncap refuses first). A caller with CAP_PERFMON alone keeps
	 * the record until its next procfs open. */
	if (cap == CAP_SYS_ADMIN)
		m->pending_target = 0;
	return -EPERM;
}

/* A fatal signal's core dump copies the dying task's creds (prepare_creds
 * in do_coredump, vfs_coredump on newer kernels) before it writes anything
 * to a file, a pipe handler (systemd-coredump and apport ignore
 * RLIMIT_CORE) or a socket; refusing that copy ends the dump. get_signal
 * sets PF_SIGNALED on the task it kills first, so any other task pays one
 * test of its flags. The core holds the process's memory: blockMem. */
SEC("lsm/cred_prepare")
int BPF_PROG(cred_prepare, struct cred *new, const struct cred *old, unsigned int gfp, int ret)
{
	struct task_struct *cur;
	struct ks_task_mark *m;
	struct ks_policy *p;

	if (ret)
		return ret;
	cur = bpf_get_current_task_btf();
	if (!(cur->flags & PF_SIGNALED))
		return 0;
	m = protection_of(cur);
	if (!m)
		return 0;
	p = policy();
	if (!p || p->mode == KS_MODE_DISABLED || !(p->flags & KS_POLICY_BLOCK_MEM))
		return 0;
	return decide(p, KS_KIND_CORE, cur, m->binding_id, -EPERM);
}

/* Children and threads inherit the mark: they inherit the environment and
 * share (or copy) the memory that holds the secrets. */
SEC("lsm/task_alloc")
int BPF_PROG(task_alloc, struct task_struct *task, unsigned long clone_flags, int ret)
{
	struct ks_task_mark *parent, *child;
	struct ks_policy *p;

	if (ret)
		return ret;
	p = policy();
	if (!p || !(p->flags & KS_POLICY_INHERIT))
		return 0;
	parent = protection_of(bpf_get_current_task_btf());
	if (!parent)
		return 0;
	child = bpf_task_storage_get(&ks_marks, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!child)
		return 0;
	/* The agent flag is not inherited: a child of the agent is an
	 * ordinary protected process. */
	child->flags = KS_MARK_PROTECTED;
	child->binding_id = parent->binding_id;
	child->file_owner = parent->file_owner;
	stat_inc(KS_STAT_INHERITED);
	return 0;
}

struct basename_ctx {
	__u32 start;	/* index after the last '/' */
	__u32 end;	/* length of the file name */
};

/* bpf_loop callbacks: the verifier checks a callback once, where an inline
 * loop over a 256-byte name with a data-dependent start explodes its state
 * (E2BIG on tp_btf). */
static long find_basename(__u32 i, struct basename_ctx *c)
{
	__u32 zero = 0;
	struct ks_exec_scratch *sc = bpf_map_lookup_elem(&ks_scratch, &zero);

	if (!sc || i >= c->end)
		return 1;
	/* c->end < KS_PATH_LEN, and bpf_loop bounds i; the masks say so to the
	 * verifier (a comparison with a constant here would be folded away by
	 * clang and tested on a copy the verifier does not connect). */
	if (sc->path.path[i & (KS_PATH_LEN - 1)] == '/')
		c->start = i + 1;
	return 0;
}

static long copy_basename(__u32 i, struct basename_ctx *c)
{
	__u32 zero = 0, j = c->start + i;
	struct ks_exec_scratch *sc = bpf_map_lookup_elem(&ks_scratch, &zero);

	if (!sc || j >= c->end)
		return 1;
	sc->binary.name[i & (KS_BINARY_LEN - 1)] = sc->path.path[j & (KS_PATH_LEN - 1)];
	return 0;
}

/* The binding an exec's file name selects: exact path first, then the
 * basename (`binary`: the exec'd name, not comm, which is cut to 15 bytes and
 * settable by the process). 0 when none. */
static __always_inline __u32 exec_binding(struct linux_binprm *bprm)
{
	struct basename_ctx c = {};
	struct ks_exec_scratch *sc;
	struct ks_binding *b;
	__u32 zero = 0;
	long len;

	sc = bpf_map_lookup_elem(&ks_scratch, &zero);
	if (!sc)
		return 0;
	__builtin_memset(&sc->path, 0, sizeof(sc->path));
	__builtin_memset(&sc->binary, 0, sizeof(sc->binary));
	len = bpf_probe_read_kernel_str(sc->path.path, sizeof(sc->path.path),
					BPF_CORE_READ(bprm, filename));
	if (len <= 1)
		return 0;
	b = bpf_map_lookup_elem(&ks_exec_paths, &sc->path);
	if (b)
		return b->binding_id;
	c.end = len - 1;
	bpf_loop(KS_PATH_LEN, find_basename, &c, 0);
	bpf_loop(KS_BINARY_LEN - 1, copy_basename, &c, 0);
	b = bpf_map_lookup_elem(&ks_exec_binaries, &sc->binary);
	return b ? b->binding_id : 0;
}

/* Whether perf events monitor this task: per-task events attached to it,
 * inherited ones included, keep sampling its new image after exec. */
static __always_inline bool perf_monitored(struct task_struct *t)
{
	struct perf_event_context *ctx = t->perf_event_ctxp;

	return ctx && ctx->nr_events > 0;
}

/* A thread that execs takes over its process (de_thread): the mark a thread
 * created before the mark inherits through its leader must move to it, or
 * the new image runs unmarked. */
static __always_inline void keep_leader_mark(struct task_struct *cur)
{
	struct ks_task_mark *own, *leader;

	if (cur == cur->group_leader)
		return;
	leader = mark_of(cur->group_leader);
	if (!leader || !(leader->flags & KS_MARK_PROTECTED))
		return;
	own = bpf_task_storage_get(&ks_marks, cur, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!own || (own->flags & KS_MARK_PROTECTED))
		return;
	own->flags |= KS_MARK_PROTECTED;
	own->binding_id = leader->binding_id;
	own->file_owner = leader->file_owner;
}

/* A process traced before it execs a protected binary would keep its
 * tracer after the mark, and perf events attached before would keep
 * sampling it: refuse such an exec in enforce (before the point of no
 * return, where a refusal is still possible). */
SEC("lsm/bprm_check_security")
int BPF_PROG(bprm_check_security, struct linux_binprm *bprm, int ret)
{
	struct task_struct *cur;
	struct ks_task_mark *m;
	struct ks_policy *p;
	__u32 binding, kind;

	if (ret)
		return ret;
	cur = bpf_get_current_task_btf();
	keep_leader_mark(cur);
	if (cur->ptrace)
		kind = KS_KIND_TRACED_EXEC;
	else if (perf_monitored(cur))
		kind = KS_KIND_PERF_EXEC;
	else
		return 0;
	p = policy();
	if (!p || p->mode == KS_MODE_DISABLED)
		return 0;
	m = protection_of(cur);
	binding = m ? m->binding_id : exec_binding(bprm);
	if (!m && !binding)
		return 0;
	if (kind == KS_KIND_PERF_EXEC && !(p->flags & KS_POLICY_BLOCK_PERF))
		return 0;
	return decide(p, kind, cur, binding, -EPERM);
}

/* Perf events that can copy a protected process's memory or registers:
 * any per-task event on it (its samples carry what the task holds), and a
 * CPU-wide event that samples user stacks, user registers or user call
 * chains (it samples whatever runs, protected processes included).
 * Counting events and IP-only CPU-wide sampling stay allowed. */
SEC("lsm/perf_event_alloc")
int BPF_PROG(perf_event_alloc, struct perf_event *event, int ret)
{
	struct task_struct *cur, *target;
	struct ks_task_mark *m;
	struct ks_policy *p;
	__u64 sample;

	if (ret)
		return ret;
	p = policy();
	if (!p || p->mode == KS_MODE_DISABLED || !(p->flags & KS_POLICY_BLOCK_PERF))
		return 0;
	cur = bpf_get_current_task_btf();
	target = event->hw.target;
	if (target) {
		m = protection_of(target);
		if (!m || is_agent(cur))
			return 0;
		return decide(p, KS_KIND_PERF, target, m->binding_id, -EACCES);
	}
	sample = event->attr.sample_type;
	if (!(sample & (PERF_SAMPLE_REGS_USER | PERF_SAMPLE_STACK_USER | PERF_SAMPLE_REGS_INTR)) &&
	    !((sample & PERF_SAMPLE_CALLCHAIN) &&
	      !BPF_CORE_READ_BITFIELD(&event->attr, exclude_callchain_user)))
		return 0;
	if (is_agent(cur))
		return 0;
	return decide(p, KS_KIND_PERF, cur, 0, -EACCES);
}

/* Marks a matching exec while it holds exec_update_lock, before the new
 * image can be opened through /proc: no window for another process to open
 * /proc/P/mem of the new image and keep the fd. */
SEC("lsm/bprm_committing_creds")
int BPF_PROG(bprm_committing_creds, struct linux_binprm *bprm)
{
	struct task_struct *cur = bpf_get_current_task_btf();
	struct ks_task_mark *m;
	__u32 binding;

	mark_self(bprm, cur);
	binding = exec_binding(bprm);
	if (!binding)
		return 0;
	m = bpf_task_storage_get(&ks_marks, cur, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!m)
		return 0;
	m->flags |= KS_MARK_PROTECTED;
	m->binding_id = binding;
	stat_inc(KS_STAT_EXEC_MARKED);
	return 0;
}

/* Exec events for the agent's log and metrics. With kernelBinaryFilter only
 * execs that match a binding are reported. The match is computed here, not
 * taken from bprm_committing_creds, so exec events work where LSM programs
 * cannot load. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(sched_process_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct ks_policy *pol = policy();
	struct ks_task_mark *m;
	struct ks_exec_event *e;
	__u32 binding;

	if (!pol)
		return 0;
	binding = exec_binding(bprm);
	if (!binding && (pol->flags & KS_POLICY_EXEC_FILTER))
		return 0;
	e = bpf_ringbuf_reserve(&ks_events, sizeof(*e), 0);
	if (!e) {
		stat_inc(KS_STAT_EVENTS_DROPPED);
		return 0;
	}
	e->type = KS_EVENT_EXEC;
	m = mark_of(p);
	e->flags = (binding ? KS_EXEC_MATCHED : 0) |
		   (m && (m->flags & KS_MARK_PROTECTED) ? KS_EXEC_PROTECTED : 0);
	e->pid = p->tgid;
	e->tid = p->pid;
	e->ppid = BPF_CORE_READ(p, real_parent, tgid);
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->binding_id = binding;
	e->_pad = 0;
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->timestamp_ns = bpf_ktime_get_ns();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), BPF_CORE_READ(bprm, filename));
	bpf_ringbuf_submit(e, 0);
	stat_inc(KS_STAT_EXEC_EVENTS);
	return 0;
}
