/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Delivered secret files: opened only by their owner's process tree, never
 * given a second name.
 * Part of kernelseal.bpf.c (one object): included there, in order.
 */
#ifndef KS_FILES_BPF_H
#define KS_FILES_BPF_H

static __always_inline struct ks_file_owner *guarded(__u64 dev, struct inode *inode)
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
	struct ks_file_owner *owner;
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
	if (m && m->owner_id == owner->owner_id)
		return 0;
	m = mark_of(cur->group_leader);
	if (m && m->owner_id == owner->owner_id)
		return 0;
	return decide(p, KS_KIND_FILE, cur, owner->owner_id, -EACCES);
}


/* The guard of a delivered file, or of a file replaced by a rename over it,
 * on the secrets directory's filesystem. */
static __always_inline struct ks_file_owner *guarded_entry(const struct ks_policy *p,
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
	struct ks_file_owner *owner;
	struct ks_policy *p;

	p = policy();
	if (!p || p->mode == KS_MODE_DISABLED)
		return 0;
	owner = guarded_entry(p, old);
	if (!owner && new)
		owner = guarded_entry(p, new);
	if (!owner || is_agent(bpf_get_current_task_btf()))
		return 0;
	return decide(p, KS_KIND_FILE_LINK, bpf_get_current_task_btf(), owner->owner_id, -EPERM);
}

SEC("lsm/inode_link")
int BPF_PROG(inode_link, struct dentry *old_dentry, struct inode *dir, struct dentry *new_dentry,
	     int ret)
{
	if (ret)
		return ret;
	return guard_names(old_dentry, 0);
}

#endif /* KS_FILES_BPF_H */
