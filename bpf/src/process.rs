//! What /proc says about a process we are asked to mark.

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
}

impl ProcessFacts {
    pub fn read(pid: u32) -> Result<Self, BpfError> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|_| BpfError::NoSuchProcess { pid })?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|_| BpfError::NoSuchProcess { pid })?;
        Self::parse(pid, &status, &stat).ok_or(BpfError::NoSuchProcess { pid })
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
        let flags: u64 = after.split_whitespace().nth(6)?.parse().ok()?;
        Some(ProcessFacts {
            pid,
            tgid,
            comm,
            kernel_thread: flags & PF_KTHREAD != 0,
        })
    }
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
}
