//! `kernelseal csi validate`: the Mount parser on a manifest, exit 2 on errors.

use std::process::Command;

fn validate(name: &str, text: &str) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("kernelseal-csi-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kernelseal"))
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
    assert!(out.contains("object ../token: objectName:"), "{out}");

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
        out.contains("document 3 (SecretProviderClass api):") && out.contains("object ../token"),
        "{out}"
    );

    let (code, out) = validate("no-class.yaml", &format!("{ns}---\n{ns}"));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("none of the documents is a SecretProviderClass"),
        "{out}"
    );
}
