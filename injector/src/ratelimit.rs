//! Log-line rate limiting: a few lines per key per window, then one count
//! of what was left out, so a flood (a scanner, a connection storm) cannot
//! bury the log. The access events and the socket lines share it.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Lines per key per window before suppression starts.
pub const BURST: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(10);

/// What to do with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Log,
    Suppress,
}

struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

/// Windows per key; a key's window opens with its first line.
pub struct RateLimiter<K> {
    windows: HashMap<K, Window>,
}

impl<K> Default for RateLimiter<K> {
    fn default() -> Self {
        RateLimiter {
            windows: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// Decides for one line; the counts of windows that ended are returned
    /// first, so the log stays in order.
    pub fn admit(&mut self, key: K, now: Instant) -> (Vec<(K, u64)>, Verdict) {
        let expired = self.expire(now);
        let w = self.windows.entry(key).or_insert(Window {
            started: now,
            logged: 0,
            suppressed: 0,
        });
        let verdict = if w.logged < BURST {
            w.logged += 1;
            Verdict::Log
        } else {
            w.suppressed += 1;
            Verdict::Suppress
        };
        (expired, verdict)
    }

    /// Ends windows older than [`WINDOW`], returning each key that
    /// suppressed something with its count. Call it periodically, so a
    /// burst's count is reported even when the burst stops.
    pub fn expire(&mut self, now: Instant) -> Vec<(K, u64)> {
        let mut out = Vec::new();
        self.windows.retain(|k, w| {
            if now.duration_since(w.started) < WINDOW {
                return true;
            }
            if w.suppressed > 0 {
                out.push((k.clone(), w.suppressed));
            }
            false
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_suppresses_then_reports_the_count() {
        let mut rl = RateLimiter::default();
        let t0 = Instant::now();
        let verdicts: Vec<Verdict> = (0..12).map(|_| rl.admit("a", t0).1).collect();
        let logged = verdicts.iter().filter(|v| **v == Verdict::Log).count();
        assert_eq!(logged, BURST as usize);
        assert_eq!(rl.admit("b", t0).1, Verdict::Log, "keys are independent");
        assert!(rl.expire(t0 + WINDOW / 2).is_empty());
        assert_eq!(rl.expire(t0 + WINDOW), vec![("a", 12 - u64::from(BURST))]);
        assert_eq!(rl.admit("a", t0 + WINDOW).1, Verdict::Log, "a fresh window");
    }

    #[test]
    fn a_window_without_suppression_ends_silently() {
        let mut rl = RateLimiter::default();
        let t0 = Instant::now();
        rl.admit(1u8, t0);
        assert!(rl.expire(t0 + WINDOW).is_empty());
    }
}
