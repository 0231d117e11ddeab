//! Object versions: HMAC-SHA256 over an object's config and content under a
//! key kept in a file, so versions survive restarts (the driver compares
//! them across our restarts) and reveal nothing about the content.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aws_lc_rs::hmac;
use base64::Engine;
use zeroize::Zeroizing;

use crate::error::Error;

const KEY_BYTES: usize = 32;

/// Largest key file read: the key is 32 bytes; a bigger file is not ours.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// The key file's bytes: a regular file (checked on the opened descriptor,
/// so a FIFO swapped in cannot hang the start) of bounded size, still not
/// readable by group or others.
fn read_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    use kernelseal_config::input::{self, InputError};
    let what = "hmac key file";
    let message = |e: InputError| match e {
        InputError::Io { error, .. } => error.to_string(),
        InputError::NotRegular { kind, .. } => format!("is {kind}, not a regular file"),
        InputError::TooLarge { limit, .. } => {
            format!("is over the {limit}-byte limit; a key is {KEY_BYTES} bytes")
        }
    };
    let (file, meta) = input::open(path, what).map_err(message)?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "mode {:04o} lets others read it; chmod 600",
            meta.permissions().mode() & 0o777
        ));
    }
    let mut buf = Zeroizing::new(Vec::new());
    let name = path.display().to_string();
    input::read_bounded(
        file,
        &name,
        what,
        Some(meta.len()),
        MAX_KEY_FILE_BYTES,
        &mut buf,
    )
    .map_err(message)?;
    Ok(buf)
}

/// The key that signs object versions.
pub struct VersionKey(hmac::Key);

impl std::fmt::Debug for VersionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VersionKey(<redacted>)")
    }
}

impl VersionKey {
    /// A key from bytes (tests, embedding).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        VersionKey(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// Reads the key file, or creates it (mode 0600, fresh random bytes)
    /// when it does not exist. A key readable by group or others is
    /// refused: whoever holds it can test guesses against versions.
    pub fn load_or_create(path: &Path) -> Result<Self, Error> {
        let fail = |message: String| Error::KeyFile {
            path: path.to_path_buf(),
            message,
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) => {
                // lstat: a symlink is refused, not followed; the mode is
                // checked on the opened file.
                if !meta.is_file() {
                    return Err(fail("is not a regular file".into()));
                }
                let bytes = read_key_file(path).map_err(fail)?;
                if bytes.len() < KEY_BYTES {
                    return Err(fail(format!(
                        "holds {} bytes, fewer than {KEY_BYTES}; delete it to generate a new one",
                        bytes.len()
                    )));
                }
                Ok(VersionKey::from_bytes(&bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| fail(format!("creating its directory: {e}")))?;
                }
                let mut key = Zeroizing::new([0u8; KEY_BYTES]);
                aws_lc_rs::rand::fill(&mut key[..])
                    .map_err(|_| fail("the system random generator failed".into()))?;
                // create_new: two providers starting at once must not both
                // write; the loser reads the winner's key.
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                {
                    Ok(mut f) => {
                        f.write_all(&key[..])
                            .and_then(|()| f.sync_all())
                            .map_err(|e| fail(e.to_string()))?;
                        tracing::info!(path = %path.display(), "generated a new object-version key");
                        Ok(VersionKey::from_bytes(&key[..]))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        VersionKey::load_or_create(path)
                    }
                    Err(e) => Err(fail(e.to_string())),
                }
            }
            Err(e) => Err(fail(e.to_string())),
        }
    }

    /// The version of one object: the pod's namespace, the object's config
    /// (which holds its name) and content, length-prefixed so that no two
    /// different inputs share one. The namespace is in it because versions
    /// are visible to each namespace's pods and events: equal versions would
    /// tell one tenant that another's secret equals a value it knows.
    pub fn version(&self, namespace: &str, config: &str, content: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(&(namespace.len() as u64).to_be_bytes());
        ctx.update(namespace.as_bytes());
        ctx.update(&(config.len() as u64).to_be_bytes());
        ctx.update(config.as_bytes());
        ctx.update(&(content.len() as u64).to_be_bytes());
        ctx.update(content);
        let tag = ctx.sign();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_keyed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/key");
        let a = VersionKey::load_or_create(&p).unwrap();
        let b = VersionKey::load_or_create(&p).unwrap();
        assert_eq!(a.version("ns", "c", b"x"), b.version("ns", "c", b"x"));
        assert_ne!(a.version("ns", "c", b"x"), a.version("ns", "c", b"y"));
        assert_ne!(a.version("ns", "c", b"x"), a.version("ns", "d", b"x"));
        // Equal content and config in another namespace: another version;
        // and no shifting of bytes between the fields gives the same input.
        assert_ne!(a.version("ns", "c", b"x"), a.version("other", "c", b"x"));
        assert_ne!(a.version("nsc", "", b"x"), a.version("ns", "c", b"x"));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let other = VersionKey::from_bytes(&[7; 32]);
        assert_ne!(a.version("ns", "c", b"x"), other.version("ns", "c", b"x"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(VersionKey::load_or_create(&p).is_err());
    }
}
