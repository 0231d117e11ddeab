//! Fetching and caching the guest kernels.
//!
//! Both kernels come from Debian packages, resolved at run time rather than
//! pinned, because old versions leave the archive. Each image is cached under
//! `target/vm/kernels/<series>/` so that a second run needs no network.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::run_checked;

/// The kernel series the harness tests. Ordered oldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Series {
    /// Debian bookworm's 6.12 (bookworm-security, the machine's apt sources).
    #[value(name = "6.12")]
    V6_12,
    /// The newest 6.19.* from Debian trixie-backports (private apt source).
    #[value(name = "6.19")]
    V6_19,
}

impl Series {
    pub const ALL: [Series; 2] = [Series::V6_12, Series::V6_19];

    pub fn as_str(self) -> &'static str {
        match self {
            Series::V6_12 => "6.12",
            Series::V6_19 => "6.19",
        }
    }
}

/// A kernel image ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub series: Series,
    /// The release string (`uname -r` in the guest), taken from the image name.
    pub release: String,
    pub image: PathBuf,
}

/// Returns the cached kernel of `series`, fetching it first if needed.
pub fn ensure(vm_dir: &Path, series: Series) -> Result<Kernel> {
    let dir = vm_dir.join("kernels").join(series.as_str());
    if let Some(kernel) = cached(&dir, series)? {
        return Ok(kernel);
    }
    eprintln!(
        "xtask: fetching kernel {} (cached afterwards)",
        series.as_str()
    );
    let work = dir.join("download");
    // A previous interrupted attempt may have left a partial tree behind.
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let deb = match series {
        Series::V6_12 => fetch_6_12(&work)?,
        Series::V6_19 => fetch_6_19(vm_dir, &work)?,
    };
    let tree = work.join("tree");
    run_checked(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree),
        "dpkg-deb -x (unpacking the kernel package)",
    )?;
    let (release, image) = find_vmlinuz(&tree.join("boot"))
        .with_context(|| format!("package {} holds no boot/vmlinuz-*", deb.display()))?;
    let dest = dir.join(format!("vmlinuz-{release}"));
    fs::copy(&image, &dest).with_context(|| format!("copying {}", image.display()))?;
    fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    Ok(Kernel {
        series,
        release,
        image: dest,
    })
}

fn cached(dir: &Path, series: Series) -> Result<Option<Kernel>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    Ok(find_vmlinuz(dir).ok().map(|(release, image)| Kernel {
        series,
        release,
        image,
    }))
}

/// Finds the single `vmlinuz-<release>` file in `dir`.
fn find_vmlinuz(dir: &Path) -> Result<(String, PathBuf)> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            found.push((release.to_owned(), entry.path()));
        }
    }
    found.sort();
    found
        .pop()
        .with_context(|| format!("no vmlinuz-* in {}", dir.display()))
}

const META_6_12: &str = "linux-image-6.12-cloud-amd64";

/// 6.12 comes from the machine's own apt sources (bookworm-security), resolved
/// through the meta-package.
fn fetch_6_12(work: &Path) -> Result<PathBuf> {
    let out = Command::new("apt-cache")
        .args(["depends", META_6_12])
        .output()
        .context("running apt-cache (is this a Debian machine?)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(pkg) = parse_depends(&text, "linux-image-6.12.") else {
        bail!(
            "cannot resolve {META_6_12} with `apt-cache depends` (run `apt-get update`, \
             scripts/setup does); apt said: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    };
    // A stale package list names a version that has left the archive.
    download(
        work,
        &pkg,
        &[],
        " (if the package list is stale, run `apt-get update`)",
    )
}

/// Picks the first `Depends:` target starting with `prefix` from
/// `apt-cache depends` output.
pub fn parse_depends(text: &str, prefix: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(|p| p.trim().trim_start_matches('<').trim_end_matches('>'))
        .find(|p| p.starts_with(prefix))
        .map(str::to_owned)
}

const BACKPORTS_SOURCE: &str = "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
     http://deb.debian.org/debian trixie-backports main\n";

/// 6.19 comes from trixie-backports through an apt configuration of our own
/// under `target/`, so the machine's apt setup is never touched.
fn fetch_6_19(vm_dir: &Path, work: &Path) -> Result<PathBuf> {
    let apt = vm_dir.join("apt-trixie-backports");
    for d in ["lists/partial", "cache/archives/partial"] {
        fs::create_dir_all(apt.join(d))
            .with_context(|| format!("creating {}", apt.join(d).display()))?;
    }
    let sources = apt.join("sources.list");
    fs::write(&sources, BACKPORTS_SOURCE)
        .with_context(|| format!("writing {}", sources.display()))?;
    let opts = [
        format!("Dir::Etc::sourcelist={}", sources.display()),
        "Dir::Etc::sourceparts=/dev/null".to_owned(),
        format!("Dir::State::Lists={}", apt.join("lists").display()),
        format!("Dir::Cache={}", apt.join("cache").display()),
    ];
    let o_args: Vec<String> = opts
        .iter()
        .flat_map(|o| ["-o".to_owned(), o.clone()])
        .collect();
    run_checked(
        Command::new("apt-get").args(&o_args).arg("update"),
        "apt-get update of the private trixie-backports source",
    )
    .context("cannot fetch kernel package linux-binary-6.19.*-cloud-amd64")?;
    let out = Command::new("apt-cache")
        .args(&o_args)
        .args(["search", "linux-binary-6.19"])
        .output()
        .context("running apt-cache search")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(pkg) = newest_binary_package(&text, "6.19") else {
        bail!(
            "no linux-binary-6.19.*-cloud-amd64 package found in trixie-backports \
             (apt-cache search linux-binary-6.19 listed: {:?})",
            text.trim()
        );
    };
    download(work, &pkg, &o_args, "")
}

/// From `apt-cache search` output, the `linux-binary-<series>.N…-cloud-amd64`
/// package with the highest version. Other series (7.x also exists there) and
/// other flavours are ignored.
pub fn newest_binary_package(search_output: &str, series: &str) -> Option<String> {
    let prefix = format!("{series}.");
    search_output
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| {
            let version = name
                .strip_prefix("linux-binary-")?
                .strip_suffix("-cloud-amd64")?;
            version
                .starts_with(&prefix)
                .then(|| (version_key(version), name.to_owned()))
        })
        .max()
        .map(|(_, name)| name)
}

/// Orders `6.19.10+deb13` after `6.19.9+deb13`: numeric upstream parts first,
/// then the Debian suffix as text.
fn version_key(version: &str) -> (Vec<u64>, String) {
    let (upstream, suffix) = match version.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => version.split_at(i),
        None => (version, ""),
    };
    let nums = upstream.split('.').filter_map(|p| p.parse().ok()).collect();
    (nums, suffix.to_owned())
}

fn download(work: &Path, pkg: &str, o_args: &[String], hint: &str) -> Result<PathBuf> {
    run_checked(
        Command::new("apt-get")
            .args(o_args)
            .args(["download", pkg])
            .current_dir(work),
        &format!("apt-get download {pkg}"),
    )
    .with_context(|| format!("cannot fetch kernel package {pkg}{hint}"))?;
    for entry in fs::read_dir(work)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            return Ok(path);
        }
    }
    bail!("apt-get download {pkg} left no .deb in {}", work.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_picks_the_versioned_image() {
        let text =
            "linux-image-6.12-cloud-amd64\n  Depends: linux-image-6.12.117+deb12-cloud-amd64\n";
        assert_eq!(
            parse_depends(text, "linux-image-6.12.").as_deref(),
            Some("linux-image-6.12.117+deb12-cloud-amd64")
        );
        assert_eq!(
            parse_depends("linux-image-6.12-cloud-amd64\n", "linux-image-6.12."),
            None
        );
    }

    #[test]
    fn newest_619_wins_over_older_and_over_7x() {
        let text = "\
linux-binary-6.19.3+deb13-cloud-amd64 - Linux 6.19.3+deb13 for x86-64 cloud
linux-binary-6.19.10+deb13-cloud-amd64 - Linux 6.19.10+deb13 for x86-64 cloud
linux-binary-6.19.9+deb13-cloud-amd64 - Linux 6.19.9+deb13 for x86-64 cloud
linux-binary-6.19.10+deb13-amd64 - Linux 6.19.10+deb13 for 64-bit PCs
linux-binary-6.19.10+deb13-cloud-amd64-dbg - debug
linux-binary-7.0.2+deb13-cloud-amd64 - Linux 7.0.2+deb13 for x86-64 cloud
linux-binary-6.190.1+deb13-cloud-amd64 - not the 6.19 series
";
        assert_eq!(
            newest_binary_package(text, "6.19").as_deref(),
            Some("linux-binary-6.19.10+deb13-cloud-amd64")
        );
    }

    #[test]
    fn no_619_package_is_none() {
        let text = "linux-binary-7.0.2+deb13-cloud-amd64 - Linux 7\n";
        assert_eq!(newest_binary_package(text, "6.19"), None);
        assert_eq!(newest_binary_package("", "6.19"), None);
    }

    #[test]
    fn version_key_orders_numerically() {
        assert!(version_key("6.19.10+deb13") > version_key("6.19.9+deb13"));
        assert!(version_key("6.19.9+deb13u1") > version_key("6.19.9+deb13"));
    }
}
