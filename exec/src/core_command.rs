//! The `kernelseal` command's dispatch: `exec` is the wrapper, run in this
//! process; everything else is `kernelseal-core`, found next to this
//! binary and exec'd in place (same PID, same arguments, same environment).
//!
//! The core is found through `/proc/self/exe`, the file the kernel ran, and
//! never through `PATH` or the environment: `sudo kernelseal agent` must
//! start the core installed beside the command, not whatever an
//! environment variable names.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::{EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, SecretHeap, main_with, warn_as};

/// The file name of the binary holding every subcommand but `exec`.
pub const CORE_BINARY: &str = "kernelseal-core";

/// Runs `kernelseal` with its whole `argv` (program name first); returns
/// only on failure, with the exit code.
pub fn dispatch(argv: &[OsString], heap: &SecretHeap) -> i32 {
    if argv.get(1).is_some_and(|a| a == "exec") {
        return main_with(&argv[2..], heap);
    }
    let core = match core_path(Path::new("/proc/self/exe")) {
        Ok(p) => p,
        Err(e) => {
            warn_as("kernelseal", format!("cannot find {CORE_BINARY}: {e}"));
            return EXIT_NOT_FOUND;
        }
    };
    let err = exec_core(&core, argv);
    warn_as(
        "kernelseal",
        format!(
            "cannot run {}: {err}; every subcommand but exec is in {CORE_BINARY}, which is \
             installed in the same directory as kernelseal",
            core.display()
        ),
    );
    match err.kind() {
        std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
        _ => EXIT_NOT_EXECUTABLE,
    }
}

/// `kernelseal-core` in the directory of the file `exe` links to.
fn core_path(exe: &Path) -> std::io::Result<PathBuf> {
    let me = std::fs::read_link(exe)?;
    let dir = me
        .parent()
        .ok_or_else(|| std::io::Error::other(format!("{} has no directory", me.display())))?;
    Ok(dir.join(CORE_BINARY))
}

/// Replaces this process with the core; `argv[0]` stays what the user ran,
/// so its help and errors name `kernelseal`.
fn exec_core(core: &Path, argv: &[OsString]) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(core);
    if let Some(name) = argv.first() {
        cmd.arg0(name);
    }
    cmd.args(argv.iter().skip(1)).exec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_core_is_looked_up_beside_the_real_file() {
        let dir = std::env::temp_dir().join(format!("ks-core-path-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let link = dir.join("kernelseal");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(dir.join("bin/kernelseal"), &link).unwrap();
        assert_eq!(core_path(&link).unwrap(), dir.join("bin").join(CORE_BINARY));
        assert!(core_path(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
