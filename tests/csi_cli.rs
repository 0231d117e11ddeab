//! `kernelseal csi validate`: the Mount parser on a manifest, exit 2 on errors.

use std::process::Command;

fn validate(name: &str, text: &str) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("kernelseal-csi-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kernelseal-core"))
        .args(["csi", "validate"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const GOOD: &str = r#"apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: web
  namespace: shop
spec:
  provider: kernelseal
  parameters:
    vaultAddress: https://vault:8200
    roleName: web
    someTypo: x
    objects: |
      - objectName: db/password
        vaultPath: secret/data/shop/db
        vaultKey: password
      - objectName: token
        awsSecretId: prod/web
        jsonKey: token
"#;

#[test]
fn validate_manifest() {
    let (code, out) = validate("good.yaml", GOOD);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("OK SecretProviderClass web (2 object(s))"),
        "{out}"
    );
    assert!(
        out.contains("warning: ") && out.contains("parameter someTypo: unknown"),
        "{out}"
    );

    let bad = GOOD.replace("objectName: token", "objectName: ../token");
    let (code, out) = validate("bad.yaml", &bad);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("object objects[1]: objectName: \"../token\""),
        "{out}"
    );

    let bare = "objects: |\n  - objectName: a\n    env: A\n  - objectName: a\n    env: B\n";
    let (code, out) = validate("bare.yaml", bare);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("object a: objectName: duplicate"), "{out}");

    let (code, out) = validate("novault.yaml", &GOOD.replace("    roleName: web\n", ""));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("parameter roleName: missing"), "{out}");
}

#[test]
fn validate_every_class_of_a_multi_document_file() {
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n";
    let second = GOOD.replace("name: web\n", "name: api\n");
    let file = format!("{ns}---\n{GOOD}---\n{second}");
    let (code, out) = validate("multi.yaml", &file);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK SecretProviderClass web"), "{out}");
    assert!(out.contains("OK SecretProviderClass api"), "{out}");

    // The broken class is named by its place in the file and its name.
    let broken = second.replace("objectName: token", "objectName: ../token");
    let (code, out) = validate("multi-bad.yaml", &format!("{ns}---\n{GOOD}---\n{broken}"));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("document 3 (SecretProviderClass api):")
            && out.contains("object objects[1]: objectName: \"../token\""),
        "{out}"
    );

    let (code, out) = validate("no-class.yaml", &format!("{ns}---\n{ns}"));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("none of the documents is a SecretProviderClass"),
        "{out}"
    );
}

/// A fresh directory of this test run.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("kernelseal-csi-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `kernelseal csi-provider` on `socket`, its own key file, no health port.
fn provider(dir: &std::path::Path, socket: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_kernelseal-core"))
        .arg("csi-provider")
        .arg("--socket")
        .arg(socket)
        .args(["--health-addr", "off", "--hmac-key-file"])
        .arg(dir.join("hmac.key"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until the child answers on `socket` or exits; bounded at 60 s.
fn serving(child: &mut std::process::Child, socket: &std::path::Path) -> bool {
    for _ in 0..600 {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

fn output(child: std::process::Child) -> (i32, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn provider_restarts_over_a_socket_left_by_a_crash() {
    let dir = scratch("stale");
    let socket = dir.join("kernelseal.sock");
    // What a crashed provider leaves: the socket file, nobody listening.
    // A process another test forks at this moment holds a copy of the
    // listener until its exec closes it: wait for that to pass.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let stale = (0..100).any(|_| {
        let refused = std::os::unix::net::UnixStream::connect(&socket).is_err();
        if !refused {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        refused
    });
    assert!(stale, "the dropped listener still accepts connections");

    let mut child = provider(&dir, &socket);
    let up = serving(&mut child, &socket);
    let _ = child.kill();
    let (_, out) = output(child);
    assert!(up, "the provider did not start over a stale socket: {out}");
    assert!(out.contains("removing stale socket"), "{out}");
}

#[test]
fn provider_refuses_a_live_socket_and_a_regular_file() {
    let dir = scratch("live");
    let socket = dir.join("kernelseal.sock");
    let live = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let (code, out) = output(provider(&dir, &socket));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("another process is serving on it; stop it first"),
        "{out}"
    );
    assert!(socket.exists(), "the live socket was removed");
    drop(live);

    let file = dir.join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    let (code, out) = output(provider(&dir, &file));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("exists and is not a socket; refusing to remove it"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}
