//! Command line of the wrapper, parsed by hand: it runs before every wrapped
//! program, so it carries no argument-parsing crate.

use std::ffi::OsString;
use std::time::Duration;

pub const USAGE: &str = "\
usage: kernelseal-exec [--socket PATH] [--timeout DURATION] [--on-error fail|continue] [--token-file PATH]... [--verbose] -- CMD [ARGS...]

Asks the KernelSeal agent for the secrets bound to CMD, sets them in the
environment, disables core dumps, and execs CMD in place (same PID). The agent
marks this process protected before it answers, so the secrets are guarded
from the program's first instruction; until the exec they are held in secret
memory (memfd_secret) where the kernel offers it.

  --socket PATH       agent socket (default $KERNELSEAL_SOCKET or /run/kernelseal/kernelseal.sock)
  --timeout DURATION  how long to retry an agent that is down or refusing (default 15s; e.g. 500ms, 30s, 2m)
  --on-error MODE     fail (default): exit 125 with the reason; continue: exec CMD without secrets, say so on stderr
  --token-file PATH   the pod's service-account token for bindings with identity: pod (a file, or
                      a directory of one token per audience; repeatable; at most 3 tokens). Default:
                      the files in /var/run/secrets/kernelseal.io/tokens when it exists. Sent to the
                      agent, which accepts it only for the pod the kernel says is calling.
  --verbose           say what was delivered (names only)
Options with a value also take the --name=value form.

No binding for this process (binary, uid, cgroup or pod/container do not match
any binding) is a failure like an agent that is down: a wrapped app is never
started without its secrets unless --on-error continue says so.

Exit codes: CMD's own once exec'd; 125 agent unavailable or refused, or no
binding matched (--on-error fail), or a secret no environment can carry (a NUL
byte; continue: run without it); 126 CMD not executable; 127 CMD not found;
2 bad usage.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Fail,
    Continue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub socket: String,
    pub timeout: Duration,
    pub on_error: OnError,
    pub verbose: bool,
    pub tokens: crate::tokens::TokenSource,
    /// CMD and its arguments, passed on byte for byte (not necessarily UTF-8).
    pub command: Vec<OsString>,
}

/// `Err(message)` for bad usage; `Ok(None)` for --help/--version (printed).
pub fn parse(argv: &[OsString], default_socket: String) -> Result<Option<Args>, String> {
    let mut args = Args {
        socket: default_socket,
        timeout: Duration::from_secs(15),
        on_error: OnError::Fail,
        verbose: false,
        tokens: crate::tokens::TokenSource::Default,
        command: Vec::new(),
    };
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        // `--name=value` is `--name value`, as clap accepts for `kernelseal`.
        let (flag, inline) = match a.to_str().and_then(|t| t.split_once('=')) {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.to_str().unwrap_or(""), None),
        };
        let mut value = |name: &str| {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            let v = it.next().ok_or_else(|| format!("{name} needs a value"))?;
            v.to_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{name} {v:?} is not UTF-8"))
        };
        if inline.is_some()
            && !matches!(
                flag,
                "--socket" | "--timeout" | "--on-error" | "--token-file"
            )
        {
            return Err(format!("unknown option {flag} (or it takes no value)"));
        }
        // Options are text; anything else is where CMD starts.
        match flag {
            "--" => {
                args.command = it.cloned().collect();
                break;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("kernelseal-exec {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "--socket" => args.socket = value("--socket")?,
            "--timeout" => {
                let v = value("--timeout")?;
                args.timeout = kernelseal_config::parse_duration(&v).map_err(|_| {
                    format!("--timeout {v:?} is not a duration (e.g. 500ms, 15s, 2m)")
                })?;
            }
            "--on-error" => {
                args.on_error = match value("--on-error")?.as_str() {
                    "fail" => OnError::Fail,
                    "continue" => OnError::Continue,
                    other => return Err(format!("--on-error {other:?}: use fail or continue")),
                }
            }
            "--token-file" => {
                let path = std::path::PathBuf::from(value("--token-file")?);
                match &mut args.tokens {
                    crate::tokens::TokenSource::Given(paths) => paths.push(path),
                    default => *default = crate::tokens::TokenSource::Given(vec![path]),
                }
            }
            "-v" | "--verbose" => args.verbose = true,
            opt if opt.starts_with('-') => return Err(format!("unknown option {opt}")),
            "" if a.as_encoded_bytes().first() == Some(&b'-') => {
                return Err(format!("unknown option {a:?}"));
            }
            _ => {
                args.command = std::iter::once(a).chain(it).cloned().collect();
                break;
            }
        }
    }
    if args.command.is_empty() {
        return Err("no command given".into());
    }
    Ok(Some(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    #[test]
    fn token_files_repeat_and_default_to_the_projected_directory() {
        use crate::tokens::TokenSource;
        let a = parse(&v(&["app"]), "/d".into()).unwrap().unwrap();
        assert_eq!(a.tokens, TokenSource::Default);
        let a = parse(
            &v(&["--token-file", "/t/vault", "--token-file=/t/sts", "app"]),
            "/d".into(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            a.tokens,
            TokenSource::Given(vec!["/t/vault".into(), "/t/sts".into()])
        );
        let e = parse(&v(&["--token-file"]), "/d".into()).unwrap_err();
        assert!(e.contains("--token-file needs a value"), "{e}");
    }

    #[test]
    fn accepts_name_equals_value() {
        let a = parse(
            &v(&[
                "--timeout=2s",
                "--socket=/s",
                "--on-error=continue",
                "--",
                "app",
            ]),
            "/d".into(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.timeout, Duration::from_secs(2));
        assert_eq!(a.socket, "/s");
        assert_eq!(a.on_error, OnError::Continue);
        assert_eq!(a.command, v(&["app"]));
        let e = parse(&v(&["--verbose=yes", "--", "app"]), "/d".into()).unwrap_err();
        assert!(e.contains("--verbose"), "{e}");
        let e = parse(&v(&["--timeout=soon", "--", "app"]), "/d".into()).unwrap_err();
        assert!(e.contains("\"soon\""), "{e}");
        // After `--` an `=` belongs to CMD.
        let a = parse(&v(&["--", "app", "--timeout=2s"]), "/d".into())
            .unwrap()
            .unwrap();
        assert_eq!(a.command, v(&["app", "--timeout=2s"]));
    }

    #[test]
    fn parses_options_and_command() {
        let a = parse(
            &v(&[
                "--socket",
                "/s",
                "--timeout",
                "500ms",
                "--on-error",
                "continue",
                "-v",
                "--",
                "app",
                "--flag",
            ]),
            "/d".into(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.socket, "/s");
        assert_eq!(a.timeout, Duration::from_millis(500));
        assert_eq!(a.on_error, OnError::Continue);
        assert!(a.verbose);
        assert_eq!(a.command, v(&["app", "--flag"]));
        let b = parse(&v(&["app", "-x"]), "/d".into()).unwrap().unwrap();
        assert_eq!(
            b.command,
            v(&["app", "-x"]),
            "options after CMD belong to CMD"
        );
        assert_eq!(b.socket, "/d");
    }

    #[test]
    fn bad_usage_is_named() {
        assert!(
            parse(&v(&[]), "/d".into())
                .unwrap_err()
                .contains("no command")
        );
        assert!(
            parse(&v(&["--timeout", "soon", "--", "a"]), "/d".into())
                .unwrap_err()
                .contains("soon")
        );
        assert!(
            parse(&v(&["--on-error", "maybe", "a"]), "/d".into())
                .unwrap_err()
                .contains("maybe")
        );
        assert!(
            parse(&v(&["--bogus", "a"]), "/d".into())
                .unwrap_err()
                .contains("--bogus")
        );
        assert!(
            parse(&v(&["--socket"]), "/d".into())
                .unwrap_err()
                .contains("needs a value")
        );
    }

    #[test]
    fn command_bytes_pass_through_and_options_must_be_text() {
        use std::os::unix::ffi::OsStringExt;
        let raw = OsString::from_vec(vec![b'a', 0xff, b'b']);
        let a = parse(&[OsString::from("cat"), raw.clone()], "/d".into())
            .unwrap()
            .unwrap();
        assert_eq!(a.command, vec![OsString::from("cat"), raw.clone()]);
        let err = parse(&[OsString::from("--socket"), raw], "/d".into()).unwrap_err();
        assert!(
            err.contains("--socket") && err.contains("not UTF-8"),
            "{err}"
        );
    }

    #[test]
    fn durations() {
        // The config's syntax (kernelseal_config::parse_duration), which
        // now also takes hours and days.
        let timeout = |t: &str| {
            parse(&v(&["--timeout", t, "--", "app"]), "s".into()).map(|a| a.map(|a| a.timeout))
        };
        assert_eq!(timeout("15"), Ok(Some(Duration::from_secs(15))));
        assert_eq!(timeout("2m"), Ok(Some(Duration::from_secs(120))));
        assert_eq!(timeout("1.5s"), Ok(Some(Duration::from_millis(1500))));
        assert_eq!(timeout("5h"), Ok(Some(Duration::from_secs(5 * 3600))));
        assert!(timeout("-1s").is_err());
        assert!(timeout("5x").is_err());
    }
}
