//! Memory that other processes cannot read back, for secrets a KernelSeal
//! process holds: `memfd_secret(2)` where the kernel offers it (outside the
//! kernel's direct map, so `/proc/PID/mem`, tracers, `process_vm_readv` and
//! `/proc/kcore` all fail on it; never swapped; zeroed when freed), else
//! anonymous memory locked as far as `RLIMIT_MEMLOCK` allows and left out
//! of core dumps.
//!
//! [`mapping`] has the raw mappings (the wrapper's allocator builds its
//! arena from them); [`Pool`] hands out [`SealedBytes`] for values kept
//! long (the agent's cache). No dependency beyond libc and zeroize: the
//! wrapper links this too.

pub mod mapping;
mod pool;

pub use mapping::Backing;
pub use pool::{Pool, SealedBytes};

/// The process-wide pool.
pub static POOL: Pool = Pool::new();

/// Copies `bytes` into the process-wide pool.
pub fn seal(bytes: &[u8]) -> SealedBytes {
    POOL.seal(bytes)
}
