//! `cargo bench -p kernelseal-csi`: Mount of 10 cached Vault objects over
//! the real unix socket, p50/p99 as a ratio to a bare Version round trip on
//! the same socket in the same run, and mounts/s at 64 concurrent clients
//! (each on its own connection). Vault is a stand-in on 127.0.0.1; after
//! the first Mount every object comes from the cache.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::Uri;
use kernelseal_csi::proto::csi_driver_provider_client::CsiDriverProviderClient;
use kernelseal_csi::proto::{MountRequest, VersionRequest};
use kernelseal_csi::{LocalPolicy, Metrics, Mounter, Service, VersionKey};
use serde_json::{Value, json};
use tonic::transport::Channel;

const JWT: &str = "eyJ.bench-pod-token.sig";
const ROUNDS: usize = 2000;
const CLIENTS: usize = 64;

async fn vault(uri: Uri) -> axum::Json<Value> {
    if uri.path().ends_with("/login") {
        return axum::Json(
            json!({"auth": {"client_token": "hvs.bench", "lease_duration": 3600, "renewable": false}}),
        );
    }
    axum::Json(
        json!({"data": {"data": {"password": format!("bench-secret-{}", uri.path())},
        "metadata": {"version": 1}}, "lease_duration": 0, "lease_id": "", "renewable": false}),
    )
}

async fn connect(socket: PathBuf) -> CsiDriverProviderClient<Channel> {
    let ch = tonic::transport::Endpoint::try_from("http://[::]:50051")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let p = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await
        .expect("connect");
    CsiDriverProviderClient::new(ch)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
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
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = format!("http://{}", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, Router::new().fallback(vault)).await });

    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("kernelseal.sock");
    let listener = kernelseal_csi::bind_socket(&socket, None).expect("socket");
    let metrics = Arc::new(Metrics::default());
    let mounter = Arc::new(Mounter::new(
        kernelseal_providers::Registry::new(),
        VersionKey::from_bytes(&[1; 32]),
        LocalPolicy::default(),
    ));
    tokio::spawn(kernelseal_csi::serve(
        listener,
        Service::new(mounter, metrics.clone()),
        metrics,
        std::future::pending(),
    ));

    let objects: String = (0..10)
        .map(|i| {
            format!("- objectName: s{i}\n  vaultPath: secret/data/app/s{i}\n  vaultKey: password\n")
        })
        .collect();
    let tokens =
        json!({"vault": {"token": JWT, "expirationTimestamp": "2030-01-01T00:00:00Z"}}).to_string();
    let attributes = json!({
        "objects": objects, "vaultAddress": addr, "roleName": "app",
        "csi.storage.k8s.io/pod.name": "bench-0", "csi.storage.k8s.io/pod.namespace": "bench",
        "csi.storage.k8s.io/pod.uid": "u", "csi.storage.k8s.io/serviceAccount.name": "bench",
        "csi.storage.k8s.io/serviceAccount.tokens": tokens,
    })
    .to_string();
    let req = MountRequest {
        attributes,
        secrets: "null".into(),
        target_path: "/t".into(),
        permission: "420".into(),
        current_object_version: vec![],
    };
    let mut c = connect(socket.clone()).await;
    let warm = c
        .mount(req.clone())
        .await
        .expect("warm-up mount")
        .into_inner();
    assert_eq!(warm.files.len(), 10);
    for _ in 0..200 {
        c.version(VersionRequest {
            version: "v1alpha1".into(),
        })
        .await
        .expect("version");
        c.mount(req.clone()).await.expect("mount");
    }

    // Interleaved, so both see the same machine state.
    let (mut v, mut m) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
    for _ in 0..ROUNDS {
        let t = Instant::now();
        c.version(VersionRequest {
            version: "v1alpha1".into(),
        })
        .await
        .expect("version");
        v.push(t.elapsed());
        let t = Instant::now();
        c.mount(req.clone()).await.expect("mount");
        m.push(t.elapsed());
    }
    let (v50, v99, m50, m99) = (
        pct(&mut v, 0.5),
        pct(&mut v, 0.99),
        pct(&mut m, 0.5),
        pct(&mut m, 0.99),
    );
    println!("Version round trip:       p50 {v50:>10.1?}  p99 {v99:>10.1?}  ({ROUNDS} calls)");
    println!("Mount, 10 cached objects: p50 {m50:>10.1?}  p99 {m99:>10.1?}  ({ROUNDS} calls)");
    println!(
        "Mount / Version:          p50 {:.2}x  p99 {:.2}x  (goal: <= 2x)",
        m50.as_secs_f64() / v50.as_secs_f64(),
        m99.as_secs_f64() / v99.as_secs_f64()
    );

    let run_for = Duration::from_secs(3);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (socket, req) = (socket.clone(), req.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = connect(socket).await;
            let mut n = 0u64;
            while start.elapsed() < run_for {
                c.mount(req.clone()).await.expect("mount");
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("client");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{CLIENTS} concurrent clients:    {:.0} mounts/s ({total} mounts of 10 objects in {secs:.1}s)",
        total as f64 / secs
    );
}
