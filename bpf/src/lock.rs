//! What a lock-mode refusal refused, in words: the programs report a number
//! (a bpf(2) command and program type, a kernel read id, a lockdown reason)
//! in the event's detail.

use crate::events::AccessKind;

/// `enum bpf_prog_type` (UAPI: numbers never change).
const PROGRAM_TYPES: [&str; 33] = [
    "unspec",
    "socket_filter",
    "kprobe",
    "sched_cls",
    "sched_act",
    "tracepoint",
    "xdp",
    "perf_event",
    "cgroup_skb",
    "cgroup_sock",
    "lwt_in",
    "lwt_out",
    "lwt_xmit",
    "sock_ops",
    "sk_skb",
    "cgroup_device",
    "sk_msg",
    "raw_tracepoint",
    "cgroup_sock_addr",
    "lwt_seg6local",
    "lirc_mode2",
    "sk_reuseport",
    "flow_dissector",
    "cgroup_sysctl",
    "raw_tracepoint_writable",
    "cgroup_sockopt",
    "tracing",
    "struct_ops",
    "ext",
    "lsm",
    "sk_lookup",
    "syscall",
    "netfilter",
];

/// `enum lockdown_reason`, the same on the kernels KernelSeal is tested on
/// (6.12, 6.19): what each reason guards.
const LOCKDOWN_REASONS: [&str; 30] = [
    "none",
    "loading an unsigned module",
    "/dev/mem, /dev/kmem or /dev/port",
    "the EFI test driver",
    "kexec",
    "hibernation",
    "direct PCI access",
    "raw I/O ports",
    "raw MSR access",
    "modifying ACPI tables",
    "modifying the device tree",
    "direct PCMCIA CIS storage",
    "reconfiguring serial ports",
    "unsafe module parameters",
    "the MMIO tracer",
    "debugfs",
    "xmon write access",
    "bpf_probe_write_user",
    "kernel debugger writes",
    "RTAS error injection",
    "Xen user actions",
    "integrity",
    "/proc/kcore",
    "kprobes",
    "BPF reads of kernel memory",
    "kernel debugger reads",
    "perf access to kernel data",
    "tracefs",
    "xmon read access",
    "xfrm SA secrets",
];

fn bpf_command(cmd: u32, prog_type: u32) -> String {
    match cmd {
        5 => {
            let name = PROGRAM_TYPES
                .get(prog_type as usize)
                .copied()
                .unwrap_or("unknown");
            format!("load a BPF program (type {name})")
        }
        8 => "attach a BPF program".into(),
        9 => "detach a BPF program".into(),
        17 => "attach a raw tracepoint".into(),
        28 => "create a BPF link".into(),
        29 => "replace a BPF link's program".into(),
        34 => "detach a BPF link".into(),
        other => format!("run bpf command {other}"),
    }
}

fn kernel_code(source: u32, id: u32) -> String {
    let what = match id {
        2 => "a kernel module",
        3 => "a kexec image",
        4 => "a kexec initramfs",
        7 => "a compressed kernel module",
        _ => "kernel code",
    };
    let how = match (source, id) {
        (1, 2 | 7) => " (finit_module)",
        (2, 2) => " (init_module)",
        (1, 3 | 4) => " (kexec_file_load)",
        (2, 3 | 4) => " (kexec_load)",
        _ => "",
    };
    format!("load {what}{how}")
}

/// What the accessor attempted, for a lock-mode event; `None` for other kinds.
pub fn attempted(kind: AccessKind, detail: u32) -> Option<String> {
    Some(match kind {
        AccessKind::LockBpf => bpf_command(detail >> 16, detail & 0xffff),
        AccessKind::LockKernelCode => kernel_code(detail >> 16, detail & 0xffff),
        AccessKind::Lockdown => {
            let reason = LOCKDOWN_REASONS
                .get(detail as usize)
                .copied()
                .unwrap_or("unknown");
            format!("use {reason} (lockdown reason {detail})")
        }
        AccessKind::LockState => "change KernelSeal's pins, bpffs or binary".into(),
        AccessKind::LockProbe => format!("open a kprobe or uprobe perf event (PMU type {detail})"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_read_as_words() {
        assert_eq!(
            attempted(AccessKind::LockBpf, 5 << 16 | 26).as_deref(),
            Some("load a BPF program (type tracing)")
        );
        assert_eq!(
            attempted(AccessKind::LockBpf, 34 << 16).as_deref(),
            Some("detach a BPF link")
        );
        assert_eq!(
            attempted(AccessKind::LockKernelCode, 1 << 16 | 2).as_deref(),
            Some("load a kernel module (finit_module)")
        );
        assert_eq!(
            attempted(AccessKind::Lockdown, 22).as_deref(),
            Some("use /proc/kcore (lockdown reason 22)")
        );
        assert_eq!(
            attempted(AccessKind::Lockdown, 99).as_deref(),
            Some("use unknown (lockdown reason 99)")
        );
        assert_eq!(attempted(AccessKind::Environ, 0), None);
    }
}
