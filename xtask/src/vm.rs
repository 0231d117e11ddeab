//! Booting a payload in QEMU and carrying its output and exit status out.
//!
//! The kernel console stays on ttyS0 (logged to a file); the payload's
//! stdout+stderr go to ttyS1, which QEMU maps to its own stdout. No printk
//! ever reaches ttyS1, so the payload's lines arrive unsplit. `/init`
//! surrounds the payload's output with two marker lines carrying a per-run
//! nonce (so no payload can forge them): one when the guest has booted, one
//! with the exit status. Both are stripped.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

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
}

pub struct VmOutcome {
    pub exit_status: i32,
    /// From starting QEMU to `/init` reaching the payload.
    pub boot_time: Option<Duration>,
    pub total_time: Duration,
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
    let mut child = spawn_qemu(spec.kernel, &initrd, &console_log)?;
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

fn spawn_qemu(kernel: &Kernel, initrd: &Path, console_log: &Path) -> Result<Child> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-cpu", "max", "-m", "1G", "-smp", "2"])
        .args([
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

/// A per-run random token, so the payload cannot fake the markers by accident.
fn nonce() -> Result<String> {
    let mut bytes = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn start_marker(nonce: &str) -> String {
    format!("KERNELSEAL-VM-BOOTED-{nonce}")
}

fn exit_marker(nonce: &str) -> String {
    format!("KERNELSEAL-VM-EXIT-{nonce}")
}

/// Quotes a word for the POSIX shell.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The guest's `/init` (busybox sh).
pub fn init_script(payload: &str, args: &[String], release: &str, nonce: &str) -> String {
    let command: Vec<String> = std::iter::once(payload)
        .chain(args.iter().map(String::as_str))
        .map(sh_quote)
        .collect();
    format!(
        r#"#!/bin/sh
# Generated by `cargo xtask`. Errors of this script go to the kernel console
# (ttyS0); ttyS1 carries only the payload's output and the two marker lines.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
m() {{ mount -t "$1" "$1" "$2" || echo "init: cannot mount $1 on $2" >&2; }}
m proc /proc
m sysfs /sys
m devtmpfs /dev
m securityfs /sys/kernel/security
m bpf /sys/fs/bpf
m tmpfs /run
m tmpfs /tmp
m cgroup2 /sys/fs/cgroup
m tracefs /sys/kernel/tracing
mkdir -p /dev/pts /dev/shm
m devpts /dev/pts
m tmpfs /dev/shm
OUT=/dev/ttyS1
# Raw mode: no \n -> \r\n translation, no echo.
stty -F $OUT raw -echo || echo "init: stty on $OUT failed" >&2
echo {start} >$OUT
export KERNELSEAL_VM=1 KERNELSEAL_VM_KERNEL={release}
cd /
{command} >$OUT 2>&1 </dev/null
rc=$?
# The leading newline ends a last line the payload left open; the host strips it.
printf '\n%s %d\n' {exit} "$rc" >$OUT
sync
poweroff -f
"#,
        start = start_marker(nonce),
        release = sh_quote(release),
        command = command.join(" "),
        exit = exit_marker(nonce),
    )
}

/// Splits the ttyS1 stream into the payload's output and the markers.
///
/// The newline that `/init` writes before the exit marker is not the
/// payload's: each line's newline is held back until the next line arrives,
/// and the one before the exit marker is dropped, so the host sees exactly
/// the bytes the payload wrote.
pub struct MarkerFilter {
    start: String,
    exit_prefix: String,
    buf: Vec<u8>,
    newline_pending: bool,
    pub booted: bool,
    pub exit_status: Option<i32>,
}

impl MarkerFilter {
    pub fn new(nonce: &str) -> Self {
        Self {
            start: start_marker(nonce),
            exit_prefix: format!("{} ", exit_marker(nonce)),
            buf: Vec::new(),
            newline_pending: false,
            booted: false,
            exit_status: None,
        }
    }

    pub fn feed(&mut self, chunk: &[u8], out: &mut dyn Write) -> io::Result<()> {
        if self.exit_status.is_some() {
            return Ok(());
        }
        self.buf.extend_from_slice(chunk);
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).take(pos).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches('\r');
            if !self.booted && text == self.start {
                self.booted = true;
                continue;
            }
            if let Some(code) = text.strip_prefix(&self.exit_prefix)
                && let Ok(code) = code.trim().parse()
            {
                self.exit_status = Some(code);
                self.buf.clear();
                return Ok(());
            }
            if self.newline_pending {
                out.write_all(b"\n")?;
            }
            out.write_all(&line)?;
            self.newline_pending = true;
        }
        out.flush()
    }

    /// At end of stream without an exit marker, passes on what is left.
    pub fn finish(&mut self, out: &mut dyn Write) -> io::Result<()> {
        if self.exit_status.is_none() {
            if self.newline_pending {
                out.write_all(b"\n")?;
                self.newline_pending = false;
            }
            out.write_all(&std::mem::take(&mut self.buf))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(chunks: &[&[u8]]) -> (Vec<u8>, MarkerFilter) {
        let mut f = MarkerFilter::new("abc");
        let mut out = Vec::new();
        for c in chunks {
            f.feed(c, &mut out).unwrap();
        }
        f.finish(&mut out).unwrap();
        (out, f)
    }

    #[test]
    fn markers_are_stripped_and_output_is_exact() {
        let (out, f) = filter(&[
            b"KERNELSEAL-VM-BOOTED-abc\nhel",
            b"lo\nworld\n",
            b"\nKERNELSEAL-VM-EXIT-abc 3\n",
        ]);
        assert_eq!(out, b"hello\nworld\n");
        assert!(f.booted);
        assert_eq!(f.exit_status, Some(3));
    }

    #[test]
    fn last_line_without_newline_stays_without() {
        let (out, f) =
            filter(&[b"KERNELSEAL-VM-BOOTED-abc\nno newline\nKERNELSEAL-VM-EXIT-abc 0\n"]);
        assert_eq!(out, b"no newline");
        assert_eq!(f.exit_status, Some(0));
    }

    #[test]
    fn empty_output() {
        let (out, f) = filter(&[
            b"KERNELSEAL-VM-BOOTED-abc\n\nKERNELSEAL-VM-EXIT-abc 1",
            b"27\n",
        ]);
        assert_eq!(out, b"");
        assert_eq!(f.exit_status, Some(127));
    }

    #[test]
    fn forged_or_foreign_markers_are_output() {
        let (out, f) = filter(&[b"KERNELSEAL-VM-EXIT-zzz 0\nKERNELSEAL-VM-EXIT-abc x\n"]);
        assert_eq!(out, b"KERNELSEAL-VM-EXIT-zzz 0\nKERNELSEAL-VM-EXIT-abc x\n");
        assert_eq!(f.exit_status, None);
        assert!(!f.booted);
    }

    #[test]
    fn output_after_exit_marker_is_ignored() {
        let (out, f) = filter(&[b"a\n\nKERNELSEAL-VM-EXIT-abc 2\ntrailing\n"]);
        assert_eq!(out, b"a\n");
        assert_eq!(f.exit_status, Some(2));
    }

    #[test]
    fn init_quotes_arguments() {
        let s = init_script(
            "/usr/bin/t.sh",
            &["a b".into(), "it's".into()],
            "6.12.1",
            "n",
        );
        assert!(s.contains(r"'/usr/bin/t.sh' 'a b' 'it'\''s' >$OUT"), "{s}");
        assert!(s.contains("KERNELSEAL_VM_KERNEL='6.12.1'"));
        assert!(s.contains("printf '\\n%s %d\\n' KERNELSEAL-VM-EXIT-n \"$rc\""));
    }
}
