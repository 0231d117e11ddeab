//! Who may touch KernelSeal's own state. The programs refuse an fd of any
//! of KernelSeal's maps, the removal of its pins and an unmount of their
//! bpffs to every process but the agent and those running a KernelSeal
//! binary the kernel trusts (marked at exec, by file). The agent trusts its
//! own binary and the `kernelseal` command beside it ([`command_beside`]);
//! a new build is trusted when a stopping agent hands over to it (the first
//! file named `kernelseal-core` exec'd within [`HANDOVER`]: the file the
//! `kernelseal` command execs for `kernelseal agent`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::maps::{Array, HashMap, Map, MapData};

use crate::abi::{self, RawFileKey, RawSelfExe, RawTrust};
use crate::error::BpfError;
use crate::guarded::kernel_dev;

pub(crate) const TRUST_MAP: &str = "ks_trust";
pub(crate) const SELF_EXES_MAP: &str = "ks_self_exes";

/// The file name of the `kernelseal` command (kernelseal-exec's second
/// binary), which runs `kernelseal exec` itself and execs the agent's
/// binary beside it for every other subcommand.
pub const COMMAND: &str = "kernelseal";

/// How long a stopping agent keeps the handover open for the next build.
pub const HANDOVER: Duration = Duration::from_secs(600);

/// A KernelSeal binary the kernel admitted during a handover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmittedBuild {
    /// The file, as the kernel names it (`s_dev`, inode).
    pub dev: u64,
    pub ino: u64,
    /// The process whose exec admitted it.
    pub pid: u32,
}

fn map_error(op: &'static str, map: &'static str, e: impl std::fmt::Display) -> BpfError {
    BpfError::Map {
        op,
        map,
        source: std::io::Error::other(e.to_string()),
    }
}

/// The file behind a path (symlinks followed), as the kernel keys it.
pub(crate) fn file_key(path: &Path) -> Result<RawFileKey, BpfError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| BpfError::ProcRead {
        pid: std::process::id(),
        reason: format!("{}: {e}", path.display()),
    })?;
    Ok(RawFileKey {
        dev: kernel_dev(meta.dev()),
        ino: meta.ino(),
    })
}

/// The `kernelseal` command in the directory of the file `exe` links to,
/// when it is a regular file (not a symlink) owned by root and not writable
/// by group or others (the rule a handover applies to a build). Trusted
/// like the agent's own binary: `kernelseal exec` runs in it, and a trusted
/// process can be neither attached to nor have its memory opened, even
/// before the agent marks it protected.
pub fn command_beside(exe: &Path) -> Option<PathBuf> {
    command_file(exe).map(|(path, _)| path)
}

/// [`command_beside`] with the file's key, from the one `lstat` that
/// checked it.
fn command_file(exe: &Path) -> Option<(PathBuf, RawFileKey)> {
    use std::os::unix::fs::MetadataExt;
    let path = std::fs::read_link(exe).ok()?.parent()?.join(COMMAND);
    let meta = std::fs::symlink_metadata(&path).ok()?;
    let key = RawFileKey {
        dev: kernel_dev(meta.dev()),
        ino: meta.ino(),
    };
    (meta.is_file() && meta.uid() == 0 && meta.mode() & 0o022 == 0).then_some((path, key))
}

/// Whether the `kernelseal` command beside the agent's binary is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandTrust {
    Trusted(PathBuf),
    /// There is one, but not the file trusted when the pins were made, and
    /// this start may not admit another (see [`trust_self`]).
    NotAdmitted(PathBuf),
    Absent,
}

/// Records where the pins are, closes any handover and trusts this
/// process's own binary and the `kernelseal` command beside it (keeping
/// builds admitted before).
///
/// A command not trusted yet is admitted only when this start could
/// admit a build: programs loaded afresh (`fresh`), a handover still open,
/// or this very process admitted by one. Otherwise root could swap any
/// binary in as `kernelseal`, `kill -9` the agent, and have the restart
/// trust it, even on a locked node.
pub(crate) fn trust_self(
    trust: &mut Map,
    exes: &mut Map,
    pin_root: Option<&Path>,
    fresh: bool,
) -> Result<CommandTrust, BpfError> {
    let pins = match pin_root {
        Some(root) => file_key(root)?,
        None => RawFileKey::default(),
    };
    let handover_open = {
        let until = read_trust(trust)?.handover_until_ns;
        until != 0 && monotonic_ns() <= until
    };
    write_trust(
        trust,
        RawTrust {
            pin_dev: pins.dev,
            pin_ino: pins.ino,
            handover_until_ns: 0,
        },
    )?;
    let mut exes: HashMap<&mut MapData, RawFileKey, RawSelfExe> =
        HashMap::try_from(exes).map_err(|e| map_error("open", SELF_EXES_MAP, e))?;
    let own_path = Path::new("/proc/self/exe");
    let own = file_key(own_path)?;
    let handed_over = exes
        .get(&own, 0)
        .is_ok_and(|e| e.how == abi::SELF_HANDOVER && e.pid == std::process::id());
    trust_file(&mut exes, own)?;
    let Some((path, key)) = command_file(own_path) else {
        return Ok(CommandTrust::Absent);
    };
    if exes.get(&key, 0).is_ok() {
        return Ok(CommandTrust::Trusted(path));
    }
    if !(fresh || handover_open || handed_over) {
        return Ok(CommandTrust::NotAdmitted(path));
    }
    trust_file(&mut exes, key)?;
    Ok(CommandTrust::Trusted(path))
}

/// Adds a file to the trusted binaries unless it is there already (as the
/// agent's, or admitted by a handover: that record is kept).
fn trust_file(
    exes: &mut HashMap<&mut MapData, RawFileKey, RawSelfExe>,
    key: RawFileKey,
) -> Result<(), BpfError> {
    if exes.get(&key, 0).is_ok() {
        return Ok(());
    }
    let entry = RawSelfExe {
        admitted_ns: monotonic_ns(),
        pid: std::process::id(),
        how: abi::SELF_AGENT,
    };
    exes.insert(key, entry, 0)
        .map_err(|e| map_error("update", SELF_EXES_MAP, e))
}

/// Lets the first KernelSeal build started within `period` take over.
pub(crate) fn open_handover(trust: &mut Map, period: Duration) -> Result<(), BpfError> {
    let mut value = read_trust(trust)?;
    value.handover_until_ns = monotonic_ns().saturating_add(period.as_nanos() as u64);
    write_trust(trust, value)
}

/// The builds admitted during a handover, for the agent to report.
pub(crate) fn admitted_builds(exes: &Map) -> Result<Vec<AdmittedBuild>, BpfError> {
    let exes: HashMap<&MapData, RawFileKey, RawSelfExe> =
        HashMap::try_from(exes).map_err(|e| map_error("open", SELF_EXES_MAP, e))?;
    let mut out = Vec::new();
    for item in exes.iter() {
        let (key, value) = item.map_err(|e| map_error("lookup", SELF_EXES_MAP, e))?;
        if value.how == abi::SELF_HANDOVER {
            out.push(AdmittedBuild {
                dev: key.dev,
                ino: key.ino,
                pid: value.pid,
            });
        }
    }
    Ok(out)
}

fn read_trust(trust: &mut Map) -> Result<RawTrust, BpfError> {
    let arr: Array<&mut MapData, RawTrust> =
        Array::try_from(trust).map_err(|e| map_error("open", TRUST_MAP, e))?;
    arr.get(&0, 0)
        .map_err(|e| map_error("lookup", TRUST_MAP, e))
}

fn write_trust(trust: &mut Map, value: RawTrust) -> Result<(), BpfError> {
    let mut arr: Array<&mut MapData, RawTrust> =
        Array::try_from(trust).map_err(|e| map_error("open", TRUST_MAP, e))?;
    arr.set(0, value, 0)
        .map_err(|e| map_error("update", TRUST_MAP, e))
}

/// CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Whether the kernel refuses this process an fd of the map pinned at
/// `path` (EPERM from KernelSeal's own programs): the pins belong to a
/// build that does not trust this one.
pub(crate) fn refused_pin(path: &Path) -> bool {
    matches!(crate::sys::obj_get(path), Err(e) if e.raw_os_error() == Some(libc::EPERM))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_beside_is_trusted_only_when_roots_and_not_writable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ks-command-beside-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let core = dir.join("kernelseal-core");
        std::fs::write(&core, b"core").unwrap();
        let link = dir.join("exe");
        std::os::unix::fs::symlink(&core, &link).unwrap();
        assert_eq!(command_beside(&link), None, "no command there");
        let command = dir.join(COMMAND);
        std::fs::write(&command, b"command").unwrap();
        let chmod = |mode| {
            std::fs::set_permissions(&command, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        chmod(0o755);
        // Files are root's only when the tests run as root (CI does).
        let as_root = nix_uid() == 0;
        assert_eq!(command_beside(&link).is_some(), as_root);
        chmod(0o775);
        assert_eq!(command_beside(&link), None, "group-writable");
        chmod(0o757);
        assert_eq!(command_beside(&link), None, "writable by others");
        std::fs::remove_file(&command).unwrap();
        std::os::unix::fs::symlink(&core, &command).unwrap();
        assert_eq!(command_beside(&link), None, "a symlink, whatever it names");
        std::fs::remove_file(&command).unwrap();
        std::fs::create_dir(&command).unwrap();
        assert_eq!(command_beside(&link), None, "not a regular file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn nix_uid() -> u32 {
        // SAFETY: getuid cannot fail.
        unsafe { libc::getuid() }
    }
}
