/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Marks, policy and the logged decision every hook shares.
 * Part of kernelseal.bpf.c (one object): included there, in order.
 */
#ifndef KS_COMMON_BPF_H
#define KS_COMMON_BPF_H

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

#endif /* KS_COMMON_BPF_H */
