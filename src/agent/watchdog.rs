//! The tamper watchdog: root can rewrite the pinned maps and remove the
//! pins with plain bpf(2) calls, and in `audit` the kernel lets it. Every
//! [`CHECK_EVERY`] the agent compares the kernel state with what it wrote
//! (`Gate::check_tampering`), puts its own back, logs `[TAMPER]` and counts
//! `kernelseal_tamper_events_total{what}`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kernelseal_bpf::{CheckFailure, Finding, Gate, Tampered};
use kernelseal_injector::Metrics;
use tracing::{error, info, warn};

/// How often the kernel state is compared with the agent's: a change is
/// undone at most this long after it was made.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

pub struct Watchdog {
    metrics: Arc<Metrics>,
    /// The last error of each check that could not be made: logged once,
    /// not every second, until it changes or the check works again.
    failing: BTreeMap<Tampered, String>,
}

impl Watchdog {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Watchdog {
            metrics,
            failing: BTreeMap::new(),
        }
    }

    /// One round: compare, restore, report.
    pub fn check(&mut self, gate: &mut Gate) {
        let report = gate.check_tampering();
        for finding in &report.findings {
            log_finding(finding);
            self.metrics.tamper(finding.what, 1);
        }
        self.note_failures(&report.failures);
    }

    fn note_failures(&mut self, failures: &[CheckFailure]) {
        let mut now: BTreeMap<Tampered, String> = BTreeMap::new();
        for f in failures {
            now.entry(f.what).or_insert_with(|| f.error.to_string());
        }
        for (what, error) in &now {
            if self.failing.get(what) != Some(error) {
                warn!(
                    what = what.as_str(),
                    "[TAMPER] cannot check the {}: {error}",
                    what.as_str()
                );
            }
        }
        for what in self.failing.keys() {
            if !now.contains_key(what) {
                info!(
                    what = what.as_str(),
                    "[TAMPER] checking the {} works again",
                    what.as_str()
                );
            }
        }
        self.failing = now;
    }
}

fn log_finding(f: &Finding) {
    let what = f.what.as_str();
    match &f.restored {
        Ok(()) => warn!(
            what,
            "[TAMPER] {what} changed outside KernelSeal ({}); restored", f.detail
        ),
        Err(e) => error!(
            what,
            "[TAMPER] {what} changed outside KernelSeal ({}); restoring failed: {e}", f.detail
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernelseal_bpf::BpfError;

    fn failure(what: Tampered, map: &'static str) -> CheckFailure {
        CheckFailure {
            what,
            error: BpfError::MissingMap { map },
        }
    }

    #[test]
    fn a_failing_check_is_remembered_until_it_changes_or_works() {
        let mut w = Watchdog::new(Arc::new(Metrics::default()));
        w.note_failures(&[
            failure(Tampered::Policy, "ks_policy"),
            failure(Tampered::Policy, "other"),
        ]);
        // The first error of a kind is the one remembered (and logged).
        assert_eq!(w.failing.len(), 1);
        assert!(w.failing[&Tampered::Policy].contains("ks_policy"));
        w.note_failures(&[failure(Tampered::Pin, "ks_marks")]);
        assert_eq!(w.failing.keys().collect::<Vec<_>>(), [&Tampered::Pin]);
        w.note_failures(&[]);
        assert!(w.failing.is_empty());
    }
}
