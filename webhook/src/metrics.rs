//! The webhook's metrics, in the agent's style (`kernelseal_` prefix,
//! OpenMetrics text): reviews by decision and how long each took.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    /// `patched`, `skipped`, `refused` (denied) or `error` (no answer).
    decision: String,
}

pub struct Metrics {
    registry: Registry,
    reviews: Family<DecisionLabels, Counter>,
    seconds: Histogram,
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
        Metrics {
            registry,
            reviews,
            seconds,
        }
    }
}

impl Metrics {
    pub fn observe(&self, decision: &str, took: Duration) {
        self.reviews
            .get_or_create(&DecisionLabels {
                decision: decision.to_string(),
            })
            .inc();
        self.seconds.observe(took.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
