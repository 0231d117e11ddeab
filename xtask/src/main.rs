//! `cargo xtask`: developer tasks for KernelSeal.
//!
//! - `vm-run`: boot a QEMU VM with the release `kernelseal` and
//!   `kernelseal-core` and run one file
//!   in it as root, for trying a scenario by hand.
//! - `vm-test`: run the in-VM test runner on every supported kernel.
//! - `vm-bench`: the hook-cost benchmark (`kernelseal-vmtests bench`) on
//!   every supported kernel, in guest instructions per op (QEMU icount) or
//!   in wall time.
//! - `vm-fetch`: download and cache the kernels and busybox (setup does it).
//! - `static-exec`: build the wrapper `kernelseal-exec` and the `kernelseal`
//!   command statically linked into `target/static/`.
//! - `static`: the same plus `kernelseal-core`, all statically linked into
//!   `target/static/` (what a host installs, a locked node runs and the VMs
//!   install).
//! - `demo`: boot the newest kernel and show the agent refusing root next
//!   to its log.
//!
//! BPF-LSM programs cannot be attached on the development machines, so
//! everything that needs them runs here, in a VM under TCG.
//!
//! Each command is one module of the same name (`static`, a Rust keyword,
//! is `r#static`); this file only parses and dispatches.

#![forbid(unsafe_code)]

mod busybox;
mod demo;
mod guest;
mod initramfs;
mod kernel;
mod runner;
mod r#static;
mod static_exec;
mod util;
mod vm;
mod vm_bench;
mod vm_fetch;
mod vm_run;
mod vm_test;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

use kernel::Series;
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
    /// Boot a VM with /usr/bin/kernelseal, kernelseal-core and busybox, run
    /// FILE in it as root, print its output and exit with its status.
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
    /// Build the wrapper `kernelseal-exec` and the `kernelseal` command
    /// statically linked (musl when its Rust target is installed, else
    /// glibc crt-static) into target/static/: no dynamic loader at every
    /// wrapped start, and they run in images without a matching libc.
    StaticExec,
    /// Build `kernelseal-core`, the `kernelseal` command and
    /// `kernelseal-exec` statically linked into target/static/: what a host
    /// installs, what a node with `policy.lock` runs (a locked node lets
    /// KernelSeal's processes run only their own binary's code), and what
    /// the VM tests install in /usr/bin.
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
        } => vm_run::run(
            &ws,
            kernel,
            timeout,
            vm_run::Guest::Full(&with),
            &file,
            args,
        ),
        Cmd::VmTest {
            kernel,
            runner,
            timeout,
            with,
            args,
        } => vm_test::run(&ws, &kernel.series(), runner, timeout, &with, args),
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
            vm_bench::run(&ws, &kernel.series(), clock, timeout)
        }
        Cmd::Static => r#static::run(&ws),
        Cmd::StaticExec => static_exec::run(&ws),
        Cmd::Demo => demo::run(&ws),
        Cmd::VmFetch => vm_fetch::run(&ws),
    }
}
