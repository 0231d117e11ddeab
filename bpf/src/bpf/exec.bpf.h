/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Exec and fork: marks follow children, threads and matching execs; a
 * traced or perf-monitored process is refused a protected exec.
 * Part of kernelseal.bpf.c (one object): included there, in order.
 */
#ifndef KS_EXEC_BPF_H
#define KS_EXEC_BPF_H

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
	child->owner_id = parent->owner_id;
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
	own->owner_id = leader->owner_id;
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

#endif /* KS_EXEC_BPF_H */
