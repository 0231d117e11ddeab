//! The system calls the file store works with: each names one entry
//! relative to a directory descriptor and never follows a symlink, so a
//! path swapped under the agent cannot redirect where secrets go.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};

use super::Inode;

/// A leftover tree deeper than this is refused rather than followed down:
/// the agent makes one level; only someone else makes more.
const MAX_DEPTH: usize = 16;

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn gone_is_ok(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// One directory entry's name: no `/`, no NUL, not `.` or `..`, so an
/// `*at` call with it stays inside its directory.
pub fn entry_name(name: &str) -> io::Result<CString> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file name",
        ));
    }
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))
}

fn open_at(
    parent: BorrowedFd,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: openat with a live descriptor and a NUL-terminated name; the
    // new descriptor is ours alone.
    let fd = cvt(unsafe {
        libc::openat(
            parent.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            libc::c_uint::from(mode),
        )
    })?;
    // SAFETY: `fd` was just opened and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a directory entry that must be a directory itself, not a symlink.
pub fn open_dir(parent: BorrowedFd, name: &CStr) -> io::Result<OwnedFd> {
    open_at(parent, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

/// Creates a new file (never an existing one, never through a symlink).
pub fn create_file(parent: BorrowedFd, name: &CStr, mode: libc::mode_t) -> io::Result<File> {
    let fd = open_at(
        parent,
        name,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
        mode,
    )?;
    Ok(File::from(fd))
}

pub fn make_dir(parent: BorrowedFd, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: mkdirat with a live descriptor and a NUL-terminated name.
    cvt(unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

/// Renames within one directory (over `to` if it exists).
pub fn rename(dir: BorrowedFd, from: &CStr, to: &CStr) -> io::Result<()> {
    let fd = dir.as_raw_fd();
    // SAFETY: renameat with a live descriptor and NUL-terminated names.
    cvt(unsafe { libc::renameat(fd, from.as_ptr(), fd, to.as_ptr()) }).map(drop)
}

pub fn unlink(parent: BorrowedFd, name: &CStr, is_dir: bool) -> io::Result<()> {
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: unlinkat with a live descriptor and a NUL-terminated name.
    cvt(unsafe { libc::unlinkat(parent.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// What an entry is, by `lstat`: its inode, and whether it is a directory.
pub fn stat_at(parent: BorrowedFd, name: &CStr) -> io::Result<(Inode, bool)> {
    // SAFETY: a plain struct the call fills in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat with a live descriptor, a NUL-terminated name and an
    // out-pointer to our struct; AT_SYMLINK_NOFOLLOW stats a symlink itself.
    cvt(unsafe {
        libc::fstatat(
            parent.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    let inode = Inode {
        dev: st.st_dev,
        ino: st.st_ino,
    };
    Ok((inode, st.st_mode & libc::S_IFMT == libc::S_IFDIR))
}

/// The inode of an open descriptor (`fstat`).
pub fn inode(fd: BorrowedFd) -> io::Result<Inode> {
    // SAFETY: a plain struct the call fills in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat with a live descriptor and an out-pointer to our struct.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(Inode {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

pub fn chmod(fd: BorrowedFd, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: fchmod on a live descriptor.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

/// The filesystem type (`statfs`'s f_type) of an open descriptor.
pub fn fs_type(fd: BorrowedFd) -> io::Result<i64> {
    // SAFETY: a plain struct the call fills in.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs with a live descriptor and an out-pointer to our struct.
    cvt(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st.f_type as i64)
}

/// Removes `name` under `parent`, a directory with everything in it. A
/// symlink is removed, never followed; a name already gone is no error.
pub fn remove_tree(parent: BorrowedFd, name: &CStr) -> io::Result<()> {
    remove_below(parent, name, 0)
}

fn remove_below(parent: BorrowedFd, name: &CStr, depth: usize) -> io::Result<()> {
    let is_dir = match stat_at(parent, name) {
        Ok((_, is_dir)) => is_dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !is_dir {
        return gone_is_ok(unlink(parent, name, false));
    }
    if depth >= MAX_DEPTH {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    // O_NOFOLLOW: swapped for a symlink since the stat, the open fails.
    let dir = open_dir(parent, name)?;
    let dir = std::os::fd::AsFd::as_fd(&dir);
    for entry in entries(dir)? {
        remove_below(dir, &entry, depth + 1)?;
    }
    gone_is_ok(unlink(parent, name, true))
}

/// A directory stream, closed on drop.
struct Stream(*mut libc::DIR);

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: a stream fdopendir returned, closed only here.
        unsafe { libc::closedir(self.0) };
    }
}

/// The names in a directory, `.` and `..` left out.
fn entries(dir: BorrowedFd) -> io::Result<Vec<CString>> {
    // fdopendir takes its descriptor over: give it a copy of ours.
    let own = dir.try_clone_to_owned()?;
    // SAFETY: fdopendir on a live directory descriptor; on success the
    // stream owns it (released from `own` below), on failure we still do.
    let raw = unsafe { libc::fdopendir(own.as_raw_fd()) };
    if raw.is_null() {
        return Err(io::Error::last_os_error());
    }
    let _ = own.into_raw_fd();
    let stream = Stream(raw);
    // The copy shares the original's offset: start from the beginning.
    // SAFETY: a live stream.
    unsafe { libc::rewinddir(stream.0) };
    let mut out = Vec::new();
    loop {
        // readdir signals an error only through errno.
        // SAFETY: errno is this thread's.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: a live stream; the entry is read before the next call.
        let ent = unsafe { libc::readdir(stream.0) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(0) | None => Ok(out),
                Some(_) => Err(e),
            };
        }
        // SAFETY: d_name is NUL-terminated within the entry readdir returned.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        if name != c"." && name != c".." {
            out.push(name.to_owned());
        }
    }
}
