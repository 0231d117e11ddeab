//! `kernelseal-vmtests bench [--icount|--wall]`: what the hooks cost,
//! measured inside the VM against a baseline taken in the same run. Each
//! round measures three states in turn, so drift on a noisy host hits all
//! of them: programs detached; the floor, the same hooks with programs that
//! do nothing (floor.rs), which is what any BPF-LSM program on them costs
//! (static call, trampoline, __bpf_prog_enter/exit); and attached, the real
//! agent, started and stopped with --unpin-on-exit. Attached over the floor
//! is what KernelSeal's own code costs.
//!
//! Every figure is CLOCK_MONOTONIC time per op. With `--wall` (the default
//! here) that is host time as TCG passes it through: ns/op, noisy. With
//! `--icount` QEMU runs with `-icount shift=0,sleep=off` (`cargo xtask
//! vm-bench` starts it so), where the guest clock advances one ns per guest
//! instruction on either vCPU: the same figure is instructions per op, and
//! repeats from round to round on any host.

use std::ffi::CString;
use std::process::Child;
use std::time::{Duration, Instant};

use aya::Btf;

use crate::agent::{Agent, Policy};
use crate::floor::Floor;

const ROUNDS: usize = 4;
const OPEN_OPS: u32 = 20_000;
const STAT_OPS: u32 = 10_000;
const EXEC_OPS: u32 = 300;

/// What the guest's CLOCK_MONOTONIC counts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Clock {
    Wall,
    Icount,
}

impl Clock {
    fn parse(args: &[String]) -> Result<Self, String> {
        match args {
            [] => Ok(Clock::Wall),
            [a] if a == "--wall" => Ok(Clock::Wall),
            [a] if a == "--icount" => Ok(Clock::Icount),
            _ => Err(format!(
                "usage: kernelseal-vmtests bench [--icount|--wall] (got {args:?})"
            )),
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Clock::Wall => "ns/op",
            Clock::Icount => "insns/op",
        }
    }
}

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
    settle();
    let file = CString::new("/tmp/kernelseal-bench-file").unwrap();
    std::fs::write("/tmp/kernelseal-bench-file", b"x").ok();
    let mut buf = [0u8; 512];
    // Warm caches before timing, so a round's first ops (dentries, page
    // cache, the exec'd binary) do not show as a difference between rounds.
    time_per_op(1000, || open_close(&file));
    time_per_op(100, || read_stat(stat_path, &mut buf));
    time_per_op(5, exec_true);
    Sample {
        open: time_per_op(OPEN_OPS, || open_close(&file)),
        stat: time_per_op(STAT_OPS, || read_stat(stat_path, &mut buf)),
        exec: time_per_op(EXEC_OPS, exec_true),
    }
}

/// Lets the guest finish the work the last step left behind before the
/// clock starts: after boot, or after the agent stopped (its programs and
/// maps are freed by deferred work after RCU grace periods). That work runs
/// on the other vCPU and under icount counts towards the figures: without
/// this pause detached rounds measured up to twice the instructions per open
/// and their spread hid the attached side's difference. Under
/// icount with sleep=off an idle guest skips to its next timer, so the pause
/// costs little host time.
fn settle() {
    std::thread::sleep(Duration::from_secs(1));
}

/// One figure over the rounds: the median, and the range that shows how
/// far the rounds agree.
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        Spread {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
        }
    }

    /// The range as a share of the median, in percent.
    fn width_percent(&self) -> f64 {
        (self.max - self.min) / self.median * 100.0
    }
}

/// Under icount a loop of known length must take as many ns as it has
/// instructions. If it does not, QEMU was not started with `-icount
/// shift=0` and figures labelled instructions would be wrong.
#[cfg(target_arch = "x86_64")]
fn check_icount() -> Result<(), String> {
    const ITERATIONS: u64 = 1_000_000;
    const TRIES: usize = 5;
    let insns = 2 * ITERATIONS;
    // Right after boot the other vCPU is still busy and its instructions
    // advance the clock too (once in 2 runs it read 7 and 17 ns per
    // instruction): let it settle, and keep the best of a few tries, since
    // such work only ever adds.
    settle();
    let ns = (0..TRIES)
        .map(|_| {
            let start = Instant::now();
            spin(ITERATIONS);
            start.elapsed().as_nanos() as f64
        })
        .fold(f64::INFINITY, f64::min);
    let per_insn = ns / insns as f64;
    println!(
        "bench: clock icount: a {insns}-instruction loop took {ns:.0} ns at best of {TRIES} ({per_insn:.4} ns per instruction)"
    );
    // Above 1: a timer interrupt in the loop and the clock read itself.
    if (0.99..1.05).contains(&per_insn) {
        Ok(())
    } else {
        Err(format!(
            "the guest clock does not count instructions ({per_insn:.3} ns per instruction): \
             is QEMU running with -icount shift=0,sleep=off?"
        ))
    }
}

/// Exactly two instructions per iteration.
#[cfg(target_arch = "x86_64")]
fn spin(iterations: u64) {
    // SAFETY: a register-only countdown; touches no memory and no stack.
    unsafe {
        std::arch::asm!(
            "2:",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) iterations => _,
            options(nomem, nostack),
        );
    }
}

/// The loop above is x86-64 assembly; the VMs are x86-64.
#[cfg(not(target_arch = "x86_64"))]
fn check_icount() -> Result<(), String> {
    println!("bench: clock icount (not checked on this architecture)");
    Ok(())
}

/// One round's samples, one per state.
struct Round {
    off: Sample,
    floor: Sample,
    on: Sample,
}

/// Measures detached, floor and attached in turn. `measure` settles first,
/// so the floor's deferred freeing does not count against the agent's
/// figures, nor the agent's against the next round's detached ones.
fn round(stat_path: &CString, btf: &Btf) -> Result<Round, String> {
    let off = measure(stat_path);
    let floor = Floor::attach(btf)?;
    let floor_sample = measure(stat_path);
    drop(floor);
    let agent = Agent::start(Policy::ENFORCE_ALL)?;
    let on = measure(stat_path);
    agent.stop()?;
    Ok(Round {
        off,
        floor: floor_sample,
        on,
    })
}

/// Each round's figures, so a reader sees how far the rounds agree.
fn print_round(clock: Clock, index: usize, r: &Round) {
    println!(
        "bench: round {} of {ROUNDS}: open {:.0} / {:.0} / {:.0}, stat {:.0} / {:.0} / {:.0}, exec {:.0} / {:.0} / {:.0} {} (detached / floor / attached)",
        index + 1,
        r.off.open,
        r.floor.open,
        r.on.open,
        r.off.stat,
        r.floor.stat,
        r.on.stat,
        r.off.exec,
        r.floor.exec,
        r.on.exec,
        clock.unit()
    );
}

/// One operation's figures over the rounds, one spread per state.
struct Figure {
    off: Spread,
    floor: Spread,
    on: Spread,
}

impl Figure {
    fn of(rounds: &[Round], pick: fn(&Sample) -> f64) -> Self {
        let spread = |state: fn(&Round) -> &Sample| {
            Spread::of(rounds.iter().map(|r| pick(state(r))).collect())
        };
        Figure {
            off: spread(|r| &r.off),
            floor: spread(|r| &r.floor),
            on: spread(|r| &r.on),
        }
    }
}

/// The operation's two lines: detached -> attached as before, then the
/// same difference split at the floor. Both parts are in percent of
/// detached, so they add up to the first line's percentage.
fn report(clock: Clock, name: &str, ops: u32, f: &Figure) {
    report_total(clock, name, ops, &f.off, &f.on);
    report_floor(clock, name, f);
}

fn report_floor(clock: Clock, name: &str, f: &Figure) {
    let (off, floor, on) = (f.off.median, f.floor.median, f.on.median);
    let percent = |d: f64| d / off * 100.0;
    println!(
        "bench: {name:<31} {off:>8.0} -> {floor:>8.0} -> {on:>8.0} {} (detached -> floor -> attached): \
         empty programs on the same hooks {:+.0} ({:+.1} %), KernelSeal's code above them {:+.0} ({:+.1} %), in % of detached  \
         rounds: floor {:.0}..{:.0} (spread {:.2} %)",
        clock.unit(),
        floor - off,
        percent(floor - off),
        on - floor,
        percent(on - floor),
        f.floor.min,
        f.floor.max,
        f.floor.width_percent(),
    );
}

fn report_total(clock: Clock, name: &str, ops: u32, off: &Spread, on: &Spread) {
    println!(
        "bench: {name:<31} {:>8.0} -> {:>8.0} {} ({:+.1} %)  rounds: detached {:.0}..{:.0}, attached {:.0}..{:.0} (spread {:.2} %)  [{ops} ops x {ROUNDS} rounds, medians]",
        off.median,
        on.median,
        clock.unit(),
        (on.median / off.median - 1.0) * 100.0,
        off.min,
        off.max,
        on.min,
        on.max,
        off.width_percent().max(on.width_percent()),
    );
}

/// Address-space randomisation changes, exec to exec, how many page-table
/// pages a new process needs and so its instruction count; without it the
/// exec figures' spread under icount narrowed (2.1 % to 1.3 %). Children
/// (the execs, the agent) inherit the flag.
fn disable_aslr() -> Result<(), String> {
    const QUERY: libc::c_ulong = 0xffff_ffff;
    // SAFETY: personality() only reads or sets this process's flags.
    let current = unsafe { libc::personality(QUERY) };
    let flags = current as libc::c_ulong | libc::ADDR_NO_RANDOMIZE as libc::c_ulong;
    // SAFETY: as above.
    if current == -1 || unsafe { libc::personality(flags) } == -1 {
        return Err(format!(
            "personality(ADDR_NO_RANDOMIZE): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// An unprotected process whose /proc/P/stat is read. It must outlive the
/// bench: under icount the guest clock runs at the instruction rate, not
/// the host's, so no guest-time guess about the bench's length is safe.
fn spawn_idle() -> Result<Child, String> {
    std::process::Command::new("sleep")
        .arg("1000000")
        .spawn()
        .map_err(|e| format!("starting sleep: {e}"))
}

pub fn run(args: &[String]) -> Result<(), String> {
    let clock = Clock::parse(args)?;
    match clock {
        Clock::Icount => check_icount()?,
        Clock::Wall => println!("bench: clock wall: host time under TCG, figures are ns/op"),
    }
    disable_aslr()?;
    let mut idle = spawn_idle()?;
    let stat_path = CString::new(format!("/proc/{}/stat", idle.id())).unwrap();
    // Parsed once: the floor loads against it every round.
    let btf = Btf::from_sys_fs().map_err(|e| format!("the kernel's BTF: {e}"))?;
    let mut rounds = Vec::new();
    for index in 0..ROUNDS {
        rounds.push(round(&stat_path, &btf)?);
        print_round(clock, index, &rounds[index]);
    }
    let idle_exited = !matches!(idle.try_wait(), Ok(None));
    let _ = idle.kill();
    let _ = idle.wait();
    if idle_exited {
        return Err("the process whose /proc stat was read exited during the bench".into());
    }
    let figure = |pick: fn(&Sample) -> f64| Figure::of(&rounds, pick);
    report(
        clock,
        "open()+close() regular file",
        OPEN_OPS,
        &figure(|s| s.open),
    );
    report(
        clock,
        "read /proc/<unprotected>/stat",
        STAT_OPS,
        &figure(|s| s.stat),
    );
    report(
        clock,
        "fork+exec /bin/true (no match)",
        EXEC_OPS,
        &figure(|s| s.exec),
    );
    Ok(())
}
