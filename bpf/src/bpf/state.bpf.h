/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * KernelSeal's own state: its maps, pins, bpffs and binary, open only to
 * the agent and trusted KernelSeal binaries (marked at exec, by file).
 * Part of kernelseal.bpf.c (one object): included there, in order.
 */
#ifndef KS_STATE_BPF_H
#define KS_STATE_BPF_H

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

/* A change that would end enforcement or trust another program: while
 * locked, refused to every process, KernelSeal's own included. */
static __always_inline int refuse_state_even_self(void)
{
	struct ks_policy *p = policy();

	if (locked(p))
		return deny_locked(KS_KIND_LOCK_STATE, 0);
	return refuse_state();
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
	return refuse_state_even_self();
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
	/* A lazy unmount of /sys drops the bpffs below it once nothing else
	 * holds it: locked, sysfs stays mounted too. */
	if (sb->s_magic == SYSFS_MAGIC && locked(policy()))
		return refuse_state_even_self();
	if (sb->s_magic != BPF_FS_MAGIC)
		return 0;
	t = trust();
	if (!t || !t->pin_dev || sb->s_dev != t->pin_dev)
		return 0;
	return refuse_state_even_self();
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
	return refuse_state_even_self();
}

/* Whether `name` is exactly "kernelseal-core", the file holding the agent
 * (the `kernelseal` command execs it; the command is exec'd first and is
 * not the build a handover is for: the agent trusts it at start). */
static __always_inline bool named_kernelseal_core(struct dentry *d)
{
	const char want[] = "kernelseal-core";
	char buf[sizeof(want)] = {};

	if (d->d_name.len != sizeof(want) - 1 ||
	    bpf_probe_read_kernel(buf, sizeof(want) - 1, d->d_name.name))
		return false;
#pragma unroll
	for (int i = 0; i < (int)sizeof(want) - 1; i++)
		if (buf[i] != want[i])
			return false;
	return true;
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

	if (!t || !t->handover_until_ns || now > t->handover_until_ns || locked(policy()))
		return false;
	if (inode->i_uid.val != 0 || (inode->i_mode & (S_IWGRP | S_IWOTH)) ||
	    !named_kernelseal_core(bprm->file->f_path.dentry))
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

#endif /* KS_STATE_BPF_H */
