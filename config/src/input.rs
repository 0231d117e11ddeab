//! Reading an input file (a config, a manifest, a token, a key) with a
//! size bound that holds whatever the path turns out to be.
//!
//! A check of `metadata().len()` before reading bounds nothing: the length
//! is 0 for `/dev/zero`, `/dev/stdin` and FIFOs, which then stream without
//! end; and opening a FIFO that has no writer blocks forever. So the path
//! is opened non-blocking, the opened file (not the path, which could have
//! been swapped meanwhile) must be a regular file, and at most `limit + 1`
//! bytes are ever read. Standard input is read only when the caller asks
//! for it (a `-` argument), and then with the same bound.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// How errors name standard input.
pub const STDIN_NAME: &str = "standard input";

/// Why an input could not be read. `what` says what the file is for
/// ("config", "token file"), `name` is its path as given.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    // `error`, not `source`: the text is in the message already, and a
    // source would print it twice in a `{:#}` chain.
    #[error("cannot read {what} {name}: {error}")]
    Io {
        what: &'static str,
        name: String,
        error: io::Error,
    },
    #[error("{what} {name} is {kind}, not a regular file")]
    NotRegular {
        what: &'static str,
        name: String,
        kind: FileKind,
    },
    #[error("{what} {name} is {}over the {limit}-byte limit", size_prefix(*size))]
    TooLarge {
        what: &'static str,
        name: String,
        /// Known for a regular file; a stream has no size to report.
        size: Option<u64>,
        limit: u64,
    },
}

fn size_prefix(size: Option<u64>) -> String {
    size.map(|s| format!("{s} bytes, ")).unwrap_or_default()
}

impl InputError {
    /// The underlying I/O error, when there is one (to tell a missing file
    /// from a permission problem).
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            InputError::Io { error, .. } => Some(error.kind()),
            _ => None,
        }
    }
}

/// What a path turned out to be when a regular file was wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
    Symlink,
    Unknown,
}

impl FileKind {
    /// `None` for a regular file.
    pub fn of(ft: std::fs::FileType) -> Option<FileKind> {
        Some(if ft.is_file() {
            return None;
        } else if ft.is_dir() {
            FileKind::Directory
        } else if ft.is_fifo() {
            FileKind::Fifo
        } else if ft.is_char_device() {
            FileKind::CharDevice
        } else if ft.is_block_device() {
            FileKind::BlockDevice
        } else if ft.is_socket() {
            FileKind::Socket
        } else if ft.is_symlink() {
            FileKind::Symlink
        } else {
            FileKind::Unknown
        })
    }
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileKind::Directory => "a directory",
            FileKind::Fifo => "a FIFO",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Socket => "a socket",
            FileKind::Symlink => "a symlink",
            FileKind::Unknown => "an unknown file type",
        })
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl Fn(io::Error) -> InputError + 'a {
    move |error| InputError::Io {
        what,
        name: path.display().to_string(),
        error,
    }
}

/// Opens `path` for reading if it is a regular file, without ever blocking
/// in `open` (a FIFO without a writer). Symlinks are followed: the path is
/// the operator's choice. Returns the file, blocking again, and its
/// metadata from the opened descriptor.
pub fn open(path: &Path, what: &'static str) -> Result<(File, Metadata), InputError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        // O_NOCTTY: naming a terminal must not make it ours.
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io_err(what, path))?;
    let meta = regular(&file, &path.display().to_string(), what)?;
    set_blocking(&file).map_err(io_err(what, path))?;
    Ok((file, meta))
}

/// The metadata of an opened file (`fstat`) if it is a regular file.
pub fn regular(file: &File, name: &str, what: &'static str) -> Result<Metadata, InputError> {
    let meta = file.metadata().map_err(|error| InputError::Io {
        what,
        name: name.to_string(),
        error,
    })?;
    if let Some(kind) = FileKind::of(meta.file_type()) {
        return Err(InputError::NotRegular {
            what,
            name: name.to_string(),
            kind,
        });
    }
    Ok(meta)
}

/// Clears O_NONBLOCK. A regular file ignores it on most filesystems, but
/// not all (a network filesystem may answer EAGAIN), and the caller reads
/// as if blocking.
pub fn set_blocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Appends at most `limit` bytes of `reader` to `buf`, refusing more.
/// `size_hint` (a regular file's length) sizes the buffer once, so that a
/// caller holding a secret in a zeroizing `Vec` leaves no reallocated
/// copies behind.
pub fn read_bounded(
    reader: impl Read,
    name: &str,
    what: &'static str,
    size_hint: Option<u64>,
    limit: u64,
    buf: &mut Vec<u8>,
) -> Result<(), InputError> {
    let start = buf.len();
    if let Some(size) = size_hint {
        // +1: the byte that shows the file grew past its size or the limit.
        buf.reserve(usize::try_from(size.min(limit)).unwrap_or(0) + 1);
    }
    reader
        .take(limit.saturating_add(1))
        .read_to_end(buf)
        .map_err(|error| InputError::Io {
            what,
            name: name.to_string(),
            error,
        })?;
    let read = (buf.len() - start) as u64;
    if read > limit {
        buf.truncate(start);
        return Err(InputError::TooLarge {
            what,
            name: name.to_string(),
            size: size_hint.map(|s| s.max(read)),
            limit,
        });
    }
    Ok(())
}

/// Reads a regular file of at most `limit` bytes.
pub fn read(path: &Path, what: &'static str, limit: u64) -> Result<Vec<u8>, InputError> {
    let (file, meta) = open(path, what)?;
    let mut buf = Vec::new();
    read_bounded(
        file,
        &path.display().to_string(),
        what,
        Some(meta.len()),
        limit,
        &mut buf,
    )?;
    Ok(buf)
}

/// Like [`read`], but `-` means standard input (still bounded). Returns
/// the bytes and the name to show for them.
pub fn read_arg(
    path: &Path,
    what: &'static str,
    limit: u64,
) -> Result<(Vec<u8>, String), InputError> {
    if path.as_os_str() != "-" {
        return read(path, what, limit).map(|b| (b, path.display().to_string()));
    }
    let mut buf = Vec::new();
    read_bounded(io::stdin().lock(), STDIN_NAME, what, None, limit, &mut buf)?;
    Ok((buf, STDIN_NAME.to_string()))
}

/// UTF-8 text from bytes read by this module.
pub fn into_text(bytes: Vec<u8>, name: &str, what: &'static str) -> Result<String, InputError> {
    String::from_utf8(bytes).map_err(|_| InputError::Io {
        what,
        name: name.to_string(),
        error: io::Error::new(
            io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    const LIMIT: u64 = 64;

    fn mkfifo(path: &Path) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ks-input-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn regular_file_within_the_limit_is_read_whole() {
        let dir = temp("ok");
        let f = dir.join("c.yaml");
        std::fs::write(&f, vec![b'x'; LIMIT as usize]).unwrap();
        assert_eq!(read(&f, "config", LIMIT).unwrap().len(), LIMIT as usize);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn regular_file_over_the_limit_is_refused_with_its_size() {
        let dir = temp("big");
        let f = dir.join("c.yaml");
        std::fs::write(&f, vec![b'x'; LIMIT as usize + 10]).unwrap();
        let e = read(&f, "config", LIMIT).unwrap_err();
        assert!(
            matches!(
                e,
                InputError::TooLarge {
                    size: Some(74),
                    limit: LIMIT,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("config {} is 74 bytes, over the 64-byte limit", f.display())
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn dev_zero_is_refused_before_reading() {
        let e = read(Path::new("/dev/zero"), "config", LIMIT).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config /dev/zero is a character device, not a regular file"
        );
    }

    #[test]
    fn fifo_without_writer_is_refused_not_waited_on() {
        let dir = temp("fifo");
        let f = dir.join("fifo");
        mkfifo(&f);
        // Blocking here (an open without O_NONBLOCK) would hang the test.
        let e = read(&f, "config", LIMIT).unwrap_err();
        assert!(
            matches!(
                e,
                InputError::NotRegular {
                    kind: FileKind::Fifo,
                    ..
                }
            ),
            "{e:?}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn directory_is_refused() {
        let dir = temp("dir");
        let e = read(&dir, "config", LIMIT).unwrap_err();
        assert!(
            matches!(
                e,
                InputError::NotRegular {
                    kind: FileKind::Directory,
                    ..
                }
            ),
            "{e:?}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_file_keeps_the_io_kind() {
        let e = read(Path::new("/nonexistent/ks-input"), "config", LIMIT).unwrap_err();
        assert_eq!(e.io_kind(), Some(io::ErrorKind::NotFound));
        assert!(
            e.to_string()
                .starts_with("cannot read config /nonexistent/ks-input: ")
        );
    }

    #[test]
    fn a_stream_is_cut_at_the_limit() {
        // An endless reader: only limit+1 bytes may ever be taken from it.
        let mut buf = Vec::new();
        let e = read_bounded(io::repeat(b'y'), "-", "manifest", None, LIMIT, &mut buf).unwrap_err();
        assert!(
            matches!(
                e,
                InputError::TooLarge {
                    size: None,
                    limit: LIMIT,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "manifest - is over the 64-byte limit");
        assert!(buf.is_empty(), "nothing of a refused input is kept");
        read_bounded(&b"short"[..], "-", "manifest", None, LIMIT, &mut buf).unwrap();
        assert_eq!(buf, b"short");
    }

    #[test]
    fn opened_file_is_blocking_again() {
        let dir = temp("flags");
        let f = dir.join("c.yaml");
        std::fs::write(&f, "x").unwrap();
        let (file, _) = open(&f, "config").unwrap();
        // SAFETY: fcntl on a live descriptor.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn invalid_utf8_is_an_error_naming_the_file() {
        let e = into_text(vec![0xff, 0xfe], "c.yaml", "config").unwrap_err();
        assert!(
            e.to_string().starts_with("cannot read config c.yaml: "),
            "{e}"
        );
    }
}
