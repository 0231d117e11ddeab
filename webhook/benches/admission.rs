//! Admission latency: 1,000 reviews over 32 concurrent HTTPS connections
//! to the webhook, the pod's image config cached (a container without
//! `command`, its image in a local registry looked up once), against the
//! same TLS server answering a constant `allowed: true` — the floor — in
//! the same run; then one cold lookup against the local registry.
//!
//!   cargo bench -p kernelseal-webhook --bench admission [-- REVIEWS]
//!
//! Needs Debian's docker-registry and skopeo (scripts/setup installs them).

// The tests' registry harness; the benchmark uses part of it.
#[allow(dead_code)]
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use kernelseal_webhook::server::{Webhook, serve, serve_router};
use kernelseal_webhook::tls::{CertFiles, ReloadingCert};
use kernelseal_webhook::{Patcher, Registry, RegistryConfig, Settings, Trigger, review};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::{Value, json};
use support::admission::{Sent, admission_review, annotated_pod};
use support::registry::{Layout, TestRegistry};

const CONNECTIONS: usize = 32;
/// Each side's reviews are measured in this many rounds, alternating.
const ROUNDS: usize = 4;

/// A CA, and the server's certificate files it signed for `localhost`.
fn certificate(dir: &std::path::Path) -> (String, CertFiles) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let files = CertFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    (ca.pem(), files)
}

/// Review `uid` of a pod whose one container runs its image's ENTRYPOINT.
fn review_body(image: &str, uid: usize) -> Vec<u8> {
    let containers = json!([{ "name": "web", "image": image }]);
    admission_review(
        &annotated_pod(&containers, json!({})),
        &Sent {
            uid: &format!("00000000-0000-4000-8000-{uid:012}"),
            ..Sent::default()
        },
    )
}

async fn start_server(
    app_or_webhook: Result<Router, Arc<Webhook>>,
    cert: Arc<ReloadingCert>,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    match app_or_webhook {
        Ok(app) => tokio::spawn(serve_router(listener, cert, app)),
        Err(w) => tokio::spawn(serve(listener, cert, w)),
    };
    format!("https://localhost:{port}/mutate")
}

/// [`CONNECTIONS`] clients of one server, each holding one connection
/// open between rounds, as the API server keeps its connections.
fn clients(ca: &str) -> Vec<reqwest::Client> {
    (0..CONNECTIONS)
        .map(|_| {
            reqwest::Client::builder()
                .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
                .pool_max_idle_per_host(1)
                .build()
                .unwrap()
        })
        .collect()
}

/// `reviews` reviews spread over `clients`, each client one at a time;
/// each review's time.
async fn run(clients: &[reqwest::Client], url: &str, image: &str, reviews: usize) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        let (client, url, image) = (client.clone(), url.to_string(), image.to_string());
        let mine: Vec<usize> = (0..reviews).filter(|i| i % clients.len() == c).collect();
        tasks.push(tokio::spawn(async move {
            let mut took = Vec::new();
            for i in mine {
                let body = review_body(&image, i);
                let t = Instant::now();
                let r = client.post(&url).body(body).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let v: Value = r.json().await.unwrap();
                took.push(t.elapsed());
                assert_eq!(v["response"]["allowed"], true, "{v}");
            }
            took
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// Time of one review without the server around it: decoding, deciding,
/// the (cached) lookup, the patch and the answer's bytes.
async fn review_alone(webhook: &Webhook, image: &str) -> Duration {
    const TIMES: u32 = 20_000;
    let body = review_body(image, 7);
    let t = Instant::now();
    for _ in 0..TIMES {
        let r = review(
            &body,
            Trigger::Annotation,
            &webhook.own_namespace,
            &webhook.patcher,
            webhook.images.as_ref(),
        )
        .await
        .unwrap();
        std::hint::black_box(r.into_json());
    }
    t.elapsed() / TIMES
}

/// CPU time of this whole process (server and clients) so far.
fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes into the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let reviews: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let Some(registry) = TestRegistry::start("the admission benchmark") else {
        return;
    };
    let mut layout = Layout::new("bench-app");
    layout.image(
        "amd64",
        json!({ "Entrypoint": ["/app/serve"], "Cmd": ["--port", "8080"] }),
        "application/vnd.oci.image.config.v1+json",
        Some("1.0"),
    );
    registry.push(&layout, "1.0", "app:1.0");
    let image = format!("{}/app:1.0", registry.host);
    let dir = std::env::temp_dir().join(format!("ks-webhook-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, files) = certificate(&dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cert = ReloadingCert::new(files).unwrap();
        let lookups = || {
            Registry::new(RegistryConfig {
                insecure: vec![registry.host.clone()],
                ..RegistryConfig::default()
            })
            .unwrap()
        };
        let webhook = Arc::new(Webhook::new(
            Patcher::new(Settings::default()),
            "kernelseal".into(),
            Box::new(lookups()),
            Default::default(),
        ));
        let floor_answer = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": { "uid": "00000000-0000-4000-8000-000000000000", "allowed": true }
        });
        let floor = Router::new().route(
            "/mutate",
            post(move |_body: axum::body::Bytes| {
                let answer = floor_answer.clone();
                async move { axum::Json(answer) }
            }),
        );
        let floor_url = start_server(Ok(floor), cert.clone()).await;
        let url = start_server(Err(webhook.clone()), cert.clone()).await;
        // Cold: the first review looks the image up in the registry.
        let t = Instant::now();
        run(&clients(&ca), &url, &image, 1).await;
        let cold = t.elapsed();
        // Connections opened and warm, then the measured rounds of both,
        // interleaved so that both see the machine as it is.
        let (floor_clients, webhook_clients) = (clients(&ca), clients(&ca));
        run(&floor_clients, &floor_url, &image, CONNECTIONS * 4).await;
        run(&webhook_clients, &url, &image, CONNECTIONS * 4).await;
        let (mut f, mut w) = (Vec::new(), Vec::new());
        let (mut f_cpu, mut w_cpu) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..ROUNDS {
            let t = cpu_time();
            f.extend(run(&floor_clients, &floor_url, &image, reviews / ROUNDS).await);
            f_cpu += cpu_time() - t;
            let t = cpu_time();
            w.extend(run(&webhook_clients, &url, &image, reviews / ROUNDS).await);
            w_cpu += cpu_time() - t;
        }
        f.sort();
        w.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!("admission: {reviews} reviews, {CONNECTIONS} connections, image config cached");
        for (name, v) in [("floor (constant allowed: true)", &f), ("webhook (patched)", &w)] {
            println!(
                "admission: {name:<31} p50 {:>7.3} ms  p99 {:>7.3} ms",
                ms(pct(v, 0.5)),
                ms(pct(v, 0.99))
            );
        }
        println!(
            "admission: webhook/floor p50 {:.2}x p99 {:.2}x (goal <= 1.5x)",
            pct(&w, 0.5).as_secs_f64() / pct(&f, 0.5).as_secs_f64(),
            pct(&w, 0.99).as_secs_f64() / pct(&f, 0.99).as_secs_f64()
        );
        let per = |cpu: Duration, n: usize| cpu.as_secs_f64() * 1e6 / n as f64;
        println!(
            "admission: CPU per review (clients and server together): floor {:.1} us, webhook {:.1} us",
            per(f_cpu, f.len()),
            per(w_cpu, w.len())
        );
        println!(
            "admission: cold review (image looked up in the local registry, new TLS connection) {:.1} ms",
            ms(cold)
        );        println!(
            "admission: review() alone, no HTTP: {:.1} us per review",
            review_alone(&webhook, &image).await.as_secs_f64() * 1e6
        );
    });
}
