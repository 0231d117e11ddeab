//! `file` objects under `--allow-file-dir` against a hostile directory:
//! a directory on the object's path swapped for a symlink to outside, in a
//! loop, while Mounts run over the real socket. Not one Mount may return
//! the outside file; Mounts of the undisturbed path succeed.

mod support;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kernelseal_csi::LocalPolicy;
use support::{Server, attributes, request};
use tonic::Code;

/// Mounts raced against the swapping thread: enough that the unfixed code
/// (a path check, then an open that follows symlinks) read outside in
/// every run tried, bounded so that the test takes seconds.
const ITERATIONS: usize = 2_000;

const INSIDE: &str = "inside-file-secret";
const OUTSIDE: &str = "OUTSIDE-file-secret";

/// The one answer for a `file` object named `s` that is not served,
/// whatever the reason.
const NOT_SERVED: &str = "object s: refused: file source not served (not allowed by --allow-file-dir, or not a readable regular file of at most 1 MiB there); the provider's log has the reason";

fn policy(dir: &Path) -> LocalPolicy {
    LocalPolicy {
        env_prefixes: vec![],
        file_dirs: vec![dir.to_path_buf()],
        aws_node_credentials: false,
    }
}

/// Swaps two names atomically (`renameat2(RENAME_EXCHANGE)`): `d` is at
/// every moment either the real directory or the symlink, never missing.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    let a = CString::new(a.as_os_str().as_bytes()).unwrap();
    let b = CString::new(b.as_os_str().as_bytes()).unwrap();
    // SAFETY: renameat2 with NUL-terminated absolute paths.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_swapped_for_a_symlink_never_leads_outside() {
    let tmp = tempfile::tempdir().unwrap();
    // Canonical: the provider compares against the resolved directory.
    let root = std::fs::canonicalize(tmp.path()).unwrap();
    let allowed = root.join("allowed");
    let outside = root.join("outside");
    std::fs::create_dir_all(allowed.join("d")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(allowed.join("d/secret"), INSIDE).unwrap();
    std::fs::write(outside.join("secret"), OUTSIDE).unwrap();
    // The other half of the swap: a symlink to the outside directory.
    std::os::unix::fs::symlink(&outside, allowed.join("alt")).unwrap();

    let keys = tempfile::tempdir().unwrap();
    let mut s = Server::start(policy(&allowed), &keys.path().join("k")).await;
    let objects = format!(
        "- objectName: s\n  file: {}\n",
        allowed.join("d/secret").display()
    );
    let req = request(attributes(&objects, &[], &[]));

    // Undisturbed, the file is served.
    let resp = s.client.mount(req.clone()).await.unwrap().into_inner();
    assert_eq!(resp.files[0].contents, INSIDE.as_bytes());

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps) = (stop.clone(), swaps.clone());
        let (d, alt) = (allowed.join("d"), allowed.join("alt"));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                exchange(&d, &alt).expect("renameat2(RENAME_EXCHANGE)");
                swaps.fetch_add(1, Ordering::Relaxed);
            }
            // Leave the real directory at `d`, whichever way it ended.
            if std::fs::symlink_metadata(&d)
                .unwrap()
                .file_type()
                .is_symlink()
            {
                exchange(&d, &alt).unwrap();
            }
        })
    };

    let (mut served, mut refused) = (0u32, 0u32);
    let mut leaked = Vec::new();
    for i in 0..ITERATIONS {
        match s.client.mount(req.clone()).await {
            Ok(r) => {
                let contents = &r.into_inner().files[0].contents;
                if contents == INSIDE.as_bytes() {
                    served += 1;
                } else {
                    leaked.push((i, String::from_utf8_lossy(contents).into_owned()));
                }
            }
            Err(e) => {
                assert!(!e.message().contains(OUTSIDE), "{e:?}");
                // Both refusals: the check saw the symlink (the path leads
                // outside), or the open met it (swapped after the check).
                // Both answer alike (the reason is in the provider's log).
                assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
                assert_eq!(e.message(), NOT_SERVED, "{e:?}");
                refused += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    eprintln!(
        "{ITERATIONS} mounts, {} swaps: {served} served, {refused} refused, {} read outside",
        swaps.load(Ordering::Relaxed),
        leaked.len()
    );
    assert!(
        leaked.is_empty(),
        "{} of {ITERATIONS} mounts read outside --allow-file-dir, e.g. {:?}",
        leaked.len(),
        leaked.first()
    );
    assert!(swaps.load(Ordering::Relaxed) > 0, "the swapper never ran");

    // Afterwards, with the directory back, the file is served again.
    let resp = s.client.mount(req).await.unwrap().into_inner();
    assert_eq!(resp.files[0].contents, INSIDE.as_bytes());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_fifos_and_the_directory_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tmp.path()).unwrap();
    let allowed = root.join("allowed");
    let outside = root.join("outside");
    std::fs::create_dir_all(allowed.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(allowed.join("sub/plain"), INSIDE).unwrap();
    std::fs::write(outside.join("secret"), OUTSIDE).unwrap();
    // A link to a directory outside, as a middle component.
    std::os::unix::fs::symlink(&outside, allowed.join("out")).unwrap();
    let fifo = CString::new(allowed.join("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);

    let keys = tempfile::tempdir().unwrap();
    let mut s = Server::start(policy(&allowed), &keys.path().join("k")).await;
    let mount = |file: &Path| {
        request(attributes(
            &format!("- objectName: s\n  file: {}\n", file.display()),
            &[],
            &[],
        ))
    };

    let resp = s
        .client
        .mount(mount(&allowed.join("sub/plain")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.files[0].contents, INSIDE.as_bytes());

    let e = s
        .client
        .mount(mount(&allowed.join("out/secret")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(e.message(), NOT_SERVED, "{e:?}");

    // A FIFO without a writer: refused by type, the Mount does not hang.
    let e = s
        .client
        .mount(mount(&allowed.join("fifo")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(e.message(), NOT_SERVED, "{e:?}");

    // The allowed directory itself is no file below it.
    let e = s.client.mount(mount(&allowed)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(e.message(), NOT_SERVED, "{e:?}");

    // A symlink that stays inside (a Kubernetes volume's `..data` links)
    // is resolved when the Mount checks the path; the file it leads to is
    // then opened following no symlink.
    std::os::unix::fs::symlink("sub/plain", allowed.join("inside-link")).unwrap();
    let resp = s
        .client
        .mount(mount(&allowed.join("inside-link")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.files[0].contents, INSIDE.as_bytes());
    s.stop().await;
}

/// Every reason a local source is not served gets the same status and
/// message, so a class author cannot probe the node's files or the
/// provider's environment: off, outside, missing, a directory, a FIFO,
/// too large, unreadable; an env variable not allowed or not set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_local_refusal_answers_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tmp.path()).unwrap();
    let allowed = root.join("allowed");
    std::fs::create_dir_all(allowed.join("dir")).unwrap();
    std::fs::write(allowed.join("plain"), INSIDE).unwrap();
    std::fs::write(root.join("outside"), OUTSIDE).unwrap();
    std::fs::write(allowed.join("big"), vec![b'x'; 1024 * 1024 + 1]).unwrap();
    let fifo = CString::new(allowed.join("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let locked = allowed.join("locked");
    std::fs::write(&locked, INSIDE).unwrap();
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    // SAFETY: geteuid has no preconditions.
    let root_user = unsafe { libc::geteuid() } == 0;

    let file = |p: &Path| format!("- objectName: s\n  file: {}\n", p.display());
    let env = |v: &str| format!("- objectName: s\n  env: {v}\n");
    let keys = tempfile::tempdir().unwrap();
    // File objects off: the path is not even looked at.
    let mut off = Server::start(LocalPolicy::default(), &keys.path().join("k")).await;
    let mut on = Server::start(
        LocalPolicy {
            env_prefixes: vec!["KS_CSI_PROBE_".into()],
            file_dirs: vec![allowed.clone()],
            aws_node_credentials: false,
        },
        &keys.path().join("k"),
    )
    .await;
    let mut answers = Vec::new();
    for (p, what) in [
        (allowed.join("plain"), "file, objects off"),
        (root.join("no-such"), "missing, objects off"),
    ] {
        let e = off
            .client
            .mount(request(attributes(&file(&p), &[], &[])))
            .await
            .unwrap_err();
        answers.push((what, e.code(), e.message().to_string()));
    }
    let mut on_cases = vec![
        (file(&root.join("outside")), "outside"),
        (file(&allowed.join("no-such")), "missing"),
        (file(&allowed.join("dir")), "a directory"),
        (file(&allowed.join("fifo")), "a FIFO"),
        (file(&allowed.join("big")), "over 1 MiB"),
        (file(&allowed), "the allowed directory itself"),
        (env("OTHER_SECRET"), "env not allowed"),
        (env("KS_CSI_PROBE_UNSET"), "env not set"),
    ];
    if !root_user {
        on_cases.push((file(&locked), "permission denied"));
    }
    for (objects, what) in on_cases {
        let e = on
            .client
            .mount(request(attributes(&objects, &[], &[])))
            .await
            .unwrap_err();
        answers.push((what, e.code(), e.message().to_string()));
    }
    let env_answer = "object s: refused: env source not served (not allowed by --allow-env, or not set in the provider's environment); the provider's log has the reason";
    for (what, code, message) in &answers {
        assert_eq!(*code, Code::PermissionDenied, "{what}: {message}");
        let want = if what.starts_with("env") {
            env_answer
        } else {
            NOT_SERVED
        };
        assert_eq!(message, want, "{what}");
    }
    // The allowed file is still served.
    let resp = on
        .client
        .mount(request(attributes(&file(&allowed.join("plain")), &[], &[])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.files[0].contents, INSIDE.as_bytes());
    off.stop().await;
    on.stop().await;
}
