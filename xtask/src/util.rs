//! Small helpers: locating the workspace, running commands with clear errors,
//! building the workspace's binaries (release, or statically linked).

use std::env;
use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Where the workspace and its `target/` directory are.
pub struct Workspace {
    pub root: PathBuf,
    pub target: PathBuf,
}

impl Workspace {
    pub fn locate() -> Result<Self> {
        // xtask lives one level below the workspace root; CARGO_MANIFEST_DIR is
        // set at compile time so this works from any current directory.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask has no parent directory")?
            .to_path_buf();
        let target = match env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => root.join(dir),
            None => root.join("target"),
        };
        Ok(Self { root, target })
    }

    pub fn vm_dir(&self) -> PathBuf {
        self.target.join("vm")
    }

    pub fn release_bin(&self, name: &str) -> PathBuf {
        self.target.join("release").join(name)
    }

    /// The release `kernelseal` command and the `kernelseal-core` it execs
    /// (two packages: `--bin` filters every `-p` named), plus `more`
    /// packages and binaries of the same names.
    pub fn cargo_build_kernelseal(&self, more: &[&str]) -> Result<()> {
        let mut args = vec!["-p", "kernelseal", "-p", "kernelseal-exec"];
        for m in more {
            args.extend(["-p", m]);
        }
        args.extend(["--bin", "kernelseal-core", "--bin", "kernelseal"]);
        for m in more {
            args.extend(["--bin", m]);
        }
        self.cargo_build_release(&args)
    }

    /// `cargo build --release` with the given extra arguments.
    pub fn cargo_build_release(&self, args: &[&str]) -> Result<()> {
        let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        eprintln!("xtask: cargo build --release {}", args.join(" "));
        run_checked(
            Command::new(cargo)
                .args(["build", "--release"])
                .args(args)
                .current_dir(&self.root),
            &format!("cargo build --release {}", args.join(" ")),
        )
    }

    /// `RUSTFLAGS=-C target-feature=+crt-static cargo build --release --target
    /// <host arch and libc> -p PACKAGE --bin BIN` into target/static/BIN,
    /// stripped: with an explicit --target the flags reach only the target
    /// crates, not build scripts or proc macros.
    pub fn cargo_build_static(
        &self,
        package: &str,
        bin: &str,
        libc: StaticLibc,
    ) -> Result<PathBuf> {
        let dir = self.target.join("static");
        let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let triple = libc.triple(&host_triple()?);
        eprintln!("xtask: building a static {bin} ({})", libc.name());
        run_checked(
            Command::new(cargo)
                .args([
                    "build",
                    "--release",
                    "--locked",
                    "-p",
                    package,
                    "--bin",
                    bin,
                    "--target",
                    &triple,
                ])
                .arg("--target-dir")
                .arg(&dir)
                .env("RUSTFLAGS", "-C target-feature=+crt-static")
                .current_dir(&self.root),
            &format!("static build of {bin}"),
        )?;
        let built = dir.join(&triple).join("release").join(bin);
        let out = dir.join(bin);
        fs::copy(&built, &out).with_context(|| format!("copying {}", built.display()))?;
        // Stripped: it is copied into images and VMs.
        run_checked(Command::new("strip").arg(&out), &format!("strip {bin}"))?;
        let size = fs::metadata(&out)?.len();
        eprintln!(
            "xtask: {} ({:.2} MB stripped, static, {})",
            out.display(),
            size as f64 / 1e6,
            libc.name()
        );
        Ok(out)
    }

    /// Whether the workspace has a package of this name (`cargo pkgid` fails
    /// when it does not).
    pub fn has_package(&self, name: &str) -> Result<bool> {
        let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let out = Command::new(cargo)
            .args(["pkgid", "--quiet", name])
            .current_dir(&self.root)
            .output()
            .context("running cargo pkgid")?;
        Ok(out.status.success())
    }
}

/// The C library a static build links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaticLibc {
    /// The host's own; `kernelseal` needs it (aws-lc's C code is built with
    /// the host's C compiler).
    Glibc,
    Musl,
}

impl StaticLibc {
    /// For the wrapper `kernelseal-exec`, which starts in front of every
    /// wrapped program: musl when its Rust standard library is installed
    /// (`rustup target add <arch>-unknown-linux-musl`), else glibc. A static
    /// glibc program's start-up alone (CPUID probes of the CPU's features
    /// and caches, each a VM exit under a hypervisor; tunables; reading
    /// /proc/self/exe) took about 220 µs of the wrapper's 680 µs before its
    /// exec on the 2-core dev VM; musl's takes none of it, and the wrapper
    /// went from 1.22x to 1.01x the static exec shim (issue 19).
    pub fn for_wrapper() -> Result<Self> {
        let musl = StaticLibc::Musl.triple(&host_triple()?);
        let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
        let out = Command::new(rustc)
            .args(["--print", "target-libdir", "--target", &musl])
            .output()
            .context("running rustc --print target-libdir")?;
        // rustc prints the directory whether or not the target is installed.
        let libdir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && libdir.is_dir() {
            return Ok(StaticLibc::Musl);
        }
        eprintln!(
            "xtask: no Rust std for {musl} (rustup target add {musl}): the wrapper links glibc, \
             whose static start-up is slower"
        );
        Ok(StaticLibc::Glibc)
    }

    fn name(self) -> &'static str {
        match self {
            StaticLibc::Glibc => "glibc",
            StaticLibc::Musl => "musl",
        }
    }

    /// `host` (`<arch>-unknown-linux-gnu…`) with this C library.
    fn triple(self, host: &str) -> String {
        match self {
            StaticLibc::Glibc => host.to_owned(),
            StaticLibc::Musl => match host.split_once("-gnu") {
                Some((arch_os, abi)) => format!("{arch_os}-musl{abi}"),
                None => host.to_owned(),
            },
        }
    }
}

/// The host's target triple, as `rustc -vV` names it.
fn host_triple() -> Result<String> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = Command::new(rustc)
        .arg("-vV")
        .output()
        .context("running rustc -vV for the host triple")?;
    String::from_utf8_lossy(&version.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV printed no host triple")
}

/// `path` made absolute, after checking that it is a file.
pub fn absolute_file(path: &Path) -> Result<PathBuf> {
    if !path.is_file() {
        bail!("{}: no such file", path.display());
    }
    fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))
}

/// Runs `cmd` with inherited output; a failure names `what`. A missing program
/// is reported with the Debian package that provides it.
pub fn run_checked(cmd: &mut Command, what: &str) -> Result<()> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    // Tools' chatter goes to stderr: stdout carries only the payload's output.
    let status = match cmd.stdout(io::stderr()).status() {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            bail!("{what}: `{program}` not found{}", install_hint(&program))
        }
        Err(e) => return Err(e).with_context(|| format!("{what}: cannot run `{program}`")),
    };
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Which Debian package to install for a missing tool.
pub fn install_hint(program: &str) -> &'static str {
    match program {
        "qemu-system-x86_64" => ": install the Debian package qemu-system-x86 (scripts/setup does)",
        "apt-get" | "apt-cache" => ": the VM harness needs Debian's apt to fetch kernels",
        "dpkg-deb" => ": install the Debian package dpkg",
        "ldd" => ": install the Debian package libc-bin",
        "busybox" => ": install the Debian package busybox-static (scripts/setup does)",
        _ => "",
    }
}
