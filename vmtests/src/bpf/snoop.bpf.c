// SPDX-License-Identifier: GPL-2.0-only
/*
 * The attacker's tracing program of the lock-mode tests: on a syscall of
 * one process it copies that process's environment (mm->env_start..), or
 * the page at loot.addr, out with bpf_probe_read_user, as root's own BPF
 * program would. Run in the process's own context it reads even its secret
 * memory (memfd_secret is only unmapped from the kernel's direct map, not
 * from its owner). Without lock mode it loads and reads a protected
 * process's environment and the agent's secret memory; with it, the load
 * must be refused.
 */
#include "ks_core.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#define LOOT_LEN 4096

/* Flavours (___snoop) of kernel types: relocated by their base names. */
struct mm_struct___snoop {
	unsigned long env_start;
	unsigned long env_end;
} __attribute__((preserve_access_index));

struct task_struct___snoop {
	struct mm_struct___snoop *mm;
} __attribute__((preserve_access_index));

struct pt_regs;

struct loot {
	__u32 got;
	__u32 len;
	/* Set by user space: 0 for the environment, else a page to copy. */
	__u64 addr;
	char bytes[LOOT_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct loot);
} snoop_loot SEC(".maps");

const volatile __u32 target_tgid = 0;

SEC("tp_btf/sys_enter")
int BPF_PROG(sys_enter, struct pt_regs *regs, long id)
{
	struct task_struct___snoop *task = (void *)bpf_get_current_task_btf();
	unsigned long start, end, len;
	struct loot *l;
	__u32 zero = 0;

	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	l = bpf_map_lookup_elem(&snoop_loot, &zero);
	if (!l || l->got)
		return 0;
	if (l->addr) {
		start = l->addr;
		len = LOOT_LEN;
	} else {
		start = BPF_CORE_READ(task, mm, env_start);
		end = BPF_CORE_READ(task, mm, env_end);
		len = end - start;
	}
	if (len > LOOT_LEN)
		len = LOOT_LEN;
	if (len == 0)
		return 0;
	/* A page not faulted in yet cannot be read from BPF (no page faults
	 * here): reported as empty, so the search goes on to the next one. */
	if (bpf_probe_read_user(l->bytes, len, (void *)start) == 0)
		l->len = len;
	else
		l->len = 0;
	l->got = 1;
	return 0;
}
