//! Templates through the pipeline: each ref fetched as a secret of the
//! binding (and keyed for rotations), then rendered; a failure names the
//! secret, the template and the ref, never a value.

use super::tests::{me, state};
use super::*;

fn request() -> Occasion<'static> {
    Occasion::Request {
        binary: "app",
        tokens: &[],
    }
}

fn binding(delivery: &str, db: &std::path::Path, text: &str) -> String {
    format!(
        "  - name: app\n    selector: {{ binary: app }}\n    delivery: {delivery}\n    secretRefs:\n      - name: DATABASE_URL\n        source:\n          template:\n            text: {text:?}\n            refs:\n              db: {{ fileRef: {} }}\n              host: {{ value: db.internal }}\n",
        db.display()
    )
}

const DB: &str = r#"{"username":"app","password":"p@ss-s3cret"}"#;

#[tokio::test]
async fn an_env_template_is_rendered_and_keyed_under_its_refs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.json");
    std::fs::write(&db, DB).unwrap();
    let s = state(&binding(
        "env",
        &db,
        "postgresql://{{ db.username }}:{{ db.password | percent_encode }}@{{ host }}/app",
    ));
    let p = plan(&s, &me(), request()).await.unwrap();
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!(p.env.len(), 1);
    assert_eq!(p.env[0].name, "DATABASE_URL");
    assert_eq!(
        p.env[0].value,
        "postgresql://app:p%40ss-s3cret@db.internal/app"
    );
    // The file's change is the template's: its key is the template's.
    // The literal has no key (it never changes).
    let keys: Vec<Vec<(&str, &str)>> = p
        .rotation_keys
        .iter()
        .map(|b| {
            b.iter()
                .map(|k| (k.name.as_str(), k.key.as_str()))
                .collect()
        })
        .collect();
    assert_eq!(
        keys,
        [vec![(
            "DATABASE_URL",
            format!("fileRef {}", db.display()).as_str()
        )]]
    );
    // The ref was read through the cache, like any secret of the binding.
    assert_eq!(s.cache.len(), 1);
}

#[tokio::test]
async fn a_missing_key_refuses_the_secret_naming_the_template_and_ref() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.json");
    std::fs::write(&db, DB).unwrap();
    let s = state(&binding("env", &db, "{{ db.user }}:{{ host }}"));
    let refusal = deliver(&s, &me(), request()).await.err().unwrap();
    let reason = refusal.reason();
    assert!(
        reason.contains("DATABASE_URL: template(db: fileRef ")
            && reason.ends_with("ref db has no key \"user\" (the template reads db.user)"),
        "{reason}"
    );
    for secret in ["p@ss-s3cret", "db.internal"] {
        assert!(!reason.contains(secret), "{reason}");
        assert!(!format!("{refusal:?}").contains(secret));
    }
}

#[tokio::test]
async fn a_ref_that_cannot_be_read_is_named_under_the_template() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.json");
    let s = state(&binding("env", &missing, "{{ db.password }}@{{ host }}"));
    let refusal = deliver(&s, &me(), request()).await.err().unwrap();
    let reason = refusal.reason();
    assert!(reason.contains(": ref db: fileRef "), "{reason}");
    assert!(reason.contains("no such file"), "{reason}");
    assert!(!reason.contains("db.internal"), "{reason}");
}

#[tokio::test]
async fn a_file_template_is_planned_as_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.json");
    std::fs::write(&db, DB).unwrap();
    let s = state(&binding(
        "file",
        &db,
        "{{ host }}:5432:app:{{ db.username }}:{{ db.password }}\n",
    ));
    let p = plan(&s, &me(), request()).await.unwrap();
    assert!(p.env.is_empty());
    assert_eq!(p.files.len(), 1);
    let (name, value) = &p.files[0];
    assert_eq!(name, "DATABASE_URL");
    assert_eq!(
        value.expose_str(),
        Some("db.internal:5432:app:app:p@ss-s3cret\n")
    );
    assert_eq!(value.metadata().provider, "template");
}
