/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Copies the kernel makes of a process's memory on someone's behalf:
 * perf samples and core dumps.
 * Part of kernelseal.bpf.c (one object): included there, in order.
 */
#ifndef KS_COPIES_BPF_H
#define KS_COPIES_BPF_H

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
	ret = refuse_locked_probe(event);
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

#endif /* KS_COPIES_BPF_H */
