/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * /proc and ptrace: the gate every read of another process's memory or
 * environment asks, and the opens that prepare its answer.
 * Part of kernelseal.bpf.c (one object): included there, in order.
 */
#ifndef KS_PROC_BPF_H
#define KS_PROC_BPF_H

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

#endif /* KS_PROC_BPF_H */
