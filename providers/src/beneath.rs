//! Opening a file beneath an allowed directory, following no symlink.
//!
//! Checking a resolved path and then opening it is a race: a directory on
//! the path swapped for a symlink between the two leads the open outside.
//! Here the kernel resolves the path itself, relative to a descriptor of
//! the directory, refusing a symlink at any component (`openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`); kernels before 5.6 (or a
//! seccomp filter that hides `openat2`) get the same from a walk of
//! `openat(O_NOFOLLOW)`, one component at a time.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Why a file could not be opened beneath its directory.
#[derive(Debug, thiserror::Error)]
pub enum BeneathError {
    /// The relative path is empty, absolute, or has `.`/`..` components.
    #[error("{} is not a clean path below {}", path.display(), dir.display())]
    NotBeneath { dir: PathBuf, path: PathBuf },
    /// A component (a directory on the way, or the file) is a symlink.
    #[error("{} below {}: a symlink on the path; symlinks are not followed there", path.display(), dir.display())]
    Symlink { dir: PathBuf, path: PathBuf },
    /// The open itself failed (missing, permission, not a directory).
    #[error("{} below {}: {error}", path.display(), dir.display())]
    Io {
        dir: PathBuf,
        path: PathBuf,
        error: io::Error,
    },
}

/// Opens `relative` (clean, relative) for reading beneath `dir`, with
/// `O_NONBLOCK` set so that a FIFO placed there cannot block the open:
/// the caller checks the file type on the returned descriptor and clears
/// the flag. `dir` itself is opened as named (symlinks in it followed: it
/// is the operator's choice); below it, no symlink is followed.
pub fn open_beneath(dir: &Path, relative: &Path) -> Result<File, BeneathError> {
    let names = components(relative).ok_or_else(|| BeneathError::NotBeneath {
        dir: dir.to_path_buf(),
        path: relative.to_path_buf(),
    })?;
    let fail = |error: io::Error| {
        let (dir, path) = (dir.to_path_buf(), relative.to_path_buf());
        if error.raw_os_error() == Some(libc::ELOOP) {
            BeneathError::Symlink { dir, path }
        } else {
            BeneathError::Io { dir, path, error }
        }
    };
    let root = open_dir(dir).map_err(|error| BeneathError::Io {
        dir: dir.to_path_buf(),
        path: PathBuf::new(),
        error,
    })?;
    let file = match openat2(root.as_fd(), relative) {
        Ok(fd) => fd,
        // ENOSYS: a kernel before 5.6. EPERM: container runtimes' seccomp
        // profiles answered openat2 with EPERM before they knew it; a real
        // permission problem shows again in the walk (as EACCES).
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
            walk(root.as_fd(), &names).map_err(fail)?
        }
        Err(e) => return Err(fail(e)),
    };
    Ok(File::from(file))
}

/// The names of a clean relative path, or `None` when it is not one.
fn components(relative: &Path) -> Option<Vec<CString>> {
    let mut out = Vec::new();
    for c in relative.components() {
        match c {
            Component::Normal(n) => out.push(CString::new(n.as_bytes()).ok()?),
            // `..` could climb out, `/` restarts elsewhere; `.` is harmless
            // but a path that has it was not made by a canonical join.
            _ => return None,
        }
    }
    // `Path::components` drops a `.` inside (`a/./b`); the bytes do not lie.
    let clean = !relative
        .as_os_str()
        .as_bytes()
        .split(|b| *b == b'/')
        .any(|s| s == b".");
    (!out.is_empty() && clean).then_some(out)
}

fn cvt(rc: libc::c_long) -> io::Result<OwnedFd> {
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just returned; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as libc::c_int) })
}

fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL"))?;
    // SAFETY: open with a NUL-terminated path and integer flags.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    cvt(fd as libc::c_long)
}

/// The flags of the final open: read, never block, never become our
/// controlling terminal.
const READ_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;

/// `struct open_how` of linux/openat2.h (libc's is `non_exhaustive`).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn openat2(root: BorrowedFd, relative: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(relative.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL"))?;
    let how = OpenHow {
        flags: READ_FLAGS as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 with a live directory descriptor, a NUL-terminated
    // path, and a pointer to an open_how of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    cvt(rc)
}

/// `openat` one component at a time, each with `O_NOFOLLOW`. A directory
/// on the way is opened `O_PATH` (needs only search permission) and then
/// checked with `fstat`: `O_PATH | O_NOFOLLOW` opens a symlink itself
/// rather than failing, so the check is what refuses it.
fn walk(root: BorrowedFd, names: &[CString]) -> io::Result<OwnedFd> {
    let Some((last, dirs)) = names.split_last() else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    let mut held: Option<OwnedFd> = None;
    for name in dirs {
        let parent = held.as_ref().map_or(root, |f| f.as_fd());
        let next = open_at(
            parent,
            name,
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )?;
        match file_type(next.as_fd())? {
            libc::S_IFDIR => {}
            libc::S_IFLNK => return Err(io::Error::from_raw_os_error(libc::ELOOP)),
            _ => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
        }
        held = Some(next);
    }
    let parent = held.as_ref().map_or(root, |f| f.as_fd());
    // O_NOFOLLOW without O_PATH: a symlink here fails with ELOOP.
    open_at(parent, last, READ_FLAGS | libc::O_NOFOLLOW)
}

fn open_at(parent: BorrowedFd, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: openat with a live descriptor and a NUL-terminated name.
    let fd = unsafe { libc::openat(parent.as_raw_fd(), name.as_ptr(), flags) };
    cvt(fd as libc::c_long)
}

fn file_type(fd: BorrowedFd) -> io::Result<libc::mode_t> {
    // SAFETY: a plain struct the call fills in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat with a live descriptor and an out-pointer to our struct.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_mode & libc::S_IFMT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    /// allowed/{top.txt, sub/inner.txt, sub/deep/x.txt}, outside/secret.txt.
    struct Tree {
        _tmp: tempfile::TempDir,
        allowed: PathBuf,
        outside: PathBuf,
    }

    fn tree() -> Tree {
        let tmp = tempfile::tempdir().unwrap();
        let allowed = tmp.path().join("allowed");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(allowed.join("sub/deep")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(allowed.join("top.txt"), "top").unwrap();
        std::fs::write(allowed.join("sub/inner.txt"), "inner").unwrap();
        std::fs::write(allowed.join("sub/deep/x.txt"), "deep").unwrap();
        std::fs::write(outside.join("secret.txt"), "OUTSIDE").unwrap();
        Tree {
            _tmp: tmp,
            allowed,
            outside,
        }
    }

    fn text(mut f: File) -> String {
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        s
    }

    /// Both ways of resolving: whatever this kernel has, and the walk.
    fn both(root: &Path, rel: &str) -> [io::Result<OwnedFd>; 2] {
        let dir = open_dir(root).unwrap();
        let names = components(Path::new(rel)).unwrap();
        [
            openat2(dir.as_fd(), Path::new(rel)),
            walk(dir.as_fd(), &names),
        ]
    }

    #[test]
    fn plain_files_at_any_depth_open() {
        let t = tree();
        for (rel, want) in [
            ("top.txt", "top"),
            ("sub/inner.txt", "inner"),
            ("sub/deep/x.txt", "deep"),
        ] {
            assert_eq!(
                text(open_beneath(&t.allowed, Path::new(rel)).unwrap()),
                want
            );
            for r in both(&t.allowed, rel) {
                match r {
                    Ok(fd) => assert_eq!(text(File::from(fd)), want),
                    // openat2 missing here: the walk is what runs.
                    Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOSYS), "{e}"),
                }
            }
        }
    }

    #[test]
    fn symlink_as_the_last_component_is_refused() {
        let t = tree();
        symlink(t.outside.join("secret.txt"), t.allowed.join("link")).unwrap();
        // Even one that stays inside: no symlink is followed below dir.
        symlink("top.txt", t.allowed.join("inside-link")).unwrap();
        for rel in ["link", "inside-link"] {
            let e = open_beneath(&t.allowed, Path::new(rel)).unwrap_err();
            assert!(matches!(e, BeneathError::Symlink { .. }), "{rel}: {e:?}");
            for r in both(&t.allowed, rel) {
                let e = r.unwrap_err();
                assert!(
                    matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOSYS)),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn symlink_as_a_middle_component_is_refused() {
        let t = tree();
        symlink(&t.outside, t.allowed.join("out")).unwrap();
        symlink("sub", t.allowed.join("sub-again")).unwrap();
        for rel in ["out/secret.txt", "sub-again/inner.txt"] {
            let e = open_beneath(&t.allowed, Path::new(rel)).unwrap_err();
            assert!(matches!(e, BeneathError::Symlink { .. }), "{rel}: {e:?}");
            for r in both(&t.allowed, rel) {
                let e = r.unwrap_err();
                assert!(
                    matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOSYS)),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn dot_dot_absolute_and_empty_paths_are_invalid() {
        let t = tree();
        let outside = t.outside.join("secret.txt");
        let cases = [
            "../outside/secret.txt".to_string(),
            "sub/../../outside/secret.txt".to_string(),
            outside.display().to_string(),
            String::new(),
            "./top.txt".to_string(),
            "sub/./inner.txt".to_string(),
        ];
        for rel in &cases {
            let e = open_beneath(&t.allowed, Path::new(rel)).unwrap_err();
            assert!(matches!(e, BeneathError::NotBeneath { .. }), "{rel}: {e:?}");
        }
    }

    #[test]
    fn missing_and_not_a_directory_are_io_errors() {
        let t = tree();
        let e = open_beneath(&t.allowed, Path::new("nope.txt")).unwrap_err();
        assert!(
            matches!(&e, BeneathError::Io { error, .. } if error.kind() == io::ErrorKind::NotFound),
            "{e:?}"
        );
        let e = open_beneath(&t.allowed, Path::new("top.txt/x")).unwrap_err();
        assert!(
            matches!(&e, BeneathError::Io { error, .. } if error.raw_os_error() == Some(libc::ENOTDIR)),
            "{e:?}"
        );
        for r in both(&t.allowed, "top.txt/x") {
            let e = r.unwrap_err();
            assert!(
                matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ENOSYS)),
                "{e}"
            );
        }
    }

    #[test]
    fn a_fifo_opens_without_blocking() {
        let t = tree();
        let fifo = t.allowed.join("fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // No writer: a blocking open would hang here. The caller refuses
        // it by type on the descriptor.
        let f = open_beneath(&t.allowed, Path::new("fifo")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(
            &f.metadata().unwrap().file_type()
        ));
    }
}
