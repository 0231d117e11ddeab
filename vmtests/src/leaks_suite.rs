//! The channels an attacker review used to read a protected process's
//! secrets as root besides the eight vectors of the matrix: perf sampling,
//! perf events inherited across the wrapper, unnamed files reopened through /proc/P/fd and map_files, fanotify on
//! /proc, a thread that execs, and unprotect. Each is tried against a
//! protected process (refused, logged) and an unprotected one (the control:
//! allowed, so the attempt itself is known to work).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::Duration;

use crate::agent::{Policy, protect, unprotect, wait_log_line};
use crate::attacks::{Outcome, errno, expect, open_outcome};
use crate::suite::{Ctx, TestResult, all_allowed, all_refused};
use crate::victim::{SECRET_VALUE, Victim};

// ---- victim side -------------------------------------------------------

/// Victim command: keeps the secret in a file without a name and answers
/// `fd N`: a pipe (both ends open, data unread), a memfd, or a deleted
/// file.
pub fn hold_secret_fd(kind: &str) -> String {
    let fd = match kind {
        "pipe" => {
            let mut fds = [0; 2];
            // SAFETY: pipe2 fills two fds.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), 0) } != 0 {
                return format!("error {}", errno());
            }
            write_all(fds[1], SECRET_VALUE.as_bytes());
            fds[0]
        }
        "memfd" => {
            let name = CString::new("ks-secret").unwrap_or_default();
            // SAFETY: memfd_create with a valid name.
            let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
            write_all(fd, SECRET_VALUE.as_bytes());
            fd
        }
        _ => {
            let path = format!("/tmp/ks-deleted-{}", std::process::id());
            let c = CString::new(path.clone()).unwrap_or_default();
            // SAFETY: open with a valid path.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CREAT, 0o600) };
            write_all(fd, SECRET_VALUE.as_bytes());
            std::fs::remove_file(&path).ok();
            fd
        }
    };
    if fd < 0 {
        return format!("error {}", errno());
    }
    format!("fd {fd}")
}

fn write_all(fd: i32, bytes: &[u8]) {
    // SAFETY: writing a valid buffer to an fd we own.
    unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

/// Victim command: the secret in memfd_secret memory, as the agent and the
/// wrapper hold theirs. Answers `secretmem FD START END`.
pub fn hold_secret_memory() -> String {
    // SAFETY: memfd_secret takes flags and returns an fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_memfd_secret, 0u32) } as i32;
    if fd < 0 {
        return format!("error {}", errno());
    }
    let len = 4096usize;
    // SAFETY: sizing and mapping the fd we just created.
    let addr = unsafe {
        libc::ftruncate(fd, len as libc::off_t);
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return format!("error {}", errno());
    }
    // SAFETY: the mapping is len bytes long and writable.
    unsafe {
        std::ptr::copy_nonoverlapping(SECRET_VALUE.as_ptr(), addr.cast(), SECRET_VALUE.len())
    };
    let start = addr as usize;
    format!("secretmem {fd} {start:x} {:x}", start + len)
}

// ---- attacker side -----------------------------------------------------

/// Opens `path` (a magic link) and reads it; `Allowed` only when the secret
/// came back.
fn read_through(path: &str) -> Result<Outcome, String> {
    let c = CString::new(path).map_err(|e| e.to_string())?;
    // SAFETY: open with a valid path; the fd is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Ok(Outcome::Refused(errno()));
    }
    // SAFETY: a fresh fd we own.
    let file = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut buf = vec![0u8; 256];
    // SAFETY: pread into a buffer of that size; pipes do not seek, so read.
    let n = unsafe {
        let n = libc::pread(file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0);
        if n < 0 {
            libc::read(file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
        } else {
            n
        }
    };
    let got = &buf[..n.max(0) as usize];
    if contains(got, SECRET_VALUE.as_bytes()) {
        Ok(Outcome::Allowed)
    } else {
        Err(format!("{path} opened but held no secret ({n} bytes)"))
    }
}

/// Opens `path` and maps it: secret memory cannot be read(), only mapped.
fn map_through(path: &str) -> Result<Outcome, String> {
    let c = CString::new(path).map_err(|e| e.to_string())?;
    // SAFETY: open with a valid path.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Ok(Outcome::Refused(errno()));
    }
    // SAFETY: a fresh fd we own.
    let file = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: mapping one page of the fd; unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Ok(Outcome::Refused(errno()));
    }
    // SAFETY: the mapping is 4096 readable bytes.
    let page = unsafe { std::slice::from_raw_parts(addr as *const u8, 4096) }.to_vec();
    // SAFETY: unmapping what we mapped.
    unsafe { libc::munmap(addr, 4096) };
    if contains(&page, SECRET_VALUE.as_bytes()) {
        Ok(Outcome::Allowed)
    } else {
        Err(format!("{path} mapped but held no secret"))
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `struct perf_event_attr` up to PERF_ATTR_SIZE_VER5 (112 bytes); libc
/// does not have it.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    /// disabled, inherit (bit 1), pinned, …
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved: u16,
}

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
const PERF_SAMPLE_IP: u64 = 1;
const PERF_SAMPLE_REGS_USER: u64 = 1 << 12;
const PERF_SAMPLE_STACK_USER: u64 = 1 << 13;
const PERF_ATTR_INHERIT: u64 = 1 << 1;
pub(crate) const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const USER_SAMPLING: u64 = PERF_SAMPLE_STACK_USER | PERF_SAMPLE_REGS_USER;

/// perf_event_open of a software cpu-clock event.
fn perf_open(pid: i32, cpu: i32, sample_type: u64, inherit: bool) -> Result<OwnedFd, i32> {
    let mut attr = PerfEventAttr {
        type_: PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: PERF_COUNT_SW_CPU_CLOCK,
        sample_type,
        ..Default::default()
    };
    if sample_type != 0 {
        attr.sample_period = 100_000;
        attr.sample_regs_user = 0xff;
        attr.sample_stack_user = 4096;
    }
    if inherit {
        attr.flags |= PERF_ATTR_INHERIT;
    }
    // SAFETY: perf_event_open with a valid attr; returns an fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            pid,
            cpu,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn perf_outcome(pid: i32, cpu: i32, sample_type: u64) -> Outcome {
    match perf_open(pid, cpu, sample_type, false) {
        Ok(_) => Outcome::Allowed,
        Err(e) => Outcome::Refused(e),
    }
}

// ---- tests -------------------------------------------------------------

pub fn perf_sampling_of_protected_process_is_refused(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let open = Victim::spawn()?;
    let v = Victim::spawn()?;
    protect(v.pid)?;
    let refused = Outcome::Refused(libc::EACCES);
    expect(
        "user-stack sampling of an unprotected process (control)",
        perf_outcome(open.pid as i32, -1, USER_SAMPLING),
        Outcome::Allowed,
    )?;
    expect(
        "counting on an unprotected process (perf stat -p)",
        perf_outcome(open.pid as i32, -1, 0),
        Outcome::Allowed,
    )?;
    expect(
        "user-stack sampling of a protected process",
        perf_outcome(v.pid as i32, -1, USER_SAMPLING),
        refused,
    )?;
    expect(
        "counting on a protected process",
        perf_outcome(v.pid as i32, -1, 0),
        refused,
    )?;
    expect(
        "user-stack sampling of the agent",
        perf_outcome(ctx.agent.pid as i32, -1, USER_SAMPLING),
        refused,
    )?;
    expect(
        "CPU-wide user-stack sampling",
        perf_outcome(-1, 0, USER_SAMPLING),
        refused,
    )?;
    expect(
        "CPU-wide instruction-pointer sampling",
        perf_outcome(-1, 0, PERF_SAMPLE_IP),
        Outcome::Allowed,
    )?;
    wait_log_line(&[
        "[LSM BLOCKED]",
        &format!("attempted perf access to PID={}", v.pid),
    ])?;

    ctx.agent.set_policy(Policy {
        mode: "audit",
        ..Policy::ENFORCE_ALL
    })?;
    expect(
        "audit: user-stack sampling of a protected process",
        perf_outcome(v.pid as i32, -1, USER_SAMPLING),
        Outcome::Allowed,
    )?;
    wait_log_line(&["[LSM AUDIT]", &format!("perf access to PID={}", v.pid)])
}

pub fn perf_event_from_before_the_wrapper_is_refused(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let wrapped = |with_event: bool| -> Result<std::process::Output, String> {
        // An inherited event on this process follows the wrapper it spawns,
        // as one opened on a shell before `kernelseal exec` would.
        let _event = if with_event {
            Some(perf_open(0, -1, 0, true).map_err(|e| format!("perf_event_open: errno {e}"))?)
        } else {
            None
        };
        Command::new(crate::agent::KERNELSEAL)
            .args([
                "exec",
                "--timeout",
                "10s",
                "--",
                "/bin/sh",
                "-c",
                "echo got:$WRAPPED_SECRET",
            ])
            .output()
            .map_err(|e| format!("running the wrapper: {e}"))
    };
    let control = wrapped(false)?;
    let out = String::from_utf8_lossy(&control.stdout);
    if !control.status.success() || !out.contains("got:wrapped-secret-value") {
        return Err(format!(
            "control: the wrapper without a perf event must deliver (status {}, stdout {out:?})",
            control.status
        ));
    }
    let attacked = wrapped(true)?;
    let out = String::from_utf8_lossy(&attacked.stdout);
    if attacked.status.success() || out.contains("wrapped-secret-value") {
        return Err(format!(
            "a perf event attached before the wrapper must keep the app from running with its \
             secret (status {}, stdout {out:?})",
            attacked.status
        ));
    }
    wait_log_line(&["[LSM BLOCKED]", "perf-exec"])
}

fn fd_of(reply: &str) -> Result<String, String> {
    reply
        .strip_prefix("fd ")
        .map(str::to_string)
        .ok_or(format!("victim could not hold the secret: {reply:?}"))
}

pub fn unnamed_files_of_protected_process_stay_closed(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    for kind in ["pipe", "memfd", "deleted"] {
        let mut open = Victim::spawn()?;
        let fd = fd_of(&open.ask(kind)?)?;
        expect(
            &format!("{kind} of an unprotected process (control)"),
            read_through(&format!("/proc/{}/fd/{fd}", open.pid))?,
            Outcome::Allowed,
        )?;
        let mut v = Victim::spawn()?;
        protect(v.pid)?;
        let fd = fd_of(&v.ask(kind)?)?;
        expect(
            &format!("{kind} through /proc/P/fd of a protected process"),
            read_through(&format!("/proc/{}/fd/{fd}", v.pid))?,
            Outcome::Refused(libc::EACCES),
        )?;
    }
    wait_log_line(&["[LSM BLOCKED]", "attempted fd-reopen access"])?;

    // Secret memory: through the fd and through map_files, as the agent's
    // pool would be reached.
    let mut v = Victim::spawn()?;
    protect(v.pid)?;
    let reply = v.ask("secretmem")?;
    let parts: Vec<&str> = reply.split_whitespace().collect();
    let [_, fd, start, end] = parts[..] else {
        return Err(format!("victim could not hold secret memory: {reply:?}"));
    };
    expect(
        "secret memory through /proc/P/fd of a protected process",
        map_through(&format!("/proc/{}/fd/{fd}", v.pid))?,
        Outcome::Refused(libc::EACCES),
    )?;
    expect(
        "secret memory through /proc/P/map_files of a protected process",
        map_through(&format!("/proc/{}/map_files/{start}-{end}", v.pid))?,
        Outcome::Refused(libc::EACCES),
    )?;
    // The agent's own pool, the same way: every map_files entry of the
    // agent that is secret memory. A wrapped victim makes it fetch (and
    // pool) a value first, so there is one to try.
    let _wrapped = Victim::spawn_wrapped()?;
    let mut tried = 0;
    let agent_maps = std::fs::read_dir(format!("/proc/{}/map_files", ctx.agent.pid))
        .map_err(|e| format!("listing the agent's map_files: {e}"))?;
    for entry in agent_maps.flatten() {
        let link = std::fs::read_link(entry.path()).unwrap_or_default();
        if link.to_string_lossy().contains("secretmem") {
            tried += 1;
            let path = entry.path().display().to_string();
            let c = CString::new(path.clone()).map_err(|e| e.to_string())?;
            // SAFETY: open with a valid path.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            if fd >= 0 {
                // SAFETY: closing the fd we opened.
                unsafe { libc::close(fd) };
                return Err(format!("the agent's secret memory opened through {path}"));
            }
        }
    }
    if tried == 0 {
        return Err(
            "the agent has no secret-memory mapping to try (is its pool not in \
                    memfd_secret memory?)"
                .into(),
        );
    }
    Ok(())
}

pub fn fanotify_on_proc_gets_no_protected_environ(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let open = leaked_through_fanotify(false)?;
    if !open {
        return Err(
            "control: an unprotected process's own environ read must reach the \
                    fanotify listener"
                .into(),
        );
    }
    if leaked_through_fanotify(true)? {
        return Err("a FAN_OPEN listener on /proc read a protected process's environ".into());
    }
    Ok(())
}

/// A FAN_OPEN mount mark on /proc while a victim reads its own environ:
/// whether any event fd the listener got held the secret.
fn leaked_through_fanotify(protected: bool) -> Result<bool, String> {
    let listener = crate::fanotify::Listener::on_mount_of("/proc")?;
    let mut v = Victim::spawn()?;
    if protected {
        protect(v.pid)?;
    }
    v.ask("selfread")?;
    let environ = format!("/proc/{}/environ", v.pid);
    let fds = listener.collect(Duration::from_secs(2), |path| path == environ);
    Ok(fds
        .iter()
        .any(|(_, fd)| contains(&crate::fanotify::contents(fd), SECRET_VALUE.as_bytes())))
}

pub fn thread_exec_keeps_the_mark(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let mut v = Victim::spawn()?;
    let tid = v.ask_number("parkedthread", "tid")?;
    protect(v.pid)?;
    v.exec_sleep_via("threadexec")?;
    let status = crate::agent::kernelseal(&["status", &v.pid.to_string()])?;
    let text = String::from_utf8_lossy(&status.stdout);
    if !text.contains("protected") || text.contains("not protected") {
        return Err(format!(
            "after thread {tid} exec'd, status of PID {} says {text:?}",
            v.pid
        ));
    }
    all_refused("after a thread's exec", v.pid, v.pid, v.addr)
}

pub fn unprotect_clears_every_thread(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let mut v = Victim::spawn()?;
    protect(v.pid)?;
    // Created after the mark: it inherited a mark of its own.
    let tid = v.ask_number("thread", "tid")?;
    all_refused("thread before unprotect", v.pid, tid, v.addr)?;
    unprotect(v.pid)?;
    all_allowed("process after unprotect", v.pid, v.pid, v.addr)?;
    all_allowed("thread after unprotect", tid, tid, v.addr)
}

/// The capable hook refuses CAP_PERFMON/CAP_SYS_ADMIN only to the perfmon
/// fallback of the check it refused: the refused reader (root) keeps its
/// capabilities for everything after, on every kernel.
pub fn refused_reader_keeps_its_capabilities(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let v = Victim::spawn()?;
    protect(v.pid)?;
    for file in ["environ", "maps", "mem"] {
        expect(
            &format!("root reading /proc/P/{file} of a protected process"),
            open_outcome(&format!("/proc/{}/{file}", v.pid), libc::O_RDONLY),
            Outcome::Refused(libc::EACCES),
        )?;
        // sethostname needs CAP_SYS_ADMIN; setting the current name changes
        // nothing.
        let mut name = [0u8; 65];
        // SAFETY: gethostname/sethostname with a buffer of the right size.
        let rc = unsafe {
            libc::gethostname(name.as_mut_ptr().cast(), name.len() - 1);
            let len = name.iter().position(|&b| b == 0).unwrap_or(0);
            libc::sethostname(name.as_ptr().cast(), len)
        };
        if rc != 0 {
            return Err(format!(
                "after a refused {file} read, CAP_SYS_ADMIN was refused too (errno {})",
                errno()
            ));
        }
    }
    Ok(())
}
