//! `#![no_main]`: the wrapper runs before every wrapped program, and std's
//! runtime start-up (main-thread stack guard, which reads /proc/self/maps
//! through the LSM hooks; sigaltstack; SIGPIPE) is a measurable share of
//! its cost for nothing it uses. std itself works; argv comes from main's
//! own arguments.
#![no_main]

/// The agent's reply and the environment made from it live in secret
/// memory (see `secret_heap`).
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
    kernelseal_exec::main_with(args.get(1..).unwrap_or_default(), &HEAP)
}
