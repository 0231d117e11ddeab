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

    let (mut served, mut refused_symlink, mut refused_outside) = (0u32, 0u32, 0u32);
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
                assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
                assert!(e.message().starts_with("object s: refused: file "), "{e:?}");
                if e.message().contains("symlinks are not followed") {
                    refused_symlink += 1;
                } else if e.message().contains("is not under an --allow-file-dir") {
                    refused_outside += 1;
                } else {
                    panic!("unexpected refusal: {e:?}");
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    eprintln!(
        "{ITERATIONS} mounts, {} swaps: {served} served, {refused_outside} refused at the check, \
         {refused_symlink} refused at the open, {} read outside",
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
    assert!(
        e.message().contains("is not under an --allow-file-dir"),
        "{e:?}"
    );

    // A FIFO without a writer: refused by type, the Mount does not hang.
    let e = s
        .client
        .mount(mount(&allowed.join("fifo")))
        .await
        .unwrap_err();
    assert!(e.message().contains("is not a regular file"), "{e:?}");

    // The allowed directory itself is no file below it.
    let e = s.client.mount(mount(&allowed)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("is not under an --allow-file-dir"),
        "{e:?}"
    );

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
