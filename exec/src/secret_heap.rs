//! The wrapper's heap, once activated: the agent's reply, the parsed values
//! and the secrets' `NAME=value` entries live in memory that other
//! processes cannot read.
//!
//! The agent marks the wrapper before it replies, so from then on the gate
//! refuses `/proc/PID/mem`, `ptrace` and `process_vm_readv`. What a mark
//! cannot reach is a `/proc/PID/mem` descriptor opened *before* it: reads
//! through an open descriptor are not checked again. `memfd_secret(2)`
//! memory is outside the kernel's direct map and refused to
//! `get_user_pages`, so such a descriptor (and any tracer or
//! `process_vm_readv`) fails on it; the kernel zeroes it when freed. A
//! descriptor opened *read-write* before the mark could still change the
//! wrapper's code or data: this defeats reading, not every early handle.
//! Where `memfd_secret` is unavailable (kernel without `CONFIG_SECRETMEM`,
//! a seccomp profile that refuses it, `RLIMIT_MEMLOCK` under 16 KiB), the
//! heap is anonymous memory locked as it is touched where `RLIMIT_MEMLOCK`
//! allows, and left out of core dumps.
//!
//! A bump allocator: the wrapper lives for one request and one `execve`,
//! and everything it held goes with its address space at exec. What does
//! not fit in the arena comes from the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

pub use kernelseal_secretmem::Backing;
pub use kernelseal_secretmem::mapping::secret_memory_available;
use kernelseal_secretmem::mapping::{self, memlock_limit, page_size};

/// Arena size wanted; smaller when `RLIMIT_MEMLOCK` (which `memfd_secret`
/// mappings count against) is lower.
const ARENA_BYTES: usize = 16 << 20;
/// Faulted in at activation: what a typical reply and its entries use.
const PREFAULT_BYTES: usize = 4 << 10;
/// Below this a secret arena is not worth having (a typical reply and its
/// entries take under 2 KiB; more spills, and `--verbose` says so).
const MIN_SECRET_BYTES: usize = 16 << 10;

const UNINIT: u8 = 0;
const BUSY: u8 = 1;
const SECRET: u8 = 2;
const LOCKED: u8 = 3;
const FAILED: u8 = 4;
const UNLOCKED: u8 = 5;

fn backing_of(state: u8) -> Option<Backing> {
    match state {
        SECRET => Some(Backing::SecretMemory),
        LOCKED => Some(Backing::LockedMemory),
        UNLOCKED => Some(Backing::UnlockedMemory),
        _ => None,
    }
}

/// One mapping, handed out front to back.
pub struct Arena {
    state: AtomicU8,
    base: AtomicUsize,
    size: AtomicUsize,
    next: AtomicUsize,
}

impl Default for Arena {
    fn default() -> Self {
        Self::new()
    }
}

impl Arena {
    pub const fn new() -> Self {
        Arena {
            state: AtomicU8::new(UNINIT),
            base: AtomicUsize::new(0),
            size: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
        }
    }

    /// Maps the arena (once); `None` when no mapping could be made.
    pub fn backing(&self) -> Option<Backing> {
        if self.state.load(Ordering::Acquire) == UNINIT
            && self
                .state
                .compare_exchange(UNINIT, BUSY, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let (state, base, size) = map_arena();
            self.base.store(base, Ordering::Relaxed);
            self.size.store(size, Ordering::Relaxed);
            self.state.store(state, Ordering::Release);
        }
        backing_of(self.state.load(Ordering::Acquire))
    }

    /// Memory from the arena, or null when it is not mapped or full.
    pub fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.backing().is_none() {
            return std::ptr::null_mut();
        }
        let base = self.base.load(Ordering::Relaxed);
        let size = self.size.load(Ordering::Relaxed);
        let mut next = self.next.load(Ordering::Relaxed);
        loop {
            let start = (base + next).next_multiple_of(layout.align()) - base;
            let Some(end) = start.checked_add(layout.size()).filter(|&e| e <= size) else {
                return std::ptr::null_mut();
            };
            match self
                .next
                .compare_exchange_weak(next, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return (base + start) as *mut u8,
                Err(seen) => next = seen,
            }
        }
    }

    /// Touches the first `bytes` of the arena, so their page faults (for
    /// secret memory: taking each page out of the kernel's direct map)
    /// happen now rather than while the reply is handled.
    fn prefault(&self, bytes: usize) {
        let base = self.base.load(Ordering::Relaxed);
        let end = bytes.min(self.size.load(Ordering::Relaxed));
        for off in (0..end).step_by(page_size()) {
            // SAFETY: inside the mapping, which nothing uses yet (no
            // allocation precedes activation); volatile so it is not elided.
            unsafe { std::ptr::write_volatile((base + off) as *mut u8, 0) };
        }
    }

    /// Whether `ptr` came from this arena.
    pub fn contains(&self, ptr: *mut u8) -> bool {
        let base = self.base.load(Ordering::Relaxed);
        let p = ptr as usize;
        base != 0 && p >= base && p < base + self.size.load(Ordering::Relaxed)
    }

    /// Gives back the most recent allocation (a bump arena frees nothing
    /// else) or grows it in place. `false` when `ptr` is not the last one
    /// or the arena is full.
    fn resize_last(&self, ptr: *mut u8, old: usize, new: usize) -> bool {
        let base = self.base.load(Ordering::Relaxed);
        let start = ptr as usize - base;
        let end = start + new;
        end <= self.size.load(Ordering::Relaxed)
            && self
                .next
                .compare_exchange(start + old, end, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// (state, base, size) of a new arena. Runs inside the allocator: it must
/// not allocate.
fn map_arena() -> (u8, usize, usize) {
    let page = page_size();
    let secret_size = (memlock_limit().min(ARENA_BYTES) / page) * page;
    if secret_size >= MIN_SECRET_BYTES
        && let Some(base) = mapping::map_secret(secret_size)
    {
        return (SECRET, base, secret_size);
    }
    match map_locked(ARENA_BYTES) {
        Some((base, true)) => (LOCKED, base, ARENA_BYTES),
        Some((base, false)) => (UNLOCKED, base, ARENA_BYTES),
        None => (FAILED, 0, 0),
    }
}

/// The mapping and whether its front (where a bump arena allocates) is
/// locked.
fn map_locked(size: usize) -> Option<(usize, bool)> {
    let p = mapping::map_anonymous(size)?;
    // The whole range counts against RLIMIT_MEMLOCK (root with
    // CAP_IPC_LOCK is exempt), so else only the front the limit allows.
    let front = (memlock_limit().min(size) / page_size()) * page_size();
    let locked = mapping::lock_on_fault(p, size)
        || (front >= MIN_SECRET_BYTES && mapping::lock_on_fault(p, front));
    Some((p, locked))
}

/// The backing an activated heap gets on this machine (with the default
/// `RLIMIT_MEMLOCK`): what `--verbose` should report here.
pub fn expected_backing() -> Backing {
    if secret_memory_available() && memlock_limit() >= MIN_SECRET_BYTES {
        Backing::SecretMemory
    } else {
        Backing::LockedMemory
    }
}

/// Set when an allocation after activation did not fit in the arena and
/// came from the system allocator: `--verbose` must not claim otherwise.
static SPILLED: AtomicBool = AtomicBool::new(false);

/// Whether anything allocated after activation went to ordinary memory.
pub fn spilled() -> bool {
    SPILLED.load(Ordering::Relaxed)
}

/// Which backing the activated heap got, for `--verbose`.
static ACTIVE_BACKING: AtomicU8 = AtomicU8::new(UNINIT);

/// The backing of the heap activated in this process, if any.
pub fn active_backing() -> Option<Backing> {
    backing_of(ACTIVE_BACKING.load(Ordering::Acquire))
}

/// A global allocator that is the system allocator until [`activate`]d,
/// then serves from an [`Arena`]. The `kernelseal` binary installs it too,
/// for `kernelseal exec`; the agent never activates it.
///
/// [`activate`]: SecretHeap::activate
pub struct SecretHeap {
    arena: Arena,
    active: AtomicBool,
}

impl Default for SecretHeap {
    fn default() -> Self {
        Self::new()
    }
}

impl SecretHeap {
    pub const fn new() -> Self {
        SecretHeap {
            arena: Arena::new(),
            active: AtomicBool::new(false),
        }
    }

    /// From now on, allocations come from the arena: call it before the
    /// reply is read (what was allocated earlier stays where it is). Maps
    /// the arena and faults its first pages in; a second call does nothing.
    pub fn activate(&self) -> Option<Backing> {
        if self.active.load(Ordering::Acquire) {
            return active_backing();
        }
        let backing = self.arena.backing();
        if backing.is_some() {
            self.arena.prefault(PREFAULT_BYTES);
        }
        if let Some(b) = backing {
            let code = match b {
                Backing::SecretMemory => SECRET,
                Backing::LockedMemory => LOCKED,
                Backing::UnlockedMemory => UNLOCKED,
            };
            ACTIVE_BACKING.store(code, Ordering::Release);
            self.active.store(true, Ordering::Release);
        }
        backing
    }

    /// Bytes the arena can still hand out (0 when it is not mapped).
    pub fn room(&self) -> usize {
        let size = self.arena.size.load(Ordering::Relaxed);
        size.saturating_sub(self.arena.next.load(Ordering::Relaxed))
    }

    fn arena_alloc(&self, layout: Layout) -> *mut u8 {
        if !self.active.load(Ordering::Relaxed) {
            return std::ptr::null_mut();
        }
        let p = self.arena.alloc(layout);
        if p.is_null() {
            SPILLED.store(true, Ordering::Relaxed);
        }
        p
    }
}

// SAFETY: every pointer handed out is either the system allocator's (and
// goes back to it) or a fresh, aligned, unaliased range of the arena
// (which is never reused except by `resize_last` on its own last range).
unsafe impl GlobalAlloc for SecretHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = self.arena_alloc(layout);
        if p.is_null() {
            // SAFETY: forwarding the caller's layout.
            unsafe { System.alloc(layout) }
        } else {
            p
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = self.arena_alloc(layout);
        if p.is_null() {
            // SAFETY: forwarding the caller's layout.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // Arena memory may have been handed out and given back before.
        // SAFETY: p is valid for layout.size() bytes.
        unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.arena.contains(ptr) {
            self.arena.resize_last(ptr, layout.size(), 0);
        } else {
            // SAFETY: ptr came from System with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let in_arena = self.arena.contains(ptr);
        if in_arena && self.arena.resize_last(ptr, layout.size(), new_size) {
            return ptr;
        }
        if !in_arena && !self.active.load(Ordering::Relaxed) {
            // SAFETY: forwarding a System pointer and its layout.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Moved: into the arena when there is room (a growing buffer
        // started before activation moves in too), else to System.
        // SAFETY: the new layout keeps the alignment; sizes are the
        // caller's; the old range is released after the copy.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_aligned_disjoint_ranges_and_reuses_the_last() {
        let a = Arena::new();
        if a.backing().is_none() {
            return; // no mapping at all here: nothing to check
        }
        let l8 = Layout::from_size_align(10, 8).unwrap();
        let l64 = Layout::from_size_align(100, 64).unwrap();
        let p = a.alloc(l8);
        let q = a.alloc(l64);
        assert!(a.contains(p) && a.contains(q));
        assert_eq!(q as usize % 64, 0);
        assert!(q as usize >= p as usize + 10);
        // The last range grows in place and is given back whole.
        assert!(a.resize_last(q, 100, 200));
        assert!(a.resize_last(q, 200, 0));
        assert_eq!(a.alloc(l64), q);
        // Not the last: stays.
        assert!(!a.resize_last(p, 10, 0));
        // Too big for the arena: null, not a wrap-around.
        let huge = Layout::from_size_align(1 << 40, 8).unwrap();
        assert!(a.alloc(huge).is_null());
        assert!(!a.contains(std::ptr::null_mut()));
    }
}
