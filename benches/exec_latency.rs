//! What the wrapper costs: `kernelseal-exec -- /bin/true` against a no-op
//! static exec shim (the floor for any wrapper) and plain `/bin/true`,
//! interleaved, with the real agent serving cached secrets on a socket.
//!
//!   cargo bench -p kernelseal --bench exec_latency [-- RUNS]
//!
//! On a host without BPF-LSM the agent runs `mode: disabled`, so the
//! protect step (one map update + one lookup) is not in these figures.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let status = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{cmd:?} failed");
    t.elapsed()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn build_shim(dir: &Path) -> PathBuf {
    let src = dir.join("shim.c");
    std::fs::write(&src, "#include <unistd.h>\nint main(int c, char **v) { if (c > 1) execv(v[1], v + 1); return 127; }\n").unwrap();
    let out = dir.join("shim");
    let ok = Command::new("cc")
        .args(["-O2", "-static", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap();
    assert!(
        ok.success(),
        "building the static shim needs cc and libc6-dev"
    );
    out
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let dir = std::env::temp_dir().join(format!("ks-exec-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shim = build_shim(&dir);
    let kernelseal = env!("CARGO_BIN_EXE_kernelseal");
    // Two agents: one whose bindings need only the request (standalone
    // hosts), one with a cgroupPath selector, which makes the agent read
    // /proc/PID/cgroup per request as it does for pod identity in Kubernetes.
    let mut agents = Vec::new();
    let mut sockets = Vec::new();
    for (name, extra) in [("plain", ""), ("cgroup", ", cgroupPath: /")] {
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            format!("version: v1\npolicy: {{ mode: disabled }}\nsecrets:\n  - name: bench\n    selector: {{ path: /bin/true{extra} }}\n    secretRefs:\n      - {{ name: BENCH_SECRET, source: {{ value: bench-secret-value }} }}\n      - {{ name: BENCH_HOME, source: {{ envRef: HOME }} }}\n"),
        )
        .unwrap();
        let socket = dir.join(format!("{name}.sock"));
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        agents.push(
            Command::new(kernelseal)
                .args(["agent", "--config"])
                .arg(&config)
                .arg("--socket")
                .arg(&socket)
                .args(["--metrics-addr", "127.0.0.1:0"])
                .env("RUST_LOG", "warn")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        sockets.push(socket);
    }
    let start = Instant::now();
    while !sockets.iter().all(|s| s.exists()) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "agent did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The shipped wrapper is the static one (cargo xtask static-exec); the
    // dynamically linked build is measured when that is absent.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let wrapper = [
        root.join("target/static/kernelseal-exec"),
        PathBuf::from(kernelseal).with_file_name("kernelseal-exec"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .expect("build the wrapper first: cargo xtask static-exec (or cargo build --release -p kernelseal-exec)");
    let wrapped = |socket: &Path| {
        let mut c = Command::new(&wrapper);
        c.arg("--socket").arg(socket).args(["--", "/bin/true"]);
        c
    };
    // Warm the caches and the page cache.
    for _ in 0..20 {
        for s in &sockets {
            run(&mut wrapped(s));
        }
    }
    let (mut plain, mut floor, mut wrap, mut wrap_cg) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        plain.push(run(&mut Command::new("/bin/true")));
        floor.push(run(Command::new(&shim).arg("/bin/true")));
        wrap.push(run(&mut wrapped(&sockets[0])));
        wrap_cg.push(run(&mut wrapped(&sockets[1])));
    }
    for mut a in agents {
        let _ = a.kill();
        let _ = a.wait();
    }
    for v in [&mut plain, &mut floor, &mut wrap, &mut wrap_cg] {
        v.sort();
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    for (name, v) in [
        ("/bin/true", &plain),
        ("static exec shim", &floor),
        ("kernelseal-exec", &wrap),
        ("  + cgroup read", &wrap_cg),
    ] {
        println!(
            "exec_latency: {name:<18} p50 {:>8.0} us   p99 {:>8.0} us   ({runs} runs, interleaved)",
            us(pct(v, 0.5)),
            us(pct(v, 0.99))
        );
    }
    println!(
        "exec_latency: kernelseal-exec p50 is {:.0} us above the shim (goal <= 300 us); {:.0} us when the agent reads the caller's cgroup (cgroupPath, pod identity)",
        us(pct(&wrap, 0.5)) - us(pct(&floor, 0.5)),
        us(pct(&wrap_cg, 0.5)) - us(pct(&floor, 0.5))
    );
    let size = std::fs::metadata(&wrapper).unwrap().len();
    println!(
        "exec_latency: measured {} ({:.2} MB)",
        wrapper.display(),
        size as f64 / 1e6
    );
}
