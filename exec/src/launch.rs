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

use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use kernelseal_protocol::EnvVar;
use zeroize::Zeroizing;

type CPointers = Vec<*const libc::c_char>;

/// What `execve` needs apart from the secrets.
pub struct Launch {
    path: CString,
    argv: Vec<CString>,
    /// The caller's environment, entry for entry as `environ` holds it.
    inherited: Vec<CString>,
}

/// A secret no environment can carry. Names the variable, never the value.
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

/// Whether `var` can be an environment variable.
pub fn check(var: &EnvVar) -> Result<(), BadVariable> {
    let why = if var.name.is_empty() {
        "has an empty name"
    } else if var.name.bytes().any(|b| b == b'=' || b == 0) {
        "has '=' or a NUL byte in its name"
    } else if var.value.bytes().any(|b| b == 0) {
        "has a NUL byte in its value (an environment cannot carry it)"
    } else {
        return Ok(());
    };
    Err(BadVariable {
        name: var.name.clone(),
        why,
    })
}

fn c_string(bytes: &[u8]) -> CString {
    // Arguments and paths come from C strings (argv, PATH): no NUL inside.
    CString::new(bytes).unwrap_or_default()
}

unsafe extern "C" {
    /// The C library's environment (glibc and musl both export it).
    static environ: *const *const libc::c_char;
}

/// The environment as the kernel handed it over: entries without `=` and
/// repeated names stay as they are, as they would through any exec.
fn inherited_environment() -> Vec<CString> {
    let mut out = Vec::new();
    // SAFETY: `environ` is a null-terminated array of C strings; nothing in
    // the wrapper changes the environment while it is read.
    unsafe {
        let mut entry = environ;
        while !entry.is_null() && !(*entry).is_null() {
            out.push(CStr::from_ptr(*entry).to_owned());
            entry = entry.add(1);
        }
    }
    out
}

impl Launch {
    /// `argv[0]` is `arg0` as the caller typed it; `path` is where it was found.
    pub fn new(path: &Path, arg0: &OsStr, args: &[OsString]) -> Launch {
        let argv = std::iter::once(arg0)
            .chain(args.iter().map(OsString::as_os_str))
            .map(|a| c_string(a.as_bytes()))
            .collect();
        Launch {
            path: c_string(path.as_os_str().as_bytes()),
            argv,
            inherited: inherited_environment(),
        }
    }

    /// Builds the environment: the inherited one with `secrets` set over it
    /// (a secret replaces every inherited entry of its name; of two secrets
    /// with one name the last wins). A secret that fails [`check`] is left
    /// out: the caller reports those first, as `--on-error` says.
    pub fn prepare(self, secrets: &[EnvVar]) -> Prepared {
        let mut entries = Vec::with_capacity(secrets.len());
        for (i, s) in secrets.iter().enumerate() {
            if check(s).is_err() || secrets[i + 1..].iter().any(|later| later.name == s.name) {
                continue;
            }
            let mut entry = Zeroizing::new(Vec::with_capacity(s.name.len() + s.value.len() + 2));
            entry.extend_from_slice(s.name.as_bytes());
            entry.push(b'=');
            entry.extend_from_slice(s.value.as_bytes());
            entry.push(0);
            entries.push(entry);
        }
        let mut argv = CPointers::with_capacity(self.argv.len() + 1);
        argv.extend(self.argv.iter().map(|a| a.as_ptr()));
        argv.push(std::ptr::null());
        let mut envp = CPointers::with_capacity(self.inherited.len() + entries.len() + 1);
        envp.extend(
            self.inherited
                .iter()
                .filter(|e| !secrets.iter().any(|s| names(e.to_bytes(), &s.name)))
                .map(|e| e.as_ptr()),
        );
        envp.extend(entries.iter().map(|e| e.as_ptr().cast::<libc::c_char>()));
        envp.push(std::ptr::null());
        Prepared {
            launch: self,
            entries,
            argv,
            envp,
        }
    }
}

/// Everything `execve` takes, built.
pub struct Prepared {
    launch: Launch,
    /// `NAME=value\0` of each secret, wiped if the exec fails. Read only
    /// through `envp`'s pointers.
    #[allow(dead_code)]
    entries: Vec<Zeroizing<Vec<u8>>>,
    /// Pointers into `launch` and `entries`, whose heap buffers stay put.
    argv: CPointers,
    envp: CPointers,
}

impl Prepared {
    /// Replaces this process with the program. Returns only on failure.
    pub fn exec(self) -> std::io::Error {
        reset_signals();
        // SAFETY: path, argv and envp are NUL-terminated strings behind
        // null-terminated pointer arrays, all owned by self and alive
        // across the call.
        unsafe {
            libc::execve(
                self.launch.path.as_ptr(),
                self.argv.as_ptr(),
                self.envp.as_ptr(),
            )
        };
        std::io::Error::last_os_error()
    }
}

/// Whether `entry` (`NAME=value`) sets `name`.
fn names(entry: &[u8], name: &str) -> bool {
    entry
        .strip_prefix(name.as_bytes())
        .is_some_and(|rest| rest.first() == Some(&b'='))
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

    fn entries(secrets: &[EnvVar]) -> Vec<Vec<u8>> {
        let launch = Launch::new(Path::new("/bin/true"), "true".as_ref(), &[]);
        let p = launch.prepare(secrets);
        p.entries.iter().map(|e| e.to_vec()).collect()
    }

    #[test]
    fn entries_are_name_equals_value_nul_and_the_last_of_a_name_wins() {
        assert_eq!(
            entries(&[var("A", "1"), var("B", ""), var("A", "2")]),
            [b"B=\0".to_vec(), b"A=2\0".to_vec()]
        );
    }

    #[test]
    fn a_variable_the_environment_cannot_carry_is_named_without_its_value() {
        for (name, value) in [("", "v"), ("A=B", "v"), ("A\0", "v"), ("A", "top\0secret")] {
            let err = check(&var(name, value)).unwrap_err();
            let text = err.to_string();
            assert!(!text.contains("secret"), "{text}");
            assert!(text.contains(&format!("{name:?}")), "{text}");
        }
    }
}
