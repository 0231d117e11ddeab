//! `secretRefs` entries that expand a JSON object: `keys: all` with
//! `prefix`, `jmesPath`, and `ssmRef: { path }`; every refusal names its
//! field and never a value.

use kernelseal_config::{Naming, SecretRef, Step, parse_str};

const SECRET: &str = "hunter2-do-not-print";

/// One binding with `delivery` and the one entry `entry` (a flow mapping's
/// inside: `name: A, source: { … }`).
fn config(delivery: &str, entry: &str) -> String {
    format!(
        "providers:\n  east: {{ type: aws, region: us-east-1 }}\nsecrets:\n  - name: b\n    selector: {{ uid: 1 }}\n    delivery: {delivery}\n    secretRefs:\n      - {{ {entry} }}\n"
    )
}

fn naming(delivery: &str, entry: &str) -> Naming {
    let c = parse_str(&config(delivery, entry), "cfg.yaml")
        .unwrap_or_else(|e| panic!("{entry}: {e}"))
        .config;
    c.secrets[0].value.secret_refs[0].value.naming.clone()
}

fn refused(delivery: &str, entry: &str) -> String {
    let e = parse_str(&config(delivery, entry), "cfg.yaml")
        .err()
        .unwrap_or_else(|| panic!("{entry} loaded"))
        .to_string();
    assert!(!e.contains(SECRET), "{e}");
    e
}

#[test]
fn keys_all_with_and_without_prefix() {
    assert_eq!(
        naming("env", "keys: all, source: { awsRef: { secretId: app/db } }"),
        Naming::AllKeys {
            prefix: String::new()
        }
    );
    assert_eq!(
        naming(
            "file",
            "keys: all, prefix: db-, source: { fileRef: /run/db.json }"
        ),
        Naming::AllKeys {
            prefix: "db-".into()
        }
    );
}

#[test]
fn jmes_path_entries_parse_into_paths_and_names() {
    let Naming::Paths(paths) = naming(
        "env",
        "jmesPath: [{ path: db.user, name: DB_USER }, { path: '\"db-host\".ports[0]', name: DB_PORT }], source: { awsRef: { secretId: app/db } }",
    ) else {
        panic!("not paths");
    };
    assert_eq!(paths.len(), 2);
    assert_eq!(paths[0].name, "DB_USER");
    assert_eq!(
        paths[1].path.steps(),
        [
            Step::Field("db-host".into()),
            Step::Field("ports".into()),
            Step::Index(0)
        ]
    );
}

#[test]
fn ssm_path_loads_with_keys_all() {
    let c = parse_str(
        &config(
            "env",
            "keys: all, prefix: APP_, source: { ssmRef: { path: /app/prod/, recursive: true, provider: east } }",
        ),
        "cfg.yaml",
    )
    .unwrap()
    .config;
    let SecretRef::SsmPath(p) = &c.secrets[0].value.secret_refs[0].value.source.value else {
        panic!("not an ssm path");
    };
    assert_eq!(p.path, "/app/prod/");
    assert!(p.recursive && p.with_decryption);
    assert_eq!(p.provider.as_deref(), Some("east"));
    // The root of the hierarchy is a path too.
    naming("env", "keys: all, source: { ssmRef: { path: / } }");
}

#[test]
fn ambiguous_or_incomplete_entries_name_their_field() {
    let at = "cfg.yaml";
    let entry = "secrets[0].secretRefs[0]";
    let src = format!("source: {{ value: {SECRET} }}");
    let cases = [
        (format!("name: A, keys: all, {src}"), "name", "prefix"),
        (
            format!("name: A, jmesPath: [{{ path: a, name: B }}], {src}"),
            "name",
            "names its own value",
        ),
        (
            format!("keys: all, jmesPath: [{{ path: a, name: B }}], {src}"),
            "jmesPath",
            "set one",
        ),
        (
            format!("name: A, prefix: P_, {src}"),
            "prefix",
            "goes with keys: all",
        ),
        (format!("jmesPath: [], {src}"), "jmesPath", "lists no path"),
        (
            format!("jmesPath: [{{ path: a, name: A }}, {{ path: 'a[*].b', name: B }}], {src}"),
            "jmesPath[1].path",
            "projections",
        ),
        (
            "name: A, source: { ssmRef: { path: /app/ } }".to_string(),
            "source.ssmRef.path",
            "keys: all",
        ),
        (
            "jmesPath: [{ path: a, name: A }], source: { ssmRef: { path: /app/ } }".to_string(),
            "source.ssmRef.path",
            "keys: all",
        ),
    ];
    for (text, field, says) in cases {
        let e = refused("env", &text);
        assert!(e.contains(&format!("{entry}.{field}:")), "{text}: {e}");
        assert!(e.contains(says), "{text}: {e}");
        assert!(e.starts_with(at), "{e}");
    }
    let e = refused("env", &src);
    assert!(e.contains(&format!("{entry}: set name")), "{e}");
    let e = refused("env", &format!("keys: some, {src}"));
    assert!(e.contains("expected"), "{e}");
    let e = refused("env", &format!("keys: all, jmespath: [], {src}"));
    assert!(e.contains("unknown field `jmespath`"), "{e}");
}

#[test]
fn ssm_name_or_path_is_one_of_two() {
    let field = "secrets[0].secretRefs[0].source.ssmRef";
    let e = refused(
        "env",
        "keys: all, source: { ssmRef: { name: /a, path: /app/ } }",
    );
    assert!(
        e.contains(&format!("{field}: set exactly one of name")),
        "{e}"
    );
    let e = refused("env", "name: A, source: { ssmRef: { } }");
    assert!(e.contains(&format!("{field}: set exactly one")), "{e}");
    let e = refused(
        "env",
        "name: A, source: { ssmRef: { name: /a, recursive: true } }",
    );
    assert!(e.contains(&format!("{field}.recursive:")), "{e}");
    for (path, says) in [
        ("app/prod", "starts with '/'"),
        ("\"/app//prod\"", "no empty levels"),
        ("\"/app/pr od/\"", "' ' is not allowed"),
    ] {
        let e = refused(
            "env",
            &format!("keys: all, source: {{ ssmRef: {{ path: {path} }} }}"),
        );
        assert!(e.contains(&format!("{field}.path:")), "{path}: {e}");
        assert!(e.contains(says), "{path}: {e}");
    }
}

#[test]
fn names_and_prefixes_are_checked_for_the_delivery() {
    let entry = "secrets[0].secretRefs[0]";
    let src = format!("source: {{ value: {SECRET} }}");
    let e = refused("env", &format!("keys: all, prefix: app-, {src}"));
    assert!(e.contains(&format!("{entry}.prefix:")), "{e}");
    assert!(e.contains("environment variable"), "{e}");
    // The same prefix is a fine start of a file name.
    naming("file", &format!("keys: all, prefix: app-, {src}"));
    let e = refused("file", &format!("keys: all, prefix: a/b, {src}"));
    assert!(e.contains(&format!("{entry}.prefix:")), "{e}");
    let e = refused(
        "env",
        &format!("jmesPath: [{{ path: a, name: OK }}, {{ path: b, name: db.user }}], {src}"),
    );
    assert!(e.contains(&format!("{entry}.jmesPath[1].name:")), "{e}");
    let e = refused(
        "env",
        &format!("jmesPath: [{{ path: a, name: A }}, {{ path: b, name: A }}], {src}"),
    );
    assert!(e.contains(&format!("{entry}.jmesPath[1].name:")), "{e}");
    assert!(e.contains("duplicate secret name \"A\""), "{e}");
}

#[test]
fn a_name_and_a_jmes_path_name_of_two_entries_collide() {
    let text = "providers: {}\nsecrets:\n  - name: b\n    selector: { uid: 1 }\n    secretRefs:\n      - { name: A, source: { value: x } }\n      - { jmesPath: [{ path: a, name: A }], source: { value: y } }\n";
    let e = parse_str(text, "cfg.yaml").unwrap_err().to_string();
    assert!(
        e.contains("secrets[0].secretRefs[1].jmesPath[0].name:"),
        "{e}"
    );
}

#[test]
fn debug_of_an_expanding_entry_shows_no_value() {
    let c = parse_str(
        &config("env", &format!("keys: all, source: {{ value: {SECRET} }}")),
        "cfg.yaml",
    )
    .unwrap()
    .config;
    let shown = format!("{:?}", c.secrets[0].value.secret_refs[0]);
    assert!(shown.contains("AllKeys"), "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");
}
