//! `identity: pod` under a burst: 200 wrapper starts at once from 20 pods
//! with 20 service accounts (10 starts each), every pod reading the same
//! two Vault secrets as itself, against the real agent (mode disabled:
//! no BPF-LSM needed), a stand-in Kubernetes API and a stand-in Vault
//! that counts what reaches it. Cold, then warm; the baseline is the same
//! burst with `identity: agent` (one agent token), in the same run.
//!
//!   cargo bench -p kernelseal --bench pod_identity_burst
//!
//! Needs root (the callers are put into kubelet-shaped cgroups v2).

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kernelseal_testkit::Reaped;
use kernelseal_testkit::kube_api::{AGENT_TOKEN, KubeApi, pod};
use kernelseal_testkit::sa_token::{CLUSTER_KEY, TokenSpec, mint};
use kernelseal_testkit::vault::{Policy, Role, VaultSpec, VaultStandin};
use serde_json::json;

const PODS: usize = 20;
const STARTS_PER_POD: usize = 10;
const NODE: &str = "bench-node";
const SECRETS: [&str; 2] = ["bench/db", "bench/api"];

fn pod_uid(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

fn container_id(i: usize) -> String {
    format!("{i:064x}")
}

fn service_account(i: usize) -> String {
    format!("sa-{i:02}")
}

fn container_cgroup(i: usize) -> PathBuf {
    kernelseal_testkit::cgroup::container_cgroup(&pod_uid(i), &container_id(i))
}

fn vault() -> VaultStandin {
    let mut spec = VaultSpec::default().policy(
        "bench-read",
        Policy::new().path("secret/data/bench/*", &["read"]),
    );
    for i in 0..PODS {
        let sa = service_account(i);
        spec = spec.role(
            &sa,
            Role::new(&[&sa], &["bench"], &["bench-read"]).audience("vault"),
        );
    }
    for s in SECRETS {
        spec = spec.secret(s, json!({ "value": format!("{s}-value") }));
    }
    VaultStandin::start(spec)
}

fn node(rt: &tokio::runtime::Runtime) -> KubeApi {
    let api = rt.block_on(KubeApi::start());
    api.pods(|p| {
        for i in 0..PODS {
            let mut pod = pod("bench", &format!("app-{i}"), &pod_uid(i), NODE, &["app"]);
            pod["spec"]["serviceAccountName"] = json!(service_account(i));
            p.add(pod);
            p.start_container(&pod_uid(i), "app", &container_id(i));
        }
    });
    api
}

/// The agent, killed and reaped when dropped.
struct Agent {
    child: Reaped,
    socket: PathBuf,
}

fn start_agent(dir: &Path, api: &KubeApi, vault: &VaultStandin, identity: &str) -> Agent {
    let refs: String = SECRETS
        .iter()
        .enumerate()
        .map(|(n, s)| {
            format!(
                "      - {{ name: S{n}, source: {{ vaultRef: {{ path: {s}, key: value }} }} }}\n"
            )
        })
        .collect();
    let config = dir.join(format!("{identity}.yaml"));
    std::fs::write(
        &config,
        format!(
            "version: v1\npolicy: {{ mode: disabled }}\npodIdentity: required\nproviders:\n  vault: {{ type: vault, address: \"{}\" }}\nsecrets:\n  - name: bench\n    selector: {{ namespace: bench }}\n    identity: {identity}\n    secretRefs:\n{refs}",
            vault.addr()
        ),
    )
    .unwrap();
    let socket = dir.join(format!("{identity}.sock"));
    let log = std::fs::File::create(dir.join(format!("{identity}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kernelseal-core"))
        .args(["agent", "--config"])
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", api.kubeconfig(dir, AGENT_TOKEN))
        .env("NODE_NAME", NODE)
        .env("VAULT_TOKEN", vault.create_token(&["bench-read"], 0))
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !socket.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "agent did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Agent {
        child: Reaped(child),
        socket,
    }
}

/// The agent's CPU time so far, all threads, in nanoseconds as the
/// scheduler counts it (/proc/PID/task/*/schedstat: clock ticks are too
/// coarse for a few hundred deliveries).
fn cpu_of(pid: u32) -> Duration {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let stat = std::fs::read_to_string(task.unwrap().path().join("schedstat"));
        total += stat
            .ok()
            .and_then(|s| s.split(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Duration::from_nanos(total)
}

/// One wrapper start inside a pod's container cgroup (`procs`).
fn start_in_pod(socket: &Path, token: &Path, procs: &std::fs::File) -> Child {
    let fd = procs.as_raw_fd();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kernelseal-core"));
    cmd.arg("exec")
        .arg("--socket")
        .arg(socket)
        .arg("--token-file")
        .arg(token)
        .args(["--timeout", "60s", "--", "/bin/true"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec the child only calls write(2) on a
    // descriptor opened before the fork, with a static buffer.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd.spawn().unwrap()
}

struct Burst {
    latencies: Vec<Duration>,
    agent_cpu: Duration,
}

/// 200 starts at once; each one's time from its spawn to its exit, taken
/// by a thread of its own as soon as it exits.
fn burst(agent: &Agent, tokens: &[PathBuf], procs: &[std::fs::File]) -> Burst {
    let cpu_before = cpu_of(agent.child.0.id());
    let mut waiters = Vec::new();
    for _ in 0..STARTS_PER_POD {
        for (token, procs) in tokens.iter().zip(procs) {
            let t = Instant::now();
            let child = start_in_pod(&agent.socket, token, procs);
            waiters.push(std::thread::spawn(move || {
                let out = child.wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "a start failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                t.elapsed()
            }));
        }
    }
    let mut latencies: Vec<Duration> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
    latencies.sort();
    Burst {
        latencies,
        agent_cpu: cpu_of(agent.child.0.id()) - cpu_before,
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, b: &Burst, vault: &VaultStandin, before: (usize, [usize; 2])) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let n = b.latencies.len();
    println!(
        "pod_identity_burst: {name:<22} logins {:>3}  reads {} = {:>3}, {} = {:>3}   p50 {:>6.1} ms  p99 {:>6.1} ms   agent CPU {:>5.0} us/delivery",
        vault.logins() - before.0,
        SECRETS[0],
        vault.reads(SECRETS[0]) - before.1[0],
        SECRETS[1],
        vault.reads(SECRETS[1]) - before.1[1],
        ms(pct(&b.latencies, 0.5)),
        ms(pct(&b.latencies, 0.99)),
        b.agent_cpu.as_secs_f64() * 1e6 / n as f64,
    );
}

fn counts(vault: &VaultStandin) -> (usize, [usize; 2]) {
    (
        vault.logins(),
        [vault.reads(SECRETS[0]), vault.reads(SECRETS[1])],
    )
}

fn main() {
    let dir = std::env::temp_dir().join(format!("ks-podid-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = node(&rt);
    let vault = vault();
    let mut tokens = Vec::new();
    let mut procs = Vec::new();
    for i in 0..PODS {
        let spec = TokenSpec::new(
            "bench",
            &service_account(i),
            &format!("app-{i}"),
            &pod_uid(i),
        );
        let path = dir.join(format!("token-{i}"));
        std::fs::write(&path, mint(&spec, CLUSTER_KEY)).unwrap();
        tokens.push(path);
        let cg = container_cgroup(i);
        std::fs::create_dir_all(&cg).expect("create a kubelet-shaped cgroup (run as root)");
        procs.push(
            std::fs::OpenOptions::new()
                .write(true)
                .open(cg.join("cgroup.procs"))
                .unwrap(),
        );
    }
    println!(
        "pod_identity_burst: {} starts at once, {PODS} pods x {STARTS_PER_POD}, each reading {} Vault secrets",
        PODS * STARTS_PER_POD,
        SECRETS.len()
    );
    let mut results = Vec::new();
    for identity in ["agent", "pod"] {
        let agent = start_agent(&dir, &api, &vault, identity);
        let before = counts(&vault);
        let cold = burst(&agent, &tokens, &procs);
        report(
            &format!("identity: {identity}, cold"),
            &cold,
            &vault,
            before,
        );
        let before = counts(&vault);
        let warm = burst(&agent, &tokens, &procs);
        report(
            &format!("identity: {identity}, warm"),
            &warm,
            &vault,
            before,
        );
        results.push((cold, warm));
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let (agent, pod) = (&results[0], &results[1]);
    println!(
        "pod_identity_burst: pod/agent p50 cold {:.2}x warm {:.2}x; p99 cold {:.2}x warm {:.2}x; agent CPU cold {:.2}x warm {:.2}x",
        ratio(pct(&pod.0.latencies, 0.5), pct(&agent.0.latencies, 0.5)),
        ratio(pct(&pod.1.latencies, 0.5), pct(&agent.1.latencies, 0.5)),
        ratio(pct(&pod.0.latencies, 0.99), pct(&agent.0.latencies, 0.99)),
        ratio(pct(&pod.1.latencies, 0.99), pct(&agent.1.latencies, 0.99)),
        ratio(pod.0.agent_cpu, agent.0.agent_cpu),
        ratio(pod.1.agent_cpu, agent.1.agent_cpu),
    );
    drop(procs);
    for i in 0..PODS {
        for d in container_cgroup(i).ancestors().take(2) {
            let _ = std::fs::remove_dir(d);
        }
    }
    for d in container_cgroup(0).ancestors().skip(2).take(2) {
        let _ = std::fs::remove_dir(d);
    }
}
