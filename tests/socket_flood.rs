//! A flood of idle connections to the agent socket (what exhausted the
//! agent's 1,024 descriptors in a review) must not keep a wrapper of the
//! same uid from its secrets, and must not flood the log. The real agent
//! (mode disabled: no BPF-LSM on this host) and the real wrapper.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kernelseal_injector::{ConnLimits, REQUEST_TIMEOUT};
use kernelseal_testkit::{Reaped, wait_until};

const SECRET: &str = "flood-s3cret-VALUE";
/// Idle connections held at once: the review's figure.
const FLOOD: u64 = 3000;
/// The agent starts with the usual soft limit and a higher hard one, so
/// it must raise it itself.
const AGENT_SOFT_FILES: u64 = 1024;
const AGENT_HARD_FILES: u64 = 4096;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kernelseal-core")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn nofile() -> libc::rlimit {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim
}

/// This process's soft RLIMIT_NOFILE raised to its hard limit; returns it.
fn raise_own_nofile() -> u64 {
    let lim = nofile();
    let raised = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads a valid rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) };
    nofile().rlim_cur
}

/// The real agent (mode disabled, one binding for `sh`) started with the
/// open-files limits `soft`/`hard`; returns once it runs.
fn start_agent(d: &Path, soft: u64, hard: u64) -> (Reaped, PathBuf, PathBuf) {
    let config = d.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "version: v1\npolicy: {{ mode: disabled }}\nsecrets:\n  - name: shell\n    selector: {{ binary: sh }}\n    secretRefs:\n      - {{ name: MY_SECRET, source: {{ value: {SECRET} }} }}\n"
        ),
    )
    .unwrap();
    let socket = d.join("agent.sock");
    let log = d.join("agent.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["agent", "--config"])
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit is async-signal-safe; lowering needs no privilege.
    unsafe {
        cmd.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &lim) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
    let child = Reaped(cmd.spawn().unwrap());
    wait_until(
        20,
        || read(&log).contains("agent running"),
        || format!("agent did not start: {}", read(&log)),
    );
    (child, socket, log)
}

/// Opens idle connections (they never send a byte) until `stop`, holding
/// the newest `hold` of them; returns those held. Stops early if the
/// agent goes away (a failing test kills it).
fn flood(socket: PathBuf, hold: usize, stop: Arc<AtomicBool>) -> VecDeque<UnixStream> {
    let mut held = VecDeque::with_capacity(hold + 1);
    while !stop.load(Ordering::Relaxed) {
        let Ok(s) = UnixStream::connect(&socket) else {
            break;
        };
        held.push_back(s);
        if held.len() > hold {
            held.pop_front();
        }
    }
    held
}

fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

fn socket_lines(log: &str) -> usize {
    log.lines().filter(|l| l.contains("[SOCKET] ")).count()
}

/// `kernelseal_socket_connections_refused_total{reason="…"}` from the
/// agent's metrics endpoint.
fn refused_total(log: &str, reason: &str) -> f64 {
    let addr = log
        .lines()
        .find_map(|l| l.split("[OK] metrics on http://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .expect("metrics address logged");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut s, b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let series = format!("kernelseal_socket_connections_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
}

/// Each of `conns` reads EOF (the agent closed it) before `deadline`.
fn assert_all_closed(conns: VecDeque<UnixStream>, deadline: Instant) {
    for (i, mut s) in conns.into_iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut byte = [0u8; 1];
        match s.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("idle connection {i} not closed by the agent: {other:?}"),
        }
    }
}

#[test]
fn a_flood_of_idle_connections_does_not_lock_out_the_wrapper() {
    let own = raise_own_nofile();
    let per_uid = ConnLimits::PER_UID as u64;
    // Room for the flood and the test's own files; well above the agent's
    // per-uid bound, or the test proves nothing.
    let count = FLOOD.min(own.saturating_sub(256));
    if count < 8 * per_uid {
        eprintln!("SKIP: RLIMIT_NOFILE hard limit {own} leaves too few descriptors for a flood");
        return;
    }
    let d = std::env::temp_dir().join(format!("ks-flood-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let hard = AGENT_HARD_FILES.min(nofile().rlim_max);
    let (agent, socket, log) = start_agent(&d, AGENT_SOFT_FILES.min(hard), hard);
    if hard > AGENT_SOFT_FILES {
        let raised = format!("RLIMIT_NOFILE) raised from {AGENT_SOFT_FILES} to {hard}");
        assert!(read(&log).contains(&raised), "{}", read(&log));
    }

    // The flood: `count` idle connections at once, then more for as long
    // as the wrapper runs, always holding the newest `count`.
    let stop = Arc::new(AtomicBool::new(false));
    let mut held = VecDeque::new();
    for _ in 0..count {
        held.push_back(UnixStream::connect(&socket).unwrap());
    }
    let flooder = {
        let (socket, stop) = (socket.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut more = flood(socket, count as usize, stop);
            held.append(&mut more);
            held
        })
    };
    wait_until(
        20,
        || {
            let text = read(&log);
            text.contains("[SOCKET] closed an idle connection of uid")
                || text.contains("[SOCKET] refused a connection from uid")
        },
        || format!("the flood never reached the per-uid bound: {}", read(&log)),
    );
    if let Some(fds) = open_fds(agent.0.id()) {
        assert!(
            fds < 400,
            "the agent holds {fds} descriptors under a flood of {count} connections"
        );
    }

    let out = Command::new(bin())
        .arg("exec")
        .arg("--socket")
        .arg(&socket)
        .args(["--", "sh", "-c", "echo \"$MY_SECRET\""])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    // Served during the flood, not after it: no idle connection has
    // reached its deadline yet (a flood that is refused, not evicted,
    // keeps every place taken until then).
    let during = read(&log);
    stop.store(true, Ordering::Relaxed);
    let held = flooder.join().unwrap();
    assert!(
        out.status.success(),
        "the wrapper failed during the flood ({:?}): {}\nagent: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        read(&log)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), SECRET);
    assert!(
        !during.contains("sent no request within"),
        "served only once idle connections timed out: {during}"
    );

    // Every idle connection is closed by the agent: evicted at once, or
    // the newest at the request deadline (generous slack for a busy host).
    assert_all_closed(
        held,
        Instant::now() + REQUEST_TIMEOUT + Duration::from_secs(15),
    );

    // A few lines per kind, then a count at the end of the window.
    wait_until(
        40,
        || read(&log).contains("[SOCKET SUPPRESSED] "),
        || format!("no suppression summary: {}", read(&log)),
    );
    let text = read(&log);
    assert!(
        socket_lines(&text) < 20,
        "{} [SOCKET] lines for a flood of {count}+ connections:\n{text}",
        socket_lines(&text)
    );
    assert!(
        text.contains("more evicted line(s) in the last 10s"),
        "{text}"
    );
    assert!(!text.contains(SECRET), "value in the agent log: {text}");
    assert!(refused_total(&text, "evicted") >= (count - per_uid) as f64);
    assert!(refused_total(&text, "request-timeout") >= 1.0);
    drop(agent);
    let _ = std::fs::remove_dir_all(&d);
}
