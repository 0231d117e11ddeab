//! `template:` sources through the registry and `providers check`: each
//! ref read from its own provider, then rendered; errors name the
//! template and the ref, never a value.

mod support;

use kernelseal_providers::{Error, Registry, SecretProvider, check_config};

fn config(dir: &std::path::Path, text: &str) -> kernelseal_config::Config {
    let yaml = format!(
        "secrets:\n  - name: app\n    selector: {{ uid: 1 }}\n    delivery: file\n    secretRefs:\n      - name: pgpass\n        source:\n          template:\n            text: {text:?}\n            refs:\n              db: {{ fileRef: {} }}\n              host: {{ value: db.internal }}\n",
        dir.join("db.json").display()
    );
    kernelseal_config::parse_str(&yaml, "t.yaml")
        .unwrap()
        .config
}

fn template_of(cfg: &kernelseal_config::Config) -> kernelseal_providers::SecretRef {
    cfg.secrets[0].value.secret_refs[0]
        .value
        .source
        .value
        .clone()
}

#[tokio::test]
async fn the_registry_renders_over_a_json_file_and_a_literal() {
    support::init();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("db.json"),
        r#"{"username":"app","password":"json-file-s3cret"}"#,
    )
    .unwrap();
    let cfg = config(
        dir.path(),
        "{{ host }}:5432:app:{{ db.username }}:{{ db.password }}\n",
    );
    let reg = Registry::from_config(&cfg).unwrap();
    let v = reg.fetch(&template_of(&cfg)).await.unwrap();
    assert_eq!(
        v.expose_str(),
        Some("db.internal:5432:app:app:json-file-s3cret\n")
    );
    assert!(v.version().unwrap().starts_with("h:"));
    support::assert_no_leak(&format!("{v:?}"), &["json-file-s3cret", "db.internal"]);

    // `providers check` renders it as a delivery would, and shows no value.
    let checks = check_config(&cfg).await;
    assert_eq!(checks.len(), 1);
    let line = checks[0].to_string();
    assert!(
        line.starts_with(&format!(
            "OK   app/pgpass  template(db: fileRef {}, host: value <literal>) via template",
            dir.path().join("db.json").display()
        )),
        "{line}"
    );
    assert_eq!(checks[0].source_kind, "template");
    support::assert_no_leak(&line, &["json-file-s3cret", "db.internal"]);
}

#[tokio::test]
async fn a_ref_that_fails_or_lacks_a_key_is_named() {
    support::init();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "{{ db.password }}@{{ host }}");
    let reg = Registry::from_config(&cfg).unwrap();
    let t = template_of(&cfg);
    // The file is missing: the error is the ref's, under the template's name.
    let e = reg.fetch(&t).await.unwrap_err();
    let Error::TemplateRefFailed { name, error, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(name, "db");
    assert!(matches!(**error, Error::File { .. }), "{error:?}");
    assert!(e.to_string().contains(": ref db: fileRef "), "{e}");
    assert!(!e.is_retryable());
    support::assert_err_clean(&e, &["db.internal"]);

    std::fs::write(
        dir.path().join("db.json"),
        r#"{"username":"app","pass":"json-file-s3cret"}"#,
    )
    .unwrap();
    let e = reg.fetch(&t).await.unwrap_err();
    assert!(matches!(e, Error::TemplateKeyMissing { .. }), "{e:?}");
    assert!(
        e.to_string()
            .ends_with("ref db has no key \"password\" (the template reads db.password)"),
        "{e}"
    );
    support::assert_err_clean(&e, &["json-file-s3cret", "db.internal"]);
    let checks = check_config(&cfg).await;
    assert!(!checks[0].is_ok());
    support::assert_no_leak(&checks[0].to_string(), &["json-file-s3cret", "db.internal"]);
}
