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

/// `enum bpf_attach_type` names of the tracing kinds lock mode refuses.
fn attach_type(t: u32) -> String {
    let name = match t {
        23 => "raw tracepoint",
        24 => "fentry",
        25 => "fexit",
        26 => "fmod_ret",
        27 => "LSM",
        28 => "iterator",
        41 => "perf event",
        42 => "kprobe_multi",
        43 => "LSM cgroup",
        44 => "struct_ops",
        48 => "uprobe_multi",
        56 => "kprobe session",
        57 => "uprobe session",
        _ => return format!("attach type {t}"),
    };
    name.to_string()
}

fn bpf_command(detail: u32) -> String {
    let (cmd, low) = (detail >> 16, detail & 0xffff);
    match cmd {
        5 => {
            let (helper, prog_type) = (low >> 8, low & 0xff);
            let name = PROGRAM_TYPES
                .get(prog_type as usize)
                .copied()
                .unwrap_or("unknown");
            match helper {
                0 => format!("load a BPF program (type {name})"),
                255 => format!(
                    "load a BPF program (type {name}) that calls a kfunc or reads a kernel variable"
                ),
                h => format!(
                    "load a BPF program (type {name}) that calls helper {h}, which reads memory"
                ),
            }
        }
        8 => format!("attach a BPF program ({})", attach_type(low)),
        17 => "attach a raw tracepoint".into(),
        28 => format!("create a BPF link ({})", attach_type(low)),
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
        AccessKind::LockBpf => bpf_command(detail),
        AccessKind::LockKernelCode => kernel_code(detail >> 16, detail & 0xffff),
        AccessKind::Lockdown => {
            let reason = LOCKDOWN_REASONS
                .get(detail as usize)
                .copied()
                .unwrap_or("unknown");
            format!("use {reason} (lockdown reason {detail})")
        }
        AccessKind::LockState => "change KernelSeal's pins, bpffs or binary".into(),
        AccessKind::LockProbe => {
            format!("open a kprobe, uprobe or tracepoint perf event (PMU type {detail})")
        }
        AccessKind::LockSelfCode => {
            "run code from another file than its own binary (a dynamic loader or library) \
             as a trusted KernelSeal process"
                .into()
        }
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
            attempted(AccessKind::LockBpf, 5 << 16 | 112 << 8 | 15).as_deref(),
            Some(
                "load a BPF program (type cgroup_device) that calls helper 112, which reads memory"
            )
        );
        assert_eq!(
            attempted(AccessKind::LockBpf, 28 << 16 | 42).as_deref(),
            Some("create a BPF link (kprobe_multi)")
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
