//! The Rust mirrors in `abi.rs` must match the C structs byte for byte: this
//! reads the struct layouts out of the compiled object's BTF (the same
//! information the kernel uses) and compares sizes and field offsets.

use std::collections::HashMap;
use std::mem::{offset_of, size_of};

use kernelseal_bpf::abi::{
    RawBinaryKey, RawBinding, RawEvent, RawExecEvent, RawFileKey, RawFileOwner, RawPathKey,
    RawPolicy, RawSelfExe, RawTaskMark, RawTrust,
};
use object::{Object, ObjectSection};

/// name → (size, [(field, byte offset)])
type Layouts = HashMap<String, (u32, Vec<(String, u32)>)>;

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

/// A minimal reader of BTF type records (kernel `Documentation/bpf/btf.rst`):
/// only struct layouts are kept, every other kind is skipped by its size.
fn struct_layouts(btf: &[u8]) -> Layouts {
    assert_eq!(u16::from_le_bytes([btf[0], btf[1]]), 0xEB9F, "BTF magic");
    let hdr_len = u32_at(btf, 4) as usize;
    let type_off = u32_at(btf, 8) as usize;
    let type_len = u32_at(btf, 12) as usize;
    let str_off = u32_at(btf, 16) as usize;
    let types = &btf[hdr_len + type_off..hdr_len + type_off + type_len];
    let strings = &btf[hdr_len + str_off..];
    let name = |off: u32| {
        let s = &strings[off as usize..];
        String::from_utf8_lossy(&s[..s.iter().position(|c| *c == 0).unwrap()]).into_owned()
    };
    let mut out = Layouts::new();
    let mut pos = 0;
    while pos < types.len() {
        let name_off = u32_at(types, pos);
        let info = u32_at(types, pos + 4);
        let size = u32_at(types, pos + 8);
        let vlen = (info & 0xffff) as usize;
        let kind = (info >> 24) & 0x1f;
        let bitfield_offsets = info >> 31 == 1;
        pos += 12;
        let extra = match kind {
            1 | 14 | 17 => 4,     // INT, VAR, DECL_TAG
            3 => 12,              // ARRAY
            4 | 5 => vlen * 12,   // STRUCT, UNION
            6 | 13 => vlen * 8,   // ENUM, FUNC_PROTO
            15 | 19 => vlen * 12, // DATASEC, ENUM64
            _ => 0,               // PTR, FWD, TYPEDEF, qualifiers, FUNC, FLOAT, TYPE_TAG
        };
        if kind == 4 {
            let fields = (0..vlen)
                .map(|i| {
                    let m = pos + i * 12;
                    let bits = u32_at(types, m + 8);
                    let bits = if bitfield_offsets {
                        bits & 0xff_ffff
                    } else {
                        bits
                    };
                    (name(u32_at(types, m)), bits / 8)
                })
                .collect();
            out.insert(name(name_off), (size, fields));
        }
        pos += extra;
    }
    out
}

fn layouts() -> Layouts {
    let file = object::File::parse(kernelseal_bpf::OBJECT).expect("BPF object parses");
    let btf = file.section_by_name(".BTF").expect(".BTF section");
    struct_layouts(btf.data().unwrap())
}

fn check(layouts: &Layouts, c_name: &str, rust_size: usize, rust: &[(&str, usize)]) {
    let (size, fields) = layouts
        .get(c_name)
        .unwrap_or_else(|| panic!("struct {c_name} missing from BTF"));
    assert_eq!(*size as usize, rust_size, "size of struct {c_name}");
    assert_eq!(
        fields.len(),
        rust.len(),
        "field count of struct {c_name}: {fields:?}"
    );
    for ((c_field, c_off), (r_field, r_off)) in fields.iter().zip(rust) {
        assert_eq!(c_field, r_field, "field order of struct {c_name}");
        assert_eq!(*c_off as usize, *r_off, "offset of {c_name}.{c_field}");
    }
}

#[test]
fn policy_matches_c() {
    check(
        &layouts(),
        "ks_policy",
        size_of::<RawPolicy>(),
        &[
            ("mode", offset_of!(RawPolicy, mode)),
            ("flags", offset_of!(RawPolicy, flags)),
            ("secrets_dev", offset_of!(RawPolicy, secrets_dev)),
        ],
    );
}

#[test]
fn task_mark_matches_c() {
    check(
        &layouts(),
        "ks_task_mark",
        size_of::<RawTaskMark>(),
        &[
            ("flags", offset_of!(RawTaskMark, flags)),
            ("binding_id", offset_of!(RawTaskMark, binding_id)),
            ("pending_kind", offset_of!(RawTaskMark, pending_kind)),
            ("owner_id", offset_of!(RawTaskMark, owner_id)),
            ("pending_target", offset_of!(RawTaskMark, pending_target)),
        ],
    );
}

#[test]
fn event_matches_c() {
    check(
        &layouts(),
        "ks_event",
        size_of::<RawEvent>(),
        &[
            ("type", offset_of!(RawEvent, event_type)),
            ("kind", offset_of!(RawEvent, kind)),
            ("decision", offset_of!(RawEvent, decision)),
            ("ptrace_mode", offset_of!(RawEvent, ptrace_mode)),
            ("accessor_pid", offset_of!(RawEvent, accessor_pid)),
            ("accessor_tid", offset_of!(RawEvent, accessor_tid)),
            ("accessor_uid", offset_of!(RawEvent, accessor_uid)),
            ("target_pid", offset_of!(RawEvent, target_pid)),
            ("target_tid", offset_of!(RawEvent, target_tid)),
            ("binding_id", offset_of!(RawEvent, binding_id)),
            ("timestamp_ns", offset_of!(RawEvent, timestamp_ns)),
            ("accessor_comm", offset_of!(RawEvent, accessor_comm)),
            ("target_comm", offset_of!(RawEvent, target_comm)),
        ],
    );
}

#[test]
fn exec_event_matches_c() {
    check(
        &layouts(),
        "ks_exec_event",
        size_of::<RawExecEvent>(),
        &[
            ("type", offset_of!(RawExecEvent, event_type)),
            ("flags", offset_of!(RawExecEvent, flags)),
            ("pid", offset_of!(RawExecEvent, pid)),
            ("tid", offset_of!(RawExecEvent, tid)),
            ("ppid", offset_of!(RawExecEvent, ppid)),
            ("uid", offset_of!(RawExecEvent, uid)),
            ("binding_id", offset_of!(RawExecEvent, binding_id)),
            ("_pad", offset_of!(RawExecEvent, _pad)),
            ("cgroup_id", offset_of!(RawExecEvent, cgroup_id)),
            ("timestamp_ns", offset_of!(RawExecEvent, timestamp_ns)),
            ("comm", offset_of!(RawExecEvent, comm)),
            ("filename", offset_of!(RawExecEvent, filename)),
        ],
    );
}

#[test]
fn filter_keys_match_c() {
    let l = layouts();
    check(
        &l,
        "ks_binding",
        size_of::<RawBinding>(),
        &[("binding_id", 0)],
    );
    check(
        &l,
        "ks_file_owner",
        size_of::<RawFileOwner>(),
        &[("owner_id", 0)],
    );
    check(
        &l,
        "ks_binary_key",
        size_of::<RawBinaryKey>(),
        &[("name", 0)],
    );
    check(&l, "ks_path_key", size_of::<RawPathKey>(), &[("path", 0)]);
    check(
        &l,
        "ks_file_key",
        size_of::<RawFileKey>(),
        &[
            ("dev", offset_of!(RawFileKey, dev)),
            ("ino", offset_of!(RawFileKey, ino)),
        ],
    );
    check(
        &l,
        "ks_trust",
        size_of::<RawTrust>(),
        &[
            ("pin_dev", offset_of!(RawTrust, pin_dev)),
            ("pin_ino", offset_of!(RawTrust, pin_ino)),
            ("handover_until_ns", offset_of!(RawTrust, handover_until_ns)),
        ],
    );
    check(
        &l,
        "ks_self_exe",
        size_of::<RawSelfExe>(),
        &[
            ("admitted_ns", offset_of!(RawSelfExe, admitted_ns)),
            ("pid", offset_of!(RawSelfExe, pid)),
            ("how", offset_of!(RawSelfExe, how)),
        ],
    );
}

#[test]
fn constants_match_c_header() {
    // The header is the single source; parse its #defines and compare.
    let header = include_str!("../include/kernelseal.h");
    let mut defines = HashMap::new();
    for line in header.lines() {
        if let Some(rest) = line.strip_prefix("#define ")
            && let Some((k, v)) = rest.trim().split_once(char::is_whitespace)
        {
            let v = v.trim().trim_start_matches('(').trim_end_matches(')');
            let value = if let Some(shift) = v.strip_prefix("1u << ") {
                1u32 << shift.parse::<u32>().unwrap()
            } else if let Ok(n) = v.parse::<u32>() {
                n
            } else {
                continue;
            };
            defines.insert(k.to_string(), value);
        }
    }
    use kernelseal_bpf::abi::*;
    let expect = [
        ("KS_LAYOUT_VERSION", LAYOUT_VERSION),
        ("KS_MODE_DISABLED", MODE_DISABLED),
        ("KS_MODE_AUDIT", MODE_AUDIT),
        ("KS_MODE_ENFORCE", MODE_ENFORCE),
        ("KS_POLICY_BLOCK_ENVIRON", POLICY_BLOCK_ENVIRON),
        ("KS_POLICY_BLOCK_MEM", POLICY_BLOCK_MEM),
        ("KS_POLICY_BLOCK_MAPS", POLICY_BLOCK_MAPS),
        ("KS_POLICY_BLOCK_PTRACE", POLICY_BLOCK_PTRACE),
        ("KS_POLICY_ALLOW_SELF_READ", POLICY_ALLOW_SELF_READ),
        ("KS_POLICY_AUDIT_ALL", POLICY_AUDIT_ALL),
        ("KS_POLICY_INHERIT", POLICY_INHERIT),
        ("KS_POLICY_EXEC_FILTER", POLICY_EXEC_FILTER),
        ("KS_POLICY_BLOCK_PERF", POLICY_BLOCK_PERF),
        ("KS_POLICY_PERFMON_FALLBACK", POLICY_PERFMON_FALLBACK),
        ("KS_POLICY_LOCK", POLICY_LOCK),
        ("KS_MARK_PROTECTED", MARK_PROTECTED),
        ("KS_MARK_AGENT", MARK_AGENT),
        ("KS_KIND_NONE", KIND_NONE),
        ("KS_KIND_ENVIRON", KIND_ENVIRON),
        ("KS_KIND_MEM", KIND_MEM),
        ("KS_KIND_MAPS", KIND_MAPS),
        ("KS_KIND_PTRACE", KIND_PTRACE),
        ("KS_KIND_SELF_READ", KIND_SELF_READ),
        ("KS_KIND_TRACED_EXEC", KIND_TRACED_EXEC),
        ("KS_KIND_FILE", KIND_FILE),
        ("KS_KIND_PERF", KIND_PERF),
        ("KS_KIND_PERF_EXEC", KIND_PERF_EXEC),
        ("KS_KIND_FD", KIND_FD),
        ("KS_KIND_CORE", KIND_CORE),
        ("KS_KIND_FILE_LINK", KIND_FILE_LINK),
        ("KS_KIND_STATE", KIND_STATE),
        ("KS_KIND_HANDOVER", KIND_HANDOVER),
        ("KS_KIND_LOCK_BPF", KIND_LOCK_BPF),
        ("KS_KIND_LOCK_KERNEL_CODE", KIND_LOCK_KERNEL_CODE),
        ("KS_KIND_LOCKDOWN", KIND_LOCKDOWN),
        ("KS_KIND_LOCK_STATE", KIND_LOCK_STATE),
        ("KS_KIND_LOCK_PROBE", KIND_LOCK_PROBE),
        ("KS_KIND_LOCK_SELF_CODE", KIND_LOCK_SELF_CODE),
        ("KS_SELF_AGENT", SELF_AGENT),
        ("KS_SELF_HANDOVER", SELF_HANDOVER),
        ("KS_MARK_SELF", MARK_SELF),
        ("KS_DECISION_ALLOWED", DECISION_ALLOWED),
        ("KS_DECISION_DENIED", DECISION_DENIED),
        ("KS_DECISION_AUDIT", DECISION_AUDIT),
        ("KS_EVENT_ACCESS", EVENT_ACCESS),
        ("KS_EVENT_EXEC", EVENT_EXEC),
        ("KS_STAT_EVENTS_DROPPED", STAT_EVENTS_DROPPED),
        ("KS_STAT_DENIED", STAT_DENIED),
        ("KS_STAT_AUDITED", STAT_AUDITED),
        ("KS_STAT_INHERITED", STAT_INHERITED),
        ("KS_STAT_EXEC_MARKED", STAT_EXEC_MARKED),
        ("KS_STAT_EXEC_EVENTS", STAT_EXEC_EVENTS),
        ("KS_STAT_MAX", STAT_MAX),
        ("KS_COMM_LEN", COMM_LEN as u32),
        ("KS_BINARY_LEN", BINARY_LEN as u32),
        ("KS_PATH_LEN", PATH_LEN as u32),
        ("KS_EXEC_MATCHED", EXEC_MATCHED),
        ("KS_EXEC_PROTECTED", EXEC_PROTECTED),
    ];
    for (name, value) in expect {
        assert_eq!(defines.get(name), Some(&value), "{name}");
    }
    assert_eq!(
        defines.len(),
        expect.len(),
        "every #define is mirrored: {defines:?}"
    );
}
