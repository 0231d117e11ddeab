//! `fileRef`: a file on the node, whole or one key of a JSON object.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use kernelseal_config::input::{self, FileKind, InputError};
use zeroize::Zeroizing;

use crate::SecretProvider;
use crate::beneath::{BeneathError, open_beneath};
use crate::env::wrong_kind;
use crate::error::{Error, FileProblem};
use crate::json::select_key;
use crate::reference::SecretRef;
use crate::value::{Metadata, SecretValue, content_tag};

/// Files larger than this are refused by default: a secret is small, and a
/// mistaken path (a log, a disk image) must not be read into locked memory.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Largest token or `secret_id` file read for a provider's login: a
/// service-account JWT is 1-2 KiB.
pub(crate) const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// Largest CA bundle read (`caCert`): a system bundle is about 200 KiB.
pub(crate) const MAX_CA_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a file named by provider settings (a token, a CA bundle): a
/// regular file of at most `limit` bytes, into zeroizing memory.
pub(crate) fn read_setting_file(
    path: &Path,
    what: &'static str,
    limit: u64,
) -> Result<Zeroizing<Vec<u8>>, InputError> {
    let (file, meta) = input::open(path, what)?;
    let mut buf = Zeroizing::new(Vec::new());
    let name = path.display().to_string();
    input::read_bounded(file, &name, what, Some(meta.len()), limit, &mut buf)?;
    Ok(buf)
}

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

    /// Reads `relative` beneath `dir` following no symlink below `dir`
    /// (see [`open_beneath`]): for files a less trusted party names, like
    /// a CSI `file` object under `--allow-file-dir`. Errors name
    /// `dir/relative` as a `fileRef`; a symlink on the way is
    /// [`FileProblem::Symlink`].
    pub async fn fetch_beneath(&self, dir: &Path, relative: &Path) -> Result<SecretValue, Error> {
        let path = dir.join(relative);
        let r = SecretRef::File {
            path: path.clone(),
            json_key: None,
            ttl: None,
        };
        let (dir, relative, limit) = (dir.to_path_buf(), relative.to_path_buf(), self.max_bytes);
        let task_ref = r.clone();
        tokio::task::spawn_blocking(move || {
            let r = task_ref;
            let fail = failure(&r, &path);
            let file = open_beneath(&dir, &relative).map_err(|e| fail(beneath_problem(e)))?;
            let name = path.display().to_string();
            let meta =
                input::regular(&file, &name, "fileRef").map_err(|e| fail(input_problem(&e)))?;
            input::set_blocking(&file).map_err(|e| fail(io_problem(&e)))?;
            read_opened(&r, &path, file, meta, None, limit)
        })
        .await
        .unwrap_or_else(|_| {
            Err(Error::File {
                reference: r.to_string(),
                path: reference_path(&r),
                problem: FileProblem::Io("reader task failed".into()),
            })
        })
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
    let fail = failure(r, path);
    // Opened non-blocking and checked on the descriptor: a FIFO swapped in
    // after a check by path would block the open, a device never end.
    let (file, meta) = input::open(path, "fileRef").map_err(|e| fail(input_problem(&e)))?;
    read_opened(r, path, file, meta, json_key, limit)
}

/// Reads a file opened by [`read`] or [`FileProvider::fetch_beneath`]:
/// at most `limit` bytes, into zeroizing memory.
fn read_opened(
    r: &SecretRef,
    path: &Path,
    file: std::fs::File,
    meta: std::fs::Metadata,
    json_key: Option<&str>,
    limit: u64,
) -> Result<SecretValue, Error> {
    let fail = failure(r, path);
    let mut buf = Zeroizing::new(Vec::new());
    let name = path.display().to_string();
    // Sized once from the file's length: no reallocation leaves a copy.
    input::read_bounded(file, &name, "fileRef", Some(meta.len()), limit, &mut buf)
        .map_err(|e| fail(input_problem(&e)))?;
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

/// The error of reading `path` for `r`, for each problem found.
fn failure<'a>(r: &'a SecretRef, path: &'a Path) -> impl Fn(FileProblem) -> Error + 'a {
    move |problem| Error::File {
        reference: r.to_string(),
        path: path.to_path_buf(),
        problem,
    }
}

fn io_problem(e: &std::io::Error) -> FileProblem {
    match e.kind() {
        std::io::ErrorKind::NotFound => FileProblem::Missing,
        std::io::ErrorKind::PermissionDenied => {
            FileProblem::PermissionDenied { uid: current_uid() }
        }
        _ => FileProblem::Io(e.to_string()),
    }
}

fn input_problem(e: &InputError) -> FileProblem {
    match e {
        InputError::Io { error, .. } => io_problem(error),
        InputError::NotRegular {
            kind: FileKind::Directory,
            ..
        } => FileProblem::IsDirectory,
        InputError::NotRegular { .. } => FileProblem::NotRegular,
        InputError::TooLarge { size, limit, .. } => FileProblem::TooLarge {
            // A regular file always has its size; the fallback is a floor.
            size: size.unwrap_or(limit + 1),
            limit: *limit,
        },
    }
}

fn beneath_problem(e: BeneathError) -> FileProblem {
    match e {
        BeneathError::NotBeneath { .. } => FileProblem::NotBeneath,
        BeneathError::Symlink { .. } => FileProblem::Symlink,
        BeneathError::Io { error, .. } => io_problem(&error),
    }
}

/// The agent's uid, for permission messages (owner of /proc/self).
fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}
