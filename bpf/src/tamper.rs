//! The tamper watchdog's kernel side. Root can write the pinned maps and
//! remove the pins with plain bpf(2) calls and `rm`; in `audit` nothing in
//! the kernel stops it. So the agent remembers what it wrote (the policy,
//! the exec filter, the marks it set, the pins it made), and
//! [`crate::Gate::check_tampering`] compares that with what the kernel holds
//! and writes its own values back where they differ.
//!
//! The comparisons are pure functions over raw values; the syscalls live in
//! the gate, the marks handle and [`PinWatch`].

use std::collections::{BTreeSet, HashMap};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::abi::{self, RawPolicy, RawTaskMark};
use crate::error::BpfError;
use crate::filter::ExecFilter;
use crate::pins::PinLayout;
use crate::sys::{self, ObjId, ObjKind};

/// What was changed behind the agent's back: the `what` label of
/// `kernelseal_tamper_events_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tampered {
    Policy,
    Mark,
    Pin,
    ExecFilter,
}

impl Tampered {
    pub const ALL: [Tampered; 4] = [
        Tampered::Policy,
        Tampered::Mark,
        Tampered::Pin,
        Tampered::ExecFilter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Tampered::Policy => "policy",
            Tampered::Mark => "mark",
            Tampered::Pin => "pin",
            Tampered::ExecFilter => "exec-filter",
        }
    }
}

/// One change the agent did not make, and whether putting its own value
/// back worked.
#[derive(Debug)]
pub struct Finding {
    pub what: Tampered,
    /// What differed: modes, switch names, PIDs, binding ids, selector
    /// names, pin paths. The maps hold no secret, so neither does this.
    pub detail: String,
    pub restored: Result<(), BpfError>,
}

/// A check that could not be made this time (its state is unknown).
#[derive(Debug)]
pub struct CheckFailure {
    pub what: Tampered,
    pub error: BpfError,
}

/// The result of one round of checks.
#[derive(Debug, Default)]
pub struct TamperReport {
    pub findings: Vec<Finding>,
    pub failures: Vec<CheckFailure>,
}

impl TamperReport {
    pub(crate) fn found(&mut self, what: Tampered, detail: String, restored: Result<(), BpfError>) {
        self.findings.push(Finding {
            what,
            detail,
            restored,
        });
    }

    pub(crate) fn failed(&mut self, what: Tampered, error: BpfError) {
        self.failures.push(CheckFailure { what, error });
    }
}

fn mode_name(mode: u32) -> String {
    match mode {
        abi::MODE_DISABLED => "disabled".into(),
        abi::MODE_AUDIT => "audit".into(),
        abi::MODE_ENFORCE => "enforce".into(),
        other => format!("unknown ({other})"),
    }
}

/// Policy bits by their config names.
const POLICY_SWITCHES: [(u32, &str); 10] = [
    (abi::POLICY_BLOCK_ENVIRON, "blockEnviron"),
    (abi::POLICY_BLOCK_MEM, "blockMem"),
    (abi::POLICY_BLOCK_MAPS, "blockMaps"),
    (abi::POLICY_BLOCK_PTRACE, "blockPtrace"),
    (abi::POLICY_BLOCK_PERF, "blockPerf"),
    (abi::POLICY_PERFMON_FALLBACK, "perfmonFallback"),
    (abi::POLICY_ALLOW_SELF_READ, "allowSelfRead"),
    (abi::POLICY_AUDIT_ALL, "auditAll"),
    (abi::POLICY_INHERIT, "inheritProtection"),
    (abi::POLICY_EXEC_FILTER, "kernelBinaryFilter"),
];

/// How the policy map's value differs from what the agent wrote; `None`
/// when it does not.
pub(crate) fn policy_drift(expected: RawPolicy, found: RawPolicy) -> Option<String> {
    if expected == found {
        return None;
    }
    let mut parts = Vec::new();
    if expected.mode != found.mode {
        parts.push(format!(
            "mode {} -> {}",
            mode_name(expected.mode),
            mode_name(found.mode)
        ));
    }
    let changed = expected.flags ^ found.flags;
    let mut known = 0;
    for (bit, name) in POLICY_SWITCHES {
        known |= bit;
        if changed & bit != 0 {
            let now = if found.flags & bit != 0 { "on" } else { "off" };
            parts.push(format!("{name} {now}"));
        }
    }
    if changed & !known != 0 {
        parts.push(format!("unknown bits {:#x}", found.flags & !known));
    }
    if expected.secrets_dev != found.secrets_dev {
        parts.push(format!(
            "secrets dev {} -> {}",
            expected.secrets_dev, found.secrets_dev
        ));
    }
    Some(parts.join(", "))
}

/// The part of a mark the agent owns: the kernel's pending fields change
/// on every guarded open and are not compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExpectedMark {
    /// `MARK_PROTECTED` and `MARK_AGENT` bits.
    pub flags: u32,
    pub binding_id: u32,
    pub owner_id: u32,
}

const MARK_BITS: u32 = abi::MARK_PROTECTED | abi::MARK_AGENT;

impl ExpectedMark {
    /// The mark to write back: the agent's fields over whatever pending
    /// state the kernel holds now.
    pub(crate) fn restored(self, found: Option<RawTaskMark>) -> RawTaskMark {
        RawTaskMark {
            flags: self.flags,
            binding_id: self.binding_id,
            owner_id: self.owner_id,
            ..found.unwrap_or_default()
        }
    }
}

/// The verdict on one watched mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MarkCheck {
    Same,
    /// The process exec'd a file of the exec filter and the kernel gave it
    /// that binding: its new expected binding, not tampering.
    Rebound(u32),
    Drift(String),
}

fn flag_names(flags: u32) -> &'static str {
    match flags & MARK_BITS {
        0 => "none",
        abi::MARK_PROTECTED => "protected",
        abi::MARK_AGENT => "agent",
        _ => "protected+agent",
    }
}

/// Compares a watched process's mark with what the agent set.
/// `exec_bindings` are the binding ids of the exec filter: the only values
/// the kernel itself writes into an existing mark (at exec).
pub(crate) fn mark_check(
    expected: ExpectedMark,
    found: Option<RawTaskMark>,
    exec_bindings: &BTreeSet<u32>,
) -> MarkCheck {
    let Some(found) = found.filter(|m| m.flags & MARK_BITS != 0) else {
        return MarkCheck::Drift("mark removed".into());
    };
    let mut parts = Vec::new();
    if found.flags & MARK_BITS != expected.flags {
        parts.push(format!(
            "flags {} -> {}",
            flag_names(expected.flags),
            flag_names(found.flags)
        ));
    }
    if found.owner_id != expected.owner_id {
        parts.push(format!(
            "file owner {} -> {}",
            expected.owner_id, found.owner_id
        ));
    }
    if found.binding_id != expected.binding_id {
        if parts.is_empty() && exec_bindings.contains(&found.binding_id) {
            return MarkCheck::Rebound(found.binding_id);
        }
        parts.push(format!(
            "binding {} -> {}",
            expected.binding_id, found.binding_id
        ));
    }
    if parts.is_empty() {
        MarkCheck::Same
    } else {
        MarkCheck::Drift(parts.join(", "))
    }
}

/// How many differences a detail names before it only counts the rest.
const MAX_LISTED: usize = 4;

fn entry_drift(
    kind: &str,
    expected: &std::collections::BTreeMap<String, u32>,
    found: &std::collections::BTreeMap<String, u32>,
    out: &mut Vec<String>,
) {
    for (key, id) in expected {
        match found.get(key) {
            None => out.push(format!("{kind} {key:?} removed")),
            Some(now) if now != id => out.push(format!("{kind} {key:?} binding {id} -> {now}")),
            Some(_) => {}
        }
    }
    for (key, id) in found {
        if !expected.contains_key(key) {
            out.push(format!("{kind} {key:?} added (binding {id})"));
        }
    }
}

/// How the exec filter maps differ from what the agent wrote. `malformed`
/// counts keys that are not a zero-padded UTF-8 name: the kernel never
/// matches them, but the agent did not write them either.
pub(crate) fn filter_drift(
    expected: &ExecFilter,
    found: &ExecFilter,
    malformed: usize,
) -> Option<String> {
    let mut parts = Vec::new();
    entry_drift("binary", &expected.binaries, &found.binaries, &mut parts);
    entry_drift("path", &expected.paths, &found.paths, &mut parts);
    if malformed > 0 {
        parts.push(format!("{malformed} malformed key(s) added"));
    }
    if parts.is_empty() {
        return None;
    }
    let more = parts.len().saturating_sub(MAX_LISTED);
    parts.truncate(MAX_LISTED);
    if more > 0 {
        parts.push(format!("{more} more"));
    }
    Some(parts.join(", "))
}

/// A process whose mark the agent set, and the mark it set.
pub(crate) struct Watched {
    /// Names the process for its whole life: the mark's key, and how the
    /// watchdog tells that it exited.
    pub pidfd: OwnedFd,
    pub expected: ExpectedMark,
}

/// The marks the agent set, by process. Every [`crate::Marks`] handle the
/// agent writes through records into the same registry; its lock is held
/// across a write and its read-back, and across a check, so the watchdog
/// never takes the agent's own change for tampering.
#[derive(Default)]
pub struct MarkRegistry {
    watched: Mutex<HashMap<u32, Watched>>,
}

impl MarkRegistry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<u32, Watched>> {
        // A panic while the lock was held leaves a map that is still whole:
        // entries are inserted and removed, never half-written.
        self.watched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many processes are watched.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the mark of process `pid` is watched.
    pub fn watches(&self, pid: u32) -> bool {
        self.lock().contains_key(&pid)
    }
}

/// One pin the agent made, and the object it pinned there.
struct Pin {
    path: PathBuf,
    id: ObjId,
    /// Keeps the object alive and is what a removed pin is made from again.
    fd: OwnedFd,
}

/// Every pin of a gate, and the marker of the build whose links they are.
pub(crate) struct PinWatch {
    pins: Vec<Pin>,
    layout: PinLayout,
    object_hash: u64,
}

fn kind_name(kind: ObjKind) -> &'static str {
    match kind {
        ObjKind::Map => "map",
        ObjKind::Link => "link",
        ObjKind::Program => "program",
        ObjKind::Other => "object",
    }
}

fn pin_error(path: &Path, reason: String) -> BpfError {
    BpfError::Pin {
        what: "watched pin",
        path: path.display().to_string(),
        reason,
    }
}

impl PinWatch {
    /// Opens every pin in `paths` as it is now (just after the gate made or
    /// adopted them) and remembers which object each holds.
    pub(crate) fn take(
        layout: PinLayout,
        object_hash: u64,
        paths: Vec<PathBuf>,
    ) -> Result<Self, BpfError> {
        let mut pins = Vec::with_capacity(paths.len());
        for path in paths {
            let fd = sys::obj_get(&path).map_err(|e| pin_error(&path, e.to_string()))?;
            let id = sys::obj_id(fd.as_fd()).map_err(|e| pin_error(&path, e.to_string()))?;
            pins.push(Pin { path, id, fd });
        }
        Ok(PinWatch {
            pins,
            layout,
            object_hash,
        })
    }

    pub(crate) fn check(&self, report: &mut TamperReport) {
        for pin in &self.pins {
            check_pin(pin, report);
        }
        self.check_marker(report);
    }

    /// The build marker: without it a restarted agent would replace the
    /// programs instead of adopting them.
    fn check_marker(&self, report: &mut TamperReport) {
        let marker = self
            .layout
            .object_marker(self.layout.version(), self.object_hash);
        if marker.is_dir() {
            return;
        }
        let restored = self
            .layout
            .mark_object(self.object_hash)
            .map_err(|e| pin_error(&marker, e.to_string()));
        report.found(
            Tampered::Pin,
            format!("{} removed", marker.display()),
            restored,
        );
    }
}

fn check_pin(pin: &Pin, report: &mut TamperReport) {
    let now = match sys::obj_get(&pin.path) {
        Ok(fd) => sys::obj_id(fd.as_fd()).map(Some),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    };
    match now {
        Ok(Some(id)) if id == pin.id => {}
        Ok(Some(other)) => {
            let detail = format!(
                "{} holds {} #{} instead of {} #{}",
                pin.path.display(),
                kind_name(other.kind),
                other.id,
                kind_name(pin.id.kind),
                pin.id.id
            );
            let restored = std::fs::remove_file(&pin.path)
                .map_err(|e| pin_error(&pin.path, format!("removing the impostor: {e}")))
                .and_then(|()| repin(pin));
            report.found(Tampered::Pin, detail, restored);
        }
        Ok(None) => {
            let detail = format!("{} removed", pin.path.display());
            report.found(Tampered::Pin, detail, repin(pin));
        }
        Err(e) => report.failed(Tampered::Pin, pin_error(&pin.path, e.to_string())),
    }
}

fn repin(pin: &Pin) -> Result<(), BpfError> {
    if let Some(dir) = pin.path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| pin_error(dir, e.to_string()))?;
    }
    sys::obj_pin(pin.fd.as_fd(), &pin.path).map_err(|e| pin_error(&pin.path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: u32, flags: u32) -> RawPolicy {
        RawPolicy {
            mode,
            flags,
            secrets_dev: 26,
        }
    }

    #[test]
    fn an_unchanged_policy_is_no_finding() {
        let p = policy(abi::MODE_ENFORCE, abi::POLICY_BLOCK_ENVIRON);
        assert_eq!(policy_drift(p, p), None);
    }

    #[test]
    fn policy_drift_names_mode_switches_and_dev() {
        let ours = policy(
            abi::MODE_ENFORCE,
            abi::POLICY_BLOCK_ENVIRON | abi::POLICY_BLOCK_MEM | abi::POLICY_INHERIT,
        );
        let theirs = RawPolicy {
            mode: abi::MODE_DISABLED,
            flags: abi::POLICY_BLOCK_MEM | abi::POLICY_AUDIT_ALL | (1 << 30),
            secrets_dev: 0,
        };
        assert_eq!(
            policy_drift(ours, theirs).unwrap(),
            "mode enforce -> disabled, blockEnviron off, auditAll on, inheritProtection off, \
             unknown bits 0x40000000, secrets dev 26 -> 0"
        );
        let bad_mode = RawPolicy { mode: 9, ..ours };
        assert_eq!(
            policy_drift(ours, bad_mode).unwrap(),
            "mode enforce -> unknown (9)"
        );
    }

    fn expected(flags: u32, binding_id: u32, owner_id: u32) -> ExpectedMark {
        ExpectedMark {
            flags,
            binding_id,
            owner_id,
        }
    }

    fn raw(flags: u32, binding_id: u32, owner_id: u32) -> RawTaskMark {
        RawTaskMark {
            flags,
            binding_id,
            owner_id,
            ..Default::default()
        }
    }

    #[test]
    fn marks_compare_on_what_the_agent_set_only() {
        let none = BTreeSet::new();
        let want = expected(abi::MARK_PROTECTED, 2, 7);
        let mut busy = raw(abi::MARK_PROTECTED, 2, 7);
        busy.pending_kind = abi::KIND_FD;
        busy.pending_target = 0x1234;
        assert_eq!(mark_check(want, Some(busy), &none), MarkCheck::Same);
    }

    #[test]
    fn a_removed_or_emptied_mark_is_drift() {
        let none = BTreeSet::new();
        let want = expected(abi::MARK_PROTECTED, 2, 0);
        assert_eq!(
            mark_check(want, None, &none),
            MarkCheck::Drift("mark removed".into())
        );
        // What a guarded open by an unmarked process leaves: storage, no flags.
        assert_eq!(
            mark_check(want, Some(raw(0, 0, 0)), &none),
            MarkCheck::Drift("mark removed".into())
        );
    }

    #[test]
    fn changed_fields_are_each_named() {
        let none = BTreeSet::new();
        let agent = expected(abi::MARK_PROTECTED | abi::MARK_AGENT, 0, 0);
        assert_eq!(
            mark_check(agent, Some(raw(abi::MARK_PROTECTED, 0, 0)), &none),
            MarkCheck::Drift("flags protected+agent -> protected".into())
        );
        let app = expected(abi::MARK_PROTECTED, 3, 5);
        assert_eq!(
            mark_check(
                app,
                Some(raw(abi::MARK_PROTECTED | abi::MARK_AGENT, 9, 6)),
                &none
            ),
            MarkCheck::Drift(
                "flags protected -> protected+agent, file owner 5 -> 6, binding 3 -> 9".into()
            )
        );
    }

    #[test]
    fn a_binding_the_kernel_writes_at_exec_is_adopted() {
        let filter: BTreeSet<u32> = [1, 4].into();
        let want = expected(abi::MARK_PROTECTED, 2, 0);
        assert_eq!(
            mark_check(want, Some(raw(abi::MARK_PROTECTED, 4, 0)), &filter),
            MarkCheck::Rebound(4)
        );
        // Not a binding of the filter: the kernel did not write it.
        assert_eq!(
            mark_check(want, Some(raw(abi::MARK_PROTECTED, 5, 0)), &filter),
            MarkCheck::Drift("binding 2 -> 5".into())
        );
        // The kernel's exec marking never touches the file owner.
        assert_eq!(
            mark_check(want, Some(raw(abi::MARK_PROTECTED, 4, 9)), &filter),
            MarkCheck::Drift("file owner 0 -> 9, binding 2 -> 4".into())
        );
    }

    #[test]
    fn a_restored_mark_keeps_the_kernels_pending_state() {
        let mut found = raw(0, 8, 8);
        found.pending_kind = abi::KIND_MEM;
        found.pending_target = 42;
        let back = expected(abi::MARK_PROTECTED, 2, 3).restored(Some(found));
        assert_eq!(
            back,
            RawTaskMark {
                flags: abi::MARK_PROTECTED,
                binding_id: 2,
                owner_id: 3,
                pending_kind: abi::KIND_MEM,
                pending_target: 42,
            }
        );
        assert_eq!(
            expected(abi::MARK_PROTECTED, 2, 3).restored(None),
            raw(abi::MARK_PROTECTED, 2, 3)
        );
    }

    fn filter(binaries: &[(&str, u32)], paths: &[(&str, u32)]) -> ExecFilter {
        ExecFilter {
            binaries: binaries.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            paths: paths.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn filter_drift_lists_removed_added_and_rebound_entries() {
        let ours = filter(&[("sleep", 1), ("app", 2)], &[("/usr/bin/app", 2)]);
        assert_eq!(filter_drift(&ours, &ours.clone(), 0), None);
        let theirs = filter(&[("app", 3), ("sh", 1)], &[("/usr/bin/app", 2)]);
        assert_eq!(
            filter_drift(&ours, &theirs, 0).unwrap(),
            "binary \"app\" binding 2 -> 3, binary \"sleep\" removed, binary \"sh\" added (binding 1)"
        );
        assert_eq!(
            filter_drift(&ours, &ours.clone(), 2).unwrap(),
            "2 malformed key(s) added"
        );
    }

    #[test]
    fn a_long_filter_drift_is_cut_short() {
        // Names of more than one letter: the troubleshooting doc test glues
        // the workspace's literals, and single letters spell anything.
        let names = ["alpha", "bravo", "charlie", "delta", "echo"];
        let ours = filter(&names.map(|n| (n, 1)), &[]);
        let detail = filter_drift(&ours, &ExecFilter::default(), 1).unwrap();
        assert_eq!(
            detail,
            "binary \"alpha\" removed, binary \"bravo\" removed, binary \"charlie\" removed, \
             binary \"delta\" removed, 2 more"
        );
    }

    #[test]
    fn every_kind_has_its_label() {
        let labels: Vec<&str> = Tampered::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(labels, ["policy", "mark", "pin", "exec-filter"]);
    }
}
