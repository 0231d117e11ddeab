//! What the wrapper costs: `kernelseal-exec -- /bin/true` and `kernelseal
//! exec -- /bin/true` (each static and dynamic, and `kernelseal-core exec`)
//! against a no-op static exec shim (the floor for any wrapper) and plain
//! `/bin/true`, interleaved, with the real agent serving cached secrets on a
//! socket. Printed as ratios to
//! the shim: absolute figures drift with the load of a shared machine.
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
    let kernelseal = env!("CARGO_BIN_EXE_kernelseal-core");
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
    // Every wrapper build found is measured in the same interleaved run:
    // the shipped static ones (cargo xtask static-exec: `kernelseal-exec`
    // and the `kernelseal` command), the dynamically linked ones (cargo
    // build --release -p kernelseal-exec), and `kernelseal-core exec`, the
    // 28 MB binary that ran `kernelseal exec` before the command was split.
    let release_dir = Path::new(kernelseal).parent().unwrap();
    let static_dirs = [
        release_dir.with_file_name("static"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/static"),
    ];
    let static_build = |name: &str| {
        static_dirs
            .iter()
            .map(|d| d.join(name))
            .find(|p| p.exists())
    };
    let release_build = |name: &str| Some(release_dir.join(name)).filter(|p| p.exists());
    let exec_arg = || PathBuf::from("exec");
    let found = [
        (
            "kernelseal-exec static",
            static_build("kernelseal-exec"),
            false,
        ),
        ("kernelseal exec static", static_build("kernelseal"), true),
        (
            "kernelseal-exec dynamic",
            release_build("kernelseal-exec"),
            false,
        ),
        ("kernelseal exec dynamic", release_build("kernelseal"), true),
    ];
    let mut wrappers: Vec<(&str, Vec<PathBuf>)> = Vec::new();
    for (name, path, subcommand) in &found {
        match path {
            Some(p) if *subcommand => wrappers.push((name, vec![p.clone(), exec_arg()])),
            Some(p) => wrappers.push((name, vec![p.clone()])),
            None => println!(
                "exec_latency: no {name} measured: build it with {}",
                if name.ends_with("static") {
                    "cargo xtask static-exec"
                } else {
                    "cargo build --release -p kernelseal-exec"
                }
            ),
        }
    }
    wrappers.push((
        "kernelseal-core exec",
        vec![PathBuf::from(kernelseal), exec_arg()],
    ));
    let wrapped = |cmd: &[PathBuf], socket: &Path| {
        let mut c = Command::new(&cmd[0]);
        c.args(&cmd[1..])
            .arg("--socket")
            .arg(socket)
            .args(["--", "/bin/true"]);
        c
    };
    // The cgroup read is the agent's cost: measured through the first
    // wrapper only.
    let first = wrappers[0].1.clone();
    // Warm the caches and the page cache.
    for _ in 0..20 {
        for (_, cmd) in &wrappers {
            run(&mut wrapped(cmd, &sockets[0]));
        }
        run(&mut wrapped(&first, &sockets[1]));
    }
    let (mut plain, mut floor, mut cgroup) = (Vec::new(), Vec::new(), Vec::new());
    let mut times: Vec<Vec<Duration>> = wrappers.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        plain.push(run(&mut Command::new("/bin/true")));
        floor.push(run(Command::new(&shim).arg("/bin/true")));
        for ((_, cmd), t) in wrappers.iter().zip(&mut times) {
            t.push(run(&mut wrapped(cmd, &sockets[0])));
        }
        cgroup.push(run(&mut wrapped(&first, &sockets[1])));
    }
    for mut a in agents {
        let _ = a.kill();
        let _ = a.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    plain.sort();
    floor.sort();
    cgroup.sort();
    for t in &mut times {
        t.sort();
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let cgroup_name = format!("{} + cgroup read", wrappers[0].0);
    let rows = [("/bin/true", &plain), ("static exec shim", &floor)]
        .into_iter()
        .chain(wrappers.iter().map(|(name, _)| *name).zip(&times))
        .chain([(cgroup_name.as_str(), &cgroup)]);
    println!(
        "exec_latency: {runs} runs, interleaved; ratios to the static exec shim of the same run"
    );
    for (name, v) in rows {
        let ratio = |p: f64| us(pct(v, p)) / us(pct(&floor, p));
        println!(
            "exec_latency: {name:<36} p50 {:>6.0} us {:>5.2}x   p90 {:>6.0} us {:>5.2}x   p99 {:>6.0} us",
            us(pct(v, 0.5)),
            ratio(0.5),
            us(pct(v, 0.9)),
            ratio(0.9),
            us(pct(v, 0.99))
        );
    }
    println!(
        "exec_latency: goals: static kernelseal-exec <= 1.15x, kernelseal exec (the static \
         command, as shipped) <= 1.3x (p50)"
    );
    for (name, cmd) in &wrappers {
        let size = std::fs::metadata(&cmd[0]).unwrap().len();
        println!(
            "exec_latency: {name}: {} ({:.2} MB)",
            cmd[0].display(),
            size as f64 / 1e6
        );
    }
}
