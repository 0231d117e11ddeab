//! `#![no_main]`: the wrapper runs before every wrapped program, and std's
//! runtime start-up (main-thread stack guard, which reads /proc/self/maps
//! through the LSM hooks; sigaltstack; SIGPIPE) is a measurable share of
//! its cost for nothing it uses. std itself works: glibc hands it argv.
#![no_main]

/// The agent's reply and the environment made from it live in secret
/// memory (see `secret_heap`).
#[global_allocator]
static HEAP: kernelseal_exec::SecretHeap = kernelseal_exec::SecretHeap::new();

#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    kernelseal_exec::main_with(&argv, &HEAP)
}
