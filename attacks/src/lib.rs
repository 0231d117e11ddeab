//! The eight ways to read a process from outside, each reduced to
//! "allowed" or "refused with errno".

use std::ffi::CString;
use std::fmt;

/// What happened to one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Refused(i32),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Allowed => f.write_str("allowed"),
            Outcome::Refused(e) if *e == libc::EACCES => f.write_str("refused EACCES"),
            Outcome::Refused(e) if *e == libc::EPERM => f.write_str("refused EPERM"),
            Outcome::Refused(e) => write!(f, "refused errno {e}"),
        }
    }
}

pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A syscall's return code as an outcome (errno on failure).
pub fn outcome(rc: libc::c_int) -> Outcome {
    if rc == 0 {
        Outcome::Allowed
    } else {
        Outcome::Refused(errno())
    }
}

/// One attempt of a test against what it must give.
pub fn expect(label: &str, got: Outcome, want: Outcome) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{label}: want {want}, got {got}"))
    }
}

pub fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|e| e.to_string())
}

/// Opens `path` with `flags` and closes it at once.
pub fn open_outcome(path: &str, flags: libc::c_int) -> Outcome {
    let Ok(c) = CString::new(path) else {
        return Outcome::Refused(libc::EINVAL);
    };
    // SAFETY: open with a valid path; closed at once, nothing written.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Outcome::Refused(errno());
    }
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    Outcome::Allowed
}

/// An access vector of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vector {
    Environ,
    TaskEnviron,
    Mem,
    Maps,
    PtraceAttach,
    PtraceSeize,
    ProcessVmReadv,
    PidfdGetfd,
}

pub const ALL: [Vector; 8] = [
    Vector::Environ,
    Vector::TaskEnviron,
    Vector::Mem,
    Vector::Maps,
    Vector::PtraceAttach,
    Vector::PtraceSeize,
    Vector::ProcessVmReadv,
    Vector::PidfdGetfd,
];

impl Vector {
    pub fn name(self) -> &'static str {
        match self {
            Vector::Environ => "environ",
            Vector::TaskEnviron => "task-environ",
            Vector::Mem => "mem",
            Vector::Maps => "maps",
            Vector::PtraceAttach => "ptrace-attach",
            Vector::PtraceSeize => "ptrace-seize",
            Vector::ProcessVmReadv => "process_vm_readv",
            Vector::PidfdGetfd => "pidfd_getfd",
        }
    }

    /// The errno a refusal must carry: /proc opens go through mm_access,
    /// which maps every refusal to EACCES; the syscalls return EPERM.
    pub fn refusal_errno(self) -> i32 {
        match self {
            Vector::Environ | Vector::TaskEnviron | Vector::Mem | Vector::Maps => libc::EACCES,
            _ => libc::EPERM,
        }
    }

    /// The policy kind the vector belongs to (blockEnviron, blockMem, …).
    pub fn kind(self) -> &'static str {
        match self {
            Vector::Environ | Vector::TaskEnviron => "environ",
            Vector::Mem => "mem",
            Vector::Maps => "maps",
            _ => "ptrace",
        }
    }

    /// Tries the access against process `pid` / thread `tid`. `addr` is an
    /// address mapped in the target, for process_vm_readv.
    pub fn attempt(self, pid: u32, tid: u32, addr: usize) -> Outcome {
        match self {
            Vector::Environ => read_proc(&format!("/proc/{pid}/environ")),
            Vector::TaskEnviron => read_proc(&format!("/proc/{pid}/task/{tid}/environ")),
            Vector::Mem => read_proc_open_only(&format!("/proc/{pid}/mem")),
            Vector::Maps => read_proc(&format!("/proc/{pid}/maps")),
            Vector::PtraceAttach => ptrace_in_child(libc::PTRACE_ATTACH, pid),
            Vector::PtraceSeize => ptrace_in_child(libc::PTRACE_SEIZE, pid),
            Vector::ProcessVmReadv => vm_readv(pid, addr),
            Vector::PidfdGetfd => getfd(pid),
        }
    }
}

fn open_ro(path: &str) -> Result<i32, i32> {
    let c = CString::new(path).expect("no NUL in a /proc path");
    // SAFETY: valid C string, plain open(2).
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 { Err(errno()) } else { Ok(fd) }
}

/// Opens and reads: a refused open and a refused read both count.
fn read_proc(path: &str) -> Outcome {
    match open_ro(path) {
        Err(e) => Outcome::Refused(e),
        Ok(fd) => {
            let mut buf = [0u8; 256];
            // SAFETY: fd is open, buf is valid for its length.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            let e = errno();
            // SAFETY: closing the fd we opened.
            unsafe { libc::close(fd) };
            if n < 0 {
                Outcome::Refused(e)
            } else {
                Outcome::Allowed
            }
        }
    }
}

/// /proc/P/mem: the open is the access check (an fd kept is access kept).
fn read_proc_open_only(path: &str) -> Outcome {
    match open_ro(path) {
        Err(e) => Outcome::Refused(e),
        Ok(fd) => {
            // SAFETY: closing the fd we opened.
            unsafe { libc::close(fd) };
            Outcome::Allowed
        }
    }
}

/// ptrace from a throw-away child: when it exits the kernel detaches it, so
/// an allowed attach never leaves the target traced.
fn ptrace_in_child(request: libc::c_uint, pid: u32) -> Outcome {
    // SAFETY: fork in a single-threaded test process; the child only makes
    // syscalls and _exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: raw ptrace request on a pid; null addr/data are valid.
        let rc = unsafe {
            libc::ptrace(
                request,
                pid as libc::pid_t,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            )
        };
        let code = if rc < 0 { errno() } else { 0 };
        // SAFETY: leave without running destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    // An allowed PTRACE_ATTACH stops the target; let it run again.
    // SAFETY: signalling a known pid.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
    match libc::WEXITSTATUS(status) {
        0 => Outcome::Allowed,
        e => Outcome::Refused(e),
    }
}

fn vm_readv(pid: u32, addr: usize) -> Outcome {
    let mut buf = [0u8; 8];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: one local iovec over our buffer, one remote iovec.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    match (n, errno()) {
        (n, _) if n >= 0 => Outcome::Allowed,
        // The permission check passed; only the address was bad.
        (_, libc::EFAULT) => Outcome::Allowed,
        (_, e) => Outcome::Refused(e),
    }
}

fn pidfd_open_flags(pid: u32, flags: u32) -> Result<i32, i32> {
    // SAFETY: pidfd_open(pid, flags).
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, flags) };
    if fd < 0 { Err(errno()) } else { Ok(fd as i32) }
}

/// The thread group a TID belongs to.
fn tgid_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:")?.trim().parse().ok())
}

fn getfd(pid: u32) -> Outcome {
    // A thread's descriptors are its process's: pidfd_getfd through a
    // PIDFD_THREAD pidfd fails with ENOENT on 6.19 even unprotected, so a
    // thread is attacked through its process's pidfd.
    let target = tgid_of(pid).unwrap_or(pid);
    let pidfd = match pidfd_open_flags(target, 0) {
        Ok(fd) => fd,
        Err(e) => return Outcome::Refused(e),
    };
    // SAFETY: pidfd_getfd(pidfd, targetfd 0, flags 0).
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, 0, 0u32) };
    let e = errno();
    // SAFETY: closing fds we own.
    unsafe {
        if fd >= 0 {
            libc::close(fd as i32);
        }
        libc::close(pidfd);
    }
    if fd >= 0 {
        Outcome::Allowed
    } else {
        Outcome::Refused(e)
    }
}
