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

/* A lock refusal, logged and counted; `detail` goes to the event's
 * ptrace_mode field. Lock mode has no audit: the policy is enforce. */
static __always_inline int deny_locked(__u32 kind, __u32 detail)
{
	emit_to(kind, KS_DECISION_DENIED, detail, 0, 0, 0, 0);
	stat_inc(KS_STAT_DENIED);
	return -EPERM;
}

/* A lock refusal for any process but the agent and trusted KernelSeal
 * binaries. */
static __always_inline int refuse_unless_self(__u32 kind, __u32 detail)
{
	struct task_struct *cur = bpf_get_current_task_btf();

	if (is_self(cur) || is_agent(cur))
		return 0;
	return deny_locked(kind, detail);
}

/* An instruction as the programs read it raw (not relocated). */
struct ks_insn {
	__u8 code;
	__u8 regs; /* dst_reg in the low nibble, src_reg in the high one */
	__s16 off;
	__s32 imm;
};

#define KS_INSN_CALL 0x85	/* BPF_JMP | BPF_CALL */
#define KS_INSN_LD_IMM64 0x18	/* BPF_LD | BPF_IMM | BPF_DW */
#define KS_PSEUDO_CALL 1	/* a call of the program's own subprogram */
#define KS_PSEUDO_KFUNC_CALL 2
#define KS_PSEUDO_BTF_ID 3	/* the address of a kernel variable */
/* In the event detail: a kfunc call or a kernel variable. */
#define KS_HELPER_KERNEL 255

/* Program types whose programs run on packets, sockets, sysctls and
 * devices, not on arbitrary kernel functions: cgroup device filters (runc
 * and systemd load one per container and unit), network data planes. */
static __always_inline bool packet_or_cgroup_type(__u32 type)
{
	switch (type) {
	case 1:  /* socket_filter */
	case 3:  /* sched_cls */
	case 4:  /* sched_act */
	case 6:  /* xdp */
	case 8:  /* cgroup_skb */
	case 9:  /* cgroup_sock */
	case 10: /* lwt_in */
	case 11: /* lwt_out */
	case 12: /* lwt_xmit */
	case 13: /* sock_ops */
	case 14: /* sk_skb */
	case 15: /* cgroup_device */
	case 16: /* sk_msg */
	case 18: /* cgroup_sock_addr */
	case 19: /* lwt_seg6local */
	case 21: /* sk_reuseport */
	case 22: /* flow_dissector */
	case 23: /* cgroup_sysctl */
	case 25: /* cgroup_sockopt */
	case 30: /* sk_lookup */
	case 32: /* netfilter */
		return true;
	}
	return false;
}

/* Helpers that read (or write) memory other than the packet's and the
 * program's own: with CAP_PERFMON every program type may call them
 * (bpf_base_func_proto), reading the task the program runs in. */
static __always_inline bool reads_memory(__s32 helper)
{
	switch (helper) {
	case 4:   /* probe_read */
	case 6:   /* trace_printk: %s reads any kernel address */
	case 35:  /* get_current_task: a task pointer to read from */
	case 36:  /* probe_write_user */
	case 45:  /* probe_read_str */
	case 112: /* probe_read_user */
	case 113: /* probe_read_kernel */
	case 114: /* probe_read_user_str */
	case 115: /* probe_read_kernel_str */
	case 141: /* get_task_stack */
	case 147: /* d_path */
	case 148: /* copy_from_user */
	case 149: /* snprintf_btf */
	case 150: /* seq_printf_btf */
	case 153: /* per_cpu_ptr */
	case 154: /* this_cpu_ptr */
	case 158: /* get_current_task_btf */
	case 165: /* snprintf: %s/%pks read any kernel address, into a map */
	case 175: /* task_pt_regs */
	case 177: /* trace_vprintk: as trace_printk */
	case 180: /* find_vma */
	case 191: /* copy_from_user_task */
		return true;
	}
	return false;
}

struct insn_scan {
	const void *insns;
	__u32 helper; /* what made the program refused; 0: nothing */
};

static long scan_insn(__u32 i, struct insn_scan *s)
{
	struct ks_insn insn;
	__u8 src;

	if (bpf_probe_read_kernel(&insn, sizeof(insn), s->insns + (__u64)i * sizeof(insn))) {
		s->helper = KS_HELPER_KERNEL;
		return 1;
	}
	src = insn.regs >> 4;
	if (insn.code == KS_INSN_LD_IMM64 && src == KS_PSEUDO_BTF_ID) {
		s->helper = KS_HELPER_KERNEL;
		return 1;
	}
	if (insn.code != KS_INSN_CALL || src == KS_PSEUDO_CALL)
		return 0;
	if (src == KS_PSEUDO_KFUNC_CALL) {
		s->helper = KS_HELPER_KERNEL;
		return 1;
	}
	if (reads_memory(insn.imm)) {
		s->helper = (__u32)insn.imm & 0xff;
		return 1;
	}
	return 0;
}

/* A program that could read memory: a tracing type (kprobe, tracepoint,
 * raw tracepoint, perf event, tracing, LSM, struct_ops, extension,
 * syscall: they walk kernel pointers), or any other type calling a
 * memory-reading helper, a kfunc or a kernel variable. Asked after the
 * instructions are copied in and before the verifier runs; the
 * trampoline runs this only while earlier programs allowed the load (its
 * verdict's position differs: 6.16 added `kernel`). */
SEC("lsm/bpf_prog_load")
int BPF_PROG(bpf_prog_load, struct bpf_prog *prog)
{
	struct ks_policy *p = policy();
	struct insn_scan scan = {};
	__u32 type, len;

	if (!locked(p))
		return 0;
	type = BPF_CORE_READ(prog, type);
	if (packet_or_cgroup_type(type)) {
		len = BPF_CORE_READ(prog, len);
		scan.insns = (void *)prog + bpf_core_field_offset(struct bpf_prog, insnsi);
		bpf_loop(len, scan_insn, &scan, 0);
		if (!scan.helper)
			return 0;
	}
	return refuse_unless_self(KS_KIND_LOCK_BPF,
				  ((__u32)BPF_PROG_LOAD << 16) | (scan.helper << 8) | (type & 0xff));
}

/* Attach types that run a program on kernel functions, tracepoints,
 * LSM hooks or user probes: a tracing program loaded before the lock must
 * not be attached anew. */
static __always_inline bool tracing_attach_type(__u32 attach_type)
{
	return (attach_type >= 23 && attach_type <= 28) || /* raw_tp .. iter */
	       (attach_type >= 41 && attach_type <= 44) || /* perf_event .. struct_ops */
	       attach_type == 48 || attach_type >= 56;     /* uprobe_multi, sessions, newer */
}

/* Attaching: a raw tracepoint, or a link or attachment of a tracing
 * kind. Packet, socket and cgroup attachments stay allowed (runc attaches
 * a device filter to every container). prog_attach and link_create both
 * hold the attach type at offset 8 (UAPI). */
SEC("lsm/bpf")
int BPF_PROG(bpf, int cmd, union bpf_attr *attr)
{
	__u32 attach_type = 0;

	/* The command first: every bpf() call passes here (map lookups by
	 * the node's own agents), and only three commands concern the lock. */
	if (cmd != BPF_RAW_TRACEPOINT_OPEN && cmd != BPF_PROG_ATTACH && cmd != BPF_LINK_CREATE)
		return 0;
	if (!locked(policy()))
		return 0;
	if (cmd != BPF_RAW_TRACEPOINT_OPEN) {
		bpf_probe_read_kernel(&attach_type, sizeof(attach_type), (void *)attr + 8);
		if (!tracing_attach_type(attach_type))
			return 0;
	}
	return refuse_unless_self(KS_KIND_LOCK_BPF, ((__u32)cmd << 16) | (attach_type & 0xff));
}

/* Module and kexec image ids. The kernel generates enum kernel_load_data_id
 * (LOADING_*) from the same list as enum kernel_read_file_id (READING_*),
 * so one set of relocated values serves both hooks. */
static __always_inline bool kernel_code_id(int id)
{
	return id == bpf_core_enum_value(enum kernel_read_file_id, READING_MODULE) ||
	       id == bpf_core_enum_value(enum kernel_read_file_id, READING_KEXEC_IMAGE) ||
	       id == bpf_core_enum_value(enum kernel_read_file_id, READING_KEXEC_INITRAMFS) ||
	       (bpf_core_enum_value_exists(enum kernel_read_file_id, READING_MODULE_COMPRESSED) &&
		id == bpf_core_enum_value(enum kernel_read_file_id, READING_MODULE_COMPRESSED));
}

/* finit_module and kexec_file_load: asked before the kernel reads a byte. */
SEC("lsm/kernel_read_file")
int BPF_PROG(kernel_read_file, struct file *file, enum kernel_read_file_id id)
{
	if (!kernel_code_id(id) || !locked(policy()))
		return 0;
	return refuse_unless_self(KS_KIND_LOCK_KERNEL_CODE, (1u << 16) | (__u32)id);
}

/* init_module (before the image is copied in) and kexec_load. */
SEC("lsm/kernel_load_data")
int BPF_PROG(kernel_load_data, enum kernel_load_data_id id)
{
	if (!kernel_code_id(id) || !locked(policy()))
		return 0;
	return refuse_unless_self(KS_KIND_LOCK_KERNEL_CODE, (2u << 16) | (__u32)id);
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
	return refuse_unless_self(KS_KIND_LOCKDOWN, (__u32)what);
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

#define KS_PERF_TYPE_TRACEPOINT 2

/* Called from perf_event_alloc (copies.bpf.h) once the event has its PMU.
 * A tracepoint event is refused too: a tracing program loaded before the
 * lock could be attached to it (PERF_EVENT_IOC_SET_BPF), and by name
 * tracepoints need tracefs, which the lock closes anyway. */
static __always_inline int refuse_locked_probe(struct perf_event *event)
{
	struct ks_policy *p = policy();

	if (!locked(p))
		return 0;
	if (BPF_CORE_READ(event, attr.type) != KS_PERF_TYPE_TRACEPOINT &&
	    !probe_pmu(BPF_CORE_READ(event, pmu)))
		return 0;
	return refuse_unless_self(KS_KIND_LOCK_PROBE, (__u32)BPF_CORE_READ(event, pmu, type));
}

/* While locked, KernelSeal's own processes run only the code of their own
 * (statically linked) binary: a PROT_EXEC mapping of any other file — the
 * dynamic loader the kernel maps at exec, a library it loads, one root
 * preloads or replaced — is refused, so root's code cannot run as a
 * trusted KernelSeal binary, exempt from the lock. The exec of the binary
 * itself maps only mm->exe_file. */
SEC("lsm/mmap_file")
int BPF_PROG(mmap_file, struct file *file, unsigned long reqprot, unsigned long prot,
	     unsigned long flags)
{
	struct task_struct *cur;
	struct ks_policy *p;
	struct file *exe;

	if (!file || !(prot & PROT_EXEC))
		return 0;
	p = policy();
	if (!locked(p))
		return 0;
	cur = bpf_get_current_task_btf();
	if (!is_self(cur))
		return 0;
	exe = BPF_CORE_READ(cur, mm, exe_file);
	if (exe && BPF_CORE_READ(exe, f_inode) == file->f_inode)
		return 0;
	return deny_locked(KS_KIND_LOCK_SELF_CODE, 0);
}

#endif /* KS_LOCK_BPF_H */
