//! The file store on a real tmpfs (/dev/shm), with a guard that records
//! what it was asked instead of a BPF map: which inodes were guarded and
//! unguarded, in which order, and what each was when it was guarded.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

/// What a guarded inode was when the guard went on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Dir { entries: usize },
    File { len: u64 },
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Guard {
        inode: Inode,
        owner_id: u32,
        seen: Seen,
    },
    Unguard(Inode),
}

/// The fake kernel table: the calls in order, and what is guarded now.
struct Recorder {
    /// Searched for each guarded inode, to see what it was then.
    area: PathBuf,
    calls: Vec<Call>,
    guarded: HashMap<Inode, u32>,
}

impl InodeGuard for Recorder {
    fn guard(&mut self, inode: Inode, owner_id: u32) -> io::Result<()> {
        let seen = find(&self.area, inode).unwrap_or(Seen::Missing);
        self.calls.push(Call::Guard {
            inode,
            owner_id,
            seen,
        });
        self.guarded.insert(inode, owner_id);
        Ok(())
    }

    fn unguard(&mut self, inode: Inode) -> io::Result<()> {
        self.calls.push(Call::Unguard(inode));
        self.guarded.remove(&inode);
        Ok(())
    }
}

fn inode_at(path: &Path) -> Inode {
    let meta = std::fs::symlink_metadata(path).unwrap();
    Inode {
        dev: meta.dev(),
        ino: meta.ino(),
    }
}

/// Walks `dir` (symlinks not followed) for the entry with this inode.
fn find(dir: &Path, inode: Inode) -> Option<Seen> {
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if inode_at(&path) == inode {
            return Some(if meta.is_dir() {
                Seen::Dir {
                    entries: std::fs::read_dir(&path).ok()?.count(),
                }
            } else {
                Seen::File { len: meta.len() }
            });
        }
        if meta.is_dir()
            && let Some(seen) = find(&path, inode)
        {
            return Some(seen);
        }
    }
    None
}

/// A scratch area on tmpfs with the secrets root at `<area>/secrets`.
struct Area {
    base: PathBuf,
    root: PathBuf,
}

impl Area {
    fn new(tag: &str) -> Area {
        let base = PathBuf::from(format!(
            "/dev/shm/ks-files-test-{}-{tag}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        Area {
            root: base.join("secrets"),
            base,
        }
    }

    /// A store on this area's root, and the recorder behind its guard.
    fn store(&self) -> (FileStore, Arc<Mutex<Recorder>>) {
        let recorder = Arc::new(Mutex::new(Recorder {
            area: self.base.clone(),
            calls: Vec::new(),
            guarded: HashMap::new(),
        }));
        let guard: SharedGuard = recorder.clone();
        let store = FileStore::open(self.root.clone(), Some(guard)).unwrap();
        (store, recorder)
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// A process to deliver to, killed and reaped on drop.
struct App(Child);

impl App {
    fn start() -> App {
        App(Command::new("sleep").arg("60").spawn().unwrap())
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn pidfd(&self) -> OwnedFd {
        kernelseal_bpf::pidfd_open(self.pid()).unwrap()
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The uid and gid the tests run as, for the files' owner.
fn me() -> (u32, u32) {
    let meta = std::fs::metadata("/proc/self").unwrap();
    (meta.uid(), meta.gid())
}

fn secrets(list: &[(&str, &str)]) -> Vec<(String, SecretValue)> {
    list.iter()
        .map(|(n, v)| {
            let bytes = zeroize::Zeroizing::new(v.as_bytes().to_vec());
            let meta = kernelseal_providers::Metadata::new("test", "test");
            (n.to_string(), SecretValue::new(bytes, meta))
        })
        .collect()
}

fn deliver(
    store: &FileStore,
    app: &App,
    owner_id: u32,
    list: &[(&str, &str)],
) -> Result<Arc<DeliveredFiles>, InjectError> {
    let (uid, gid) = me();
    store.deliver(app.pid(), uid, gid, owner_id, &secrets(list), app.pidfd())
}

fn calls(recorder: &Arc<Mutex<Recorder>>) -> Vec<Call> {
    std::mem::take(&mut recorder.lock().unwrap().calls)
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn assert_refused_as_changed(result: Result<Arc<DeliveredFiles>, InjectError>) {
    match result {
        Err(InjectError::Files { problem, .. }) => {
            let reason = problem.to_string();
            assert!(
                reason.contains("no longer the one the agent verified")
                    && reason.contains("restart the agent"),
                "{reason}"
            )
        }
        other => panic!("not refused as a changed directory: {other:?}"),
    }
}

async fn wait_for(what: &str, done: impl Fn() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn the_directory_is_guarded_before_any_file_is_made_and_each_file_before_it_is_written() {
    let area = Area::new("order");
    let (store, recorder) = area.store();
    let app = App::start();
    let list = [("token", "one"), ("api-key", "two-two")];
    let written = deliver(&store, &app, 7, &list).unwrap();
    assert_eq!(written.path(), area.root.join(app.pid().to_string()));
    let calls = calls(&recorder);
    assert_eq!(calls.len(), 1 + list.len(), "{calls:?}");
    assert_eq!(
        calls[0],
        Call::Guard {
            inode: inode_at(written.path()),
            owner_id: 7,
            seen: Seen::Dir { entries: 0 },
        },
        "the directory first, while empty"
    );
    for (call, (name, value)) in calls[1..].iter().zip(list) {
        let path = written.path().join(name);
        assert_eq!(
            *call,
            Call::Guard {
                inode: inode_at(&path),
                owner_id: 7,
                seen: Seen::File { len: 0 },
            },
            "{name} guarded while still empty"
        );
        assert_eq!(written.inode_of(name), Some(inode_at(&path)));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), value);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o400, "{name}");
    }
    let mode = std::fs::metadata(written.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o500);
    assert_eq!(names_in(written.path()), ["api-key", "token"]);
    assert_eq!(store.owner_of(app.pid()), Some(7));
}

#[tokio::test]
async fn a_symlink_or_another_directory_at_the_root_path_refuses_the_delivery() {
    let area = Area::new("swap");
    let (store, recorder) = area.store();
    let app = App::start();
    let held = area.base.join("held");
    std::fs::rename(&area.root, &held).unwrap();

    let elsewhere = area.base.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &area.root).unwrap();
    assert_refused_as_changed(deliver(&store, &app, 1, &[("token", "s")]));
    assert!(
        names_in(&elsewhere).is_empty(),
        "nothing written through the symlink"
    );

    std::fs::remove_file(&area.root).unwrap();
    let other = area.base.join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::rename(&other, &area.root).unwrap();
    assert_refused_as_changed(deliver(&store, &app, 2, &[("token", "s")]));
    assert!(
        names_in(&area.root).is_empty(),
        "nothing written in the new directory"
    );

    assert!(
        names_in(&held).is_empty(),
        "nothing written in the held one"
    );
    assert_eq!(calls(&recorder), [], "nothing guarded");
    assert_eq!(store.owner_of(app.pid()), None);

    // The same directory back at its path: deliveries go on.
    std::fs::remove_dir(&area.root).unwrap();
    std::fs::rename(&held, &area.root).unwrap();
    deliver(&store, &app, 3, &[("token", "s")]).unwrap();
}

/// A tmpfs mounted for the length of a test, detached on drop.
struct Mount(CString);

impl Mount {
    fn tmpfs(path: &Path) -> Mount {
        let target = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mount(2) with NUL-terminated strings and no data.
        let rc = unsafe {
            libc::mount(
                c"none".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mount -t tmpfs none {}: {} (this test needs root: CAP_SYS_ADMIN)",
            path.display(),
            io::Error::last_os_error()
        );
        Mount(target)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // SAFETY: umount2 with a NUL-terminated path.
        unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
    }
}

#[tokio::test]
async fn a_tmpfs_mounted_over_the_root_refuses_the_delivery() {
    let area = Area::new("mount");
    let (store, recorder) = area.store();
    let app = App::start();
    {
        let _mount = Mount::tmpfs(&area.root);
        assert_refused_as_changed(deliver(&store, &app, 1, &[("token", "s")]));
        assert!(names_in(&area.root).is_empty(), "nothing in the mount");
    }
    assert!(names_in(&area.root).is_empty(), "nothing in the held one");
    assert_eq!(calls(&recorder), [], "nothing guarded");
    deliver(&store, &app, 2, &[("token", "s")]).unwrap();
}

#[tokio::test]
async fn a_hard_link_planted_under_another_apps_name_is_not_unguarded_at_its_exit() {
    let area = Area::new("hardlink");
    let (store, recorder) = area.store();
    let a = App::start();
    let mut b = App::start();
    let files_a = deliver(&store, &a, 1, &[("token", "secret-a")]).unwrap();
    let files_b = deliver(&store, &b, 2, &[("token", "secret-b")]).unwrap();
    let a_file = files_a.inode_of("token").unwrap();
    let b_file = files_b.inode_of("token").unwrap();
    // Root plants A's file under B's name.
    let planted = files_b.path().join(".planted");
    std::fs::hard_link(files_a.path().join("token"), &planted).unwrap();
    std::fs::rename(&planted, files_b.path().join("token")).unwrap();
    assert_eq!(inode_at(&files_b.path().join("token")), a_file);
    calls(&recorder);

    b.kill();
    wait_for("B's cleanup", || store.owner_of(b.pid()).is_none()).await;

    let calls = calls(&recorder);
    let mut unguarded: Vec<Inode> = calls
        .iter()
        .map(|c| match c {
            Call::Unguard(inode) => *inode,
            other => panic!("only unguards at an exit: {other:?}"),
        })
        .collect();
    unguarded.sort_by_key(|i| i.ino);
    let mut expected = vec![b_file, files_b.dir_inode()];
    expected.sort_by_key(|i| i.ino);
    assert_eq!(unguarded, expected, "exactly B's own inodes");
    let guarded = &recorder.lock().unwrap().guarded;
    assert_eq!(guarded.get(&a_file), Some(&1), "A's file stays guarded");
    assert_eq!(guarded.get(&files_a.dir_inode()), Some(&1));
    assert!(!files_b.path().exists(), "B's directory removed");
    assert_eq!(
        std::fs::read_to_string(files_a.path().join("token")).unwrap(),
        "secret-a"
    );
}

#[tokio::test]
async fn a_rotation_unguards_the_recorded_inode_not_what_the_path_names() {
    let area = Area::new("rotate");
    let (store, recorder) = area.store();
    let app = App::start();
    let files = deliver(&store, &app, 5, &[("token", "v1")]).unwrap();
    let first = files.inode_of("token").unwrap();
    let path = files.path().join("token");
    // Root swaps another inode in under the name.
    let decoy = files.path().join(".decoy");
    std::fs::write(&decoy, "decoy").unwrap();
    std::fs::rename(&decoy, &path).unwrap();
    let swapped = inode_at(&path);
    calls(&recorder);

    store.rewrite(&files, "token", b"v2").unwrap();
    let second = files.inode_of("token").unwrap();
    assert!(second != first && second != swapped);
    assert_eq!(inode_at(&path), second);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "v2");
    assert_eq!(
        calls(&recorder),
        [
            Call::Guard {
                inode: second,
                owner_id: 5,
                seen: Seen::File { len: 0 },
            },
            Call::Unguard(first),
        ]
    );

    store.rewrite(&files, "token", b"v3").unwrap();
    let third = files.inode_of("token").unwrap();
    assert_eq!(
        calls(&recorder),
        [
            Call::Guard {
                inode: third,
                owner_id: 5,
                seen: Seen::File { len: 0 },
            },
            Call::Unguard(second),
        ],
        "the next rotation unguards the inode the last one recorded"
    );
}

#[tokio::test]
async fn a_rotation_after_the_exit_cleanup_writes_nothing() {
    let area = Area::new("late");
    let (store, recorder) = area.store();
    let mut app = App::start();
    let files = deliver(&store, &app, 5, &[("token", "v1")]).unwrap();
    app.kill();
    wait_for("the cleanup", || store.owner_of(app.pid()).is_none()).await;
    calls(&recorder);
    assert!(store.rewrite(&files, "token", b"v2").is_err());
    assert_eq!(calls(&recorder), []);
    assert!(!files.path().exists());
}

#[tokio::test]
async fn a_stale_cleanup_leaves_a_newer_delivery_to_the_same_pid_alone() {
    let area = Area::new("reuse");
    let (store, recorder) = area.store();
    let app = App::start();
    let old = deliver(&store, &app, 1, &[("token", "old")]).unwrap();
    let new = deliver(&store, &app, 2, &[("token", "new")]).unwrap();
    calls(&recorder);
    store.remove(&old);
    assert_eq!(
        std::fs::read_to_string(new.path().join("token")).unwrap(),
        "new"
    );
    let mut unguarded = calls(&recorder);
    unguarded.sort_by_key(|c| format!("{c:?}"));
    let mut expected = vec![
        Call::Unguard(old.inode_of("token").unwrap()),
        Call::Unguard(old.dir_inode()),
    ];
    expected.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(unguarded, expected);
    let guarded = &recorder.lock().unwrap().guarded;
    assert_eq!(guarded.get(&new.dir_inode()), Some(&2));
    assert_eq!(guarded.get(&new.inode_of("token").unwrap()), Some(&2));
}

#[tokio::test]
async fn leftover_symlinks_are_removed_never_followed() {
    let area = Area::new("leftover");
    let (store, _recorder) = area.store();
    let outside = area.base.join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("keep"), "keep").unwrap();
    // A leftover entry that is a symlink, and one that holds symlinks.
    let (a, b) = (App::start(), App::start());
    std::os::unix::fs::symlink(&outside, area.root.join(a.pid().to_string())).unwrap();
    let leftover = area.root.join(b.pid().to_string());
    std::fs::create_dir(&leftover).unwrap();
    std::os::unix::fs::symlink(&outside, leftover.join("dir")).unwrap();
    std::os::unix::fs::symlink(outside.join("keep"), leftover.join("token")).unwrap();

    let files_a = deliver(&store, &a, 1, &[("token", "a")]).unwrap();
    let files_b = deliver(&store, &b, 2, &[("token", "b")]).unwrap();
    assert_eq!(names_in(&outside), ["keep"]);
    assert_eq!(
        std::fs::read_to_string(outside.join("keep")).unwrap(),
        "keep"
    );
    assert!(std::fs::symlink_metadata(files_a.path()).unwrap().is_dir());
    assert_eq!(names_in(files_b.path()), ["token"]);
    assert_eq!(
        std::fs::read_to_string(files_b.path().join("token")).unwrap(),
        "b"
    );
}

#[test]
fn a_root_that_is_a_symlink_or_not_on_tmpfs_is_refused_at_open() {
    let area = Area::new("open");
    std::fs::create_dir(area.base.join("real")).unwrap();
    std::os::unix::fs::symlink(area.base.join("real"), &area.root).unwrap();
    let e = FileStore::open(area.root.clone(), None).err().unwrap();
    assert!(e.to_string().contains("not a symlink"), "{e}");

    let disk = std::env::temp_dir().join(format!("ks-files-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&disk);
    if at::fs_type(File::open(std::env::temp_dir()).unwrap().as_fd()).unwrap() != TMPFS_MAGIC {
        let e = FileStore::open(disk.clone(), None).err().unwrap();
        assert!(e.to_string().contains("is not on tmpfs"), "{e}");
        assert!(e.to_string().contains(&disk.display().to_string()), "{e}");
    }
    let _ = std::fs::remove_dir_all(&disk);
}
