//! Host benchmark: a fork+exec storm with the exec monitor attached.
//! Reports execs made vs exec events received (goal: none lost), ring
//! buffer drops, and the CPU the event consumer spends per 1,000 execs.
//!
//!   cargo bench -p kernelseal-bpf --bench exec_storm [-- EXECS]
//!
//! Needs root and BTF; the LSM programs are not needed (tp_btf only).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kernelseal_bpf::{Event, ExecFilter, Gate, GateOptions, KernelPolicy};

fn thread_cpu() -> Duration {
    // SAFETY: rusage is plain integers, for which all-zero is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(us(ru.ru_utime) + us(ru.ru_stime))
}

fn main() {
    let execs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5000);
    // Every exec reported: the storm measures the event path itself.
    let mut policy = KernelPolicy::inert();
    policy.switches.kernel_binary_filter = false;
    let mut gate = match Gate::open(GateOptions {
        lsm: false,
        ..GateOptions::new(policy, ExecFilter::default(), None)
    }) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("exec_storm: cannot attach the exec tracepoint: {e} (needs root and BTF)");
            std::process::exit(1);
        }
    };
    let me = std::process::id();
    let done = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _in_rt = rt.enter();
    let mut stream = gate.take_events().unwrap().unwrap();
    let stop = done.clone();
    // The consumer runs on its own thread, as the agent's event loop does;
    // its CPU time is what one agent spends on exec events.
    let consumer = std::thread::spawn(move || {
        let cpu0 = thread_cpu();
        let mut seen = HashSet::new();
        rt.block_on(async {
            loop {
                let idle_deadline = tokio::time::sleep(Duration::from_millis(500));
                tokio::select! {
                    batch = stream.next_batch() => {
                        for ev in batch.unwrap() {
                            if let Event::Exec(e) = ev && e.ppid == me {
                                seen.insert(e.pid);
                            }
                        }
                    }
                    _ = idle_deadline => if stop.load(Ordering::Relaxed) { break },
                }
            }
        });
        (seen, thread_cpu() - cpu0)
    });
    let start = Instant::now();
    let mut made = 0;
    for _ in 0..execs {
        if std::process::Command::new("/bin/true").status().is_ok() {
            made += 1;
        }
    }
    let elapsed = start.elapsed();
    done.store(true, Ordering::Relaxed);
    let (seen, cpu) = consumer.join().unwrap();
    let stats = gate.stats().unwrap();
    println!(
        "exec_storm: {made} execs of /bin/true in {:.2}s ({:.0} execs/s)",
        elapsed.as_secs_f64(),
        made as f64 / elapsed.as_secs_f64()
    );
    println!(
        "exec_storm: exec events received for them: {} ({} lost)",
        seen.len(),
        made - seen.len().min(made)
    );
    println!(
        "exec_storm: ring buffer drops (all events on the host): {}",
        stats.events_dropped
    );
    println!(
        "exec_storm: consumer CPU {:.1} ms total, {:.2} ms per 1,000 execs (events of other processes included)",
        cpu.as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e3 * 1000.0 / made as f64
    );
}
