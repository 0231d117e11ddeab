//! What /proc says about a process we are asked to mark.

use std::os::fd::BorrowedFd;

use crate::error::BpfError;

const PF_KTHREAD: u64 = 0x0020_0000;

/// The facts `protect` checks before marking a PID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessFacts {
    pub pid: u32,
    /// Thread-group id: marks go on processes, a TID is resolved to its TGID.
    pub tgid: u32,
    pub comm: String,
    pub kernel_thread: bool,
    /// Start time in clock ticks after boot (`/proc/P/stat` field 22): with
    /// the PID it names one process, whatever reused the number since.
    pub start_ticks: u64,
    /// The executable (`/proc/P/exe`), when it can be read.
    pub exe: Option<String>,
}

impl ProcessFacts {
    pub fn read(pid: u32) -> Result<Self, BpfError> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|_| BpfError::NoSuchProcess { pid })?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|_| BpfError::NoSuchProcess { pid })?;
        let mut facts = Self::parse(pid, &status, &stat).ok_or(BpfError::NoSuchProcess { pid })?;
        facts.exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.display().to_string());
        Ok(facts)
    }

    /// The threads of process `tgid` other than its leader, from
    /// /proc/`tgid`/task (threads that exit meanwhile are simply absent).
    pub fn other_threads(tgid: u32) -> Result<Vec<u32>, BpfError> {
        let dir = std::fs::read_dir(format!("/proc/{tgid}/task"))
            .map_err(|_| BpfError::NoSuchProcess { pid: tgid })?;
        Ok(dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&tid| tid != tgid)
            .collect())
    }

    fn parse(pid: u32, status: &str, stat: &str) -> Option<Self> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let tgid = field("Tgid")?.parse().ok()?;
        let comm = field("Name").unwrap_or("").to_string();
        // stat: "pid (comm) state ppid ... flags" — comm may contain spaces
        // and parentheses, so split after the last ')'. flags is field 9.
        let after = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let flags: u64 = fields.get(6)?.parse().ok()?;
        let start_ticks = fields.get(19).and_then(|v| v.parse().ok()).unwrap_or(0);
        Some(ProcessFacts {
            pid,
            tgid,
            comm,
            kernel_thread: flags & PF_KTHREAD != 0,
            start_ticks,
            exe: None,
        })
    }
}

/// A thread of a process that a debugger is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracer {
    pub tid: u32,
    pub tracer_pid: u32,
}

/// The first thread of `pid` with a ptrace tracer attached, if any.
///
/// The gate refuses new `ptrace` attaches to a marked process, but a tracer
/// attached before the mark keeps `PTRACE_PEEKDATA` (no LSM hook runs on
/// it), so secrets must not reach a process that is already traced. Called
/// after the mark is set: from then on no new tracer can attach, so a clean
/// answer stays true. Every thread counts: one traced thread exposes the
/// whole address space. `pidfd` must name `pid`; it is checked again after
/// /proc is read, so a PID reused meanwhile cannot give a false "untraced".
pub fn tracer_of(pid: u32, pidfd: BorrowedFd<'_>) -> Result<Option<Tracer>, BpfError> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|_| BpfError::NoSuchProcess { pid })?;
    // Fails closed: anything but a thread that is gone is an error, never
    // "untraced".
    let unreadable = |what: String, e: std::io::Error| BpfError::ProcRead {
        pid,
        reason: format!("{what}: {e}"),
    };
    let gone = |e: &std::io::Error| {
        e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
    };
    let mut found = None;
    for task in tasks {
        let task = task.map_err(|e| unreadable(format!("/proc/{pid}/task"), e))?;
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let status = match std::fs::read_to_string(task.path().join("status")) {
            Ok(s) => s,
            // Exited between the listing and the read: no tracer left.
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(unreadable(format!("/proc/{pid}/task/{tid}/status"), e)),
        };
        match tracer_pid(&status) {
            Some(0) => {}
            Some(tracer_pid) => {
                found = Some(Tracer { tid, tracer_pid });
                break;
            }
            None => {
                return Err(BpfError::ProcRead {
                    pid,
                    reason: format!("/proc/{pid}/task/{tid}/status has no TracerPid"),
                });
            }
        }
    }
    if !crate::sys::pidfd_alive(pidfd) {
        return Err(BpfError::NoSuchProcess { pid });
    }
    Ok(found)
}

fn tracer_pid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_user_process_and_kernel_thread() {
        let status = "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t1234\nPid:\t1235\n";
        let stat = "1235 (sl) eep)) S 1 1234 1234 0 -1 4194560 100 0 0 0";
        let f = ProcessFacts::parse(1235, status, stat).unwrap();
        assert_eq!(f.tgid, 1234);
        assert_eq!(f.comm, "sleep");
        assert!(!f.kernel_thread);
        let kstat = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0";
        let k = ProcessFacts::parse(2, "Name:\tkthreadd\nTgid:\t2\n", kstat).unwrap();
        assert!(k.kernel_thread);
    }

    #[test]
    fn reads_self() {
        let me = ProcessFacts::read(std::process::id()).unwrap();
        assert_eq!(me.tgid, std::process::id());
        assert!(!me.kernel_thread);
    }

    #[test]
    fn missing_pid_is_a_clear_error() {
        let e = ProcessFacts::read(u32::MAX - 1).unwrap_err();
        assert!(e.to_string().contains("no process with PID"), "{e}");
    }

    #[test]
    fn tracer_pid_is_parsed_from_status() {
        assert_eq!(tracer_pid("Name:\tx\nTracerPid:\t0\n"), Some(0));
        assert_eq!(
            tracer_pid("Name:\tx\nTracerPid:\t4242\nUid:\t0\n"),
            Some(4242)
        );
        assert_eq!(tracer_pid("Name:\tx\n"), None);
    }

    #[test]
    fn an_untraced_process_has_no_tracer() {
        let me = std::process::id();
        let pidfd = crate::sys::pidfd_open(me).unwrap();
        let t = tracer_of(me, std::os::fd::AsFd::as_fd(&pidfd)).unwrap();
        // The test runner itself may run under a debugger; then the tracer
        // must be reported, not hidden.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        match tracer_pid(&status) {
            Some(0) | None => assert_eq!(t, None),
            Some(p) => assert_eq!(t.map(|t| t.tracer_pid), Some(p)),
        }
    }

    #[test]
    fn a_traced_child_is_reported() {
        // A child that asks to be traced by us (PTRACE_TRACEME) and stops.
        // SAFETY: fork in a test; the child only calls async-signal-safe
        // functions (ptrace, raise, _exit) before exiting.
        let child = unsafe { libc::fork() };
        assert!(child >= 0);
        if child == 0 {
            // SAFETY: the forked child, async-signal-safe calls only.
            unsafe {
                libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
                libc::raise(libc::SIGSTOP);
                libc::_exit(0);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(child, &mut status, 0) };
        let pidfd = crate::sys::pidfd_open(child as u32).unwrap();
        let t = tracer_of(child as u32, std::os::fd::AsFd::as_fd(&pidfd)).unwrap();
        assert_eq!(
            t,
            Some(Tracer {
                tid: child as u32,
                // TracerPid names the tracing thread: this test's, which
                // forked the child (not the test binary's main thread).
                // SAFETY: gettid has no preconditions.
                tracer_pid: unsafe { libc::gettid() } as u32,
            })
        );
        // SAFETY: ending our own traced child.
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, &mut status, 0);
        }
        assert!(matches!(
            tracer_of(child as u32, std::os::fd::AsFd::as_fd(&pidfd)),
            Err(BpfError::NoSuchProcess { .. })
        ));
    }
}
