//! The entrypoint wrapper (`kernelseal-exec`, also `kernelseal exec`): asks
//! the agent for the secrets bound to the program it is about to run, puts
//! them in the environment and `execve`s the program in place. Same PID, so
//! the protection the agent set before answering carries over.

mod args;
mod client;
mod core_command;
mod launch;
pub mod secret_heap;
mod tokens;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

pub use args::{Args, OnError, USAGE, parse};
pub use client::{Outcome, ask};
pub use core_command::{CORE_BINARY, dispatch};
pub use launch::{BadVariable, Launch, Prepared, check};
pub use secret_heap::{Backing, SecretHeap};
pub use tokens::{TokenSource, read_tokens};

pub const EXIT_AGENT: i32 = 125;
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
pub const EXIT_NOT_FOUND: i32 = 127;
pub const EXIT_USAGE: i32 = 2;

/// Finds CMD like execvp does: a name with a '/' as given (made absolute),
/// else the first executable match on PATH.
pub fn resolve(cmd: &OsStr, path_var: Option<OsString>) -> Option<PathBuf> {
    if cmd.as_encoded_bytes().contains(&b'/') {
        let p = Path::new(cmd);
        let abs = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().ok()?.join(p)
        };
        return abs.exists().then_some(abs);
    }
    let path_var = path_var.unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(cmd))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn no_core_dumps() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit with a valid struct.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
}

/// One write per line (stderr is unbuffered, eprintln! writes each piece),
/// and a closed stderr is not a reason to fail the program's start.
fn warn(msg: impl AsRef<str>) {
    warn_as("kernelseal-exec", msg);
}

fn warn_as(program: &str, msg: impl AsRef<str>) {
    use std::io::Write;
    let line = format!("{program}: {}\n", msg.as_ref());
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// The C runtime's `argv`, program name first, byte for byte.
///
/// # Safety
///
/// `argv` holds `argc` valid NUL-terminated strings, as the C runtime
/// passes them to `main`, alive for the whole process.
pub unsafe fn c_args(argc: libc::c_int, argv: *const *const libc::c_char) -> Vec<OsString> {
    use std::os::unix::ffi::OsStrExt;
    // From main's own arguments, not std::env::args_os(): that is filled by
    // std's runtime start on musl (only glibc hands argv to std beforehand).
    (0..usize::try_from(argc).unwrap_or(0))
        .map(|i| {
            // SAFETY: i < argc, and argv holds argc valid NUL-terminated
            // strings, alive for the whole process (the caller's contract).
            let arg = unsafe { std::ffi::CStr::from_ptr(*argv.add(i)) };
            OsStr::from_bytes(arg.to_bytes()).to_owned()
        })
        .collect()
}

/// Runs the wrapper with `argv` (without the program name); returns only on
/// failure, with the exit code. `heap` is the binary's global allocator:
/// activated once the request is sent, so the reply and the environment
/// entries built from it never sit in ordinary memory when secret memory
/// is available.
pub fn main_with(argv: &[OsString], heap: &SecretHeap) -> i32 {
    let default_socket = std::env::var("KERNELSEAL_SOCKET")
        .unwrap_or_else(|_| kernelseal_protocol::DEFAULT_SOCKET.to_string());
    let args = match parse(argv, default_socket) {
        Ok(Some(a)) => a,
        Ok(None) => return 0,
        Err(e) => {
            warn(format!("{e}\n{USAGE}"));
            return EXIT_USAGE;
        }
    };
    let Some(binary) = resolve(&args.command[0], std::env::var_os("PATH")) else {
        warn(format!(
            "{}: command not found",
            args.command[0].to_string_lossy()
        ));
        return EXIT_NOT_FOUND;
    };
    let tokens = match read_tokens(&args.tokens) {
        Ok(t) => t,
        // A token the user named and that cannot be read is a failure
        // whatever --on-error says: the agent would refuse the bindings
        // that need it, for a reason less clear than this one.
        Err(e) => {
            warn(format!("no secrets for {}: {e}", binary.display()));
            return EXIT_AGENT;
        }
    };
    // Before the request: the secret heap is activated once it is sent.
    let launch = Launch::new(&binary, &args.command[0], &args.command[1..]);
    let request = kernelseal_protocol::ExecRequest {
        version: kernelseal_protocol::PROTOCOL_VERSION,
        binary: binary.to_string_lossy().into_owned(),
        tokens,
    };
    let outcome = ask(&args.socket, &request, args.timeout, heap);
    drop(request);
    let backing = secret_heap::active_backing();
    let mut secrets = Vec::new();
    match outcome {
        Outcome::Delivered {
            env,
            missing,
            bindings,
            protected,
            warnings,
        } => {
            for w in warnings {
                warn(w);
            }
            if !missing.is_empty() {
                let reason = format!("secret(s) {} could not be resolved", missing.join(", "));
                match args.on_error {
                    OnError::Fail => {
                        warn(format!("no secrets for {}: {reason}", binary.display()));
                        return EXIT_AGENT;
                    }
                    OnError::Continue => warn(format!(
                        "{reason}; running without them (--on-error continue)"
                    )),
                }
            }
            if !protected {
                warn("WARNING: the agent runs with mode disabled: these secrets are NOT protected");
            }
            if args.verbose {
                let names: Vec<&str> = env.iter().map(|v| v.name.as_str()).collect();
                warn(format!(
                    "{} secret(s) from binding(s) {}: {}; held in {} until exec",
                    env.len(),
                    bindings.join(", "),
                    names.join(", "),
                    backing.map_or(
                        "ordinary memory (no arena could be mapped)",
                        Backing::describe
                    )
                ));
            }
            for b in env.iter().filter_map(|v| check(v).err()) {
                match args.on_error {
                    OnError::Fail => {
                        warn(format!("no secrets for {}: {b}", binary.display()));
                        return EXIT_AGENT;
                    }
                    OnError::Continue => {
                        warn(format!("{b}; running without it (--on-error continue)"))
                    }
                }
            }
            secrets = env;
        }
        // A wrapped program no binding selects is a misconfiguration: the
        // app would start without the secrets it was wrapped for.
        Outcome::NoBinding(reason) | Outcome::Failed(reason) => match args.on_error {
            OnError::Fail => {
                warn(format!("no secrets for {}: {reason}", binary.display()));
                return EXIT_AGENT;
            }
            OnError::Continue => warn(format!(
                "no secrets for {}: {reason}; running it WITHOUT secrets (--on-error continue)",
                binary.display()
            )),
        },
    }
    let prepared = launch.prepare(&secrets);
    // Measured, not estimated: anything allocated since activation (the
    // reply, the values, the entries) that did not fit the arena.
    if backing.is_some() && secret_heap::spilled() {
        let bytes: usize = secrets
            .iter()
            .map(|v| v.name.len() + v.value.len() + 2)
            .sum();
        warn(format!(
            "{bytes} bytes of secrets do not all fit the {} arena ({} bytes free): part of them \
             sits in ordinary memory until exec",
            backing.map_or("", Backing::describe),
            heap.room()
        ));
    }
    no_core_dumps();
    let err = prepared.exec();
    warn(format!("cannot exec {}: {err}", binary.display()));
    match err.kind() {
        std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
        _ => EXIT_NOT_EXECUTABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_execvp() {
        let sh = resolve("sh".as_ref(), Some("/nonexistent:/bin:/usr/bin".into())).unwrap();
        assert!(sh.ends_with("sh") && sh.is_absolute());
        assert!(resolve("definitely-not-a-command-xyz".as_ref(), Some("/bin".into())).is_none());
        assert_eq!(
            resolve("/bin/sh".as_ref(), None).unwrap(),
            PathBuf::from("/bin/sh")
        );
    }
}
