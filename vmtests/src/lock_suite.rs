//! Lock mode (policy.lock), tried as root: each vector first as a control
//! on the unlocked node (allowed, or failing for its own reason), then on the
//! locked node (refused with EPERM before the kernel looks at anything).
//! A lock lasts until reboot, so this suite runs last, after every other
//! test, in the VM it locks.

use std::ffi::CString;
use std::os::fd::AsRawFd;

use aya::maps::Array;
use aya::programs::BtfTracePoint;
use aya::{Btf, EbpfLoader};

use crate::agent::{Agent, Policy, kernelseal, log_text, protect, wait_log_line};
use crate::attacks::errno;
use crate::floor::error_chain;
use crate::victim::{SECRET_VALUE, Victim};

/// The object build.rs compiled from src/bpf/snoop.bpf.c.
static SNOOP: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/snoop.bpf.o"));

const PIN_ROOT: &str = "/sys/fs/bpf/kernelseal";

/// `struct loot` of snoop.bpf.c.
#[repr(C)]
#[derive(Clone, Copy)]
struct Loot {
    got: u32,
    len: u32,
    addr: u64,
    bytes: [u8; 4096],
}

// SAFETY: plain old data, the layout of the C struct.
unsafe impl aya::Pod for Loot {}

/// Root's tracing program, attached to every syscall of one process.
struct Snoop {
    ebpf: aya::Ebpf,
}

impl Snoop {
    /// Loads and attaches the program for process `tgid`: `Ok(Err(why))`
    /// when the kernel refuses either.
    fn load(tgid: u32) -> Result<Result<Snoop, String>, String> {
        let mut snoop = match Snoop::load_detached(tgid)? {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        Ok(snoop.attach()?.map(|()| snoop))
    }

    /// Loads the program for process `tgid` without attaching it.
    fn load_detached(tgid: u32) -> Result<Result<Snoop, String>, String> {
        let btf = Btf::from_sys_fs().map_err(|e| e.to_string())?;
        let ebpf = match EbpfLoader::new()
            .btf(Some(&btf))
            .override_global("target_tgid", &tgid, true)
            .load(SNOOP)
        {
            Ok(e) => e,
            Err(e) => return Ok(Err(error_chain(&e))),
        };
        let mut snoop = Snoop { ebpf };
        // Idle until the first read asks for something.
        snoop.request(Loot {
            got: 1,
            len: 0,
            addr: 0,
            bytes: [0; 4096],
        })?;
        if let Err(e) = snoop.program()?.load("sys_enter", &btf) {
            return Ok(Err(error_chain(&e)));
        }
        Ok(Ok(snoop))
    }

    fn program(&mut self) -> Result<&mut BtfTracePoint, String> {
        self.ebpf
            .program_mut("sys_enter")
            .ok_or("snoop object has no sys_enter")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| e.to_string())
    }

    /// `Ok(Err(why))` when the kernel refuses the attachment.
    fn attach(&mut self) -> Result<Result<(), String>, String> {
        Ok(self
            .program()?
            .attach()
            .map(|_| ())
            .map_err(|e| error_chain(&e)))
    }

    fn loot(&mut self) -> Result<Array<&mut aya::maps::MapData, Loot>, String> {
        Array::try_from(
            self.ebpf
                .map_mut("snoop_loot")
                .ok_or("snoop object has no snoop_loot")?,
        )
        .map_err(|e| e.to_string())
    }

    fn request(&mut self, loot: Loot) -> Result<(), String> {
        self.loot()?.set(0, loot, 0).map_err(|e| e.to_string())
    }

    /// What the program copies on the process's next syscall (`poke` makes
    /// one happen): the environment for `addr` 0, else the page at `addr`;
    /// empty when the page is not faulted in.
    fn read(
        &mut self,
        addr: u64,
        mut poke: impl FnMut() -> Result<(), String>,
    ) -> Result<Vec<u8>, String> {
        self.request(Loot {
            got: 0,
            len: 0,
            addr,
            bytes: [0; 4096],
        })?;
        for _ in 0..50 {
            poke()?;
            let l = self.loot()?.get(&0, 0).map_err(|e| e.to_string())?;
            if l.got == 1 {
                let len = (l.len as usize).min(l.bytes.len());
                return Ok(l.bytes[..len].to_vec());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Err(format!(
            "the snoop program loaded but never ran in its target (addr {addr:#x})"
        ))
    }
}

/// The victim's environment as root's tracing program reads it, or why the
/// program was refused.
fn snoop_environment(victim: &mut Victim) -> Result<Result<String, String>, String> {
    let mut snoop = match Snoop::load(victim.pid)? {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    let bytes = snoop.read(0, || victim.ask("hups").map(|_| ()))?;
    Ok(Ok(String::from_utf8_lossy(&bytes).into_owned()))
}

/// The agent's secret memory mappings, from its maps (readable while
/// blockMaps is off: the lock does not depend on hiding them).
fn secret_memory_of(agent: u32) -> Result<Vec<(u64, u64)>, String> {
    let maps = std::fs::read_to_string(format!("/proc/{agent}/maps"))
        .map_err(|e| format!("/proc/{agent}/maps: {e}"))?;
    let mut ranges = Vec::new();
    for line in maps.lines().filter(|l| l.contains("secretmem")) {
        let range = line.split_whitespace().next().unwrap_or_default();
        let (start, end) = range.split_once('-').unwrap_or_default();
        let hex = |v: &str| u64::from_str_radix(v, 16).map_err(|e| format!("{line}: {e}"));
        ranges.push((hex(start)?, hex(end)?));
    }
    if ranges.is_empty() {
        return Err(format!("the agent maps no secret memory:\n{maps}"));
    }
    Ok(ranges)
}

/// Whether root's tracing program, run in the agent's own context, finds
/// `value` (which the agent holds in its cache) in the agent's secret
/// memory (`Ok(Ok(pages read))`), or `Ok(Err(why))` when the program is
/// refused.
fn snoop_agent_secret(agent: u32, value: &str) -> Result<Result<usize, String>, String> {
    let mut snoop = match Snoop::load(agent)? {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    // The agent's timers make syscalls; a short wait is the poke.
    let tick = || {
        std::thread::sleep(std::time::Duration::from_millis(20));
        Ok(())
    };
    let ranges = secret_memory_of(agent)?;
    let (mut pages, mut unreadable) = (0, 0);
    for (start, end) in &ranges {
        for addr in (*start..*end).step_by(4096).take(256) {
            let page = snoop.read(addr, tick)?;
            pages += 1;
            if page.is_empty() {
                // Not faulted in yet: nothing of the cache there.
                unreadable += 1;
                continue;
            }
            // Pool blocks are aligned to their power-of-two size, so a
            // small value never straddles two pages.
            if page.windows(value.len()).any(|w| w == value.as_bytes()) {
                return Ok(Ok(pages));
            }
        }
    }
    Err(format!(
        "the snoop program read {pages} pages of the agent's secret memory \
         ({} mappings, {unreadable} pages not faulted in) without finding the cached value",
        ranges.len()
    ))
}

/// A binding whose value the agent caches (a file source, unlike the
/// literals of the other bindings, which sit in secret memory only during a
/// delivery).
const POOL_BINDING: &str = "  - name: cached\n    selector:\n      binary: ks-pool-victim\n    secretRefs:\n      - name: POOL_SECRET\n        source: { fileRef: { path: /tmp/ks-pool-secret, ttl: 1h } }\n";
const POOL_VICTIM: &str = "ks-pool-victim";
const POOL_SECRET: &str = "pool-secret-d41c8f0e";

fn write_pool_secret() -> Result<(), String> {
    std::fs::write("/tmp/ks-pool-secret", POOL_SECRET)
        .map_err(|e| format!("/tmp/ks-pool-secret: {e}"))
}

/// Whether an error chain ends in EPERM.
fn is_eperm(error: &str) -> bool {
    error.contains("os error 1)") || error.contains("Operation not permitted")
}

fn refused_eperm(label: &str, rc: libc::c_long) -> Result<(), String> {
    let e = errno();
    if rc >= 0 || e != libc::EPERM {
        return Err(format!(
            "{label} on the locked node: rc {rc}, errno {e}; expected EPERM"
        ));
    }
    Ok(())
}

/// A syscall's errno, or 0 when it succeeded (closing what it returned).
fn attempt(call: impl FnOnce() -> libc::c_long) -> i32 {
    let rc = call();
    if rc >= 0 { 0 } else { errno() }
}

fn finit_module() -> libc::c_long {
    let Ok(f) = std::fs::File::open("/bin/true") else {
        return -1;
    };
    let params = c"";
    // SAFETY: a valid fd and a NUL-terminated parameter string.
    unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) }
}

fn init_module() -> libc::c_long {
    let image = vec![0u8; 4096];
    let params = c"";
    // SAFETY: the image buffer and the parameter string outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_init_module,
            image.as_ptr(),
            image.len(),
            params.as_ptr(),
        )
    }
}

fn kexec_file_load() -> libc::c_long {
    const KEXEC_FILE_NO_INITRAMFS: libc::c_ulong = 4;
    let Ok(f) = std::fs::File::open("/bin/true") else {
        return -1;
    };
    let cmdline = c"";
    // SAFETY: a valid fd; the command line is one NUL byte long.
    unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            f.as_raw_fd(),
            -1,
            1usize,
            cmdline.as_ptr(),
            KEXEC_FILE_NO_INITRAMFS,
        )
    }
}

/// kexec_load with no segments: unloads the kexec image (none is loaded).
fn kexec_load() -> libc::c_long {
    // SAFETY: zero segments, so the null segment pointer is never read.
    unsafe {
        libc::syscall(
            libc::SYS_kexec_load,
            0usize,
            0usize,
            std::ptr::null::<u8>(),
            0usize,
        )
    }
}

fn open_close(path: &str) -> libc::c_long {
    let Ok(c) = CString::new(path) else {
        return -1;
    };
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd >= 0 {
        // SAFETY: the fd was just opened here.
        unsafe { libc::close(fd) };
    }
    fd as libc::c_long
}

/// A CPU-wide perf event on the kprobe PMU, probing do_sys_openat2.
fn perf_kprobe() -> libc::c_long {
    let Ok(text) = std::fs::read_to_string("/sys/bus/event_source/devices/kprobe/type") else {
        return -1;
    };
    let Ok(pmu) = text.trim().parse::<u32>() else {
        return -1;
    };
    let func = c"do_sys_openat2";
    // The name outlives the call.
    open_close_perf_event(pmu, 0, func.as_ptr() as u64)
}

/// perf_event_open of a CPU-wide event (closed again): the fd, or -1 with
/// errno. perf_event_attr: type at 0, size at 4, config at 8, config1 at 56.
fn open_close_perf_event(pmu_type: u32, config: u64, config1: u64) -> libc::c_long {
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&pmu_type.to_ne_bytes());
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&config.to_ne_bytes());
    attr[56..64].copy_from_slice(&config1.to_ne_bytes());
    // SAFETY: a zeroed attr of the size it declares; config1 is either 0 or
    // a name the caller keeps alive across the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1,
            0,
            -1,
            crate::leaks_suite::PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd >= 0 {
        // SAFETY: the fd was just opened here.
        unsafe { libc::close(fd as i32) };
    }
    fd
}

/// One BPF instruction, as bpf(2) takes it.
fn insn(code: u8, dst: u8, src: u8, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = dst | (src << 4);
    b[4..8].copy_from_slice(&imm.to_ne_bytes());
    b
}

/// BPF_PROG_LOAD of a socket filter that returns 0, optionally after
/// copying 8 bytes of user memory (bpf_probe_read_user, helper 112): the
/// fd, or -1 with errno.
fn load_socket_filter(read_user_memory: bool) -> libc::c_long {
    let mut prog: Vec<[u8; 8]> = Vec::new();
    if read_user_memory {
        prog.push(insn(0xbf, 1, 10, 0)); // r1 = r10
        prog.push(insn(0x07, 1, 0, -8)); // r1 += -8
        prog.push(insn(0xb7, 2, 0, 8)); // r2 = 8
        prog.push(insn(0xb7, 3, 0, 0)); // r3 = 0
        prog.push(insn(0x85, 0, 0, 112)); // call bpf_probe_read_user
    }
    prog.push(insn(0xb7, 0, 0, 0)); // r0 = 0
    prog.push(insn(0x95, 0, 0, 0)); // exit
    let license = c"GPL";
    // prog_load: prog_type, insn_cnt, insns, license (UAPI offsets).
    let mut attr = [0u64; 16];
    attr[0] = 1 | ((prog.len() as u64) << 32); // BPF_PROG_TYPE_SOCKET_FILTER
    attr[1] = prog.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    // SAFETY: the attr points at the instructions and the license, which
    // outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            5, // BPF_PROG_LOAD
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd >= 0 {
        // SAFETY: the fd was just returned to us.
        unsafe { libc::close(fd as i32) };
    }
    fd
}

/// A second mount of this network namespace's sysfs (the superblock /sys
/// has), unmounted lazily: as `umount -l /sys` would drop the pins' bpffs.
fn umount_sysfs() -> libc::c_long {
    let dir = "/tmp/ks-sysfs";
    let _ = std::fs::create_dir_all(dir);
    let status = std::process::Command::new("mount")
        .args(["-t", "sysfs", "sysfs", dir])
        .status();
    if !status.is_ok_and(|s| s.success()) {
        return -1;
    }
    let Ok(c) = CString::new(dir) else {
        return -1;
    };
    // SAFETY: a NUL-terminated path.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) as libc::c_long }
}

/// The id of a syscall tracepoint, read from tracefs before the lock
/// (after it, tracefs is closed: an attacker would guess ids).
static TRACEPOINT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A CPU-wide perf event on a tracepoint, by id.
fn perf_tracepoint() -> libc::c_long {
    let id = TRACEPOINT_ID.load(std::sync::atomic::Ordering::Relaxed);
    if id == 0 {
        // No syscall tracepoints here: reported as untestable (ENOSYS).
        // SAFETY: errno is this thread's own.
        unsafe { *libc::__errno_location() = libc::ENOSYS };
        return -1;
    }
    const PERF_TYPE_TRACEPOINT: u32 = 2;
    open_close_perf_event(PERF_TYPE_TRACEPOINT, id, 0)
}

type Vector = (&'static str, fn() -> libc::c_long);

/// The kernel's ways in that need no BPF: each must succeed or fail for its
/// own reason (not EPERM) before the lock, and fail with EPERM after.
const VECTORS: [Vector; 11] = [
    ("finit_module", finit_module),
    ("init_module", init_module),
    ("kexec_file_load", kexec_file_load),
    ("kexec_load", kexec_load),
    ("open /proc/kcore", || open_close("/proc/kcore")),
    ("open /dev/mem", || open_close("/dev/mem")),
    ("open tracefs trace", || {
        open_close("/sys/kernel/tracing/trace")
    }),
    ("perf kprobe event", perf_kprobe),
    ("perf tracepoint event", perf_tracepoint),
    ("umount -l sysfs", umount_sysfs),
    ("a socket filter that reads user memory", || {
        load_socket_filter(true)
    }),
];

pub(crate) fn mount_tracefs() {
    if !std::path::Path::new("/sys/kernel/tracing/trace").exists() {
        let _ = std::process::Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status();
    }
}

/// The dynamically linked release core the VM carries next to the static
/// /usr/bin/kernelseal-core.
const DYNAMIC: &str = "/usr/bin/kernelseal-dynamic";

/// A dynamically linked agent refuses `policy.lock` before it loads
/// anything: on the locked node it could not even restart.
fn refuses_lock_when_dynamic() -> Result<(), String> {
    let yaml = Policy::ENFORCE_ALL
        .yaml()
        .replace("  mode: enforce\n", "  mode: enforce\n  lock: true\n");
    let path = "/tmp/vmtests-lock-dynamic.yaml";
    std::fs::write(path, yaml).map_err(|e| e.to_string())?;
    let out = std::process::Command::new(DYNAMIC)
        .args(["agent", "--config", path])
        .output()
        .map_err(|e| format!("running {DYNAMIC}: {e}"))?;
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(3) || !err.contains("needs a statically linked kernelseal") {
        return Err(format!(
            "a dynamic agent with policy.lock: {}, {err}",
            out.status
        ));
    }
    Ok(())
}

/// Runs the suite; returns (passed, failed) and prints a line per test.
pub fn run() -> (usize, usize) {
    let mut results: Vec<(&str, Result<(), String>)> = Vec::new();
    mount_tracefs();
    let mut state = Lock::default();
    results.push((
        "lock_control_unlocked_node_allows_each_vector",
        state.control(),
    ));
    results.push(("lock_refuses_every_vector_as_root", state.locked()));
    results.push(("lock_survives_agent_kill_and_restart", state.restart()));
    let (mut passed, mut failed) = (0, 0);
    for (name, r) in results {
        match r {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok");
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED: {e}");
            }
        }
    }
    (passed, failed)
}

#[derive(Default)]
struct Lock {
    agent: Option<Agent>,
    victim: Option<Victim>,
    /// Root's tracing program, loaded before the lock and attached after.
    early_snoop: Option<Snoop>,
    /// Vectors whose control did not tell a refusal apart (EPERM or ENOSYS
    /// before the lock): reported, not tested.
    untestable: Vec<String>,
}

impl Lock {
    /// Unlocked, agent running, victim protected: root's tracing program
    /// reads the victim's secret; the other vectors are not refused.
    fn control(&mut self) -> Result<(), String> {
        refuses_lock_when_dynamic()?;
        // The dynamically linked build runs the unlocked node (and so is a
        // trusted KernelSeal binary from now on); the static one takes over
        // through the handover to lock it.
        // blockMaps off: the attacker finds the agent's secret memory in
        // its maps.
        let unlocked = Policy {
            maps: false,
            ..Policy::ENFORCE_ALL
        };
        write_pool_secret()?;
        let agent = Agent::start_from(DYNAMIC, &unlocked.yaml_with(POOL_BINDING, ""), &[])?;
        let agent_pid = agent.pid;
        let mut victim = Victim::spawn()?;
        protect(victim.pid)?;
        self.agent = Some(agent);
        // Its delivery leaves the file's value in the agent's cache.
        let _pool_victim = Victim::spawn_wrapped_named(POOL_VICTIM)?;
        match snoop_agent_secret(agent_pid, POOL_SECRET)? {
            Ok(pages) => println!(
                "note: unlocked, root's tracing program read the agent's cached value \
                 from its secret memory (page {pages})"
            ),
            Err(e) => {
                return Err(format!(
                    "control: the snoop program for the agent did not load: {e}"
                ));
            }
        }
        match snoop_environment(&mut victim)? {
            Ok(env) if env.contains(SECRET_VALUE) => {}
            Ok(_) => {
                return Err(
                    "control: the snoop program read an environment without the secret".into(),
                );
            }
            Err(e) => return Err(format!("control: the snoop program did not load: {e}")),
        }
        self.early_snoop = Some(
            Snoop::load_detached(victim.pid)?
                .map_err(|e| format!("control: the snoop program did not load: {e}"))?,
        );
        let id = std::fs::read_to_string("/sys/kernel/tracing/events/syscalls/sys_enter_openat/id")
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0);
        TRACEPOINT_ID.store(id, std::sync::atomic::Ordering::Relaxed);
        for (name, call) in VECTORS {
            match attempt(call) {
                0 => {}
                e if e == libc::EPERM || e == libc::ENOSYS => {
                    println!("note: {name} fails with errno {e} before the lock: not tested");
                    self.untestable.push(format!("{name} (errno {e} unlocked)"))
                }
                _ => {}
            }
        }
        self.victim = Some(victim);
        if self.untestable.len() > 2 {
            return Err(format!(
                "control: too many vectors refused before the lock: {:?}",
                self.untestable
            ));
        }
        Ok(())
    }

    /// The agent restarted with lock: true; everything above is refused.
    fn locked(&mut self) -> Result<(), String> {
        let victim = self.victim.as_mut().ok_or("no victim (control failed)")?;
        if let Some(a) = self.agent.take() {
            a.stop()?;
        }
        let yaml = Policy::ENFORCE_ALL
            .yaml_with(POOL_BINDING, "")
            .replace("  mode: enforce\n", "  mode: enforce\n  lock: true\n");
        let agent = Agent::start_with(&yaml, &[])?;
        let agent_pid = agent.pid;
        self.agent = Some(agent);
        wait_log_line(&["[LOCK] the node is locked until reboot"])?;
        let _pool_victim = Victim::spawn_wrapped_named(POOL_VICTIM)?;
        match snoop_agent_secret(agent_pid, POOL_SECRET)? {
            Ok(_) => return Err("locked: the snoop program read the agent's cache".into()),
            Err(e) if is_eperm(&e) => {}
            Err(e) => {
                return Err(format!(
                    "locked: snoop of the agent failed, but not with EPERM: {e}"
                ));
            }
        }
        match snoop_environment(victim)? {
            Ok(env) => {
                return Err(format!(
                    "locked: the snoop program loaded and read {} bytes",
                    env.len()
                ));
            }
            Err(e) if is_eperm(&e) => {}
            Err(e) => return Err(format!("locked: snoop failed, but not with EPERM: {e}")),
        }
        wait_log_line(&["[LOCK BLOCKED]", "load a BPF program (type tracing)"])?;
        let mut early = self
            .early_snoop
            .take()
            .ok_or("no program loaded before the lock (control failed)")?;
        match early.attach()? {
            Ok(()) => {
                return Err("locked: a tracing program loaded before the lock was attached".into());
            }
            Err(e) if is_eperm(&e) => {}
            Err(e) => {
                return Err(format!(
                    "locked: attaching a program loaded before the lock failed, but not with EPERM: {e}"
                ));
            }
        }
        let mut refused = Vec::new();
        for (name, call) in VECTORS {
            if self.untestable.iter().any(|u| u.starts_with(name)) {
                continue;
            }
            refused_eperm(name, call())?;
            refused.push(name);
        }
        println!(
            "note: refused with EPERM when locked: {}",
            refused.join(", ")
        );
        // What a container runtime loads (runc: a device filter per
        // container) stays possible: no memory-reading helper, no tracing.
        if load_socket_filter(false) < 0 {
            return Err(format!(
                "locked: a socket filter without memory-reading helpers was refused (errno {})",
                errno()
            ));
        }
        // KernelSeal's own pins: nobody removes them now.
        let pin = std::path::Path::new(PIN_ROOT).join("ks_marks");
        match std::fs::remove_file(&pin) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            other => return Err(format!("rm {}: {other:?}", pin.display())),
        }
        // Nor writes to its maps or detaching its programs.
        crate::state_suite::maps_and_links_out_of_reach().map_err(|e| format!("locked: {e}"))?;
        // Nor KernelSeal's own unprotect.
        // The dynamic build is trusted, but on a locked node its loader
        // may not map: no route for root's code into a KernelSeal process.
        let out = std::process::Command::new(DYNAMIC)
            .arg("--version")
            .output()
            .map_err(|e| format!("running {DYNAMIC}: {e}"))?;
        if out.status.success() {
            return Err(format!("{DYNAMIC} ran on the locked node: {out:?}"));
        }
        wait_log_line(&[
            "[LOCK BLOCKED]",
            "run code from another file than its own binary",
        ])?;
        let out = kernelseal(&["unprotect", &victim.pid.to_string()])?;
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !err.contains("locked") {
            return Err(format!("unprotect on a locked node: {} {err}", out.status));
        }
        crate::suite::all_refused(
            "locked, after unprotect",
            victim.pid,
            victim.pid,
            victim.addr,
        )?;
        let check = kernelseal(&["check"])?;
        let text = String::from_utf8_lossy(&check.stdout);
        if !text.contains("LOCKED") {
            return Err(format!("check does not report the lock: {text}"));
        }
        Ok(())
    }

    /// SIGKILL, then an agent whose config has no lock: the node stays
    /// locked and enforcing.
    fn restart(&mut self) -> Result<(), String> {
        let victim = self.victim.as_mut().ok_or("no victim (control failed)")?;
        let mut agent = self.agent.take().ok_or("no agent (locked test failed)")?;
        agent.kill9();
        crate::suite::all_refused("locked, agent killed", victim.pid, victim.pid, victim.addr)?;
        crate::state_suite::maps_and_links_out_of_reach()
            .map_err(|e| format!("locked, agent killed: {e}"))?;
        let agent = Agent::start_with(&Policy::ENFORCE_ALL.yaml(), &["--unpin-on-exit"])?;
        wait_log_line(&["[LOCK] the node was locked by an earlier agent"])?;
        if let Ok(env) = snoop_environment(victim)? {
            return Err(format!("after restart: snoop read {} bytes", env.len()));
        }
        refused_eperm("finit_module after restart", finit_module())?;
        crate::state_suite::maps_and_links_out_of_reach()
            .map_err(|e| format!("after restart: {e}"))?;
        // --unpin-on-exit is ignored: the pins and the programs stay.
        agent.stop()?;
        if !std::path::Path::new(PIN_ROOT).join("ks_marks").exists() {
            return Err("the pins were removed on a locked node".into());
        }
        crate::suite::all_refused("locked, agent stopped", victim.pid, victim.pid, victim.addr)?;
        if !log_text().contains("[STOP] --unpin-on-exit ignored: the node is locked") {
            return Err("the agent did not say it ignored --unpin-on-exit".into());
        }
        Ok(())
    }
}
