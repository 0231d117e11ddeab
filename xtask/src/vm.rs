//! Booting a payload in QEMU and carrying its output and exit status out.
//!
//! The kernel console stays on ttyS0 (logged to a file); the payload's
//! stdout+stderr go to ttyS1, which QEMU maps to its own stdout. No printk
//! ever reaches ttyS1, so the payload's lines arrive unsplit (see `guest`
//! for the marker lines that carry the boot time and exit status).

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::guest::{MarkerFilter, init_script, nonce};
use crate::initramfs::Initramfs;
use crate::kernel::Kernel;
use crate::util::install_hint;

/// `loglevel=4` rather than 0: kernel messages never reach ttyS1, so they
/// cannot split the payload's lines, and a normal boot prints nothing at that
/// level, while a panic or oops then lands in the console log for diagnosis
/// (at 0 even a panic is silent).
pub const KERNEL_CMDLINE: &str =
    "console=ttyS0 quiet loglevel=4 lsm=lockdown,capability,landlock,yama,bpf panic=-1";

/// What to boot and run.
pub struct VmSpec<'a> {
    pub kernel: &'a Kernel,
    pub busybox: &'a Path,
    /// (guest path, host path) of every executable to copy in; the payload is
    /// one of them.
    pub executables: Vec<(String, PathBuf)>,
    /// Guest path of the program to run, and its arguments.
    pub payload: String,
    pub args: Vec<String>,
    pub timeout: Duration,
    /// Names the initramfs and log files, e.g. `vm-run-6.12`.
    pub label: String,
    pub clock: Clock,
}

/// How the guest's clock runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// Host time, as TCG passes it through: what a guest normally sees.
    Wall,
    /// `-icount shift=0,sleep=off`: the guest clock advances exactly one
    /// nanosecond per guest instruction (on either vCPU) and jumps over idle
    /// time to the next timer, so an elapsed time measured in the guest is an
    /// instruction count, the same on any host. TCG executes more slowly
    /// this way, but idle time costs nothing: a bench takes about as long.
    Icount,
}

pub struct VmOutcome {
    pub exit_status: i32,
    /// From starting QEMU to `/init` reaching the payload.
    pub boot_time: Option<Duration>,
    pub total_time: Duration,
}

impl VmOutcome {
    /// One line for the harness's output: boot time, exit status, total.
    pub fn timing(&self, kernel: &Kernel) -> String {
        let boot = self
            .boot_time
            .map_or_else(|| "?".to_owned(), |b| format!("{:.1} s", b.as_secs_f64()));
        format!(
            "{}: booted in {boot}, exit status {}, VM total {:.1} s",
            kernel.release,
            self.exit_status,
            self.total_time.as_secs_f64()
        )
    }
}

/// Boots the VM and runs the payload, passing its output to `out` as it
/// arrives. A VM that ends without an exit marker, or runs past the timeout,
/// is an error that shows the tail of the kernel console.
pub fn run(vm_dir: &Path, spec: &VmSpec, out: &mut dyn Write) -> Result<VmOutcome> {
    let nonce = nonce()?;
    let mut fs = Initramfs::new();
    fs.add_busybox(spec.busybox)?;
    for (guest, host) in &spec.executables {
        fs.add_executable(guest, host)
            .with_context(|| format!("adding {} to the initramfs", host.display()))?;
    }
    let init = init_script(&spec.payload, &spec.args, &spec.kernel.release, &nonce);
    fs.add_bytes("init", init.into_bytes(), 0o755);
    let logs = vm_dir.join("logs");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let initrd = vm_dir.join(format!("{}.initramfs.cpio.gz", spec.label));
    fs.write_gz(&initrd)?;
    let console_log = logs.join(format!("{}.console.log", spec.label));

    let started = Instant::now();
    let mut child = spawn_qemu(spec.kernel, &initrd, &console_log, spec.clock)?;
    let stderr_reader = collect_in_thread(child.stderr.take().expect("piped stderr"));
    let (tx, rx) = mpsc::channel();
    let mut stdout = child.stdout.take().expect("piped stdout");
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match stdout.read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });

    let deadline = started + spec.timeout;
    let mut filter = MarkerFilter::new(&nonce);
    let mut boot_time = None;
    let mut timed_out = false;
    while filter.exit_status.is_none() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(remaining) {
            Ok(chunk) => {
                filter.feed(&chunk, out)?;
                if filter.booted && boot_time.is_none() {
                    boot_time = Some(started.elapsed());
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
        }
    }
    filter.finish(out)?;
    out.flush()?;

    // After the marker the guest only syncs and powers off; give it a little
    // time, then stop it ourselves: the result is already known.
    // Without a marker: on end of output QEMU is exiting by itself (panic,
    // crash), so wait briefly for its real status; on timeout kill at once.
    let grace = if filter.exit_status.is_some() {
        Duration::from_secs(30)
    } else if timed_out {
        Duration::ZERO
    } else {
        Duration::from_secs(5)
    };
    let qemu_status = wait_or_kill(&mut child, grace)?;
    let total_time = started.elapsed();
    let qemu_stderr = stderr_reader.join().unwrap_or_default();
    fs::write(
        logs.join(format!("{}.qemu-stderr.log", spec.label)),
        &qemu_stderr,
    )?;

    let Some(exit_status) = filter.exit_status else {
        let why = if timed_out {
            format!(
                "VM timed out after {} s and was killed",
                spec.timeout.as_secs()
            )
        } else {
            format!("VM ended ({qemu_status}) without reporting the payload's exit status")
        };
        bail!(
            "{why} (kernel {}).\nqemu stderr: {}\nlast lines of the kernel console ({}):\n{}",
            spec.kernel.release,
            String::from_utf8_lossy(&qemu_stderr).trim(),
            console_log.display(),
            console_tail(&console_log, 40)
        );
    };
    Ok(VmOutcome {
        exit_status,
        boot_time,
        total_time,
    })
}

fn spawn_qemu(kernel: &Kernel, initrd: &Path, console_log: &Path, clock: Clock) -> Result<Child> {
    let mut cmd = Command::new("qemu-system-x86_64");
    // thread=single: with multi-threaded TCG the guest kernel sometimes oopsed
    // on an int3 left by live code patching (text_poke, 1 boot in ~30 here);
    // one host thread for both vCPUs never did in 60 boots, at no boot cost.
    cmd.args([
        "-accel",
        "tcg,thread=single",
        "-cpu",
        "max",
        "-m",
        "1G",
        "-smp",
        "2",
    ]);
    if clock == Clock::Icount {
        // QEMU refuses icount with multi-threaded TCG; thread=single above
        // already rules that out.
        cmd.args(["-icount", "shift=0,sleep=off"]);
    }
    cmd.args([
        "-nographic",
        "-no-reboot",
        "-monitor",
        "none",
        "-nic",
        "none",
    ])
    .arg("-kernel")
    .arg(&kernel.image)
    .arg("-initrd")
    .arg(initrd)
    .args(["-append", KERNEL_CMDLINE])
    // ttyS0: kernel console, to a file for diagnosis.
    .arg("-serial")
    .arg(format!("file:{}", console_log.display()))
    // ttyS1: the payload's channel, on QEMU's stdout.
    .args([
        "-chardev",
        "stdio,id=payload,signal=off",
        "-serial",
        "chardev:payload",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    match cmd.spawn() {
        Ok(child) => Ok(child),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            bail!(
                "qemu-system-x86_64 not found{}",
                install_hint("qemu-system-x86_64")
            )
        }
        Err(e) => Err(e).context("starting qemu-system-x86_64"),
    }
}

fn collect_in_thread(mut r: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn wait_or_kill(child: &mut Child, grace: Duration) -> Result<String> {
    let until = Instant::now() + grace;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.to_string());
        }
        if Instant::now() >= until {
            child.kill().context("killing qemu")?;
            child.wait()?;
            return Ok("killed".to_owned());
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn console_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(data) => {
            let text = String::from_utf8_lossy(&data);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
