//! Prometheus metrics (the original KernelSeal's names, plus delivery and
//! provider figures) and the small HTTP endpoint that serves them with
//! `/healthz` and `/ready`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccessLabels {
    pub kind: String,
    pub mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
}

/// Why a connection to the agent socket was closed unserved.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SocketLabels {
    pub reason: String,
}

/// What the tamper watchdog found changed (`kernelseal_bpf::Tampered`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TamperLabels {
    pub what: String,
}

pub struct Metrics {
    registry: Registry,
    pub exec_events: Counter,
    pub secrets_injected: Counter,
    pub secrets_denied: Counter,
    pub access_blocked: Family<AccessLabels, Counter>,
    pub access_audit: Family<AccessLabels, Counter>,
    pub protected_processes: Gauge,
    pub lsm_loaded: Gauge,
    pub fetch_seconds: Family<ProviderLabels, Histogram>,
    pub fetch_errors: Family<ProviderLabels, Counter>,
    pub socket_refused: Family<SocketLabels, Counter>,
    pub tamper_events: Family<TamperLabels, Counter>,
    /// `/ready` answers 503 while this is false.
    pub ready: AtomicBool,
}

fn fetch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            exec_events: Counter::default(),
            secrets_injected: Counter::default(),
            secrets_denied: Counter::default(),
            access_blocked: Family::default(),
            access_audit: Family::default(),
            protected_processes: Gauge::default(),
            lsm_loaded: Gauge::default(),
            fetch_seconds: Family::new_with_constructor(fetch_histogram),
            fetch_errors: Family::default(),
            socket_refused: Family::default(),
            tamper_events: Family::default(),
            ready: AtomicBool::new(false),
            registry: Registry::default(),
        };
        // prometheus-client appends `_total` to counters.
        registry.register(
            "kernelseal_exec_events",
            "Exec events processed",
            m.exec_events.clone(),
        );
        registry.register(
            "kernelseal_secrets_injected",
            "Secrets delivered to processes",
            m.secrets_injected.clone(),
        );
        registry.register(
            "kernelseal_secrets_denied",
            "Deliveries refused",
            m.secrets_denied.clone(),
        );
        registry.register(
            "kernelseal_access_blocked",
            "Refused accesses to protected processes",
            m.access_blocked.clone(),
        );
        registry.register(
            "kernelseal_access_audit",
            "Audited (allowed) accesses to protected processes",
            m.access_audit.clone(),
        );
        registry.register(
            "kernelseal_protected_processes",
            "Processes marked protected (at the last scrape)",
            m.protected_processes.clone(),
        );
        registry.register(
            "kernelseal_lsm_loaded",
            "1 when the BPF-LSM programs are attached",
            m.lsm_loaded.clone(),
        );
        registry.register(
            "kernelseal_provider_fetch_seconds",
            "Secret fetch duration by provider",
            m.fetch_seconds.clone(),
        );
        registry.register(
            "kernelseal_provider_fetch_errors",
            "Secret fetch errors by provider",
            m.fetch_errors.clone(),
        );
        registry.register(
            "kernelseal_socket_connections_refused",
            "Agent socket connections closed unserved (limits, idle, timeouts) and failed accepts",
            m.socket_refused.clone(),
        );
        // Every reason from the start: an alert on increase() misses the
        // first refusal of a series that appears with it.
        for ev in crate::socket_log::Event::COUNTED {
            m.socket_refused(ev.as_str(), 0);
        }
        registry.register(
            "kernelseal_tamper_events",
            "Changes to the kernel state (policy, marks, pins, exec filter) made outside KernelSeal, each undone",
            m.tamper_events.clone(),
        );
        for what in kernelseal_bpf::Tampered::ALL {
            m.tamper(what, 0);
        }
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Counts `n` connections closed unserved for `reason`.
    pub fn socket_refused(&self, reason: &str, n: u64) {
        let l = SocketLabels {
            reason: reason.to_string(),
        };
        self.socket_refused.get_or_create(&l).inc_by(n);
    }

    /// Counts `n` changes to `what` made outside KernelSeal.
    pub fn tamper(&self, what: kernelseal_bpf::Tampered, n: u64) {
        let l = TamperLabels {
            what: what.as_str().to_string(),
        };
        self.tamper_events.get_or_create(&l).inc_by(n);
    }

    pub fn observe_fetch(&self, provider: &str, took: Duration, ok: bool) {
        let l = ProviderLabels {
            provider: provider.to_string(),
        };
        self.fetch_seconds
            .get_or_create(&l)
            .observe(took.as_secs_f64());
        if !ok {
            self.fetch_errors.get_or_create(&l).inc();
        }
    }
}

/// Reads a request head up to its blank line: a client may send it in
/// several writes, and answering after the first would cut it off.
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 || head.len() + n > 8192 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Some(head)
}

/// Serves `/metrics`, `/healthz` and `/ready` over plain HTTP/1.1. `refresh`
/// runs before each scrape (gauges computed on demand).
pub async fn serve_http(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    refresh: Arc<dyn Fn(&Metrics) + Send + Sync>,
) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let metrics = metrics.clone();
        let refresh = refresh.clone();
        tokio::spawn(async move {
            let Ok(Some(head)) =
                tokio::time::timeout(Duration::from_secs(5), read_head(&mut stream)).await
            else {
                return;
            };
            let request = String::from_utf8_lossy(&head);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match path {
                "/metrics" => {
                    refresh(&metrics);
                    ("200 OK", metrics.render())
                }
                "/healthz" => ("200 OK", "ok\n".to_string()),
                "/ready" if metrics.ready.load(Ordering::Relaxed) => {
                    ("200 OK", "ready\n".to_string())
                }
                "/ready" => (
                    "503 Service Unavailable",
                    "not ready: enforcement requested but not in place\n".to_string(),
                ),
                _ => ("404 Not Found", "not found\n".to_string()),
            };
            let content_type = if path == "/metrics" {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            } else {
                "text/plain"
            };
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_original_names() {
        let m = Metrics::default();
        m.exec_events.inc();
        m.secrets_injected.inc_by(2);
        m.access_blocked
            .get_or_create(&AccessLabels {
                kind: "environ".into(),
                mode: "enforce".into(),
            })
            .inc();
        m.observe_fetch("vault-prod", Duration::from_millis(3), false);
        m.tamper(kernelseal_bpf::Tampered::Policy, 1);
        let text = m.render();
        for name in [
            "kernelseal_exec_events_total 1",
            "kernelseal_secrets_injected_total 2",
            "kernelseal_access_blocked_total{kind=\"environ\",mode=\"enforce\"} 1",
            "kernelseal_provider_fetch_errors_total{provider=\"vault-prod\"} 1",
            "kernelseal_lsm_loaded 0",
            "kernelseal_socket_connections_refused_total{reason=\"evicted\"} 0",
            "kernelseal_tamper_events_total{what=\"exec-filter\"} 0",
            "kernelseal_tamper_events_total{what=\"policy\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
    }
}
