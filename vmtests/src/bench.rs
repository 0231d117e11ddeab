//! `kernelseal-vmtests bench`: what the hooks cost, measured inside the VM
//! as ratios against a baseline taken in the same run. Rounds alternate
//! "programs detached" and "programs attached" (the real agent, started and
//! stopped with --unpin-on-exit) so drift on a noisy host hits both sides.

use std::ffi::CString;
use std::time::Instant;

use crate::agent::{Agent, Policy};

const ROUNDS: usize = 4;
const OPEN_OPS: u32 = 20_000;
const STAT_OPS: u32 = 10_000;
const EXEC_OPS: u32 = 300;

fn time_per_op(ops: u32, mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..ops {
        op();
    }
    start.elapsed().as_nanos() as f64 / ops as f64
}

fn open_close(path: &CString) {
    // SAFETY: open/close on a valid C string.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::close(fd);
        }
    }
}

fn read_stat(path: &CString, buf: &mut [u8]) {
    // SAFETY: open/read/close with a valid buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            libc::close(fd);
        }
    }
}

fn exec_true() {
    let _ = std::process::Command::new("/bin/true").status();
}

struct Sample {
    open: f64,
    stat: f64,
    exec: f64,
}

fn measure(stat_path: &CString) -> Sample {
    let file = CString::new("/tmp/kernelseal-bench-file").unwrap();
    std::fs::write("/tmp/kernelseal-bench-file", b"x").ok();
    let mut buf = [0u8; 512];
    // Warm caches before timing.
    time_per_op(1000, || open_close(&file));
    Sample {
        open: time_per_op(OPEN_OPS, || open_close(&file)),
        stat: time_per_op(STAT_OPS, || read_stat(stat_path, &mut buf)),
        exec: time_per_op(EXEC_OPS, exec_true),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

pub fn run() -> Result<(), String> {
    // An unprotected process whose /proc/P/stat is read.
    let mut idle = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .map_err(|e| e.to_string())?;
    let stat_path = CString::new(format!("/proc/{}/stat", idle.id())).unwrap();
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        off.push(measure(&stat_path));
        let agent = Agent::start(Policy::ENFORCE_ALL)?;
        on.push(measure(&stat_path));
        agent.stop()?;
        println!("bench: round {} of {ROUNDS} done", round + 1);
    }
    let _ = idle.kill();
    let _ = idle.wait();
    let report = |name: &str, unit_ops: u32, pick: fn(&Sample) -> f64| {
        let base = median(off.iter().map(pick).collect());
        let with = median(on.iter().map(pick).collect());
        println!(
            "bench: {name:<34} detached {base:>10.0} ns/op   attached {with:>10.0} ns/op   ratio {:.3} ({:+.1}%)  [{unit_ops} ops x {ROUNDS} rounds, medians]",
            with / base,
            (with / base - 1.0) * 100.0
        );
    };
    report("open()+close() regular file", OPEN_OPS, |s| s.open);
    report("read /proc/<unprotected>/stat", STAT_OPS, |s| s.stat);
    report("fork+exec /bin/true (no match)", EXEC_OPS, |s| s.exec);
    Ok(())
}
