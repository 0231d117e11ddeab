//! Dynamic secrets' load on Vault, counted by the Vault stand-in:
//!
//! 1. Upstream calls per 100 starts of one app through the wrapper and the
//!    real agent (mode disabled): a dynamic ref (`engine: dynamic`, two
//!    keys of one path) must cost exactly 100 reads and, once the apps
//!    exited, 100 revokes; the baseline, a static KV ref in the same run,
//!    1 read.
//! 2. Renewal load: 1,000 leases held at once by the agent's lease table
//!    (all issued in the same second, the worst case: a rollout), renewed
//!    at ~2/3 of a 30 s TTL: the most renewals in any 1-second window,
//!    against the 1,000 of renewing all at exactly 2/3.
//!
//!   cargo bench -p kernelseal --bench dynamic_leases [-- LEASES]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kernelseal_injector::{Holder, LeaseTable, LeaseTiming};
use kernelseal_providers::{
    HeldLease, KvEngine, SecretProvider, SecretRef, VaultAuth, VaultProvider, VaultRef,
    VaultSettings,
};
use kernelseal_testkit::Reaped;
use kernelseal_testkit::vault::{DynamicRole, Policy, VaultSpec, VaultStandin};
use serde_json::json;

const STARTS: usize = 100;
const CREDS: &str = "database/creds/app";
const RENEW_TTL: Duration = Duration::from_secs(30);

fn vault() -> (VaultStandin, String) {
    let vault = VaultStandin::start(
        VaultSpec::default()
            .dynamic(
                CREDS,
                DynamicRole {
                    ttl: RENEW_TTL,
                    max_ttl: Duration::from_secs(3600),
                },
            )
            .secret("app/static", json!({ "password": "static-value" }))
            .policy(
                "bench",
                Policy::new()
                    .path(CREDS, &["read"])
                    .path("secret/data/app/*", &["read"])
                    .path("sys/leases/revoke", &["update"]),
            ),
    );
    let token = vault.create_token(&["bench"], 0);
    (vault, token)
}

/// The agent, killed and reaped when dropped.
struct Agent {
    _child: Reaped,
    socket: PathBuf,
}

fn start_agent(d: &Path, vault: &VaultStandin, token: &str) -> Agent {
    let config = format!(
        r#"version: v1
policy: {{ mode: disabled }}
podIdentity: disabled
providers:
  vault: {{ type: vault, address: "{}" }}
secrets:
  - name: dynamic
    selector: {{ binary: "true" }}
    secretRefs:
      - {{ name: DB_USER, source: {{ vaultRef: {{ mount: database, path: creds/app, key: username, engine: dynamic }} }} }}
      - {{ name: DB_PASSWORD, source: {{ vaultRef: {{ mount: database, path: creds/app, key: password, engine: dynamic }} }} }}
  - name: static
    selector: {{ binary: env }}
    secretRefs:
      - {{ name: DB_PASSWORD, source: {{ vaultRef: {{ path: app/static, key: password }} }} }}
"#,
        vault.addr()
    );
    std::fs::write(d.join("config.yaml"), config).unwrap();
    let socket = d.join("agent.sock");
    let log = std::fs::File::create(d.join("agent.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kernelseal-core"))
        .args(["agent", "--metrics-addr", "127.0.0.1:0", "--config"])
        .arg(d.join("config.yaml"))
        .arg("--socket")
        .arg(&socket)
        .arg("--lease-dir")
        .arg(d.join("leases"))
        .env("VAULT_TOKEN", token)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !std::fs::read_to_string(d.join("agent.log"))
        .unwrap_or_default()
        .contains("agent running")
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "agent did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Agent {
        _child: Reaped(child),
        socket,
    }
}

/// `kernelseal exec -- <program>`, `STARTS` times one after another.
fn starts(socket: &Path, program: &str) {
    for i in 0..STARTS {
        let status = Command::new(env!("CARGO_BIN_EXE_kernelseal-core"))
            .args(["exec", "--timeout", "10s", "--socket"])
            .arg(socket)
            .args(["--", program])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "start {i} of {program} failed");
    }
}

fn upstream_calls_per_start(d: &Path) {
    let (vault, token) = vault();
    let agent = start_agent(d, &vault, &token);
    starts(&agent.socket, "env");
    let static_reads = vault.reads("app/static");
    starts(&agent.socket, "true");
    let counts = vault.lease_counts();
    let waited = Instant::now();
    while vault.lease_counts().revoked < STARTS && waited.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = vault.lease_counts();
    println!("upstream calls per {STARTS} starts of one app:");
    println!("  static ref (baseline): {static_reads} read(s)");
    println!(
        "  dynamic ref, 2 keys of one path: {} read(s), {} revoke(s) after the exits, {} lease(s) left live",
        counts.issued,
        after.revoked,
        vault.live_leases()
    );
    println!(
        "  ratio, reads: {:.0}x the static ref's (one per start, as intended)",
        counts.issued as f64 / static_reads.max(1) as f64
    );
    assert_eq!(static_reads, 1, "a static ref is read once for all starts");
    assert_eq!(counts.issued, STARTS, "one read per start of a dynamic ref");
    assert_eq!(after.revoked, STARTS, "one revoke per exit");
}

fn provider(vault: &VaultStandin, token_file: &Path) -> Arc<VaultProvider> {
    let settings = VaultSettings::new(vault.addr(), VaultAuth::TokenFile(token_file.to_path_buf()));
    Arc::new(VaultProvider::new("vault", settings).unwrap())
}

async fn renewal_load(d: &Path, leases: usize) {
    let (vault, token) = vault();
    std::fs::write(d.join("token"), &token).unwrap();
    let provider = provider(&vault, &d.join("token"));
    let creds = SecretRef::Vault(VaultRef {
        provider: None,
        mount: Some("database".into()),
        path: "creds/app".into(),
        key: None,
        version: None,
        engine: Some(KvEngine::Dynamic),
        ttl: None,
    });
    // One live process holds them all (each holder watches its own pidfd
    // of it); it exits at the end, which revokes every lease.
    let mut holder_process = Command::new("sleep").arg("3600").spawn().unwrap();
    let pid = holder_process.id();
    let table = LeaseTable::new(None, LeaseTiming::default());
    let issued = Instant::now();
    for i in 0..leases {
        let value = provider.fetch(&creds).await.unwrap();
        let held: HeldLease = HeldLease::of(&value).unwrap();
        table.hold(
            Holder {
                pid,
                start_time: 0,
                pidfd: kernelseal_bpf::pidfd_open(pid).unwrap(),
                binding: format!("b{i}"),
                on_rotate: None,
                leases: vec![held],
            },
            provider.clone(),
        );
    }
    let issue_time = issued.elapsed();
    // Two rounds of renewals: the first due at 2/3 of the TTL after issue.
    let watch = RENEW_TTL.mul_f64(2.0 * 0.8 + 0.2);
    let mut samples: Vec<(Duration, usize)> = Vec::new();
    let start = Instant::now();
    while start.elapsed() < watch {
        samples.push((start.elapsed(), vault.lease_counts().renewed));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let renewed = vault.lease_counts().renewed;
    let mut max_window = 0;
    for (i, (t0, n0)) in samples.iter().enumerate() {
        let end = samples[i..]
            .iter()
            .take_while(|(t, _)| *t <= *t0 + Duration::from_secs(1))
            .last()
            .map_or(*n0, |(_, n)| *n);
        max_window = max_window.max(end - n0);
    }
    let expired = vault.lease_counts().expired;
    holder_process.kill().unwrap();
    holder_process.wait().unwrap();
    let waited = Instant::now();
    while vault.live_leases() > 0 && waited.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "renewal load: {leases} leases issued in {issue_time:.1?}, TTL {RENEW_TTL:?}, watched {watch:?}:"
    );
    println!(
        "  renewals: {renewed} ({:.2} per lease), none expired: {}",
        renewed as f64 / leases as f64,
        expired == 0
    );
    println!(
        "  most renewals in any 1-second window: {max_window} (renewing all at exactly 2/3 TTL: {leases}); ratio {:.2}",
        max_window as f64 / leases as f64
    );
    println!(
        "  after the holder's exit: {} revoked, {} live",
        vault.lease_counts().revoked,
        vault.live_leases()
    );
    assert_eq!(expired, 0, "a lease ran out while its holder lived");
}

fn main() {
    let leases: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    kernelseal_providers::install_crypto_provider();
    let d = std::env::temp_dir().join(format!("ks-bench-dynamic-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    upstream_calls_per_start(&d);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(renewal_load(&d, leases));
    let _ = std::fs::remove_dir_all(&d);
}
