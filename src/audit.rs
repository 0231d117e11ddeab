//! The audit trail: one structured line per refusal or audit event, with a
//! per-(accessor, target, kind) rate limit so a scanner cannot flood the log.

use std::time::Instant;

use kernelseal_bpf::{AccessEvent, AccessKind};
use kernelseal_injector::ratelimit;

pub use ratelimit::{Verdict, WINDOW};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    accessor: u32,
    target: u32,
    kind: AccessKind,
}

/// A summary of suppressed events for one key, due at the end of its window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppressed {
    pub accessor_pid: u32,
    pub target_pid: u32,
    pub kind: AccessKind,
    pub count: u64,
}

impl Suppressed {
    fn of((k, count): (Key, u64)) -> Self {
        Suppressed {
            accessor_pid: k.accessor,
            target_pid: k.target,
            kind: k.kind,
            count,
        }
    }
}

/// The shared log-line limiter, keyed by (accessor, target, kind).
#[derive(Default)]
pub struct RateLimiter {
    inner: ratelimit::RateLimiter<Key>,
}

impl RateLimiter {
    /// Decides for one event; summaries of windows that ended are returned
    /// first so the log stays in order.
    pub fn admit(&mut self, ev: &AccessEvent, now: Instant) -> (Vec<Suppressed>, Verdict) {
        let key = Key {
            accessor: ev.accessor_pid,
            target: ev.target_pid,
            kind: ev.kind,
        };
        let (expired, verdict) = self.inner.admit(key, now);
        (expired.into_iter().map(Suppressed::of).collect(), verdict)
    }

    /// Ends windows older than [`WINDOW`], returning those that suppressed
    /// something. Call periodically so a burst's count is reported even if
    /// the scanner stops.
    pub fn expire(&mut self, now: Instant) -> Vec<Suppressed> {
        let expired = self.inner.expire(now);
        expired.into_iter().map(Suppressed::of).collect()
    }
}

/// The accessor's executable, read at event time (the process may be gone
/// or have exec'd since: then "?").
pub fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "?".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernelseal_bpf::Decision;
    use kernelseal_injector::ratelimit::BURST;
    use std::time::Duration;

    fn ev(accessor: u32, target: u32, kind: AccessKind) -> AccessEvent {
        AccessEvent {
            kind,
            decision: Decision::Denied,
            ptrace_mode: 0,
            accessor_pid: accessor,
            accessor_tid: accessor,
            accessor_uid: 0,
            accessor_comm: "cat".into(),
            target_pid: target,
            target_tid: target,
            target_comm: "sleep".into(),
            binding_id: 1,
            timestamp_ns: 0,
        }
    }

    #[test]
    fn bursts_then_suppresses_then_reports_the_count() {
        let mut rl = RateLimiter::default();
        let t0 = Instant::now();
        let e = ev(10, 20, AccessKind::Environ);
        let verdicts: Vec<Verdict> = (0..12).map(|_| rl.admit(&e, t0).1).collect();
        assert_eq!(
            verdicts.iter().filter(|v| **v == Verdict::Log).count(),
            BURST as usize
        );
        assert_eq!(
            verdicts.iter().filter(|v| **v == Verdict::Suppress).count(),
            12 - BURST as usize
        );
        // Another key is not affected.
        assert_eq!(rl.admit(&ev(10, 20, AccessKind::Mem), t0).1, Verdict::Log);
        assert_eq!(
            rl.admit(&ev(11, 20, AccessKind::Environ), t0).1,
            Verdict::Log
        );
        // Nothing expires inside the window.
        assert!(rl.expire(t0 + WINDOW / 2).is_empty());
        let summary = rl.expire(t0 + WINDOW);
        assert_eq!(
            summary,
            vec![Suppressed {
                accessor_pid: 10,
                target_pid: 20,
                kind: AccessKind::Environ,
                count: 12 - BURST as u64
            }]
        );
        // A fresh window logs again.
        assert_eq!(rl.admit(&e, t0 + WINDOW).1, Verdict::Log);
    }

    #[test]
    fn expiry_is_reported_before_the_next_event() {
        let mut rl = RateLimiter::default();
        let t0 = Instant::now();
        let e = ev(1, 2, AccessKind::Ptrace);
        for _ in 0..(BURST + 3) {
            rl.admit(&e, t0);
        }
        let (summaries, verdict) = rl.admit(&e, t0 + WINDOW + Duration::from_secs(1));
        assert_eq!(summaries.len(), 1);
        assert_eq!(summaries[0].count, 3);
        assert_eq!(verdict, Verdict::Log);
    }

    #[test]
    fn exe_of_self_and_of_a_missing_process() {
        assert!(exe_of(std::process::id()).contains("kernelseal"));
        assert_eq!(exe_of(u32::MAX - 2), "?");
    }
}
