//! Initramfs assembly: a gzip'ed newc cpio archive written directly in Rust.
//!
//! Writing newc ourselves (instead of staging a directory for `cpio`) lets
//! every entry be owned by root with a fixed mtime whatever user builds it,
//! and lets us add `/dev/console` without needing mknod on the host.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use flate2::Compression;
use flate2::write::GzEncoder;

use crate::util::install_hint;

/// The x86-64 dynamic loader; every dynamically linked binary needs it.
pub const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";

enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// An archive being assembled, keyed by path without the leading `/`.
/// A BTreeMap orders every parent directory before its children, which the
/// kernel's unpacker needs (it does not create missing parents).
#[derive(Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    /// The skeleton every guest needs: mount points and `/dev/console`, so
    /// that `/init` has a stdout/stderr (the kernel console) before devtmpfs
    /// is mounted.
    pub fn new() -> Self {
        let mut fs = Self::default();
        for d in [
            "bin", "sbin", "usr/bin", "usr/sbin", "lib", "lib64", "etc", "proc", "sys", "dev",
            "run", "tmp", "root",
        ] {
            fs.add_dir(d);
        }
        fs.insert("dev/console", Entry::CharDev { major: 5, minor: 1 });
        // Names for root and nobody, so tools print names and tests can drop
        // privileges to a known unprivileged user.
        fs.add_bytes(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .to_vec(),
            0o644,
        );
        fs.add_bytes(
            "etc/group",
            b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
            0o644,
        );
        fs
    }

    fn insert(&mut self, path: &str, entry: Entry) {
        let path = path.trim_start_matches('/').to_owned();
        let mut parent = Path::new(&path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            self.entries
                .entry(p.to_string_lossy().into_owned())
                .or_insert(Entry::Dir);
            parent = p.parent();
        }
        self.entries.insert(path, entry);
    }

    pub fn add_dir(&mut self, path: &str) {
        self.insert(path, Entry::Dir);
    }

    pub fn add_bytes(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.insert(path, Entry::File { data, mode });
    }

    pub fn add_symlink(&mut self, path: &str, target: &str) {
        self.insert(path, Entry::Symlink(target.to_owned()));
    }

    /// Copies a host file (following symlinks) to `guest` with its permissions.
    pub fn add_host_file(&mut self, guest: &str, host: &Path) -> Result<()> {
        let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        let mode = fs::metadata(host)?.permissions().mode() & 0o7777;
        self.add_bytes(guest, data, mode);
        Ok(())
    }

    /// Adds busybox at `/bin/busybox` and a symlink for each of its applets
    /// (`busybox --list-full` names them with their directory).
    pub fn add_busybox(&mut self, busybox: &Path) -> Result<()> {
        self.add_host_file("bin/busybox", busybox)?;
        let out = Command::new(busybox)
            .arg("--list-full")
            .output()
            .with_context(|| format!("running {} --list-full", busybox.display()))?;
        if !out.status.success() {
            bail!("{} --list-full failed", busybox.display());
        }
        for applet in String::from_utf8_lossy(&out.stdout).lines() {
            let applet = applet.trim();
            if !applet.is_empty() && applet != "bin/busybox" {
                self.add_symlink(applet, "/bin/busybox");
            }
        }
        Ok(())
    }

    /// Adds an executable (ELF or script) at `guest`, and for an ELF every
    /// shared library `ldd` resolves, at the same path as on the host.
    pub fn add_executable(&mut self, guest: &str, host: &Path) -> Result<()> {
        let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        if data.starts_with(b"\x7fELF") {
            for lib in shared_libraries(host)? {
                let guest_lib = lib.to_string_lossy().into_owned();
                self.add_host_file(&guest_lib, &lib)?;
            }
        } else if !data.starts_with(b"#!") {
            bail!(
                "{} is neither an ELF binary nor a script starting with #!",
                host.display()
            );
        }
        // Whatever the host mode, the payload must be executable in the guest.
        let mode = fs::metadata(host)?.permissions().mode() & 0o7777 | 0o555;
        self.add_bytes(guest, data, mode);
        Ok(())
    }

    /// Writes the archive, gzip-compressed.
    pub fn write_gz(&self, path: &Path) -> Result<()> {
        let file =
            fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut gz = GzEncoder::new(io::BufWriter::new(file), Compression::fast());
        self.write_newc(&mut gz)
            .with_context(|| format!("writing {}", path.display()))?;
        gz.finish()?.flush()?;
        Ok(())
    }

    pub fn write_newc(&self, out: &mut impl Write) -> io::Result<()> {
        for (ino, (name, entry)) in (1u32..).zip(&self.entries) {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match entry {
                Entry::Dir => (0o040755, &[], (0, 0)),
                Entry::File { data, mode } => (0o100000 | mode, data, (0, 0)),
                Entry::Symlink(target) => (0o120777, target.as_bytes(), (0, 0)),
                Entry::CharDev { major, minor } => (0o020600, &[], (*major, *minor)),
            };
            let nlink = if matches!(entry, Entry::Dir) { 2 } else { 1 };
            write_record(out, ino, mode, nlink, rdev, name, data)?;
        }
        write_record(out, 0, 0, 1, (0, 0), "TRAILER!!!", &[])
    }
}

/// One newc record: 110-byte ASCII header, NUL-terminated name, data, each
/// padded to 4 bytes. uid/gid 0 and mtime 0 keep the archive reproducible.
fn write_record(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    (rdev_major, rdev_minor): (u32, u32),
    name: &str,
    data: &[u8],
) -> io::Result<()> {
    let namesize = name.len() + 1;
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        u32::try_from(data.len()).map_err(|_| io::Error::other("file too large for newc"))?,
        0,
        0,
        rdev_major,
        rdev_minor,
        u32::try_from(namesize).map_err(|_| io::Error::other("name too long"))?,
        0,
    ];
    let mut header = String::from("070701");
    for f in fields {
        header.push_str(&format!("{f:08x}"));
    }
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    out.write_all(&[0; 3][..pad4(110 + namesize)])?;
    out.write_all(data)?;
    out.write_all(&[0; 3][..pad4(data.len())])
}

fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// The shared libraries of an ELF binary, from `ldd`, loader included.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = match Command::new("ldd").arg(binary).output() {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            bail!("`ldd` not found{}", install_hint("ldd"))
        }
        Err(e) => return Err(e).context("running ldd"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // ldd exits 1 for static binaries, so the text decides, not the status.
    let libs = parse_ldd(&text).with_context(|| format!("ldd {}", binary.display()))?;
    if libs.is_empty() && !out.status.success() && !is_static(&text) {
        bail!("ldd {} failed: {}", binary.display(), text.trim());
    }
    Ok(libs)
}

/// Whether an x86-64 ELF image asks for a dynamic loader (has PT_INTERP).
pub fn elf_interpreter(data: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| {
        data.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (
        data.get(0x20..0x28)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize),
        u16_at(0x36),
        u16_at(0x38),
    ) else {
        return false;
    };
    (0..phnum).any(|i| {
        let o = phoff.saturating_add(i * phentsize);
        data.get(o..o + 4)
            .is_some_and(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) == PT_INTERP)
    })
}

fn is_static(ldd_text: &str) -> bool {
    ldd_text.contains("not a dynamic executable") || ldd_text.contains("statically linked")
}

/// Parses `ldd` output into the absolute paths of the libraries to copy.
/// The vDSO has no file and is skipped; an unresolved library is an error.
pub fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if is_static(line) {
            continue;
        }
        let path_part = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    bail!("shared library {} not found", name.trim());
                }
                rest
            }
            None => line,
        };
        // "path (0xaddr)"; the vDSO appears as "linux-vdso.so.1 (0x…)".
        let path = path_part.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    if !libs.is_empty() && !libs.iter().any(|l| l == Path::new(LOADER)) {
        libs.push(PathBuf::from(LOADER));
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LDD_DYNAMIC: &str = "\
\tlinux-vdso.so.1 (0x00007ffd6b7f2000)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0e1c5a0000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e1c3bf000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0e1c5f6000)
";

    #[test]
    fn ldd_dynamic_binary() {
        let libs = parse_ldd(LDD_DYNAMIC).unwrap();
        assert_eq!(
            libs,
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from(LOADER),
            ]
        );
    }

    #[test]
    fn ldd_static_and_old_vdso_format() {
        assert!(
            parse_ldd("\tnot a dynamic executable\n")
                .unwrap()
                .is_empty()
        );
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
        let libs =
            parse_ldd("\tlinux-vdso.so.1 =>  (0x00007ffd)\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n")
                .unwrap();
        // The loader is added even when ldd did not print it.
        assert_eq!(
            libs,
            vec![PathBuf::from("/lib/libc.so.6"), PathBuf::from(LOADER)]
        );
    }

    #[test]
    fn ldd_missing_library_is_an_error() {
        let err = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert!(err.to_string().contains("libfoo.so.1"), "{err}");
    }

    #[test]
    fn elf_interpreter_detection() {
        let ls = fs::read("/bin/ls").unwrap();
        assert!(elf_interpreter(&ls));
        assert!(!elf_interpreter(b"#!/bin/sh\n"));
    }

    #[test]
    fn newc_layout() {
        let mut fs = Initramfs::default();
        fs.add_bytes("a/b", b"hello".to_vec(), 0o644);
        let mut out = Vec::new();
        fs.write_newc(&mut out).unwrap();
        // Parent directory first, then the file, then the trailer.
        assert!(out.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&out);
        let a = text.find("a\0").unwrap();
        let b = text.find("a/b\0").unwrap();
        let t = text.find("TRAILER!!!\0").unwrap();
        assert!(a < b && b < t);
        assert_eq!(out.len() % 4, 0);
        // File record: mode 0100644, size 5.
        let hdr = &text[b - 110..b];
        assert_eq!(&hdr[14..22], "000081a4");
        assert_eq!(&hdr[54..62], "00000005");
    }
}
