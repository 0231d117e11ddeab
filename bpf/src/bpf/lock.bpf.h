/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Lock mode (policy.lock): once the agent has written a locked policy (and
 * frozen the map that holds it), no process but KernelSeal's own loads code
 * into the kernel (BPF programs, modules, kexec images), uses the kernel's
 * own ways into memory (every lockdown reason: /dev/mem, /proc/kcore,
 * tracefs, kprobes, ...) or probes through perf, and nobody, KernelSeal
 * included, removes KernelSeal's pins until reboot.
 * Part of kernelseal.bpf.c (one object): included there, in order.
 */
#ifndef KS_LOCK_BPF_H
#define KS_LOCK_BPF_H

static __always_inline bool locked(const struct ks_policy *p)
{
	return p && (p->flags & KS_POLICY_LOCK) && p->mode == KS_MODE_ENFORCE;
}

/* A lock refusal for any process but the agent and trusted KernelSeal
 * binaries; `detail` goes to the event's ptrace_mode field. */
static __always_inline int refuse_unless_self(const struct ks_policy *p, __u32 kind, __u32 detail)
{
	struct task_struct *cur = bpf_get_current_task_btf();

	if (is_self(cur) || is_agent(cur))
		return 0;
	emit_to(kind, KS_DECISION_DENIED, detail, 0, 0, 0, 0);
	stat_inc(KS_STAT_DENIED);
	return -EPERM;
}

/* Loading a program is how root's code would read memory: a tracing
 * program reads any task's user memory, and with CAP_PERFMON any program
 * type may call bpf_probe_read_user on the task it runs in. Detaching and
 * replacing links and attachments would end enforcement. Both before the
 * verifier or the attach code look at anything. The trampoline runs this
 * only while every earlier program allowed the call, so the previous
 * verdict needs no reading (its position differs: 6.16 added `kernel`). */
SEC("lsm/bpf")
int BPF_PROG(bpf, int cmd, union bpf_attr *attr)
{
	struct ks_policy *p = policy();
	__u32 prog_type = 0;

	if (!locked(p))
		return 0;
	switch (cmd) {
	case BPF_PROG_LOAD:
		/* prog_type is the first field of the load attributes (UAPI). */
		bpf_probe_read_kernel(&prog_type, sizeof(prog_type), attr);
		break;
	case BPF_PROG_ATTACH:
	case BPF_PROG_DETACH:
	case BPF_RAW_TRACEPOINT_OPEN:
	case BPF_LINK_CREATE:
	case BPF_LINK_UPDATE:
	case BPF_LINK_DETACH:
		break;
	default:
		return 0;
	}
	return refuse_unless_self(p, KS_KIND_LOCK_BPF, ((__u32)cmd << 16) | (prog_type & 0xffff));
}

/* finit_module and kexec_file_load: asked before the kernel reads a byte. */
SEC("lsm/kernel_read_file")
int BPF_PROG(kernel_read_file, struct file *file, enum kernel_read_file_id id)
{
	struct ks_policy *p = policy();

	if (!locked(p))
		return 0;
	if (id != bpf_core_enum_value(enum kernel_read_file_id, READING_MODULE) &&
	    id != bpf_core_enum_value(enum kernel_read_file_id, READING_KEXEC_IMAGE) &&
	    id != bpf_core_enum_value(enum kernel_read_file_id, READING_KEXEC_INITRAMFS) &&
	    !(bpf_core_enum_value_exists(enum kernel_read_file_id, READING_MODULE_COMPRESSED) &&
	      id == bpf_core_enum_value(enum kernel_read_file_id, READING_MODULE_COMPRESSED)))
		return 0;
	return refuse_unless_self(p, KS_KIND_LOCK_KERNEL_CODE, (1u << 16) | (__u32)id);
}

/* init_module (before the image is copied in) and kexec_load. */
SEC("lsm/kernel_load_data")
int BPF_PROG(kernel_load_data, enum kernel_load_data_id id)
{
	struct ks_policy *p = policy();

	if (!locked(p))
		return 0;
	if (id != bpf_core_enum_value(enum kernel_load_data_id, LOADING_MODULE) &&
	    id != bpf_core_enum_value(enum kernel_load_data_id, LOADING_KEXEC_IMAGE) &&
	    id != bpf_core_enum_value(enum kernel_load_data_id, LOADING_KEXEC_INITRAMFS) &&
	    !(bpf_core_enum_value_exists(enum kernel_load_data_id, LOADING_MODULE_COMPRESSED) &&
	      id == bpf_core_enum_value(enum kernel_load_data_id, LOADING_MODULE_COMPRESSED)))
		return 0;
	return refuse_unless_self(p, KS_KIND_LOCK_KERNEL_CODE, (2u << 16) | (__u32)id);
}

/* The kernel's own checklist of ways root reaches kernel and process
 * memory (the lockdown LSM's reasons, integrity and confidentiality):
 * refused as lockdown=confidentiality would, to everyone but KernelSeal. */
SEC("lsm/locked_down")
int BPF_PROG(locked_down, int what)
{
	struct ks_policy *p = policy();

	if (!locked(p) || what <= 0)
		return 0;
	return refuse_unless_self(p, KS_KIND_LOCKDOWN, (__u32)what);
}

/* Whether a PMU is "kprobe" or "uprobe": dynamic probes on any kernel or
 * user address. */
static __always_inline bool probe_pmu(struct pmu *pmu)
{
	char name[8] = {};

	if (!pmu || bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(pmu, name)) != 7)
		return false;
	return (name[0] == 'k' || name[0] == 'u') && name[1] == 'p' && name[2] == 'r' &&
	       name[3] == 'o' && name[4] == 'b' && name[5] == 'e' && name[6] == 0;
}

/* Called from perf_event_alloc (copies.bpf.h) once the event has its PMU. */
static __always_inline int refuse_locked_probe(struct perf_event *event)
{
	struct ks_policy *p = policy();

	if (!locked(p) || !probe_pmu(BPF_CORE_READ(event, pmu)))
		return 0;
	return refuse_unless_self(p, KS_KIND_LOCK_PROBE, (__u32)BPF_CORE_READ(event, pmu, type));
}

#endif /* KS_LOCK_BPF_H */
