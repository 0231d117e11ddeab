//! `delivery: file`: one directory per process on tmpfs, one file per
//! secret (0400, owned by the process's uid), each guarded in the kernel
//! before it holds anything, so only that process tree opens it, root
//! included. Removed when the process exits.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kernelseal_bpf::GuardedFiles;
use tokio::io::unix::AsyncFd;
use tracing::{info, warn};

use crate::error::InjectError;

const TMPFS_MAGIC: i64 = 0x0102_1994;

pub struct FileStore {
    pub root: PathBuf,
    /// `None` in `mode: disabled` (files unguarded).
    pub guard: Option<Arc<Mutex<GuardedFiles>>>,
    /// PID → delivery id of the directory written for it, until it exits.
    owners: Arc<Mutex<HashMap<u32, u32>>>,
}

/// What one delivery wrote, for cleanup.
struct Written {
    dir: PathBuf,
    files: Vec<(PathBuf, u64, u64)>,
}

fn err(path: &Path, reason: impl std::fmt::Display) -> InjectError {
    InjectError::Files {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The guard only covers tmpfs (checked on every open by superblock magic):
/// files elsewhere would be unguarded, so refuse such a directory.
pub fn check_tmpfs(dir: &Path) -> Result<(), InjectError> {
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|e| err(dir, e))?;
    // SAFETY: statfs into a zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(err(dir, std::io::Error::last_os_error()));
    }
    if st.f_type as i64 != TMPFS_MAGIC {
        return Err(err(
            dir,
            "is not on tmpfs: delivered files could not be guarded (use --secrets-dir on a tmpfs, e.g. under /run)",
        ));
    }
    Ok(())
}

impl FileStore {
    pub fn new(root: PathBuf, guard: Option<Arc<Mutex<GuardedFiles>>>) -> Self {
        FileStore {
            root,
            guard,
            owners: Arc::default(),
        }
    }

    /// The delivery id of the files written for `pid`, while it runs.
    pub fn owner_of(&self, pid: u32) -> Option<u32> {
        self.owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&pid)
            .copied()
    }

    /// Writes the files and returns the directory. The caller is already
    /// marked with `delivery` as its file owner.
    pub fn deliver(
        &self,
        pid: u32,
        uid: u32,
        gid: u32,
        delivery: u32,
        secrets: &[(String, Vec<u8>)],
        pidfd: OwnedFd,
    ) -> Result<PathBuf, InjectError> {
        let dir = self.root.join(pid.to_string());
        // A directory left for a PID that is being reused: its owner is gone.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| err(&dir, e))?;
        let mut written = Written {
            dir: dir.clone(),
            files: Vec::new(),
        };
        for (name, bytes) in secrets {
            match self.write_one(&dir, name, bytes, uid, gid, delivery) {
                Ok(f) => written.files.push(f),
                Err(e) => {
                    self.cleanup(&written);
                    return Err(e);
                }
            }
        }
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| err(&dir, e))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500))
            .map_err(|e| err(&dir, e))?;
        self.owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pid, delivery);
        self.cleanup_on_exit(written, pidfd, pid, delivery);
        Ok(dir)
    }

    /// Create empty (O_EXCL, 0400), guard its inode, then write and rename:
    /// the content never sits in an unguarded file.
    fn write_one(
        &self,
        dir: &Path,
        name: &str,
        bytes: &[u8],
        uid: u32,
        gid: u32,
        delivery: u32,
    ) -> Result<(PathBuf, u64, u64), InjectError> {
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&tmp)
            .map_err(|e| err(&tmp, e))?;
        let meta = f.metadata().map_err(|e| err(&tmp, e))?;
        if let Some(g) = &self.guard {
            g.lock()
                .unwrap_or_else(|p| p.into_inner())
                .guard(meta.dev(), meta.ino(), delivery)
                .map_err(|e| err(&tmp, e))?;
        }
        f.write_all(bytes).map_err(|e| err(&tmp, e))?;
        // SAFETY: fchown on the fd we own.
        if unsafe { libc::fchown(f.as_raw_fd(), uid, gid) } != 0 {
            return Err(err(&tmp, std::io::Error::last_os_error()));
        }
        let path = dir.join(name);
        std::fs::rename(&tmp, &path).map_err(|e| err(&path, e))?;
        Ok((path, meta.dev(), meta.ino()))
    }

    fn unguard(&self, dev: u64, ino: u64) {
        if let Some(g) = &self.guard {
            let _ = g
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .unguard(dev, ino);
        }
    }

    fn cleanup(&self, w: &Written) {
        for (path, dev, ino) in &w.files {
            // A rotation replaced the inode: unguard what is there now too.
            if let Ok(meta) = std::fs::metadata(path) {
                self.unguard(meta.dev(), meta.ino());
            }
            let _ = std::fs::remove_file(path);
            self.unguard(*dev, *ino);
        }
        let _ = std::fs::remove_dir_all(&w.dir);
    }

    /// Replaces one delivered file atomically: a new guarded inode is
    /// renamed over the old one, then the old inode's guard goes.
    pub fn rewrite(
        &self,
        dir: &Path,
        name: &str,
        bytes: &[u8],
        uid: u32,
        gid: u32,
        delivery: u32,
    ) -> Result<(), InjectError> {
        let path = dir.join(name);
        let old = std::fs::metadata(&path).map_err(|e| err(&path, e))?;
        self.write_one(dir, name, bytes, uid, gid, delivery)?;
        self.unguard(old.dev(), old.ino());
        Ok(())
    }

    /// A pidfd becomes readable when its process exits.
    fn cleanup_on_exit(&self, written: Written, pidfd: OwnedFd, pid: u32, delivery: u32) {
        let store = FileStore {
            root: self.root.clone(),
            guard: self.guard.clone(),
            owners: self.owners.clone(),
        };
        tokio::spawn(async move {
            // SAFETY: the AsyncFd owns the pidfd; it stays open and the same
            // fd for the AsyncFd's whole life.
            match unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) } {
                Ok(fd) => {
                    let _ = fd.readable().await;
                }
                Err(e) => warn!(
                    "[FILE] cannot watch for the exit of the owner of {}: {}",
                    written.dir.display(),
                    e.into_parts().1
                ),
            }
            store.cleanup(&written);
            {
                let mut owners = store.owners.lock().unwrap_or_else(|p| p.into_inner());
                // A reused PID may have a newer delivery by now.
                if owners.get(&pid) == Some(&delivery) {
                    owners.remove(&pid);
                }
            }
            info!(
                "[FILE] removed {} (its process exited)",
                written.dir.display()
            );
        });
    }
}

/// Delivery ids start at a random point: a restarted agent must not hand a
/// new process the id of a live older delivery whose guards are pinned.
pub fn next_delivery_id() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    if NEXT.load(Ordering::Relaxed) == 0 {
        let mut seed = [0u8; 4];
        // SAFETY: getrandom into a 4-byte buffer.
        unsafe { libc::getrandom(seed.as_mut_ptr().cast(), 4, 0) };
        let _ = NEXT.compare_exchange(
            0,
            u32::from_ne_bytes(seed) | 1,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    match NEXT.fetch_add(1, Ordering::Relaxed) {
        0 => NEXT.fetch_add(1, Ordering::Relaxed),
        id => id,
    }
}
