//! `source: { template: … }`: what the parser accepts, and how it names
//! what it refuses (the field path, the line, never a value).

use kernelseal_config::{SecretRef, parse_str};

fn config(source: &str) -> String {
    format!(
        "providers:\n  aws: {{ type: aws }}\nsecrets:\n  - name: app\n    selector: {{ uid: 1 }}\n    secretRefs:\n      - {{ name: A, source: {{ value: hunter1 }} }}\n      - name: DATABASE_URL\n        source:\n{source}"
    )
}

fn err(source: &str) -> String {
    parse_str(&config(source), "cfg.yaml")
        .unwrap_err()
        .to_string()
}

const AT: &str = "secrets[0].secretRefs[1].source";

#[test]
fn a_template_over_several_kinds_loads() {
    let loaded = parse_str(
        &config(
            "          template:\n            text: \"postgresql://{{ db.username }}:{{ db.password | urlencode }}@{{ host }}:5432/app\"\n            refs:\n              db: { awsRef: { secretId: prod/db, ttl: 1m } }\n              host: { value: db.internal }\n",
        ),
        "cfg.yaml",
    )
    .unwrap();
    let source = &loaded.config.secrets[0].value.secret_refs[1]
        .value
        .source
        .value;
    let SecretRef::Template(t) = source else {
        panic!("{source:?}")
    };
    assert_eq!(t.refs.len(), 2);
    assert_eq!(
        source.to_string(),
        "template(db: awsRef prod/db, host: value <literal>)"
    );
    assert_eq!(t.refs["db"].ttl(), Some(std::time::Duration::from_secs(60)));
    assert!(!format!("{source:?}").contains("db.internal"));
}

#[test]
fn a_syntax_error_names_the_field_and_line_but_no_text() {
    let e = err(
        "          template:\n            text: \"user={{ db.username }}\\npass={{ db.password hunter2 }}\"\n            refs:\n              db: { value: s3cr3t }\n",
    );
    assert!(e.starts_with("cfg.yaml:"), "{e}");
    assert!(
        e.contains(&format!(
            "{AT}.template.text: does not compile: syntax error"
        )),
        "{e}"
    );
    assert!(e.contains("(line 2)"), "{e}");
    for secret in ["hunter2", "s3cr3t", "hunter1"] {
        assert!(!e.contains(secret), "{e}");
    }
}

#[test]
fn an_unknown_variable_is_named_with_the_refs_there_are() {
    let e = err(
        "          template:\n            text: \"{{ dbb.password }}\"\n            refs:\n              db: { value: s3cr3t }\n",
    );
    assert!(
        e.contains(&format!(
            "{AT}.template.text: reads dbb, which is not one of the template's refs (db)"
        )),
        "{e}"
    );
    assert!(!e.contains("s3cr3t"), "{e}");
}

#[test]
fn an_unused_ref_is_refused() {
    let e = err(
        "          template:\n            text: \"{{ db }}\"\n            refs:\n              db: { value: a }\n              host: { value: b }\n",
    );
    assert!(
        e.contains(&format!(
            "{AT}.template.refs.host: is not read by the template; remove it"
        )),
        "{e}"
    );
}

#[test]
fn a_nested_template_is_refused() {
    let e = err(
        "          template:\n            text: \"{{ inner }}\"\n            refs:\n              inner: { template: { text: x } }\n",
    );
    assert!(
        e.contains(&format!(
            "{AT}.template.refs.inner.template: a template's refs are sources, not templates"
        )),
        "{e}"
    );
}

#[test]
fn ref_names_must_be_identifiers() {
    // `db-creds` reads as `db - creds` in the text: the unknown `db` is
    // found first; a name the text cannot read at all is named as such.
    let e = err(
        "          template:\n            text: \"x\"\n            refs:\n              1db: { value: a }\n",
    );
    assert!(
        e.contains(&format!(
            "{AT}.template.refs.1db: is not read by the template"
        )),
        "{e}"
    );
    let e = err(
        "          template:\n            text: \"{{ db }}\"\n            refs:\n              db: { value: a }\n              \"db x\": { value: b }\n",
    );
    assert!(e.contains(&format!("{AT}.template.refs")), "{e}");
}

#[test]
fn an_inner_ref_error_names_its_path_below_the_template() {
    let e = err(
        "          template:\n            text: \"{{ db.password }}\"\n            refs:\n              db: { awsRef: { secretId: s, ttl: soon } }\n",
    );
    assert!(
        e.contains(&format!("{AT}.template.refs.db.awsRef.ttl: not a duration")),
        "{e}"
    );
    let e = err(
        "          template:\n            text: \"{{ db }}\"\n            refs:\n              db: { envRef: X, value: s3cr3t }\n",
    );
    assert!(
        e.contains(&format!(
            "{AT}.template.refs.db: exactly one of value, envRef, fileRef, secretKeyRef, vaultRef, awsRef, ssmRef, template must be set (found value, envRef)"
        )),
        "{e}"
    );
    assert!(!e.contains("s3cr3t"), "{e}");
    // Validation (after parsing) names the inner ref too.
    let e = err(
        "          template:\n            text: \"{{ f }}\"\n            refs:\n              f: { fileRef: relative/path }\n",
    );
    assert!(
        e.contains(&format!(
            "{AT}.template.refs.f.fileRef: \"relative/path\" is not an absolute path"
        )),
        "{e}"
    );
    let e = err(
        "          template:\n            text: \"{{ db }}\"\n            refs:\n              db: { awsRef: { secretId: s, provider: nope } }\n",
    );
    assert!(
        e.contains(&format!(
            "{AT}.template.refs.db.awsRef.provider: no provider named \"nope\""
        )),
        "{e}"
    );
}

#[test]
fn include_is_refused_at_parse_time() {
    let e = err("          template:\n            text: \"{% include '/etc/shadow' %}\"\n");
    assert!(
        e.contains(&format!("{AT}.template.text: does not compile")),
        "{e}"
    );
    assert!(!e.contains("shadow"), "{e}");
}

#[test]
fn identity_pod_checks_the_template_refs() {
    let text = "version: v1\nsecrets:\n  - name: web\n    selector: { namespace: shop }\n    identity: pod\n    secretRefs:\n      - name: DSN\n        source:\n          template:\n            text: \"{{ k }}\"\n            refs:\n              k: { secretKeyRef: { name: n, key: k } }\n";
    let e = parse_str(text, "cfg.yaml").unwrap_err().to_string();
    assert!(
        e.contains("secrets[0].secretRefs[0].source.template.refs.k.secretKeyRef: identity: pod cannot read Kubernetes Secrets"),
        "{e}"
    );
}
