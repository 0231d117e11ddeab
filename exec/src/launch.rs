//! The `execve` of the wrapped program, built in two halves.
//!
//! The path, the arguments and the inherited environment hold nothing
//! secret, so they are turned into C strings before the secret heap is
//! active; only the reply and the `NAME=value` entries made from it land in
//! the arena. The inherited environment is often the larger part (a
//! Kubernetes pod gets variables for every service in its namespace), and
//! every arena page costs a fault that takes it out of the kernel's direct
//! map. `std::process::Command` would copy the whole environment twice
//! after the reply (its captured table, then the envp strings), inside the
//! arena and with the values among it.

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use kernelseal_protocol::EnvVar;
use zeroize::Zeroizing;

/// What `execve` needs apart from the secrets.
pub struct Launch {
    path: CString,
    argv: Vec<CString>,
    /// `NAME=value` of every inherited variable.
    inherited: Vec<CString>,
}

/// Why the secrets cannot be put in an environment. Names the variable,
/// never the value.
#[derive(Debug, PartialEq, Eq)]
pub struct BadVariable {
    pub name: String,
    pub why: &'static str,
}

impl std::fmt::Display for BadVariable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the agent sent variable {:?}, which {}",
            self.name, self.why
        )
    }
}

/// Why [`Launch::exec`] returned.
#[derive(Debug)]
pub enum LaunchError {
    Variable(BadVariable),
    Exec(std::io::Error),
}

fn c_string(bytes: &[u8]) -> CString {
    // Arguments, paths and inherited variables come from C strings (argv,
    // environ, a path resolved from them): they hold no NUL.
    CString::new(bytes).unwrap_or_default()
}

impl Launch {
    /// `argv[0]` is `arg0` as the caller typed it; `path` is where it was found.
    pub fn new(path: &Path, arg0: &OsStr, args: &[OsString]) -> Launch {
        let argv = std::iter::once(arg0)
            .chain(args.iter().map(OsString::as_os_str))
            .map(|a| c_string(a.as_bytes()))
            .collect();
        let inherited = std::env::vars_os()
            .map(|(k, v)| {
                let mut entry = Vec::with_capacity(k.len() + v.len() + 1);
                entry.extend_from_slice(k.as_bytes());
                entry.push(b'=');
                entry.extend_from_slice(v.as_bytes());
                c_string(&entry)
            })
            .collect();
        Launch {
            path: c_string(path.as_os_str().as_bytes()),
            argv,
            inherited,
        }
    }

    /// Replaces this process with the program, its environment the
    /// inherited one with `secrets` set (a secret wins over an inherited
    /// variable of the same name). Returns only on failure: a variable no
    /// environment can carry (nothing was run), or the `execve` error.
    pub fn exec(self, secrets: &[EnvVar]) -> Result<std::convert::Infallible, LaunchError> {
        let entries = secret_entries(secrets).map_err(LaunchError::Variable)?;
        let argv = pointers(self.argv.iter().map(|a| a.as_ptr()));
        let envp = pointers(
            self.inherited
                .iter()
                .filter(|e| !secrets.iter().any(|s| names(e.as_bytes(), &s.name)))
                .map(|e| e.as_ptr())
                .chain(entries.iter().map(|e| e.as_ptr().cast())),
        );
        reset_signals();
        // SAFETY: path, argv and envp are NUL-terminated strings behind
        // null-terminated pointer arrays, all alive across the call.
        unsafe { libc::execve(self.path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        Err(LaunchError::Exec(std::io::Error::last_os_error()))
    }
}

/// Whether `entry` (`NAME=value`) sets `name`.
fn names(entry: &[u8], name: &str) -> bool {
    entry
        .strip_prefix(name.as_bytes())
        .is_some_and(|rest| rest.first() == Some(&b'='))
}

fn pointers(p: impl Iterator<Item = *const libc::c_char>) -> Vec<*const libc::c_char> {
    p.chain(std::iter::once(std::ptr::null())).collect()
}

/// `NAME=value\0` for each secret, wiped if the exec fails.
fn secret_entries(secrets: &[EnvVar]) -> Result<Vec<Zeroizing<Vec<u8>>>, BadVariable> {
    secrets
        .iter()
        .map(|s| {
            let why = if s.name.is_empty() {
                Some("has an empty name")
            } else if s.name.bytes().any(|b| b == b'=' || b == 0) {
                Some("has '=' or a NUL byte in its name")
            } else if s.value.bytes().any(|b| b == 0) {
                Some("has a NUL byte in its value (an environment cannot carry it)")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(BadVariable {
                    name: s.name.escape_debug().to_string(),
                    why,
                });
            }
            let mut entry = Zeroizing::new(Vec::with_capacity(s.name.len() + s.value.len() + 2));
            entry.extend_from_slice(s.name.as_bytes());
            entry.push(b'=');
            entry.extend_from_slice(s.value.as_bytes());
            entry.push(0);
            Ok(entry)
        })
        .collect()
}

/// What `std::process::Command` does before it execs, so the program starts
/// as it would have: no blocked signals, SIGPIPE at its default (the std
/// runtime of `kernelseal exec` ignores it).
fn reset_signals() {
    // SAFETY: plain libc calls on a local, initialised signal set.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn an_entry_sets_only_its_own_name() {
        assert!(names(b"DB=x", "DB"));
        assert!(names(b"DB=", "DB"));
        assert!(!names(b"DB_PASSWORD=x", "DB"));
        assert!(!names(b"D=x", "DB"));
    }

    #[test]
    fn entries_are_name_equals_value_nul() {
        let e = secret_entries(&[var("A", "1"), var("B", "")]).unwrap();
        assert_eq!(e[0].as_slice(), b"A=1\0");
        assert_eq!(e[1].as_slice(), b"B=\0");
    }

    #[test]
    fn a_variable_the_environment_cannot_carry_is_named_without_its_value() {
        for (name, value) in [("", "v"), ("A=B", "v"), ("A\0", "v"), ("A", "top\0secret")] {
            let err = secret_entries(&[var(name, value)]).unwrap_err();
            let text = err.to_string();
            assert!(!text.contains("secret"), "{text}");
            assert!(text.contains("the agent sent variable"), "{text}");
        }
    }
}
