//! KernelSeal's own state against generic tools run by root: an fd of its
//! pinned maps (by pin or by id), removing or moving its pins, unmounting
//! their bpffs, writing its binary, and a KernelSeal binary started under a
//! tracer. Each next to a control that is allowed: a map and pin of the
//! test's own, a copy of the binary, the KernelSeal CLI itself.

use std::ffi::CString;

use kernelseal_testkit::Reaped;

use crate::agent::{CORE, KERNELSEAL, Policy, kernelseal, protect, wait_log_line};
use crate::attacks::{Outcome, Vector, cstring as c, errno, expect, open_outcome, outcome};
use crate::secret_files_suite::rename;
use crate::suite::{Ctx, TestResult, all_allowed, all_refused, matrix};
use crate::victim::Victim;

const PINS: &str = "/sys/fs/bpf/kernelseal";
const CONTROL_PIN: &str = "/sys/fs/bpf/ks-control-map";

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_MAP_GET_NEXT_ID: libc::c_long = 12;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;
const BPF_LINK_DETACH: libc::c_long = 34;
const BPF_MAP_TYPE_ARRAY: u32 = 2;

/// `union bpf_attr`, large enough for every command used here.
#[repr(C)]
#[derive(Default)]
struct Attr {
    words: [u64; 16],
}

fn bpf(cmd: libc::c_long, attr: &Attr) -> i64 {
    // SAFETY: bpf(2) with a zero-padded attr of the size passed.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const Attr,
            std::mem::size_of::<Attr>(),
        )
    }
}

fn close(fd: i64) {
    // SAFETY: closing an fd we got from bpf(2).
    unsafe { libc::close(fd as i32) };
}

/// BPF_OBJ_GET of a pin (pathname, bpf_fd, file_flags).
fn obj_get(path: &str) -> Result<Outcome, String> {
    let p = c(path)?;
    let mut attr = Attr::default();
    attr.words[0] = p.as_ptr() as u64;
    let fd = bpf(BPF_OBJ_GET, &attr);
    if fd < 0 {
        return Ok(Outcome::Refused(errno()));
    }
    close(fd);
    Ok(Outcome::Allowed)
}

/// A one-entry array map of the test's own, pinned at CONTROL_PIN.
fn control_map() -> Result<(), String> {
    let mut attr = Attr::default();
    // map_type, key_size, value_size, max_entries
    attr.words[0] = u64::from(BPF_MAP_TYPE_ARRAY) | 4 << 32;
    attr.words[1] = 8 | 1 << 32;
    let fd = bpf(BPF_MAP_CREATE, &attr);
    if fd < 0 {
        return Err(format!("creating the control map: errno {}", errno()));
    }
    let p = c(CONTROL_PIN)?;
    let mut pin = Attr::default();
    pin.words[0] = p.as_ptr() as u64;
    pin.words[1] = fd as u64;
    let _ = std::fs::remove_file(CONTROL_PIN);
    let rc = bpf(BPF_OBJ_PIN, &pin);
    close(fd);
    if rc != 0 {
        return Err(format!("pinning the control map: errno {}", errno()));
    }
    Ok(())
}

/// Every map id on the system: (fds refused with EPERM, fds handed out).
fn maps_by_id() -> (usize, usize) {
    let (mut refused, mut opened) = (0, 0);
    let mut id = 0u32;
    loop {
        let mut next = Attr::default();
        next.words[0] = u64::from(id);
        if bpf(BPF_MAP_GET_NEXT_ID, &next) != 0 {
            return (refused, opened);
        }
        id = (next.words[0] >> 32) as u32;
        let mut get = Attr::default();
        get.words[0] = u64::from(id);
        let fd = bpf(BPF_MAP_GET_FD_BY_ID, &get);
        if fd >= 0 {
            close(fd);
            opened += 1;
        } else if errno() == libc::EPERM {
            refused += 1;
        }
    }
}

/// BPF_LINK_DETACH of every link on the system, by id (a link fd needs
/// no map): the ids whose detach succeeded.
fn detach_every_link() -> Vec<u32> {
    let mut detached = Vec::new();
    let mut id = 0u32;
    loop {
        let mut next = Attr::default();
        next.words[0] = u64::from(id);
        if bpf(BPF_LINK_GET_NEXT_ID, &next) != 0 {
            return detached;
        }
        id = (next.words[0] >> 32) as u32;
        let mut get = Attr::default();
        get.words[0] = u64::from(id);
        let fd = bpf(BPF_LINK_GET_FD_BY_ID, &get);
        if fd < 0 {
            continue;
        }
        let mut detach = Attr::default();
        detach.words[0] = fd as u64;
        if bpf(BPF_LINK_DETACH, &detach) == 0 {
            detached.push(id);
        }
        close(fd);
    }
}

/// Reopens the agent's map fds through /proc/<agent>/fd: (tried, opened).
fn reopened_agent_map_fds(agent: u32) -> Result<(usize, usize), String> {
    let dir = format!("/proc/{agent}/fd");
    let (mut tried, mut opened) = (0, 0);
    for entry in std::fs::read_dir(&dir)
        .map_err(|e| format!("{dir}: {e}"))?
        .flatten()
    {
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        if !target.to_string_lossy().contains("bpf-map") {
            continue;
        }
        tried += 1;
        if open_outcome(&entry.path().display().to_string(), libc::O_RDONLY) == Outcome::Allowed {
            opened += 1;
        }
    }
    Ok((tried, opened))
}

fn unlink(path: &str) -> Result<Outcome, String> {
    let p = c(path)?;
    // SAFETY: unlink of a valid path.
    Ok(outcome(unsafe { libc::unlink(p.as_ptr()) }))
}

/// The layout directory (`v<N>`) the agent pinned its maps and links in.
fn layout_dir() -> Result<String, String> {
    std::fs::read_dir(PINS)
        .map_err(|e| format!("listing {PINS}: {e}"))?
        .flatten()
        .map(|e| e.path().display().to_string())
        .find(|p| p.rsplit('/').next().is_some_and(|n| n.starts_with('v')))
        .ok_or(format!("no layout directory under {PINS}"))
}

/// Writing KernelSeal's maps takes a map fd (by pin or by id), detaching
/// its programs a link fd: root gets neither.
pub(crate) fn maps_and_links_out_of_reach() -> TestResult {
    let eperm = Outcome::Refused(libc::EPERM);
    let layout = layout_dir()?;
    for pin in [
        format!("{layout}/maps/ks_policy"),
        format!("{layout}/maps/ks_guarded_files"),
        format!("{PINS}/ks_marks"),
    ] {
        expect(&format!("an fd of {pin}"), obj_get(&pin)?, eperm)?;
    }
    let (refused, _) = maps_by_id();
    if refused < 10 {
        return Err(format!(
            "map fds by id: {refused} refused (want KernelSeal's 10 at least)"
        ));
    }
    let detached = detach_every_link();
    if !detached.is_empty() {
        return Err(format!(
            "BPF_LINK_DETACH by id succeeded for links {detached:?}"
        ));
    }
    Ok(())
}

pub fn kernelseal_state_is_closed_to_other_tools(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let eperm = Outcome::Refused(libc::EPERM);
    let layout = layout_dir()?;
    control_map()?;
    expect(
        "an fd of a map of our own by its pin (control)",
        obj_get(CONTROL_PIN)?,
        Outcome::Allowed,
    )?;
    maps_and_links_out_of_reach()?;
    let (_, opened) = maps_by_id();
    if opened == 0 {
        return Err("map fds by id: none handed out (want the control's at least)".into());
    }
    expect(
        "removing a link pin",
        unlink(&format!("{layout}/links/file_open"))?,
        eperm,
    )?;
    expect(
        "removing a map pin",
        unlink(&format!("{layout}/maps/ks_policy"))?,
        eperm,
    )?;
    expect(
        "moving the links out of the pin tree",
        rename(&format!("{layout}/links"), "/sys/fs/bpf/ks-stolen-links")?,
        eperm,
    )?;
    let bpffs = c("/sys/fs/bpf")?;
    // SAFETY: umount of a valid path (refused, or the suite's pins go).
    let umount = match unsafe { libc::umount2(bpffs.as_ptr(), 0) } {
        0 => Outcome::Allowed,
        _ => Outcome::Refused(errno()),
    };
    expect("unmounting the pins' bpffs", umount, eperm)?;
    let copy = "/tmp/ks-binary-copy";
    std::fs::copy(CORE, copy).map_err(|e| format!("copying {CORE}: {e}"))?;
    expect(
        "writing a copy of the binary (control)",
        open_outcome(copy, libc::O_WRONLY),
        Outcome::Allowed,
    )?;
    expect(
        "removing a pin of our own (control)",
        unlink(CONTROL_PIN)?,
        Outcome::Allowed,
    )?;
    wait_log_line(&[
        "[LSM BLOCKED]",
        "attempted to change KernelSeal's own state",
    ])?;
    let (tried, opened) = reopened_agent_map_fds(ctx.agent.pid)?;
    if tried == 0 || opened > 0 {
        return Err(format!(
            "the agent's map fds through /proc/<agent>/fd: {opened} of {tried} reopened"
        ));
    }

    // KernelSeal's own CLI still works, and so does protection.
    let v = Victim::spawn()?;
    protect(v.pid)?;
    let status = kernelseal(&["status", &v.pid.to_string()])?;
    if !String::from_utf8_lossy(&status.stdout).contains("protected (binding") {
        return Err(format!(
            "kernelseal status after the attempts: {:?} {:?}",
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&status.stderr)
        ));
    }
    all_refused("protected after the attempts", v.pid, v.pid, v.addr)?;
    // With the agent killed (pins kept), the programs still guard it all.
    let guarded = Victim::spawn()?;
    protect(guarded.pid)?;
    ctx.agent.kill9();
    let removals = removals_refused_without_agent(&layout, &guarded);
    ctx.agent = crate::agent::Agent::start(Policy::ENFORCE_ALL)?;
    removals?;
    // A copy of the binary is not trusted: it gets no fd either.
    let copied = std::process::Command::new(copy)
        .args(["status", &v.pid.to_string()])
        .output()
        .map_err(|e| format!("running {copy}: {e}"))?;
    if copied.status.success() {
        return Err("a copy of the binary (another file) read the marks map".into());
    }

    ctx.agent.set_policy(Policy {
        mode: "audit",
        ..Policy::ENFORCE_ALL
    })?;
    expect(
        "audit: an fd of the policy map",
        obj_get(&format!("{layout}/maps/ks_policy"))?,
        Outcome::Allowed,
    )?;
    wait_log_line(&["[LSM AUDIT]", "kernelseal-state access"])
}

/// What `rm -r` of the pins and an update of the binary would do once the
/// agent is gone (no process runs the binary now, so the kernel's own
/// ETXTBSY does not answer for the write).
fn removals_refused_without_agent(layout: &str, v: &Victim) -> TestResult {
    let eperm = Outcome::Refused(libc::EPERM);
    expect(
        "agent killed: removing a link pin",
        unlink(&format!("{layout}/links/file_open"))?,
        eperm,
    )?;
    expect(
        "agent killed: removing the marks pin",
        unlink(&format!("{PINS}/ks_marks"))?,
        eperm,
    )?;
    expect(
        "agent killed: writing KernelSeal's trusted binary",
        open_outcome(CORE, libc::O_WRONLY),
        eperm,
    )?;
    expect(
        "agent killed: writing the trusted kernelseal command",
        open_outcome(KERNELSEAL, libc::O_WRONLY),
        eperm,
    )?;
    all_refused("agent killed, protected before", v.pid, v.pid, v.addr)
}

/// A KernelSeal binary exec'd under a tracer is not trusted: the tracer
/// could drive it. `kernelseal status` then cannot open the marks map.
pub fn traced_kernelseal_binary_is_not_trusted(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let v = Victim::spawn()?;
    let args: Vec<CString> = ["kernelseal", "status", &v.pid.to_string()]
        .iter()
        .map(|a| c(a))
        .collect::<Result<_, _>>()?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let path = c(KERNELSEAL)?;
    let devnull = c("/dev/null")?;
    // SAFETY: the child only calls async-signal-safe functions before exec.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: as above; on failure the child _exits.
        unsafe {
            let null = libc::open(devnull.as_ptr(), libc::O_WRONLY);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
            libc::execv(path.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
    }
    if child < 0 {
        return Err(format!("fork: errno {}", errno()));
    }
    let code = loop {
        let mut status = 0;
        // SAFETY: waiting for our child.
        if unsafe { libc::waitpid(child, &mut status, 0) } < 0 {
            return Err(format!("waitpid: errno {}", errno()));
        }
        if libc::WIFEXITED(status) {
            break libc::WEXITSTATUS(status);
        }
        if libc::WIFSIGNALED(status) {
            break 128 + libc::WTERMSIG(status);
        }
        // Stopped: pass any signal but the exec trap on.
        let sig = libc::WSTOPSIG(status);
        let deliver = if sig == libc::SIGTRAP { 0 } else { sig };
        // SAFETY: continuing our stopped tracee.
        unsafe { libc::ptrace(libc::PTRACE_CONT, child, 0, deliver) };
    };
    if code == 0 {
        return Err("a traced `kernelseal status` opened the marks map".into());
    }
    // Untraced, the same command works (control).
    let out = kernelseal(&["status", &v.pid.to_string()])?;
    if !out.status.success() {
        return Err(format!(
            "untraced kernelseal status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// The static wrapper as copied into images: not a trusted file.
const WRAPPER: &str = "/usr/bin/kernelseal-exec";

/// The `kernelseal` command beside the agent's binary is a trusted
/// KernelSeal binary: `kernelseal exec` cannot be attached to, nor have its
/// memory opened or read, by root even before the agent marks it (a
/// `/proc/P/mem` descriptor opened then would outlive the mark). Each
/// wrapper waits on a socket nobody serves, unmarked. Control: the static
/// `kernelseal-exec`, as copied into images, is not trusted and is open.
/// Then a file swapped in as the command is not trusted by an agent
/// restarted with `kill -9` (only a fresh load or a handover admits one).
pub fn kernelseal_command_is_closed_before_its_mark(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let command = waiting(KERNELSEAL, &["exec"])?;
    let control = waiting(WRAPPER, &[])?;
    let pid = command.0.id();
    matrix(
        "an unmarked kernelseal exec",
        pid,
        pid,
        running(pid, KERNELSEAL)?,
        refused_by_trust,
    )?;
    let pid = control.0.id();
    all_allowed(
        "an unmarked kernelseal-exec (control)",
        pid,
        pid,
        running(pid, WRAPPER)?,
    )?;
    drop((command, control));
    let kept = "/usr/bin/ks-command-kept";
    let swapped = swapped_command_is_not_trusted(ctx, kept);
    // The trusted file back, whatever happened: later tests use it.
    let restored = std::fs::rename(kept, KERNELSEAL)
        .map_err(|e| format!("putting {KERNELSEAL} back: {e}"))
        .and_then(|()| {
            ctx.agent.kill9();
            ctx.agent = crate::agent::Agent::start(Policy::ENFORCE_ALL)?;
            wait_log_line(&["[OK] trusted KernelSeal binaries", KERNELSEAL])
        });
    swapped.and(restored)
}

/// What a running trusted binary is refused: every access that needs to
/// attach (`PTRACE_MODE_ATTACH`); reading environ and maps only needs to
/// read, and only a mark refuses those.
fn refused_by_trust(v: Vector) -> bool {
    !matches!(v, Vector::Environ | Vector::TaskEnviron | Vector::Maps)
}

/// Root renames the trusted command to `kept`, puts another root-owned
/// binary in its place and restarts the agent with `kill -9`: the agent
/// warns and does not trust it, and `kernelseal exec` from it is open.
fn swapped_command_is_not_trusted(ctx: &mut Ctx, kept: &str) -> TestResult {
    let staged = "/usr/bin/ks-command-swap";
    std::fs::copy(WRAPPER, staged).map_err(|e| format!("copying {WRAPPER}: {e}"))?;
    std::fs::rename(KERNELSEAL, kept).map_err(|e| format!("moving {KERNELSEAL}: {e}"))?;
    std::fs::rename(staged, KERNELSEAL).map_err(|e| format!("swapping {KERNELSEAL}: {e}"))?;
    ctx.agent.kill9();
    ctx.agent = crate::agent::Agent::start_from(CORE, &Policy::ENFORCE_ALL.yaml(), &[])?;
    wait_log_line(&["the kernelseal command at", "is not trusted"])?;
    let swapped = waiting(KERNELSEAL, &[])?;
    let pid = swapped.0.id();
    all_allowed(
        "the swapped-in command after a kill -9 restart",
        pid,
        pid,
        running(pid, KERNELSEAL)?,
    )
}

/// `program [first…] --socket <nobody's> --timeout 60s -- /bin/true`: a
/// wrapper that waits, unmarked, killed when dropped.
fn waiting(program: &str, first: &[&str]) -> Result<Reaped, String> {
    std::process::Command::new(program)
        .args(first)
        .args(["--socket", "/tmp/ks-nobody.sock", "--timeout", "60s", "--"])
        .arg("/bin/true")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(Reaped)
        .map_err(|e| format!("starting {program}: {e}"))
}

/// Waits until `pid` runs `exe` (its exec done); returns the start of its
/// first mapping (an address process_vm_readv can read).
fn running(pid: u32, exe: &str) -> Result<usize, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if now.as_deref() == Some(std::path::Path::new(exe)) {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("PID {pid} did not exec {exe}: {now:?}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| format!("/proc/{pid}/maps: {e}"))?;
    maps.split('-')
        .next()
        .and_then(|a| usize::from_str_radix(a, 16).ok())
        .ok_or_else(|| format!("no mapping in /proc/{pid}/maps"))
}

/// Runs `binary agent` and waits (bounded) for it to exit on its own:
/// (exit code, stderr).
fn agent_that_must_refuse(binary: &str) -> Result<(i32, String), String> {
    use std::io::Read;
    let mut child = std::process::Command::new(binary)
        .args(["agent", "--config", crate::agent::CONFIG])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {binary}: {e}"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{binary} agent kept running over another build's pins"
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    Ok((status.code().unwrap_or(-1), err))
}

/// A new build (here: a copy of the command and the core, other files)
/// cannot take the pins over on its own; after the trusted agent stops with
/// SIGTERM it can, once, and the next agent reports it. It is started as an
/// upgrade is, through its `kernelseal` command: the handover admits the
/// core that command execs, not the command exec'd before it.
pub fn another_build_takes_over_only_through_a_handover(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let dir = "/tmp/ks-new-build";
    let new_build = format!("{dir}/kernelseal");
    std::fs::create_dir_all(dir).map_err(|e| format!("{dir}: {e}"))?;
    for (from, to) in [
        (KERNELSEAL, new_build.clone()),
        (CORE, format!("{dir}/kernelseal-core")),
    ] {
        let _ = std::fs::remove_file(&to);
        std::fs::copy(from, &to).map_err(|e| format!("copying {from}: {e}"))?;
    }
    let v = Victim::spawn()?;
    protect(v.pid)?;
    // Pins stay, no handover: the suite's agent dies without stopping.
    ctx.agent.kill9();
    let result = handover_to(ctx, &new_build, &v);
    // Back to the suite's own binary (trusted all along) for what follows.
    ctx.agent.kill9();
    ctx.agent = crate::agent::Agent::start(Policy::ENFORCE_ALL)?;
    result
}

fn handover_to(ctx: &mut Ctx, new_build: &str, v: &Victim) -> TestResult {
    let (code, err) = agent_that_must_refuse(new_build)?;
    if code != 3 || !err.contains("does not trust this binary") {
        return Err(format!(
            "an untrusted build over the pins: exit {code}, stderr {err:?}"
        ));
    }
    all_refused("while no agent runs", v.pid, v.pid, v.addr)?;
    // The trusted build, stopped with SIGTERM and pins kept, hands over.
    let yaml = Policy::ENFORCE_ALL.yaml();
    crate::agent::Agent::start_with(&yaml, &[])?.stop()?;
    wait_log_line(&["[STOP] handover open for 10 min"])?;
    ctx.agent = crate::agent::Agent::start_from(new_build, &yaml, &["--unpin-on-exit"])?;
    wait_log_line(&["[HANDOVER]", "was admitted as a trusted KernelSeal build"])?;
    wait_log_line(&["[START] trusted KernelSeal build admitted during a handover"])?;
    all_refused("after the handover", v.pid, v.pid, v.addr)
}
