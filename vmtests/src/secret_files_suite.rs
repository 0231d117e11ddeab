//! `delivery: file` against root: a second name for a delivered file (hard
//! link, rename, a rename over it), a fanotify listener on the secrets
//! directory's mount racing the agent's writes, and a tmpfs mounted (or a
//! symlink put) over the secrets directory. Each next to a control that
//! shows the attempt works where nothing is guarded.

use std::time::{Duration, Instant};

use crate::agent::{Policy, log_text, wait_log_line};
use crate::attacks::{Outcome, cstring as c, errno, expect, outcome};
use crate::suite::{Ctx, TestResult};
use crate::victim::Victim;

const SECRETS: &str = "/run/kernelseal/secrets";
const FILE_VALUE: &str = "wrapped-file-value";

fn link(from: &str, to: &str) -> Result<Outcome, String> {
    let (a, b) = (c(from)?, c(to)?);
    // SAFETY: link with valid paths.
    Ok(outcome(unsafe { libc::link(a.as_ptr(), b.as_ptr()) }))
}

/// `link` from a forked child (another accessor PID in the log).
fn link_in_child(from: &str, to: &str) -> Result<Outcome, String> {
    let (a, b) = (c(from)?, c(to)?);
    // SAFETY: the child only calls link and _exit, async-signal-safe.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: as above; the errno is the exit code.
        unsafe {
            let code = if libc::link(a.as_ptr(), b.as_ptr()) == 0 {
                0
            } else {
                *libc::__errno_location()
            };
            libc::_exit(code)
        }
    }
    if child < 0 {
        return Err(format!("fork: errno {}", errno()));
    }
    let mut status = 0;
    // SAFETY: waiting for our child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    Ok(match libc::WEXITSTATUS(status) {
        0 => Outcome::Allowed,
        e => Outcome::Refused(e),
    })
}

pub(crate) fn rename(from: &str, to: &str) -> Result<Outcome, String> {
    let (a, b) = (c(from)?, c(to)?);
    // SAFETY: rename with valid paths.
    Ok(outcome(unsafe { libc::rename(a.as_ptr(), b.as_ptr()) }))
}

/// A wrapped app with its file delivered: (app, its directory).
fn delivered() -> Result<(Victim, String), String> {
    let mut v = Victim::spawn_wrapped()?;
    let dir = v.ask("secretsdir")?;
    if !dir.starts_with(SECRETS) {
        return Err(format!("KERNELSEAL_SECRETS_DIR = {dir:?}"));
    }
    Ok((v, dir))
}

pub fn secret_files_keep_their_names(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    // Control: a plain file on the same tmpfs links and renames.
    let plain = format!("{SECRETS}/../ks-plain");
    std::fs::write(&plain, "plain").map_err(|e| format!("writing {plain}: {e}"))?;
    let plain_link = format!("{plain}.link");
    expect(
        "hard link of a plain file (control)",
        link(&plain, &plain_link)?,
        Outcome::Allowed,
    )?;
    expect(
        "rename of a plain file (control)",
        rename(&plain_link, &format!("{plain}.moved"))?,
        Outcome::Allowed,
    )?;

    let (a, a_dir) = delivered()?;
    let (b, b_dir) = delivered()?;
    let a_file = format!("{a_dir}/wrapped.txt");
    let b_file = format!("{b_dir}/wrapped.txt");
    let eperm = Outcome::Refused(libc::EPERM);
    expect(
        "hard link of a delivered file",
        link(&a_file, &format!("{SECRETS}/../ks-stolen"))?,
        eperm,
    )?;
    expect(
        "rename of a delivered file out of its directory",
        rename(&a_file, &format!("{SECRETS}/../ks-stolen"))?,
        eperm,
    )?;
    expect(
        "rename of one app's file over another's",
        rename(&a_file, &b_file)?,
        eperm,
    )?;
    expect(
        "rename of a plain file over a delivered one",
        rename(&format!("{plain}.moved"), &b_file)?,
        eperm,
    )?;
    expect(
        "rename of a delivery's directory",
        rename(&a_dir, &format!("{SECRETS}/../ks-moved-dir"))?,
        eperm,
    )?;
    wait_log_line(&["[LSM BLOCKED]", "attempted secret-file-link access"])?;
    // B's cleanup must leave A's file guarded.
    drop(b);
    let gone = Instant::now();
    while std::path::Path::new(&b_dir).exists() && gone.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let root = crate::victim::read_reply(&a_file);
    if root != format!("read err {}", libc::EACCES) {
        return Err(format!("root reading A's file after B exited: {root}"));
    }
    drop(a);

    ctx.agent.set_policy(Policy {
        mode: "audit",
        ..Policy::ENFORCE_ALL
    })?;
    let (_c, c_dir) = delivered()?;
    let stolen = format!("{SECRETS}/../ks-audit-link");
    // From a child: this process's refusals above used up the log's
    // per-accessor allowance for the window.
    expect(
        "audit: hard link of a delivered file",
        link_in_child(&format!("{c_dir}/wrapped.txt"), &stolen)?,
        Outcome::Allowed,
    )?;
    let _ = std::fs::remove_file(&stolen);
    for f in [&plain, &format!("{plain}.moved")] {
        let _ = std::fs::remove_file(f);
    }
    wait_log_line(&["[LSM AUDIT]", "secret-file-link access"])
}

/// Deliveries while a FAN_OPEN listener watches the secrets directory's
/// mount: whether an event fd the listener got read back a secret.
fn fanotify_leaks(deliveries: usize) -> Result<bool, String> {
    let listener = crate::fanotify::Listener::on_mount_of(SECRETS)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let collector = std::thread::spawn(move || {
        let mut kept = Vec::new();
        // Until told to stop, or the sender is gone (a failed delivery).
        while let Err(std::sync::mpsc::TryRecvError::Empty) = rx.try_recv() {
            kept.extend(listener.collect(Duration::from_millis(20), |p| p.starts_with(SECRETS)));
        }
        kept
    });
    let mut apps = Vec::new();
    for _ in 0..deliveries {
        let (mut v, dir) = delivered()?;
        // The app has read its file: every write is done.
        let own = v.ask(&format!("readpath {dir}/wrapped.txt"))?;
        if own != format!("read {}", FILE_VALUE.len()) {
            return Err(format!("the app reading its own file: {own}"));
        }
        apps.push(v);
    }
    tx.send(()).ok();
    let kept = collector.join().map_err(|_| "listener thread panicked")?;
    Ok(kept.iter().any(|(_, fd)| {
        crate::fanotify::contents(fd)
            .windows(FILE_VALUE.len())
            .any(|w| w == FILE_VALUE.as_bytes())
    }))
}

pub fn fanotify_on_secrets_mount_gets_no_secret(ctx: &mut Ctx) -> TestResult {
    // Control: in audit the guard allows and logs, and the listener reads
    // the secret through the fds fanotify opened for it.
    ctx.agent.set_policy(Policy {
        mode: "audit",
        ..Policy::ENFORCE_ALL
    })?;
    if !fanotify_leaks(2)? {
        return Err("audit: the listener must read a delivered file (control)".into());
    }
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    // What decides the race, made deterministic: a file in a delivery's
    // directory that is not guarded itself (root creates it) does not open,
    // as the agent's fresh file would not before its own guard.
    let (_v, dir) = delivered()?;
    let planted = format!("{dir}/planted");
    let _ = std::fs::write(&planted, "x");
    let root = crate::victim::read_reply(&planted);
    if root != format!("read err {}", libc::EACCES) {
        return Err(format!(
            "root reading a file it created in a delivery's directory: {root}"
        ));
    }
    if fanotify_leaks(6)? {
        return Err("a FAN_OPEN listener on the secrets mount read a delivered secret".into());
    }
    wait_log_line(&["[LSM BLOCKED]", "attempted to open a secret file"])
}

/// Mounts a tmpfs over `path` until dropped.
struct Mounted(String);

impl Mounted {
    fn tmpfs(path: &str) -> Result<Self, String> {
        let (src, dst, fs) = (c("none")?, c(path)?, c("tmpfs")?);
        // SAFETY: mount with valid strings and no data.
        let rc =
            unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
        if rc != 0 {
            return Err(format!("mounting a tmpfs over {path}: errno {}", errno()));
        }
        Ok(Mounted(path.to_string()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Ok(p) = c(&self.0) {
            // SAFETY: unmounting what we mounted.
            unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Whether any file under `dir` holds the file secret.
fn holds_secret(dir: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            holds_secret(&p.display().to_string())
        } else {
            std::fs::read(&p).is_ok_and(|b| {
                b.windows(FILE_VALUE.len())
                    .any(|w| w == FILE_VALUE.as_bytes())
            })
        }
    })
}

/// A delivery into a replaced secrets directory must be refused: the
/// wrapper fails and nothing lands where root put its own directory.
fn refused_into(replacement: &str) -> TestResult {
    if let Ok(v) = Victim::spawn_wrapped() {
        return Err(format!(
            "the wrapper delivered (app PID {}) with {replacement} over {SECRETS}",
            v.pid
        ));
    }
    if holds_secret(replacement) {
        return Err(format!("a secret was written into {replacement}"));
    }
    wait_log_line(&["[FILE]", "is no longer the one the agent verified"])
}

pub fn replaced_secrets_dir_gets_no_delivery(ctx: &mut Ctx) -> TestResult {
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    {
        let _over = Mounted::tmpfs(SECRETS)?;
        refused_into(SECRETS)?;
    }
    // A symlink to a directory root controls, in place of the real one.
    let aside = format!("{SECRETS}.aside");
    let decoy = "/dev/shm/ks-decoy";
    std::fs::create_dir_all(decoy).map_err(|e| format!("{decoy}: {e}"))?;
    std::fs::rename(SECRETS, &aside).map_err(|e| format!("moving {SECRETS} aside: {e}"))?;
    let symlinked = std::os::unix::fs::symlink(decoy, SECRETS)
        .map_err(|e| format!("symlink {SECRETS}: {e}"))
        .and_then(|()| refused_into(decoy));
    let _ = std::fs::remove_file(SECRETS);
    std::fs::rename(&aside, SECRETS).map_err(|e| format!("moving {SECRETS} back: {e}"))?;
    symlinked?;
    // Put back as verified: delivery works again.
    let (_v, _dir) = delivered()?;
    if log_text().contains(FILE_VALUE) {
        return Err("the file secret's value appeared in the log".into());
    }
    Ok(())
}
