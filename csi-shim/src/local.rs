//! Local sources (`env`, `file`): whether one may be served, and its read,
//! with one answer for every refusal.
//!
//! The pod-facing answer (the gRPC status, in the pod's events) is the
//! same whatever the reason: the source is off, the variable is not
//! allowed or not set, the path is outside the allowed directories, does
//! not exist, cannot be read, is a directory, a FIFO or too large.
//! Distinct answers would let a SecretProviderClass author probe the
//! node's filesystem and the provider's environment, even with file
//! objects off. The reason goes to the provider's log only; it names the
//! path or variable, never a value.

use std::path::{Path, PathBuf};

use kernelseal_providers::{Registry, SecretProvider, SecretRef, SecretValue};

use crate::error::Error;
use crate::mount::LocalPolicy;
use crate::params::{Object, ObjectSource};

/// The refusal every local-source failure answers with, the reason logged.
pub(crate) fn refusal(o: &Object, pod: &str, reason: &str) -> Error {
    let kind = o.source.kind();
    tracing::warn!(pod = %pod, object = %o.name, source = kind, reason = %reason, "local source not served");
    let message = match &o.source {
        ObjectSource::Env { .. } => NOT_SERVED_ENV,
        _ => NOT_SERVED_FILE,
    };
    Error::Refused {
        object: o.name.clone(),
        message: message.into(),
    }
}

const NOT_SERVED_ENV: &str = "env source not served (not allowed by --allow-env, or not set in the provider's environment); the provider's log has the reason";
const NOT_SERVED_FILE: &str = "file source not served (not allowed by --allow-file-dir, or not a readable regular file of at most 1 MiB there); the provider's log has the reason";

/// Whether `o` (a local source) may be served under `policy`; `Err` is the
/// reason, for the log. Other sources pass.
pub(crate) fn check(policy: &LocalPolicy, o: &Object) -> Result<(), String> {
    match &o.source {
        ObjectSource::Env { var } => env_allowed(policy, var),
        ObjectSource::File { path } => allowed_file(policy, path).map(|_| ()),
        _ => Ok(()),
    }
}

fn env_allowed(policy: &LocalPolicy, var: &str) -> Result<(), String> {
    if policy
        .env_prefixes
        .iter()
        .any(|p| !p.is_empty() && var.starts_with(p.as_str()))
    {
        Ok(())
    } else {
        Err(format!("env {var} does not match an --allow-env prefix"))
    }
}

/// Where a `file` object is read: the allowed directory its real path
/// (symlinks resolved, now) is under, and the path below it. With no
/// directory allowed the path is not even resolved.
fn allowed_file(policy: &LocalPolicy, path: &str) -> Result<(PathBuf, PathBuf), String> {
    if policy.file_dirs.is_empty() {
        return Err("file objects are off (no --allow-file-dir)".into());
    }
    let real = std::fs::canonicalize(path).map_err(|e| format!("file {path}: {}", e.kind()))?;
    policy
        .file_dirs
        .iter()
        .find_map(|d| {
            let below = real.strip_prefix(d).ok()?;
            // The directory itself is not a file below it.
            (!below.as_os_str().is_empty()).then(|| (d.clone(), below.to_path_buf()))
        })
        .ok_or_else(|| format!("file {path} is not under an --allow-file-dir directory"))
}

/// Reads a local source, checked again now. The path resolved just now
/// is opened beneath its allowed directory following no symlink: a
/// directory on it swapped for a symlink since (to anywhere) fails the
/// open instead of leading it outside.
pub(crate) async fn fetch(
    registry: &Registry,
    policy: &LocalPolicy,
    o: &Object,
) -> Result<SecretValue, String> {
    match &o.source {
        ObjectSource::Env { var } => {
            env_allowed(policy, var)?;
            registry
                .fetch(&SecretRef::Env { var: var.clone() })
                .await
                .map_err(|e| e.to_string())
        }
        ObjectSource::File { path } => {
            let (dir, below) = allowed_file(policy, path)?;
            read_beneath(registry, &dir, &below).await
        }
        other => Err(format!("{} is not a local source", other.kind())),
    }
}

async fn read_beneath(
    registry: &Registry,
    dir: &Path,
    below: &Path,
) -> Result<SecretValue, String> {
    registry
        .file_provider()
        .fetch_beneath(dir, below)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn object(source: ObjectSource) -> Object {
        Object {
            name: "o".into(),
            source,
            mode: None,
            encoding: crate::params::Encoding::Utf8,
            canonical: String::new(),
        }
    }

    #[test]
    fn the_reason_goes_to_the_log_not_the_answer() {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let o = object(ObjectSource::File {
            path: "/etc/shadow".into(),
        });
        let e = tracing::subscriber::with_default(subscriber, || {
            let reason = check(&LocalPolicy::default(), &o).unwrap_err();
            refusal(&o, "shop/web-0", &reason)
        });
        let logs = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(
            logs.contains("local source not served")
                && logs.contains("shop/web-0")
                && logs.contains("file objects are off"),
            "{logs}"
        );
        assert_eq!(e.to_status().code(), tonic::Code::PermissionDenied);
        assert!(!e.to_string().contains("/etc/shadow"), "{e}");
    }
}
