//! `cargo bench -p kernelseal-providers`: cached fetch cost, single-flight
//! under 1,000 concurrent asks, and fetch throughput against a Vault
//! stand-in over real HTTP on 127.0.0.1. Prints figures and ratios measured
//! in this one run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use kernelseal_providers::{
    Cache, CacheOptions, KvEngine, SecretProvider, SecretRef, VaultAuth, VaultProvider, VaultRef,
    VaultSettings,
};
use serde_json::json;

const TOKEN: &str = "hvs.bench-token";

async fn read(State(hits): State<Arc<AtomicU64>>, headers: HeaderMap) -> axum::response::Response {
    hits.fetch_add(1, Ordering::Relaxed);
    if headers.get("X-Vault-Token").and_then(|v| v.to_str().ok()) != Some(TOKEN) {
        return (
            axum::http::StatusCode::FORBIDDEN,
            axum::Json(json!({"errors": ["permission denied"]})),
        )
            .into_response();
    }
    axum::Json(
        json!({"lease_id": "", "renewable": false, "lease_duration": 0,
        "data": {"data": {"api_key": "bench-secret-value"}, "metadata": {"version": 1}}}),
    )
    .into_response()
}

fn vref(path: &str) -> SecretRef {
    SecretRef::Vault(VaultRef {
        provider: None,
        mount: None,
        path: path.into(),
        key: Some("api_key".into()),
        version: None,
        engine: Some(KvEngine::V2),
        ttl: None,
    })
}

fn main() {
    kernelseal_providers::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let hits = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route("/v1/secret/data/{*path}", axum::routing::get(read))
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = std::env::temp_dir().join(format!("kernelseal-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let settings = VaultSettings {
        address: addr,
        namespace: None,
        ca_cert: None,
        tls_skip_verify: false,
        mount: "secret".into(),
        kv_version: KvEngine::V2,
        auth: VaultAuth::TokenFile(token_file),
        pod_auth: Default::default(),
        timeout: Duration::from_secs(10),
        cache_ttl: None,
    };
    let vault: Arc<dyn SecretProvider> = Arc::new(VaultProvider::new("bench", settings).unwrap());

    // 1. Uncached throughput: direct provider fetches over HTTP, 16 in flight.
    let r = vref("app");
    vault.fetch(&r).await.unwrap(); // warm the connection pool
    let n_http = 4000u64;
    let start = Instant::now();
    let per = n_http / 16;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (p, r) = (vault.clone(), r.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                p.fetch(&r).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let http_elapsed = start.elapsed();
    let http_per_s = n_http as f64 / http_elapsed.as_secs_f64();
    let http_ns = http_elapsed.as_nanos() as f64 / n_http as f64;

    // 2. Single-flight: 1,000 concurrent asks for one uncached ref.
    let cache = Cache::new(vault.clone(), CacheOptions::default());
    let cold = vref("cold");
    let before = hits.load(Ordering::Relaxed);
    let start = Instant::now();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (c, r) = (cache.clone(), cold.clone());
            tokio::spawn(async move { c.get(&r).await.map(|v| v.len()) })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    let sf_elapsed = start.elapsed();
    let upstream = hits.load(Ordering::Relaxed) - before;

    // 3. Cached fetch cost per call (warm entry), one task, then 16 tasks.
    let n_cached = 2_000_000u64;
    let start = Instant::now();
    for _ in 0..n_cached {
        std::hint::black_box(cache.get(&cold).await.unwrap());
    }
    let cached_ns = start.elapsed().as_nanos() as f64 / n_cached as f64;
    let start = Instant::now();
    let per = n_cached / 16;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (c, r) = (cache.clone(), cold.clone());
            tokio::spawn(async move {
                for _ in 0..per {
                    std::hint::black_box(c.get(&r).await.unwrap());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let cached_par_per_s = n_cached as f64 / start.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);

    println!("kernelseal-providers bench (2 worker threads, Vault stand-in on 127.0.0.1)");
    println!("  cached fetch, 1 task:            {cached_ns:>10.0} ns/call");
    println!("  cached fetch, 16 tasks:          {cached_par_per_s:>10.0} calls/s");
    println!(
        "  1,000 concurrent uncached asks:  {ok} ok, {upstream} upstream call(s), {:.1} ms total",
        sf_elapsed.as_secs_f64() * 1e3
    );
    println!(
        "  uncached HTTP fetch, 16 tasks:   {http_per_s:>10.0} fetches/s ({http_ns:.0} ns/fetch amortised)"
    );
    println!(
        "  ratio uncached/cached cost:      {:>10.0}x",
        http_ns / cached_ns
    );
    assert_eq!(
        upstream, 1,
        "single-flight must make exactly one upstream call"
    );
}
