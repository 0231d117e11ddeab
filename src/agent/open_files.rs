//! The agent's open-files limit. Every connection to its socket costs
//! descriptors; at the usual soft limit of 1,024 a flood of idle
//! connections left none for the wrappers. The hard limit is the agent's to
//! take, so it takes it at start.

use tracing::{info, warn};

/// What a process gets without being told otherwise.
const USUAL_SOFT_LIMIT: u64 = 1024;

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the soft
/// limit in force. Never fails: the agent serves within whatever it has.
pub fn raise() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        let e = std::io::Error::last_os_error();
        warn!("[START] cannot read the open files limit (RLIMIT_NOFILE): {e}");
        return USUAL_SOFT_LIMIT;
    }
    let (soft, hard) = (lim.rlim_cur, lim.rlim_max);
    if soft >= hard {
        info!("[START] open files limit (RLIMIT_NOFILE): {soft}, the hard limit");
        return soft;
    }
    let raised = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads a valid rlimit; raising the soft limit up to
    // the hard one needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let e = std::io::Error::last_os_error();
        warn!(
            "[START] cannot raise the open files limit (RLIMIT_NOFILE) from {soft} to {hard}: {e}; serving within {soft}"
        );
        return soft;
    }
    info!("[START] open files limit (RLIMIT_NOFILE) raised from {soft} to {hard}");
    hard
}

#[cfg(test)]
mod tests {
    #[test]
    fn raises_to_the_hard_limit_and_says_so() {
        let soft = super::raise();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into a valid rlimit.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!((soft, lim.rlim_cur), (lim.rlim_max, lim.rlim_max));
    }
}
