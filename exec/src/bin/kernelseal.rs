//! `kernelseal`: the command users type. `kernelseal exec …` is the wrapper
//! itself, run here; every other subcommand is `kernelseal-core`'s, exec'd
//! in place from the same directory.
//!
//! Why two files: the wrapper runs in front of every wrapped program, and
//! the 28 MB `kernelseal-core` pays tens of thousands of relocations before
//! its `main` (about 1.2 ms); this binary is the wrapper's size. `no_main`
//! for the same reason as `kernelseal-exec` (see its `main.rs`).
#![no_main]

/// The agent's reply and the environment made from it live in secret
/// memory (see `kernelseal_exec::secret_heap`).
#[global_allocator]
static HEAP: kernelseal_exec::SecretHeap = kernelseal_exec::SecretHeap::new();

/// The C runtime's entry point.
///
/// # Safety
///
/// `argv` holds `argc` valid NUL-terminated strings, as the C runtime
/// passes them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn main(argc: libc::c_int, argv: *const *const libc::c_char) -> libc::c_int {
    // SAFETY: main's contract, passed on.
    let args = unsafe { kernelseal_exec::c_args(argc, argv) };
    kernelseal_exec::dispatch(&args, &HEAP)
}
