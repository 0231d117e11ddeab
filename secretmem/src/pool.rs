//! A pool of byte buffers in secret memory, for values a process keeps for
//! a long time (the agent's cache).
//!
//! Blocks come in power-of-two size classes carved from 16 KiB mappings;
//! a freed block is wiped and goes back to its class's free list, so the
//! memory locked stays what the live values need, rounded up. Values larger
//! than the largest class get a mapping of their own.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use zeroize::Zeroize;

use crate::mapping::{self, Backing};

const CLASSES: [usize; 12] = [
    32,
    64,
    128,
    256,
    512,
    1 << 10,
    2 << 10,
    4 << 10,
    8 << 10,
    16 << 10,
    32 << 10,
    64 << 10,
];
/// What one mapping holds at least; a class larger than this gets mappings
/// of its own size.
const CHUNK: usize = 16 << 10;

/// A block of a class's free list: its address and what backs it.
type FreeBlock = (usize, Backing);

pub struct Pool {
    free: [Mutex<Vec<FreeBlock>>; CLASSES.len()],
    /// Whether to try `memfd_secret` first (tests of the fallback say no).
    secret_memory: bool,
    /// The weakest backing handed out so far (0: none yet).
    weakest: AtomicU8,
    /// The weakest backing already reported by [`Pool::unreported_backing`].
    reported: AtomicU8,
}

impl Default for Pool {
    fn default() -> Self {
        Self::new()
    }
}

impl Pool {
    pub const fn new() -> Pool {
        Pool::with_secret_memory(true)
    }

    /// A pool that never tries `memfd_secret`: the fallback, for tests.
    pub const fn without_secret_memory() -> Pool {
        Pool::with_secret_memory(false)
    }

    const fn with_secret_memory(secret_memory: bool) -> Pool {
        Pool {
            free: [const { Mutex::new(Vec::new()) }; CLASSES.len()],
            secret_memory,
            weakest: AtomicU8::new(0),
            reported: AtomicU8::new(0),
        }
    }

    /// Copies `bytes` into the pool. The caller wipes its own copy.
    pub fn seal(&'static self, bytes: &[u8]) -> SealedBytes {
        if bytes.is_empty() {
            return SealedBytes {
                addr: std::ptr::NonNull::<u8>::dangling().as_ptr() as usize,
                len: 0,
                place: Place::Empty,
                pool: self,
            };
        }
        let (addr, place) = match CLASSES.iter().position(|&c| c >= bytes.len()) {
            Some(class) => {
                let (addr, backing) = self.take(class);
                (addr, Place::Class { class, backing })
            }
            None => {
                let size = bytes.len().div_ceil(mapping::page_size()) * mapping::page_size();
                let (addr, backing) = self.map(size);
                (addr, Place::Own { size, backing })
            }
        };
        // SAFETY: addr is a block of at least bytes.len() bytes that only
        // this SealedBytes refers to.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) };
        SealedBytes {
            addr,
            len: bytes.len(),
            place,
            pool: self,
        }
    }

    /// The weakest memory a value of this pool has been given so far
    /// (`None` before the first).
    pub fn backing(&self) -> Option<Backing> {
        Backing::from_code(self.weakest.load(Ordering::Relaxed))
    }

    /// The weakest backing so far, once for each step down: for a log line
    /// when the first value is sealed and whenever a fallback begins.
    pub fn unreported_backing(&self) -> Option<Backing> {
        let weakest = self.weakest.load(Ordering::Relaxed);
        let before = self.reported.fetch_max(weakest, Ordering::Relaxed);
        if weakest > before {
            Backing::from_code(weakest)
        } else {
            None
        }
    }

    fn take(&self, class: usize) -> FreeBlock {
        let mut free = self.free[class]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(block) = free.pop() {
            return block;
        }
        let size = CLASSES[class];
        // A whole page at least: on 64 KiB-page systems a 16 KiB chunk
        // would pin a page and use a quarter of it.
        let chunk = size.max(CHUNK).max(mapping::page_size());
        let (base, backing) = self.map(chunk);
        free.extend((size..chunk).step_by(size).map(|off| (base + off, backing)));
        (base, backing)
    }

    /// A new mapping of `size` bytes (a multiple of the page size) in the
    /// best memory this process can get.
    fn map(&self, size: usize) -> FreeBlock {
        let (addr, backing) = match self
            .secret_memory
            .then(|| mapping::map_secret(size))
            .flatten()
        {
            Some(addr) => (addr, Backing::SecretMemory),
            None => match mapping::map_anonymous(size) {
                Some(addr) if mapping::lock_on_fault(addr, size) => (addr, Backing::LockedMemory),
                Some(addr) => (addr, Backing::UnlockedMemory),
                None => std::alloc::handle_alloc_error(
                    std::alloc::Layout::from_size_align(size, 1)
                        .unwrap_or(std::alloc::Layout::new::<u8>()),
                ),
            },
        };
        self.weakest.fetch_max(backing.code(), Ordering::Relaxed);
        (addr, backing)
    }
}

#[derive(Clone, Copy)]
enum Place {
    Empty,
    Class { class: usize, backing: Backing },
    Own { size: usize, backing: Backing },
}

/// Bytes in a [`Pool`]: read-only, wiped when dropped. No `Debug` of the
/// content.
pub struct SealedBytes {
    addr: usize,
    len: usize,
    place: Place,
    pool: &'static Pool,
}

// SAFETY: the block is owned by this value alone and never written after
// `seal`, so sharing `&[u8]` across threads and moving it are sound.
unsafe impl Send for SealedBytes {}
// SAFETY: as above.
unsafe impl Sync for SealedBytes {}

impl SealedBytes {
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: addr..addr+len was filled in `seal` and lives until drop;
        // for an empty value addr is dangling but aligned and len is 0.
        unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// What holds the bytes (`None` for an empty value, which holds none).
    pub fn backing(&self) -> Option<Backing> {
        match self.place {
            Place::Empty => None,
            Place::Class { backing, .. } | Place::Own { backing, .. } => Some(backing),
        }
    }
}

impl Drop for SealedBytes {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: our block, at least len bytes, no other reference.
            unsafe { std::slice::from_raw_parts_mut(self.addr as *mut u8, self.len) }.zeroize();
        }
        match self.place {
            Place::Empty => {}
            Place::Class { class, backing } => self.pool.free[class]
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push((self.addr, backing)),
            // SAFETY: a mapping of its own, wiped, referred to by nothing else.
            Place::Own { size, .. } => unsafe { mapping::unmap(self.addr, size) },
        }
    }
}

impl std::fmt::Debug for SealedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedBytes")
            .field("len", &self.len)
            .field("backing", &self.backing())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(secret_memory: bool) -> &'static Pool {
        Box::leak(Box::new(Pool::with_secret_memory(secret_memory)))
    }

    #[test]
    fn values_of_every_size_read_back() {
        for secret in [true, false] {
            let p = pool(secret);
            for len in [0, 1, 31, 32, 33, 4096, 65536, 65537, 300_000] {
                let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                let sealed = p.seal(&bytes);
                assert_eq!(sealed.as_slice(), bytes.as_slice(), "len {len}");
                assert_eq!(sealed.backing().is_none(), len == 0);
            }
        }
    }

    #[test]
    fn a_freed_block_is_wiped_and_reused() {
        let p = pool(true);
        let first = p.seal(b"first-secret-value");
        let addr = first.addr;
        drop(first);
        // SAFETY: the block stays mapped (the pool keeps it); reading our
        // own memory after the value was dropped is the point of the test.
        let after = unsafe { std::slice::from_raw_parts(addr as *const u8, 18) };
        assert!(after.iter().all(|&b| b == 0), "not wiped: {after:?}");
        let second = p.seal(b"second");
        assert_eq!(second.addr, addr, "the freed block is reused first");
    }

    #[test]
    fn the_weakest_backing_is_reported_once() {
        let p = pool(false);
        assert_eq!(p.unreported_backing(), None);
        let _v = p.seal(b"x");
        let b = p.backing().unwrap();
        assert_ne!(b, Backing::SecretMemory);
        assert_eq!(p.unreported_backing(), Some(b));
        let _w = p.seal(b"y");
        assert_eq!(p.unreported_backing(), None);
    }

    #[test]
    fn threads_seal_and_drop_without_mixing_values() {
        let p = pool(true);
        let handles: Vec<_> = (0..4u8)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..2000usize {
                        let v = vec![t; 1 + (i * 7) % 700];
                        let sealed = p.seal(&v);
                        assert_eq!(sealed.as_slice(), v.as_slice());
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn debug_shows_no_content() {
        let p = pool(true);
        let text = format!("{:?}", p.seal(b"hunter2-hunter2"));
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("len: 15"), "{text}");
    }
}
