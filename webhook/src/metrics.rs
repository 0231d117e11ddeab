//! The webhook's metrics, in the agent's style (`kernelseal_` prefix,
//! OpenMetrics text): reviews by decision and how long each took; image
//! lookups by outcome and the registry reads they made (the difference
//! is what the cache answered).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    /// `patched`, `skipped`, `refused` (denied) or `error` (no answer).
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    /// `found` or `failed`.
    outcome: &'static str,
}

/// Counts of image lookups, shared with the [`crate::Registry`] that
/// makes them ([`crate::Registry::counting`]).
#[derive(Clone, Default)]
pub struct LookupCounts {
    lookups: Family<OutcomeLabels, Counter>,
    reads: Counter,
}

impl LookupCounts {
    /// A lookup answered (`found`) or refused (`failed`).
    pub fn answered(&self, found: bool) {
        let outcome = if found { "found" } else { "failed" };
        self.lookups.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// A read from a registry (manifest, then config), made by a lookup
    /// the cache could not answer.
    pub fn read(&self) {
        self.reads.inc();
    }
}

pub struct Metrics {
    registry: Registry,
    reviews: Family<DecisionLabels, Counter>,
    seconds: Histogram,
    lookups: LookupCounts,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reviews = Family::<DecisionLabels, Counter>::default();
        // 50 µs … about 1.6 s.
        let seconds = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        registry.register(
            "kernelseal_webhook_reviews",
            "Admission reviews answered, by decision",
            reviews.clone(),
        );
        registry.register(
            "kernelseal_webhook_review_seconds",
            "Time from a review's arrival to its answer",
            seconds.clone(),
        );
        let lookups = LookupCounts::default();
        registry.register(
            "kernelseal_webhook_image_lookups",
            "Image ENTRYPOINT/CMD lookups, by outcome",
            lookups.lookups.clone(),
        );
        registry.register(
            "kernelseal_webhook_registry_reads",
            "Reads of an image's manifest and config from its registry",
            lookups.reads.clone(),
        );
        Metrics {
            registry,
            reviews,
            seconds,
            lookups,
        }
    }
}

impl Metrics {
    pub fn observe(&self, decision: &'static str, took: Duration) {
        self.reviews
            .get_or_create(&DecisionLabels { decision })
            .inc();
        self.seconds.observe(took.as_secs_f64());
    }

    /// The lookup counts to give the image lookups.
    pub fn lookup_counts(&self) -> LookupCounts {
        self.lookups.clone()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
