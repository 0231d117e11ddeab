//! `fileRef`: a file on the node, whole or one key of a JSON object.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use zeroize::Zeroizing;

use crate::SecretProvider;
use crate::env::wrong_kind;
use crate::error::{Error, FileProblem};
use crate::json::select_key;
use crate::reference::SecretRef;
use crate::value::{Metadata, SecretValue, content_tag};

/// Files larger than this are refused by default: a secret is small, and a
/// mistaken path (a log, a disk image) must not be read into locked memory.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Reads `fileRef` sources.
#[derive(Debug, Clone)]
pub struct FileProvider {
    max_bytes: u64,
}

impl Default for FileProvider {
    fn default() -> Self {
        FileProvider {
            max_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }
}

impl FileProvider {
    pub fn with_limit(max_bytes: u64) -> Self {
        FileProvider { max_bytes }
    }
}

#[async_trait::async_trait]
impl SecretProvider for FileProvider {
    fn kind(&self) -> &'static str {
        "file"
    }

    async fn fetch(&self, reference: &SecretRef) -> Result<SecretValue, Error> {
        let SecretRef::File { path, json_key, .. } = reference else {
            return Err(wrong_kind(reference, "file"));
        };
        let (path, json_key, r, limit) = (
            path.clone(),
            json_key.clone(),
            reference.clone(),
            self.max_bytes,
        );
        // File I/O blocks; keep it off the async workers.
        tokio::task::spawn_blocking(move || read(&r, &path, json_key.as_deref(), limit))
            .await
            .unwrap_or_else(|_| {
                Err(Error::File {
                    reference: reference.to_string(),
                    path: reference_path(reference),
                    problem: FileProblem::Io("reader task failed".into()),
                })
            })
    }
}

fn reference_path(r: &SecretRef) -> PathBuf {
    match r {
        SecretRef::File { path, .. } => path.clone(),
        _ => PathBuf::new(),
    }
}

fn read(
    r: &SecretRef,
    path: &Path,
    json_key: Option<&str>,
    limit: u64,
) -> Result<SecretValue, Error> {
    let fail = |problem| Error::File {
        reference: r.to_string(),
        path: path.to_path_buf(),
        problem,
    };
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => FileProblem::Missing,
        std::io::ErrorKind::PermissionDenied => {
            FileProblem::PermissionDenied { uid: current_uid() }
        }
        _ => FileProblem::Io(e.to_string()),
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(io(e)))?;
    if meta.is_dir() {
        return Err(fail(FileProblem::IsDirectory));
    }
    if !meta.is_file() {
        // A FIFO or device could block forever or never end.
        return Err(fail(FileProblem::NotRegular));
    }
    if meta.len() > limit {
        return Err(fail(FileProblem::TooLarge {
            size: meta.len(),
            limit,
        }));
    }
    let file = std::fs::File::open(path).map_err(|e| fail(io(e)))?;
    let mut buf = Zeroizing::new(Vec::with_capacity(meta.len() as usize + 1));
    // Read at most limit+1 bytes: the file may grow between stat and read.
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| fail(io(e)))?;
    if buf.len() as u64 > limit {
        return Err(fail(FileProblem::TooLarge {
            size: buf.len() as u64,
            limit,
        }));
    }
    let bytes = match json_key {
        Some(k) => select_key(&buf, k, &r.to_string(), "fileRef.jsonKey", "the file")?,
        None => buf,
    };
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| format!("{}.{:09}", d.as_secs(), d.subsec_nanos()))
        .unwrap_or_default();
    let mut m = Metadata::new(r.to_string(), "file");
    m.version = Some(format!("mtime:{mtime}/{}", content_tag(&bytes)));
    Ok(SecretValue::new(bytes, m))
}

/// The agent's uid, for permission messages (owner of /proc/self).
fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}
