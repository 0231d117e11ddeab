//! `delivery: file`: one directory per process on tmpfs, one file per
//! secret (0400, owned by the process's uid), each guarded in the kernel
//! before it holds anything, so only that process tree opens it, root
//! included. Removed when the process exits.
//!
//! The secrets root is opened once, and every later step works relative to
//! that descriptor without following symlinks: a path resolved again per
//! delivery could be led (a tmpfs mounted over it, a symlink to /dev/shm)
//! to where the kernel guard does not apply. The path is still compared
//! with the held directory before each write, because the app reads its
//! files through it. Guards go on and come off by the inodes the agent
//! created and recorded, never by what a path names later (a hard link to
//! another app's file planted there).

mod at;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use kernelseal_bpf::GuardedFiles;
use kernelseal_providers::SecretValue;
use tracing::{error, info, warn};

use crate::error::{FilesProblem, InjectError};

const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Why a delivery is refused when the root path no longer leads to the
/// directory the agent holds.
pub(crate) const ROOT_CHANGED: &str = "the secrets directory is no longer the one the agent \
     verified at start (something was mounted over it or it was replaced); refusing to write \
     secrets there — restart the agent after fixing it";

/// A file or directory as the kernel guard knows it: `stat`'s st_dev and
/// st_ino.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Inode {
    pub dev: u64,
    pub ino: u64,
}

impl Inode {
    fn of(meta: &std::fs::Metadata) -> Self {
        Inode {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// The kernel's table of guarded inodes, as the file store uses it; a
/// trait so that tests can record the calls without a BPF map.
pub trait InodeGuard: Send {
    /// Only the process tree marked with `owner_id` (and the agent) may
    /// open it from now.
    fn guard(&mut self, inode: Inode, owner_id: u32) -> io::Result<()>;
    /// Removing an inode that is not guarded is no error.
    fn unguard(&mut self, inode: Inode) -> io::Result<()>;
}

impl InodeGuard for GuardedFiles {
    fn guard(&mut self, inode: Inode, owner_id: u32) -> io::Result<()> {
        GuardedFiles::guard(self, inode.dev, inode.ino, owner_id).map_err(io::Error::other)
    }

    fn unguard(&mut self, inode: Inode) -> io::Result<()> {
        GuardedFiles::unguard(self, inode.dev, inode.ino).map_err(io::Error::other)
    }
}

pub type SharedGuard = Arc<Mutex<dyn InodeGuard>>;

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn err(path: &Path, problem: impl Into<FilesProblem>) -> InjectError {
    InjectError::Files {
        path: path.display().to_string(),
        problem: problem.into(),
    }
}

/// The secrets root as opened at start: the descriptor every step works
/// from, and its identity, to tell whether the path still leads to it.
struct Root {
    path: PathBuf,
    fd: OwnedFd,
    id: Inode,
}

impl Root {
    fn open(path: PathBuf) -> Result<Root, InjectError> {
        create_root(&path)?;
        // std adds O_CLOEXEC.
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| err(&path, FilesProblem::OpenRoot(e)))?;
        check_tmpfs(dir.as_fd(), &path)?;
        let id = Inode::of(&dir.metadata().map_err(|e| err(&path, e))?);
        Ok(Root {
            path,
            fd: dir.into(),
            id,
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The path still names the held directory: nothing mounted over it,
    /// not renamed away or replaced by a symlink.
    fn verify(&self) -> Result<(), InjectError> {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if Inode::of(&meta) == self.id => Ok(()),
            Ok(_) => Err(err(&self.path, ROOT_CHANGED)),
            Err(e) => Err(err(&self.path, FilesProblem::RootGone { source: e })),
        }
    }
}

/// Parents as any directory; the root itself 0711, so others cannot list
/// which processes have secrets.
fn create_root(path: &Path) -> Result<(), InjectError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| err(parent, e))?;
    }
    match std::fs::DirBuilder::new().mode(0o711).create(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(err(path, e)),
        _ => Ok(()),
    }
}

/// The guard only covers tmpfs (checked on every open by superblock magic):
/// files elsewhere would be unguarded, so refuse such a directory.
fn check_tmpfs(dir: BorrowedFd, path: &Path) -> Result<(), InjectError> {
    if at::fs_type(dir).map_err(|e| err(path, e))? != TMPFS_MAGIC {
        return Err(err(
            path,
            "is not on tmpfs: delivered files could not be guarded (use --secrets-dir on a tmpfs, e.g. under /run)",
        ));
    }
    Ok(())
}

/// Where `delivery: file` bindings write, and what it wrote for whom.
#[derive(Clone)]
pub struct FileStore {
    root: Arc<Root>,
    /// `None` in `mode: disabled` (files unguarded).
    guard: Option<SharedGuard>,
    /// PID → owner id of the directory written for it, until it exits.
    owners: Arc<Mutex<HashMap<u32, u32>>>,
    /// One delivery, rotation or removal at a time: the exit cleanup of a
    /// PID's old directory must not race a new delivery making the reused
    /// PID's next one under the same name.
    busy: Arc<Mutex<()>>,
}

/// One process's directory and files by the inodes the agent made: what a
/// rotation replaces and what the exit cleanup unguards.
#[derive(Debug)]
pub struct DeliveredFiles {
    /// ROOT/<pid>, the directory the app is told (`KERNELSEAL_SECRETS_DIR`).
    path: PathBuf,
    pid: u32,
    uid: u32,
    gid: u32,
    owner_id: u32,
    dir: Inode,
    state: Mutex<Files>,
}

#[derive(Debug, Default)]
struct Files {
    /// Each file's name and current inode (a rotation replaces it).
    current: Vec<(String, Inode)>,
    /// Set by the removal: nothing is written for this delivery any more.
    removed: bool,
}

impl DeliveredFiles {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn owner_id(&self) -> u32 {
        self.owner_id
    }

    pub fn dir_inode(&self) -> Inode {
        self.dir
    }

    /// The inode the file `name` has now, as the agent wrote it.
    pub fn inode_of(&self, name: &str) -> Option<Inode> {
        lock(&self.state).inode_of(name)
    }
}

impl Files {
    fn inode_of(&self, name: &str) -> Option<Inode> {
        self.current
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, inode)| *inode)
    }

    fn set(&mut self, name: &str, inode: Inode) {
        match self.current.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = inode,
            None => self.current.push((name.to_string(), inode)),
        }
    }
}

fn pid_name(pid: u32) -> CString {
    CString::new(pid.to_string()).expect("digits hold no NUL")
}

impl FileStore {
    /// Opens the secrets root (made 0711 if missing) and checks it is on
    /// tmpfs; every delivery is then written through this descriptor.
    pub fn open(root: PathBuf, guard: Option<SharedGuard>) -> Result<Self, InjectError> {
        Ok(FileStore {
            root: Arc::new(Root::open(root)?),
            guard,
            owners: Arc::default(),
            busy: Arc::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root.path
    }

    /// The owner id of the files written for `pid`, while it runs.
    pub fn owner_of(&self, pid: u32) -> Option<u32> {
        lock(&self.owners).get(&pid).copied()
    }

    /// Writes the files and returns what was written, for rotations. The
    /// caller is already marked with `owner_id`.
    pub fn deliver(
        &self,
        pid: u32,
        uid: u32,
        gid: u32,
        owner_id: u32,
        secrets: &[(String, SecretValue)],
        pidfd: OwnedFd,
    ) -> Result<Arc<DeliveredFiles>, InjectError> {
        let files = {
            let _busy = lock(&self.busy);
            self.verify_root(pid)?;
            let (dir, files) = self.make_dir(pid, uid, gid, owner_id)?;
            let mut state = Files::default();
            if let Err(e) = self.fill(dir.as_fd(), &files, &mut state, secrets) {
                self.remove_locked(&files, &mut state);
                return Err(e);
            }
            *lock(&files.state) = state;
            files
        };
        let files = Arc::new(files);
        lock(&self.owners).insert(pid, owner_id);
        self.cleanup_on_exit(files.clone(), pidfd);
        Ok(files)
    }

    fn verify_root(&self, pid: u32) -> Result<(), InjectError> {
        self.root.verify().inspect_err(|_| {
            error!(
                pid,
                "[FILE] {}: the secrets directory is no longer the one the agent verified at \
                 start (something was mounted over it or it was replaced); refusing to write \
                 secrets for PID {pid} there — restart the agent after fixing it",
                self.root.path.display()
            )
        })
    }

    /// A fresh ROOT/<pid>, guarded before anything is created in it: the
    /// kernel refuses others the opens of files in a guarded directory, so
    /// no file is ever reachable unguarded, not even at its creation.
    fn make_dir(
        &self,
        pid: u32,
        uid: u32,
        gid: u32,
        owner_id: u32,
    ) -> Result<(OwnedFd, DeliveredFiles), InjectError> {
        let name = pid_name(pid);
        let path = self.root.path.join(pid.to_string());
        // A directory left for a PID that is being reused: its owner is gone.
        at::remove_tree(self.root.fd(), &name).map_err(|e| err(&path, e))?;
        at::make_dir(self.root.fd(), &name, 0o700).map_err(|e| err(&path, e))?;
        let opened =
            at::open_dir(self.root.fd(), &name).and_then(|fd| Ok((at::inode(fd.as_fd())?, fd)));
        let (dir, fd) = match opened {
            Ok(o) => o,
            Err(e) => {
                let _ = at::remove_tree(self.root.fd(), &name);
                return Err(err(&path, e));
            }
        };
        if let Err(e) = self.guard(dir, owner_id) {
            let _ = at::remove_tree(self.root.fd(), &name);
            self.unguard(dir);
            return Err(err(&path, e));
        }
        let files = DeliveredFiles {
            path,
            pid,
            uid,
            gid,
            owner_id,
            dir,
            state: Mutex::default(),
        };
        Ok((fd, files))
    }

    /// Writes each file, then hands the directory to the process (0500).
    fn fill(
        &self,
        dir: BorrowedFd,
        files: &DeliveredFiles,
        state: &mut Files,
        secrets: &[(String, SecretValue)],
    ) -> Result<(), InjectError> {
        for (name, value) in secrets {
            let inode = self.write_one(dir, files, name, value.expose_bytes())?;
            state.set(name, inode);
        }
        std::os::unix::fs::fchown(dir, Some(files.uid), Some(files.gid))
            .and_then(|()| at::chmod(dir, 0o500))
            .map_err(|e| err(&files.path, e))
    }

    /// Create empty (O_EXCL, 0400), guard its inode, then write and rename:
    /// the content never sits in an unguarded file. Undone on failure.
    fn write_one(
        &self,
        dir: BorrowedFd,
        files: &DeliveredFiles,
        name: &str,
        bytes: &[u8],
    ) -> Result<Inode, InjectError> {
        let tmp_path = files.path.join(format!(".{name}.tmp"));
        let tmp = at::entry_name(&format!(".{name}.tmp")).map_err(|e| err(&tmp_path, e))?;
        let target = at::entry_name(name).map_err(|e| err(&files.path.join(name), e))?;
        let mut file = at::create_file(dir, &tmp, 0o400).map_err(|e| err(&tmp_path, e))?;
        let inode = match at::inode(file.as_fd()) {
            Ok(inode) => inode,
            Err(e) => {
                let _ = at::unlink(dir, &tmp, false);
                return Err(err(&tmp_path, e));
            }
        };
        let filled = self.guard(inode, files.owner_id).and_then(|()| {
            file.write_all(bytes)?;
            std::os::unix::fs::fchown(&file, Some(files.uid), Some(files.gid))?;
            at::rename(dir, &tmp, &target)
        });
        if let Err(e) = filled {
            // Unguarded only once gone: what was written stays out of reach.
            if at::unlink(dir, &tmp, false).is_ok() {
                self.unguard(inode);
            }
            return Err(err(&tmp_path, e));
        }
        Ok(inode)
    }

    fn guard(&self, inode: Inode, owner_id: u32) -> io::Result<()> {
        match &self.guard {
            Some(g) => lock(g).guard(inode, owner_id),
            None => Ok(()),
        }
    }

    fn unguard(&self, inode: Inode) {
        if let Some(g) = &self.guard {
            let _ = lock(g).unguard(inode);
        }
    }

    /// The delivery's directory, opened anew and checked to be the one the
    /// agent made (not something put at ROOT/<pid> since).
    fn reopen_dir(&self, files: &DeliveredFiles) -> Result<OwnedFd, InjectError> {
        let fd =
            at::open_dir(self.root.fd(), &pid_name(files.pid)).map_err(|e| err(&files.path, e))?;
        if at::inode(fd.as_fd()).map_err(|e| err(&files.path, e))? != files.dir {
            return Err(err(
                &files.path,
                "is no longer the directory the agent made for this process; not writing there",
            ));
        }
        Ok(fd)
    }

    /// Replaces one delivered file atomically: a new guarded inode is
    /// renamed over the old one, then the old inode's guard goes — the one
    /// recorded, whatever the path names now.
    pub fn rewrite(
        &self,
        files: &DeliveredFiles,
        name: &str,
        bytes: &[u8],
    ) -> Result<(), InjectError> {
        let mut state = lock(&files.state);
        if state.removed {
            return Err(err(&files.path, "removed: its process exited"));
        }
        let old = state
            .inode_of(name)
            .ok_or_else(|| err(&files.path.join(name), "not a file of this delivery"))?;
        let _busy = lock(&self.busy);
        self.verify_root(files.pid)?;
        let dir = self.reopen_dir(files)?;
        let new = self.write_one(dir.as_fd(), files, name, bytes)?;
        state.set(name, new);
        self.unguard(old);
        Ok(())
    }

    /// Removes a delivery's files and then unguards the inodes it recorded.
    fn remove(&self, files: &DeliveredFiles) {
        let mut state = lock(&files.state);
        if state.removed {
            return;
        }
        let _busy = lock(&self.busy);
        self.remove_locked(files, &mut state);
    }

    /// ROOT/<pid> goes only while it is still this delivery's directory
    /// (a newer delivery to a reused PID may be there); the guards go by
    /// the recorded inodes, never by what a path names. Holds `busy`.
    fn remove_locked(&self, files: &DeliveredFiles, state: &mut Files) {
        state.removed = true;
        let name = pid_name(files.pid);
        if let Ok((inode, true)) = at::stat_at(self.root.fd(), &name)
            && inode == files.dir
        {
            let _ = at::remove_tree(self.root.fd(), &name);
        }
        for (_, inode) in &state.current {
            self.unguard(*inode);
        }
        self.unguard(files.dir);
    }

    /// A pidfd becomes readable when its process exits.
    fn cleanup_on_exit(&self, files: Arc<DeliveredFiles>, pidfd: OwnedFd) {
        let store = self.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::identity::exit_of(pidfd).await {
                warn!(
                    "[FILE] cannot watch for the exit of the owner of {}: {e}",
                    files.path.display()
                );
            }
            store.remove(&files);
            {
                let mut owners = lock(&store.owners);
                // A reused PID may have a newer delivery by now.
                if owners.get(&files.pid) == Some(&files.owner_id) {
                    owners.remove(&files.pid);
                }
            }
            info!(
                "[FILE] removed {} (its process exited)",
                files.path.display()
            );
        });
    }
}

/// Owner ids start at a random point: a restarted agent must not hand a
/// new process the owner id of a live older delivery whose guards are
/// pinned.
pub fn next_owner_id() -> u32 {
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
