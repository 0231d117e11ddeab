//! The socket's own log lines, rate-limited per kind like the access
//! events: a connection storm gets a few lines and a count, not a line per
//! connection (5,300 of them in a review, each an accept failure). Every
//! connection closed unserved is also counted in
//! `kernelseal_socket_connections_refused_total{reason}`.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tracing::warn;

use crate::Metrics;
use crate::ratelimit::{RateLimiter, Verdict, WINDOW};

/// What happened on the socket; each kind is one rate-limit key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Event {
    /// Refused: the peer's uid has its limit of connections, all being served.
    UidLimit,
    /// Refused: the agent has its limit of connections, all being served.
    AgentLimit,
    /// A connection that had sent no request closed to make room.
    Evicted,
    RequestTimeout,
    ReplyTimeout,
    /// accept() failed (out of descriptors, say): the peer waits in the backlog.
    AcceptFailed,
    /// A bad request, a peer that cannot be identified, a failed reply:
    /// logged, not counted as a refusal.
    RequestFailed,
}

impl Event {
    /// The kinds with a `reason` label.
    pub(crate) const COUNTED: [Event; 6] = [
        Event::UidLimit,
        Event::AgentLimit,
        Event::Evicted,
        Event::RequestTimeout,
        Event::ReplyTimeout,
        Event::AcceptFailed,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Event::UidLimit => "uid-limit",
            Event::AgentLimit => "agent-limit",
            Event::Evicted => "evicted",
            Event::RequestTimeout => "request-timeout",
            Event::ReplyTimeout => "reply-timeout",
            Event::AcceptFailed => "accept-failed",
            Event::RequestFailed => "request-failed",
        }
    }
}

/// Counts socket events and logs the first few of each kind per window.
pub(crate) struct SocketLog {
    limiter: Mutex<RateLimiter<Event>>,
    metrics: Arc<Metrics>,
}

impl SocketLog {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        SocketLog {
            limiter: Mutex::new(RateLimiter::default()),
            metrics,
        }
    }

    /// Counts `ev` and logs `line` unless its kind is over its burst.
    pub(crate) fn record(&self, ev: Event, line: fmt::Arguments<'_>) {
        if Event::COUNTED.contains(&ev) {
            self.metrics.socket_refused(ev.as_str(), 1);
        }
        let (expired, verdict) = self.limiter().admit(ev, Instant::now());
        expired.into_iter().for_each(log_suppressed);
        if verdict == Verdict::Log {
            warn!(kind = ev.as_str(), "{line}");
        }
    }

    /// Reports the counts of windows that ended; called on a timer, so a
    /// storm's count is logged even once it stops.
    pub(crate) fn flush(&self) {
        let expired = self.limiter().expire(Instant::now());
        expired.into_iter().for_each(log_suppressed);
    }

    /// A panic elsewhere while holding the lock leaves counts, not broken
    /// invariants: keep using them.
    fn limiter(&self) -> MutexGuard<'_, RateLimiter<Event>> {
        self.limiter.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn log_suppressed((ev, count): (Event, u64)) {
    warn!(
        kind = ev.as_str(),
        suppressed = count,
        "[SOCKET SUPPRESSED] {count} more {} line(s) in the last {}s",
        ev.as_str(),
        WINDOW.as_secs()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_refusal_and_not_other_failures() {
        let metrics = Arc::new(Metrics::default());
        let log = SocketLog::new(metrics.clone());
        for _ in 0..20 {
            log.record(Event::Evicted, format_args!("[SOCKET] test line"));
        }
        log.record(Event::RequestFailed, format_args!("[SOCKET] test line"));
        let text = metrics.render();
        assert!(
            text.contains("kernelseal_socket_connections_refused_total{reason=\"evicted\"} 20"),
            "{text}"
        );
        assert!(!text.contains("request-failed"), "{text}");
    }
}
