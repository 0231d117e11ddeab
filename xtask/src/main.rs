//! `cargo xtask`: developer tasks for KernelSeal.
//!
//! - `vm-run`: boot a QEMU VM with the release `kernelseal` and run one file
//!   in it as root, for trying a scenario by hand.
//! - `vm-test`: run the in-VM test runner on every supported kernel.
//! - `vm-bench`: the hook-cost benchmark (`kernelseal-vmtests bench`) on
//!   every supported kernel, in guest instructions per op (QEMU icount) or
//!   in wall time.
//! - `vm-fetch`: download and cache the kernels and busybox (setup does it).
//!
//! BPF-LSM programs cannot be attached on the development machines, so
//! everything that needs them runs here, in a VM under TCG.

mod guest;
mod initramfs;
mod kernel;
mod util;
mod vm;
mod vmbench;
mod vmtest;

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

use kernel::{Kernel, Series};
use util::Workspace;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "KernelSeal developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// The variant names are the subcommands users type (`vm-run`, `vm-test`…).
#[allow(clippy::enum_variant_names)]
#[derive(Subcommand)]
enum Cmd {
    /// Boot a VM with /usr/bin/kernelseal and busybox, run FILE in it as root,
    /// print its output and exit with its status.
    VmRun {
        /// Kernel series to boot.
        #[arg(long, value_enum, default_value = "6.19")]
        kernel: Series,
        /// Seconds before the VM is killed.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Extra executable to copy to /usr/bin in the guest (repeatable).
        #[arg(long = "with", value_name = "PATH")]
        with: Vec<PathBuf>,
        /// ELF binary or #! script to run; copied to /usr/bin/<basename>.
        file: PathBuf,
        /// Arguments for FILE.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the in-VM test runner as root on each kernel; closes with
    /// `vmtest: N passed, M failed`.
    VmTest {
        /// Kernel series to test.
        #[arg(long, value_enum, default_value = "all")]
        kernel: KernelChoice,
        /// Test runner to use instead of target/release/kernelseal-vmtests.
        #[arg(long, value_name = "PATH")]
        runner: Option<PathBuf>,
        /// Seconds before each VM is killed.
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
        /// Extra executable to copy to /usr/bin in the guest (repeatable).
        #[arg(long = "with", value_name = "PATH")]
        with: Vec<PathBuf>,
        /// Arguments for the runner.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Measure what the LSM hooks cost (open, /proc read, exec) with the
    /// programs detached, with empty programs on the same hooks (the floor
    /// any BPF-LSM program pays) and attached, in one run per kernel; prints
    /// the cost per op in each state and the differences.
    VmBench {
        /// Kernel series to measure.
        #[arg(long, value_enum, default_value = "all")]
        kernel: KernelChoice,
        /// Seconds before each VM is killed (host time; the bench takes
        /// about a minute per kernel in either mode).
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
        /// Count guest instructions per op (QEMU -icount shift=0,sleep=off):
        /// the same figures on any host. The default.
        #[arg(long, conflicts_with = "wall")]
        icount: bool,
        /// Time each op in host nanoseconds instead (noisy under TCG: host
        /// load shows in the figures).
        #[arg(long)]
        wall: bool,
    },
    /// Download and cache the test kernels and busybox under target/vm/.
    VmFetch,
    /// Build the wrapper `kernelseal-exec` statically linked (glibc
    /// crt-static) into target/static/: no dynamic loader at every wrapped
    /// start, and it runs in images without a matching libc.
    StaticExec,
    /// Build `kernelseal` statically linked into target/static/: what a
    /// node with `policy.lock` runs (a locked node lets KernelSeal's
    /// processes run only their own binary's code), and what the VM tests
    /// install as /usr/bin/kernelseal.
    Static,
    /// The demo: boot the newest kernel, start the agent, run an app through
    /// `kernelseal exec`, and show root being refused next to the log.
    Demo,
}

#[derive(Clone, Copy, ValueEnum)]
enum KernelChoice {
    #[value(name = "6.12")]
    V6_12,
    #[value(name = "6.19")]
    V6_19,
    All,
}

impl KernelChoice {
    fn series(self) -> Vec<Series> {
        match self {
            KernelChoice::V6_12 => vec![Series::V6_12],
            KernelChoice::V6_19 => vec![Series::V6_19],
            KernelChoice::All => Series::ALL.to_vec(),
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let ws = Workspace::locate()?;
    match cli.cmd {
        Cmd::VmRun {
            kernel,
            timeout,
            with,
            file,
            args,
        } => vm_run(&ws, kernel, timeout, &with, &file, args),
        Cmd::VmTest {
            kernel,
            runner,
            timeout,
            with,
            args,
        } => vm_test(&ws, kernel, runner, timeout, &with, args),
        Cmd::VmBench {
            kernel,
            timeout,
            icount: _,
            wall,
        } => {
            let clock = if wall {
                vm::Clock::Wall
            } else {
                vm::Clock::Icount
            };
            vm_bench(&ws, kernel, clock, timeout)
        }
        Cmd::Static => {
            let out = static_build(&ws, "kernelseal", "kernelseal")?;
            println!("{}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::StaticExec => {
            let out = static_build(&ws, "kernelseal-exec", "kernelseal-exec")?;
            println!("{}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo => {
            const RUNNER: &str = "kernelseal-vmtests";
            ws.cargo_build_release(&["-p", RUNNER, "--bin", RUNNER])?;
            let script = ws.root.join("examples/vm-demo.sh");
            vm_run(
                &ws,
                Series::V6_19,
                300,
                &[ws.release_bin(RUNNER)],
                &script,
                Vec::new(),
            )
        }
        Cmd::VmFetch => {
            ensure_busybox(&ws.vm_dir())?;
            for series in Series::ALL {
                let k = kernel::ensure(&ws.vm_dir(), series)?;
                eprintln!(
                    "xtask: kernel {} cached at {}",
                    k.release,
                    ws.vm_dir().display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs `kernelseal-vmtests bench` on each kernel, its output on stdout,
/// then a summary of every kernel's figures headed by the mode.
fn vm_bench(
    ws: &Workspace,
    choice: KernelChoice,
    clock: vm::Clock,
    timeout: u64,
) -> Result<ExitCode> {
    const RUNNER: &str = "kernelseal-vmtests";
    ws.cargo_build_release(&[
        "-p",
        "kernelseal",
        "-p",
        RUNNER,
        "--bin",
        "kernelseal",
        "--bin",
        RUNNER,
    ])?;
    let runner = absolute_file(&ws.release_bin(RUNNER))?;
    let busybox = ensure_busybox(&ws.vm_dir())?;
    let payload = guest_bin_path(&runner)?;
    let mut results = Vec::new();
    for series in choice.series() {
        let kernel = kernel::ensure(&ws.vm_dir(), series)?;
        let mut executables = base_executables(ws, &[])?;
        executables.push((payload.clone(), runner.clone()));
        let spec = vm::VmSpec {
            kernel: &kernel,
            busybox: &busybox,
            executables,
            payload: payload.clone(),
            args: vmbench::guest_args(clock),
            timeout: Duration::from_secs(timeout),
            label: format!("vm-bench-{}", series.as_str()),
            clock,
        };
        println!(
            "=== vm-bench on {} ({}, timeout {timeout} s) ===",
            kernel.release,
            vmbench::mode_name(clock)
        );
        let mut captured = Vec::new();
        let outcome = {
            let stdout = io::stdout();
            let mut tee = Tee(stdout.lock(), &mut captured);
            vm::run(&ws.vm_dir(), &spec, &mut tee)
        };
        let log = ws
            .vm_dir()
            .join("logs")
            .join(format!("{}.output.log", spec.label));
        fs::write(&log, &captured).with_context(|| format!("writing {}", log.display()))?;
        let problem = match outcome {
            Ok(o) => {
                println!("=== {}", timing(&kernel, &o));
                (o.exit_status != 0).then(|| format!("exit status {}", o.exit_status))
            }
            Err(e) => {
                eprintln!("xtask: error: {e:#}");
                Some(format!("{e}"))
            }
        };
        results.push(vmbench::KernelBench {
            kernel: kernel.release.clone(),
            figures: vmbench::figures(&String::from_utf8_lossy(&captured)),
            problem,
        });
    }
    let all_ok = vmbench::report(clock, &results, &mut io::stdout().lock())?;
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn vm_run(
    ws: &Workspace,
    series: Series,
    timeout: u64,
    with: &[PathBuf],
    file: &Path,
    args: Vec<String>,
) -> Result<ExitCode> {
    let file = absolute_file(file)?;
    ws.cargo_build_release(&["-p", "kernelseal", "--bin", "kernelseal"])?;
    let kernel = kernel::ensure(&ws.vm_dir(), series)?;
    let busybox = ensure_busybox(&ws.vm_dir())?;
    let mut executables = base_executables(ws, with)?;
    let payload = guest_bin_path(&file)?;
    executables.push((payload.clone(), file));
    let spec = vm::VmSpec {
        kernel: &kernel,
        busybox: &busybox,
        executables,
        payload,
        args,
        timeout: Duration::from_secs(timeout),
        label: format!("vm-run-{}", series.as_str()),
        clock: vm::Clock::Wall,
    };
    eprintln!(
        "xtask: booting {} (TCG, timeout {timeout} s)",
        kernel.release
    );
    let stdout = io::stdout();
    let outcome = vm::run(&ws.vm_dir(), &spec, &mut stdout.lock())?;
    eprintln!("xtask: {}", timing(&kernel, &outcome));
    Ok(ExitCode::from(
        u8::try_from(outcome.exit_status).unwrap_or(u8::MAX),
    ))
}

fn vm_test(
    ws: &Workspace,
    choice: KernelChoice,
    runner: Option<PathBuf>,
    timeout: u64,
    with: &[PathBuf],
    args: Vec<String>,
) -> Result<ExitCode> {
    const RUNNER_PKG: &str = "kernelseal-vmtests";
    let runner = match runner {
        Some(path) => {
            ws.cargo_build_release(&["-p", "kernelseal", "--bin", "kernelseal"])?;
            absolute_file(&path)?
        }
        None => {
            let default = ws.release_bin(RUNNER_PKG);
            if ws.has_package(RUNNER_PKG)? {
                // Always rebuild so a stale runner is never tested. `--bin`
                // filters every `-p` named, so name both binaries.
                ws.cargo_build_release(&[
                    "-p",
                    "kernelseal",
                    "-p",
                    RUNNER_PKG,
                    "--bin",
                    "kernelseal",
                    "--bin",
                    RUNNER_PKG,
                ])?;
            } else if default.is_file() {
                ws.cargo_build_release(&["-p", "kernelseal", "--bin", "kernelseal"])?;
                eprintln!(
                    "xtask: warning: no package {RUNNER_PKG}; using the existing {}",
                    default.display()
                );
            } else {
                bail!(
                    "no test runner: {} does not exist and the workspace has no package \
                     {RUNNER_PKG} to build it from (pass --runner PATH)",
                    default.display()
                );
            }
            absolute_file(&default)?
        }
    };
    let busybox = ensure_busybox(&ws.vm_dir())?;
    let series = choice.series();
    // Fetch every kernel first, so a missing one fails before any long boot.
    let kernels = series
        .iter()
        .map(|&s| kernel::ensure(&ws.vm_dir(), s))
        .collect::<Result<Vec<Kernel>>>()?;
    let payload = guest_bin_path(&runner)?;
    let mut results = Vec::new();
    for kernel in &kernels {
        let mut executables = base_executables(ws, with)?;
        executables.push((payload.clone(), runner.clone()));
        let label = format!("vm-test-{}", kernel.series.as_str());
        let spec = vm::VmSpec {
            kernel,
            busybox: &busybox,
            executables,
            payload: payload.clone(),
            args: args.clone(),
            timeout: Duration::from_secs(timeout),
            label: label.clone(),
            clock: vm::Clock::Wall,
        };
        // On stdout, so the runner's output of each kernel is headed there.
        println!("=== vm-test on {} ===", kernel.release);
        let mut captured = Vec::new();
        let outcome = {
            let stdout = io::stdout();
            let mut tee = Tee(stdout.lock(), &mut captured);
            vm::run(&ws.vm_dir(), &spec, &mut tee)
        };
        let log = ws.vm_dir().join("logs").join(format!("{label}.output.log"));
        fs::write(&log, &captured).with_context(|| format!("writing {}", log.display()))?;
        let exit = match &outcome {
            Ok(o) => {
                println!("=== {}", timing(kernel, o));
                Ok(o.exit_status)
            }
            Err(e) => {
                eprintln!("xtask: error: {e:#}");
                Err(format!("{e}"))
            }
        };
        let output = String::from_utf8_lossy(&captured);
        results.push(vmtest::judge(kernel.series.as_str(), &output, exit));
    }
    let all_ok = vmtest::report(&results, &mut io::stdout().lock())?;
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The static `kernelseal` at /usr/bin/kernelseal (what a locked node
/// runs), the dynamically linked release build at
/// /usr/bin/kernelseal-dynamic, plus any `--with` files.
fn base_executables(ws: &Workspace, with: &[PathBuf]) -> Result<Vec<(String, PathBuf)>> {
    let mut list = vec![
        (
            "usr/bin/kernelseal".to_owned(),
            static_build(ws, "kernelseal", "kernelseal")?,
        ),
        (
            "usr/bin/kernelseal-dynamic".to_owned(),
            ws.release_bin("kernelseal"),
        ),
    ];
    for path in with {
        let path = absolute_file(path)?;
        list.push((guest_bin_path(&path)?, path));
    }
    Ok(list)
}

fn guest_bin_path(host: &Path) -> Result<String> {
    let name = host
        .file_name()
        .with_context(|| format!("{} has no file name", host.display()))?;
    Ok(format!("/usr/bin/{}", name.to_string_lossy()))
}

fn absolute_file(path: &Path) -> Result<PathBuf> {
    if !path.is_file() {
        bail!("{}: no such file", path.display());
    }
    fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))
}

/// The static busybox, copied once under `target/vm/` so runs do not depend
/// on the host's copy staying put.
fn ensure_busybox(vm_dir: &Path) -> Result<PathBuf> {
    let cached = vm_dir.join("busybox");
    if cached.is_file() {
        return Ok(cached);
    }
    let host = Path::new("/bin/busybox");
    if !host.is_file() {
        bail!(
            "/bin/busybox not found: install the Debian package busybox-static (scripts/setup does)"
        );
    }
    let data = fs::read(host).context("reading /bin/busybox")?;
    if initramfs::elf_interpreter(&data) {
        bail!("/bin/busybox is dynamically linked: install the Debian package busybox-static");
    }
    fs::create_dir_all(vm_dir)?;
    fs::copy(host, &cached)
        .with_context(|| format!("copying /bin/busybox to {}", cached.display()))?;
    Ok(cached)
}

fn timing(kernel: &Kernel, o: &vm::VmOutcome) -> String {
    let boot = o
        .boot_time
        .map_or_else(|| "?".to_owned(), |b| format!("{:.1} s", b.as_secs_f64()));
    format!(
        "{}: booted in {boot}, exit status {}, VM total {:.1} s",
        kernel.release,
        o.exit_status,
        o.total_time.as_secs_f64()
    )
}

/// Passes output on to the terminal and keeps a copy for parsing.
struct Tee<'a, W: Write>(W, &'a mut Vec<u8>);

impl<W: Write> Write for Tee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(buf)?;
        self.1.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// `RUSTFLAGS=-C target-feature=+crt-static cargo build --release --target
/// <host> -p PACKAGE --bin BIN` into target/static/BIN, stripped: with an
/// explicit --target the flags reach only the target crates, not build
/// scripts or proc macros.
fn static_build(ws: &Workspace, package: &str, bin: &str) -> Result<PathBuf> {
    let dir = ws.target.join("static");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = std::process::Command::new(rustc)
        .arg("-vV")
        .output()
        .context("running rustc -vV for the host triple")?;
    let host = String::from_utf8_lossy(&version.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV printed no host triple")?;
    let triple = host.as_str();
    eprintln!("xtask: building a static {bin}");
    util::run_checked(
        std::process::Command::new(cargo)
            .args([
                "build",
                "--release",
                "--locked",
                "-p",
                package,
                "--bin",
                bin,
                "--target",
                triple,
            ])
            .arg("--target-dir")
            .arg(&dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .current_dir(&ws.root),
        &format!("static build of {bin}"),
    )?;
    let built = dir.join(triple).join("release").join(bin);
    let out = dir.join(bin);
    fs::copy(&built, &out).with_context(|| format!("copying {}", built.display()))?;
    // Stripped: it is copied into images and VMs.
    util::run_checked(
        std::process::Command::new("strip").arg(&out),
        &format!("strip {bin}"),
    )?;
    let size = fs::metadata(&out)?.len();
    eprintln!(
        "xtask: {} ({:.2} MB stripped, static)",
        out.display(),
        size as f64 / 1e6
    );
    Ok(out)
}
