//! Every config under `examples/` is runnable: `kernelseal config validate`
//! accepts it (exit 0) with no warning other than those the file declares
//! in `# expect-warning: TEXT` lines, and its header says what it is and how
//! to run it. The directory is listed, so a new example is covered without
//! touching this test. Broken copies must fail, naming what is wrong.

use std::path::{Path, PathBuf};
use std::process::Command;

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    out.sort();
    out
}

fn validate(path: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kernelseal-core"))
        .args(["config", "validate"])
        .arg(path)
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The leading comment block.
fn header(text: &str) -> Vec<&str> {
    text.lines().take_while(|l| l.starts_with('#')).collect()
}

/// A file in a directory of its own per test (tests run in parallel).
fn scratch(test: &str, name: &str, text: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("kernelseal-examples-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn every_example_validates_with_only_its_declared_warnings() {
    let files = examples();
    // The quick start plus the file, Vault, AWS and CSI examples at least:
    // an empty listing must not pass.
    assert!(files.len() >= 5, "{files:?}");
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy();
        let text = std::fs::read_to_string(path).unwrap();
        let head = header(&text);
        assert!(
            head.len() >= 2,
            "{name}: start with a comment saying what it is and how to run it"
        );
        assert!(
            head.iter().any(|l| l.contains(&format!("examples/{name}"))),
            "{name}: the header should show a command run on examples/{name}"
        );
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect-warning:"))
            .map(str::trim)
            .collect();
        let (code, out, err) = validate(path);
        assert_eq!(code, 0, "{name}: {out}{err}");
        assert!(out.contains(": OK ("), "{name}: {out}");
        let warnings: Vec<&str> = out.lines().filter(|l| l.starts_with("warning:")).collect();
        for w in &warnings {
            assert!(
                expected.iter().any(|e| w.contains(e)),
                "{name}: unexpected warning (fix the example or declare it with \
                 `# expect-warning: …`): {w}"
            );
        }
        for e in &expected {
            assert!(
                warnings.iter().any(|w| w.contains(e)),
                "{name}: declares `expect-warning: {e}` but validate does not warn so: {out}"
            );
        }
    }
}

#[test]
fn a_broken_copy_of_each_example_fails_naming_the_field() {
    for path in examples() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines = text.lines().count();
        let broken = scratch(
            "unknown-key",
            &name,
            &format!("{text}\nbogusSetting: true\n"),
        );
        let (code, out, err) = validate(&broken);
        assert_eq!(code, 2, "{name}: {out}{err}");
        assert!(
            err.contains(&format!("{name}:{}:", lines + 2)) && err.contains("`bogusSetting`"),
            "{name}: the error should give file:line and the field: {err}"
        );
    }
}

/// Errors found after parsing name the dotted field path, including the
/// provider settings and refs the agent checks at start.
#[test]
fn broken_values_name_the_field_path() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let cases = [
        (
            "config.yaml",
            "binary: \"sleep\"",
            "binary: \"/bin/sleep\"",
            "secrets[0].selector.binary",
        ),
        (
            "vault-sidecar.yaml",
            "role: kernelseal-agent",
            "rol: kernelseal-agent",
            "providers.vault-prod.auth.kubernetes.rol: unknown setting",
        ),
        (
            "vault-sidecar.yaml",
            "onRotate: { signal: SIGHUP }",
            "onRotate: { signal: SIGHIP }",
            "secrets[0].onRotate.signal",
        ),
        (
            "aws-secrets-manager.yaml",
            "failoverRegion: eu-central-1",
            "failoverRegion: eu-west-1",
            "providers.aws.failoverRegion: is the same as region",
        ),
        (
            "standalone-file.yaml",
            "jsonKey: password, ttl: 30s",
            "jsonKey: password, ttl: 30y",
            "fileRef.ttl",
        ),
        (
            "standalone-file.yaml",
            "path: /usr/local/bin/myapp",
            &format!("path: /usr/local/bin/{}", "m".repeat(300)),
            "must be an absolute path of at most 255 bytes",
        ),
        (
            "csi-provider.yaml",
            "cacheTtl: 1m",
            "cacheTTL: 1m",
            "providers.cluster.cacheTTL: unknown setting",
        ),
    ];
    for (file, good, bad, want) in cases {
        let text = read(file);
        assert!(text.contains(good), "{file} no longer contains {good:?}");
        let broken = scratch("bad-value", file, &text.replacen(good, bad, 1));
        let (code, out, err) = validate(&broken);
        assert_eq!(code, 2, "{file} with {bad:?}: {out}{err}");
        assert!(
            err.contains(want),
            "{file} with {bad:?}: want {want:?} in {err}"
        );
    }
}
