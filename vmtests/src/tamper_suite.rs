//! The attacker review's tampering, replayed: with the agent in `audit`
//! (where the kernel lets root write its maps), root rewrites the policy,
//! deletes a protected process's mark, edits the exec filter and removes a
//! pin with plain bpf(2) calls and unlink. The agent must put each back
//! within a few seconds and log `[TAMPER]`; a change made through
//! KernelSeal (`kernelseal unprotect`) must stay.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::agent::{Policy, log_text, protect, unprotect, wait_log_line};
use crate::suite::{Ctx, TestResult, all_allowed, all_refused};
use crate::victim::Victim;

const PIN_ROOT: &str = "/sys/fs/bpf/kernelseal";
/// The agent checks every second; this leaves room for a slow VM.
const RESTORED_WITHIN: Duration = Duration::from_secs(3);

// ---- raw bpf(2), as an attacker without libbpf would call it ---------------

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// `union bpf_attr` for the map element commands.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for BPF_OBJ_GET.
#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `struct ks_policy`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RawPolicy {
    mode: u32,
    flags: u32,
    secrets_dev: u64,
}

/// `struct ks_task_mark`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RawTaskMark {
    flags: u32,
    binding_id: u32,
    pending_kind: u32,
    owner_id: u32,
    pending_target: u64,
}

fn bpf<A>(cmd: libc::c_long, attr: &A) -> Result<libc::c_long, std::io::Error> {
    // SAFETY: `attr` is a bpf_attr prefix for `cmd` whose pointers refer to
    // buffers that live across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const A,
            std::mem::size_of::<A>(),
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn obj_get(path: &Path) -> Result<OwnedFd, String> {
    let c = CString::new(path.to_string_lossy().as_bytes()).map_err(|e| e.to_string())?;
    let attr = ObjAttr {
        pathname: c.as_ptr() as u64,
        ..Default::default()
    };
    let fd = bpf(BPF_OBJ_GET, &attr).map_err(|e| format!("BPF_OBJ_GET {}: {e}", path.display()))?;
    // SAFETY: BPF_OBJ_GET returned a new fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn obj_id(fd: &OwnedFd) -> Result<u32, String> {
    let mut head = [0u32; 2];
    let attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: 8,
        info: head.as_mut_ptr() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &attr).map_err(|e| format!("BPF_OBJ_GET_INFO_BY_FD: {e}"))?;
    Ok(head[1])
}

fn elem<K, V>(cmd: libc::c_long, map: &OwnedFd, key: &K, value: *mut V) -> std::io::Result<()> {
    let attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key as *const K as u64,
        value: value as u64,
        ..Default::default()
    };
    bpf(cmd, &attr).map(|_| ())
}

fn lookup<K, V: Default>(map: &OwnedFd, key: &K) -> Result<Option<V>, String> {
    let mut value = V::default();
    match elem(BPF_MAP_LOOKUP_ELEM, map, key, &mut value) {
        Ok(()) => Ok(Some(value)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(format!("BPF_MAP_LOOKUP_ELEM: {e}")),
    }
}

fn update<K, V>(map: &OwnedFd, key: &K, value: &V) -> Result<(), String> {
    elem(BPF_MAP_UPDATE_ELEM, map, key, value as *const V as *mut V)
        .map_err(|e| format!("BPF_MAP_UPDATE_ELEM: {e}"))
}

fn delete<K>(map: &OwnedFd, key: &K) -> Result<(), String> {
    elem::<K, u8>(BPF_MAP_DELETE_ELEM, map, key, std::ptr::null_mut())
        .map_err(|e| format!("BPF_MAP_DELETE_ELEM: {e}"))
}

fn pidfd(pid: u32) -> Result<OwnedFd, String> {
    // SAFETY: pidfd_open(pid, 0).
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0u32) };
    if fd < 0 {
        return Err(format!(
            "pidfd_open {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

// ---- helpers ---------------------------------------------------------------

/// `<root>/v<N>/maps/<name>` of the one layout version pinned now.
fn versioned_map(name: &str) -> Result<PathBuf, String> {
    let versions: Vec<PathBuf> = std::fs::read_dir(PIN_ROOT)
        .map_err(|e| format!("{PIN_ROOT}: {e}"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('v'))
        .map(|e| e.path())
        .collect();
    match versions.as_slice() {
        [one] => Ok(one.join("maps").join(name)),
        other => Err(format!(
            "want one layout version under {PIN_ROOT}, found {other:?}"
        )),
    }
}

/// Polls `check` until it returns true, for at most `within`.
fn until(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Result<bool, String>,
) -> TestResult {
    let start = Instant::now();
    loop {
        if check()? {
            return Ok(());
        }
        if start.elapsed() > within {
            return Err(format!("{what} not within {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

const AUDIT: Policy = Policy {
    mode: "audit",
    ..Policy::ENFORCE_ALL
};

fn tamper_count(what: &str) -> Result<f64, String> {
    let _ = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status();
    let (_, body) = crate::delivery_suite::http_get("/metrics")?;
    let series = format!("kernelseal_tamper_events_total{{what=\"{what}\"}}");
    crate::delivery_suite::sample(&body, &series).ok_or(format!("no {series} in: {body}"))
}

// ---- the tests -------------------------------------------------------------

/// `mode = 0` written into the pinned policy map comes back as the agent's
/// value, logged and counted.
pub fn policy_written_outside_kernelseal_is_restored(ctx: &mut Ctx) -> TestResult {
    // These tests run last: whatever the suite did before through KernelSeal
    // (reloads, restarts, upgrades, deliveries, protect and unprotect) must
    // not have read as tampering.
    if let Some(line) = log_text().lines().find(|l| l.contains("[TAMPER]")) {
        return Err(format!("a [TAMPER] line before any tampering: {line}"));
    }
    ctx.agent.set_policy(AUDIT)?;
    let counted = tamper_count("policy")?;
    let map = obj_get(&versioned_map("ks_policy")?)?;
    let ours: RawPolicy = lookup(&map, &0u32)?.ok_or("the policy map is empty")?;
    if ours.mode != 1 {
        return Err(format!(
            "want the agent's audit policy (mode 1), found {ours:?}"
        ));
    }
    update(&map, &0u32, &RawPolicy { mode: 0, ..ours })?;
    until(
        "the agent's policy back in the map",
        RESTORED_WITHIN,
        || Ok(lookup::<u32, RawPolicy>(&map, &0)? == Some(ours)),
    )?;
    wait_log_line(&[
        "[TAMPER] policy changed outside KernelSeal (mode audit -> disabled); restored",
    ])?;
    let now = tamper_count("policy")?;
    if now < counted + 1.0 {
        return Err(format!(
            "tamper_events{{policy}} went from {counted} to {now}"
        ));
    }
    Ok(())
}

/// Deletes `pid`'s mark with bpf(2) and waits for the agent to put back
/// the same flags, binding and file owner.
fn delete_mark_and_see_it_restored(marks: &OwnedFd, pid: u32) -> TestResult {
    let key = pidfd(pid)?;
    let raw = key.as_raw_fd();
    let before: RawTaskMark = lookup(marks, &raw)?.ok_or(format!("PID {pid} has no mark"))?;
    delete(marks, &raw)?;
    until(
        &format!("PID {pid}'s mark back in the map"),
        RESTORED_WITHIN,
        || {
            let now: Option<RawTaskMark> = lookup(marks, &raw)?;
            Ok(now.is_some_and(|m| {
                (m.flags, m.binding_id, m.owner_id)
                    == (before.flags, before.binding_id, before.owner_id)
            }))
        },
    )?;
    wait_log_line(&[&format!(
        "[TAMPER] mark changed outside KernelSeal (PID {pid}: mark removed); restored"
    )])
}

/// Protected processes' marks deleted with bpf(2) are put back, and the
/// processes are refused again once the policy enforces: one marked by
/// `kernelseal protect`, one marked by the kernel at exec.
pub fn mark_deleted_outside_kernelseal_is_restored(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(AUDIT)?;
    let v = Victim::spawn()?;
    protect(v.pid)?;
    let bound = Victim::spawn_bound()?;
    // The agent starts watching a mark set at exec when it reads the exec
    // event, just after it logs it.
    wait_log_line(&[&format!("[EXEC] PID={} ", bound.pid)])?;
    std::thread::sleep(Duration::from_millis(200));
    let marks = obj_get(&Path::new(PIN_ROOT).join("ks_marks"))?;
    delete_mark_and_see_it_restored(&marks, v.pid)?;
    delete_mark_and_see_it_restored(&marks, bound.pid)?;
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    all_refused("protected, mark restored", v.pid, v.pid, v.addr)?;
    all_refused(
        "marked at exec, mark restored",
        bound.pid,
        bound.pid,
        bound.addr,
    )
}

/// An exec filter entry deleted with bpf(2) is put back.
pub fn exec_filter_edited_outside_kernelseal_is_restored(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(AUDIT)?;
    let map = obj_get(&versioned_map("ks_exec_binaries")?)?;
    let mut key = [0u8; 64];
    let name = crate::agent::EXEC_BINARY.as_bytes();
    key[..name.len()].copy_from_slice(name);
    let ours: u32 = lookup(&map, &key)?.ok_or("no exec filter entry for the victim binary")?;
    delete(&map, &key)?;
    until("the exec filter entry back", RESTORED_WITHIN, || {
        Ok(lookup::<[u8; 64], u32>(&map, &key)? == Some(ours))
    })?;
    wait_log_line(&[
        "[TAMPER] exec-filter changed outside KernelSeal (binary",
        crate::agent::EXEC_BINARY,
        "removed); restored",
    ])
}

/// A map pin unlinked by root is pinned again, to the same map.
pub fn pin_removed_outside_kernelseal_is_pinned_again(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(AUDIT)?;
    let path = versioned_map("ks_policy")?;
    let id = obj_id(&obj_get(&path)?)?;
    std::fs::remove_file(&path).map_err(|e| format!("unlink {}: {e}", path.display()))?;
    until("the pin back", RESTORED_WITHIN, || Ok(path.exists()))?;
    let again = obj_id(&obj_get(&path)?)?;
    if again != id {
        return Err(format!(
            "{} now pins map #{again}, was #{id}",
            path.display()
        ));
    }
    wait_log_line(&[&format!(
        "[TAMPER] pin changed outside KernelSeal ({} removed); restored",
        path.display()
    )])
}

/// The control: `kernelseal unprotect` goes through the agent, which does
/// not put the mark back.
pub fn unprotect_through_kernelseal_is_not_reverted(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let v = Victim::spawn()?;
    protect(v.pid)?;
    all_refused("protected", v.pid, v.pid, v.addr)?;
    unprotect(v.pid)?;
    // Three checks of the watchdog.
    std::thread::sleep(RESTORED_WITHIN);
    // Through KernelSeal's own CLI: in enforce the maps are closed to this
    // test process.
    let status = crate::agent::kernelseal(&["status", &v.pid.to_string()])?;
    let text = String::from_utf8_lossy(&status.stdout);
    if !text.contains("not protected") {
        return Err(format!(
            "the mark came back after kernelseal unprotect: {text:?}"
        ));
    }
    let reverted = format!("(PID {}: mark removed)", v.pid);
    if log_text().contains(&reverted) {
        return Err(format!("the agent logged {reverted} for its own unprotect"));
    }
    wait_log_line(&[
        &format!("[ADMIN] kernelseal unprotect {} from PID", v.pid),
        "done",
    ])?;
    all_allowed("after kernelseal unprotect", v.pid, v.pid, v.addr)
}
