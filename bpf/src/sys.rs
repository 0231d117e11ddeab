//! The syscalls aya does not wrap for us: `pidfd_open`, element operations
//! on a task-storage map, which aya only exposes as `Map::Unsupported` and
//! whose key is a pidfd, a `BPF_OBJ_GET` whose errno is kept, and pinning
//! by raw fd (aya hides a link's fd, which the tamper watchdog needs to
//! re-pin it).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::error::BpfError;

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_ANY: u64 = 0;

/// The `map_elem` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn map_elem(
    cmd: libc::c_long,
    map: BorrowedFd<'_>,
    key: *const u8,
    value: *mut u8,
) -> io::Result<()> {
    let attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key as u64,
        value: value as u64,
        flags: BPF_ANY,
        ..Default::default()
    };
    // SAFETY: attr is a valid bpf_attr prefix for map element commands; key
    // and value point to live buffers of the map's key and value sizes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            &attr as *const MapElemAttr,
            std::mem::size_of::<MapElemAttr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Looks up the value for `key`; `Ok(None)` when absent.
pub(crate) fn lookup<K, V: Default>(map: BorrowedFd<'_>, key: &K) -> io::Result<Option<V>> {
    let mut value = V::default();
    match map_elem(
        BPF_MAP_LOOKUP_ELEM,
        map,
        key as *const K as *const u8,
        &mut value as *mut V as *mut u8,
    ) {
        Ok(()) => Ok(Some(value)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn update<K, V>(map: BorrowedFd<'_>, key: &K, value: &V) -> io::Result<()> {
    map_elem(
        BPF_MAP_UPDATE_ELEM,
        map,
        key as *const K as *const u8,
        value as *const V as *mut u8,
    )
}

/// Deletes `key`; deleting an absent key is not an error.
pub(crate) fn delete<K>(map: BorrowedFd<'_>, key: &K) -> io::Result<()> {
    match map_elem(
        BPF_MAP_DELETE_ELEM,
        map,
        key as *const K as *const u8,
        std::ptr::null_mut(),
    ) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_MAP_FREEZE: libc::c_long = 22;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The `obj_pin`/`obj_get` member of `union bpf_attr` (without `path_fd`,
/// which the kernel reads as 0 from a shorter attr).
#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// The `info` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn bpf<A>(cmd: libc::c_long, attr: &A) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid prefix of `union bpf_attr` for `cmd` and
    // every pointer in it refers to a buffer that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const A,
            std::mem::size_of::<A>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn c_path(path: &std::path::Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Opens the BPF object pinned at `path` (BPF_OBJ_GET).
pub(crate) fn obj_get(path: &std::path::Path) -> io::Result<OwnedFd> {
    let path = c_path(path)?;
    let attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        ..Default::default()
    };
    let fd = bpf(BPF_OBJ_GET, &attr)?;
    // SAFETY: BPF_OBJ_GET returned a fresh fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Pins the object behind `fd` at `path` (BPF_OBJ_PIN).
pub(crate) fn obj_pin(fd: BorrowedFd<'_>, path: &std::path::Path) -> io::Result<()> {
    let path = c_path(path)?;
    let attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        ..Default::default()
    };
    bpf(BPF_OBJ_PIN, &attr).map(|_| ())
}

/// The `map_fd` member of `union bpf_attr` for BPF_MAP_FREEZE.
#[repr(C)]
#[derive(Default)]
struct FreezeAttr {
    map_fd: u32,
}

/// Makes a map read-only to every bpf(2) caller, this one included, for
/// the rest of the map's life (BPF_MAP_FREEZE); programs still read it.
pub(crate) fn map_freeze(map: BorrowedFd<'_>) -> io::Result<()> {
    let attr = FreezeAttr {
        map_fd: map.as_raw_fd() as u32,
    };
    bpf(BPF_MAP_FREEZE, &attr).map(|_| ())
}

/// What kind of BPF object an fd holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjKind {
    Map,
    Link,
    Program,
    Other,
}

/// A BPF object as the kernel names it: map, link and program ids are
/// separate number spaces, so an id alone does not tell two objects apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ObjId {
    pub kind: ObjKind,
    pub id: u32,
}

/// The kind (from the fd's anon inode name) and kernel id
/// (BPF_OBJ_GET_INFO_BY_FD) of a BPF object.
pub(crate) fn obj_id(fd: BorrowedFd<'_>) -> io::Result<ObjId> {
    let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    let kind = match target.to_str() {
        Some("anon_inode:bpf-map") => ObjKind::Map,
        Some("anon_inode:bpf_link") => ObjKind::Link,
        Some("anon_inode:bpf-prog") => ObjKind::Program,
        _ => ObjKind::Other,
    };
    // Map, link and program infos all start with `__u32 type, id`; the
    // kernel copies no more than the length asked for.
    let mut head = [0u32; 2];
    let attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&head) as u32,
        info: head.as_mut_ptr() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &attr)?;
    Ok(ObjId { kind, id: head[1] })
}

/// Whether the process a pidfd names still exists (until it is reaped).
pub fn pidfd_alive(pidfd: BorrowedFd<'_>) -> bool {
    // SAFETY: signal 0 only checks that the target exists; no signal is sent.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    rc == 0
}

/// Opens a pidfd for a process (thread-group leader). A pidfd names one
/// process for its whole life, so PID reuse cannot redirect a mark.
pub fn pidfd_open(pid: u32) -> Result<OwnedFd, BpfError> {
    open_pidfd(pid, 0)
}

/// Opens a pidfd for one thread (`PIDFD_THREAD`, Linux 6.9+): the key of
/// that thread's own task storage.
pub fn thread_pidfd_open(tid: u32) -> Result<OwnedFd, BpfError> {
    const PIDFD_THREAD: u32 = libc::O_EXCL as u32;
    open_pidfd(tid, PIDFD_THREAD)
}

fn open_pidfd(pid: u32, flags: u32) -> Result<OwnedFd, BpfError> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, flags) };
    if fd < 0 {
        let err = io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::ESRCH) => BpfError::NoSuchProcess { pid },
            _ => BpfError::Pidfd { pid, source: err },
        });
    }
    // SAFETY: the syscall returned a fresh fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
