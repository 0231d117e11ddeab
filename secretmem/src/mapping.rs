//! The mappings secrets live in. None of these functions allocates: the
//! wrapper's global allocator calls them.

/// What backs a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Backing {
    /// `memfd_secret(2)`: outside the kernel's direct map, refused to
    /// `/proc/PID/mem`, tracers and `process_vm_readv` even for root, never
    /// swapped, zeroed by the kernel when freed.
    SecretMemory,
    /// Anonymous memory, locked (never swapped), not in core dumps.
    LockedMemory,
    /// Anonymous memory not in core dumps; `RLIMIT_MEMLOCK` refused the lock.
    UnlockedMemory,
}

impl Backing {
    pub fn describe(self) -> &'static str {
        match self {
            Backing::SecretMemory => "secret memory (memfd_secret)",
            Backing::LockedMemory => {
                "locked memory excluded from core dumps (memfd_secret unavailable)"
            }
            Backing::UnlockedMemory => {
                "memory excluded from core dumps, not locked (memfd_secret unavailable, \
                 RLIMIT_MEMLOCK too small to lock)"
            }
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            Backing::SecretMemory => 1,
            Backing::LockedMemory => 2,
            Backing::UnlockedMemory => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Backing> {
        match code {
            1 => Some(Backing::SecretMemory),
            2 => Some(Backing::LockedMemory),
            3 => Some(Backing::UnlockedMemory),
            _ => None,
        }
    }
}

pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

/// `RLIMIT_MEMLOCK`'s soft limit in bytes; `memfd_secret` mappings and
/// `mlock` count against it (unless the process has `CAP_IPC_LOCK`).
pub fn memlock_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return 0;
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

/// Whether this kernel offers `memfd_secret` to this process. A seccomp
/// filter that refuses with an error number reads as "no"; one that kills
/// on unknown calls (systemd's default action) ends the process here.
pub fn secret_memory_available() -> bool {
    // SAFETY: memfd_secret takes flags; the fd is closed at once.
    let fd = unsafe { libc::syscall(libc::SYS_memfd_secret, libc::O_CLOEXEC) };
    if fd >= 0 {
        // SAFETY: our own fd.
        unsafe { libc::close(fd as libc::c_int) };
    }
    fd >= 0
}

/// A read-write `memfd_secret` mapping of `size` bytes (a multiple of the
/// page size), not inherited by a forked child (it is shared by necessity:
/// secretmem maps only shared, and a child writing it would write ours).
/// `None` where the kernel, a seccomp profile or `RLIMIT_MEMLOCK` refuses.
pub fn map_secret(size: usize) -> Option<usize> {
    // SAFETY: memfd_secret takes flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_memfd_secret, libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let fd = fd as libc::c_int;
    // SAFETY: sizing and mapping the fd we own, then closing it (the
    // mapping keeps the memory). A secretmem file can be sized only once,
    // hence one fd per mapping.
    unsafe {
        let mapped = if libc::ftruncate(fd, size as libc::off_t) == 0 {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        } else {
            libc::MAP_FAILED
        };
        libc::close(fd);
        if mapped == libc::MAP_FAILED {
            return None;
        }
        libc::madvise(mapped, size, libc::MADV_DONTFORK);
        Some(mapped as usize)
    }
}

/// An anonymous read-write mapping of `size` bytes, left out of core dumps
/// and wiped in a forked child. Not locked yet: see [`lock_on_fault`].
pub fn map_anonymous(size: usize) -> Option<usize> {
    // SAFETY: a fresh anonymous mapping; the advice calls only concern it.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return None;
        }
        libc::madvise(p, size, libc::MADV_DONTDUMP);
        libc::madvise(p, size, libc::MADV_WIPEONFORK);
        Some(p as usize)
    }
}

/// Locks `len` bytes at `addr` page by page as they are touched (no
/// up-front cost). The whole range counts against `RLIMIT_MEMLOCK` at once.
pub fn lock_on_fault(addr: usize, len: usize) -> bool {
    // SAFETY: mlock2 on a range of our own mapping.
    unsafe { libc::syscall(libc::SYS_mlock2, addr, len, libc::MLOCK_ONFAULT) == 0 }
}

/// Unmaps a region this module mapped.
///
/// # Safety
/// `addr..addr + size` is one whole mapping from [`map_secret`] or
/// [`map_anonymous`] that nothing refers to any more.
pub unsafe fn unmap(addr: usize, size: usize) {
    // SAFETY: the caller's contract.
    unsafe { libc::munmap(addr as *mut libc::c_void, size) };
}
