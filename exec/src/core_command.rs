//! The `kernelseal` command's dispatch: `exec` is the wrapper, run in this
//! process; everything else is `kernelseal-core`, found next to this
//! binary and exec'd in place (same PID, same arguments, same environment).
//!
//! The core is found through `/proc/self/exe`, the file the kernel ran
//! (without /proc, the path this file was exec'd by), and never through
//! `PATH` or the environment: `sudo kernelseal agent` must start the core
//! installed beside the command, not whatever an environment variable
//! names.

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
    let core = match own_file().and_then(|me| core_beside(&me)) {
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

/// The file this process runs: the kernel's `/proc/self/exe`, or without
/// /proc (a chroot, a build container) the path it was exec'd by
/// (`AT_EXECFN`), resolved as the kernel resolved it.
fn own_file() -> std::io::Result<PathBuf> {
    match std::fs::read_link("/proc/self/exe") {
        Ok(me) => Ok(me),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match exec_path() {
            Some(path) => std::fs::canonicalize(path),
            None => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// The path given to execve, from the auxiliary vector.
fn exec_path() -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: getauxval reads the process's auxiliary vector; AT_EXECFN,
    // when present, points at a NUL-terminated string on the initial stack,
    // alive for the whole process.
    let ptr = unsafe { libc::getauxval(libc::AT_EXECFN) } as *const libc::c_char;
    if ptr.is_null() {
        return None;
    }
    // SAFETY: as above.
    let bytes = unsafe { std::ffi::CStr::from_ptr(ptr) }.to_bytes();
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
}

/// `kernelseal-core` in the directory of `me`, the file this process runs.
fn core_beside(me: &Path) -> std::io::Result<PathBuf> {
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
    fn the_core_is_looked_up_beside_this_file() {
        let me = own_file().unwrap();
        assert_eq!(
            core_beside(&me).unwrap(),
            me.parent().unwrap().join(CORE_BINARY)
        );
        // The path this test binary was exec'd by names the same file.
        assert_eq!(std::fs::canonicalize(exec_path().unwrap()).unwrap(), me);
        assert!(core_beside(Path::new("/")).is_err());
    }
}
