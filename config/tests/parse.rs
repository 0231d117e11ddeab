use std::path::Path;
use std::time::Duration;

use kernelseal_config::{Mode, SecretRef, parse_str};

const ORIGINAL_QUICK_START: &str = r#"version: v1
policy:
  mode: enforce
  blockEnviron: true
  blockMem: true
  blockPtrace: true
  allowSelfRead: true
  kernelBinaryFilter: false

secrets:
  - name: test-secrets
    selector:
      binary: "sleep"
    secretRefs:
      - name: MY_SECRET
        source:
          envRef: "KernelSeal_MY_SECRET"
"#;

const DESIGN_EXAMPLE: &str = r#"version: v1
policy:
  mode: enforce
  blockEnviron: true
  blockMem: true
  blockMaps: false
  blockPtrace: true
  allowSelfRead: true
  auditAll: false
  kernelBinaryFilter: true
  inheritProtection: true
providers:
  vault-prod: { type: vault, address: "https://vault:8200", auth: { kubernetes: { role: app } } }
  aws:        { type: aws, region: eu-west-1 }
secrets:
  - name: database-creds
    selector: { binary: postgres, path: /usr/lib/postgresql/16/bin/postgres, namespace: db, labels: { app: pg }, container: pg, uid: 999, cgroupPath: /system.slice/pg.service }
    secretRefs:
      - name: PGPASSWORD
        source: { secretKeyRef: { name: db-credentials, key: password } }
      - name: API_KEY
        source: { vaultRef: { provider: vault-prod, path: app, key: api_key } }
      - name: TOKEN
        source: { awsRef: { secretId: prod/app, jsonKey: token } }
      - name: LOCAL
        source: { envRef: SOURCE_TOKEN }
monitoring: { enabled: true, metricsPort: 9090, logLevel: info, logFormat: json }
"#;

#[test]
fn original_quick_start_config_loads() {
    let loaded = parse_str(ORIGINAL_QUICK_START, "quick.yaml").expect("loads");
    let c = loaded.config;
    assert_eq!(c.policy.mode, Mode::Enforce);
    assert!(c.policy.block_environ && c.policy.block_mem && c.policy.block_ptrace);
    assert!(!c.policy.block_maps, "blockMaps defaults to false");
    assert!(!c.policy.kernel_binary_filter);
    assert!(
        c.policy.inherit_protection,
        "inheritProtection defaults to true"
    );
    assert_eq!(c.secrets.len(), 1);
    let b = &c.secrets[0].value;
    assert_eq!(b.selector.binary.as_deref(), Some("sleep"));
    let src = &b.secret_refs[0].value.source.value;
    assert!(
        matches!(src, SecretRef::Env { var } if var == "KernelSeal_MY_SECRET"),
        "{src:?}"
    );
    // Binary-only selection is legal but worth a warning.
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert_eq!(loaded.warnings[0].field, "secrets[0].selector");
    assert_eq!(loaded.warnings[0].line, Some(11));
}

#[test]
fn design_example_loads_with_every_source_kind() {
    let loaded = parse_str(DESIGN_EXAMPLE, "design.yaml").expect("loads");
    let kinds: Vec<_> = loaded.config.secrets[0]
        .value
        .secret_refs
        .iter()
        .map(|r| r.value.source.value.kind())
        .collect();
    assert_eq!(kinds, ["secretKeyRef", "vaultRef", "awsRef", "envRef"]);
    assert_eq!(loaded.config.providers["vault-prod"].value.kind, "vault");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn empty_document_gets_secure_defaults() {
    let c = parse_str("version: v1\n", "x").unwrap().config;
    assert_eq!(c.policy.mode, Mode::Enforce);
    assert!(c.secrets.is_empty());
    assert_eq!(c.monitoring.metrics_port, 9090);
}

fn err(text: &str) -> String {
    parse_str(text, "cfg.yaml").unwrap_err().to_string()
}

#[test]
fn lock_is_off_by_default_and_needs_enforce() {
    let defaults = parse_str("", "cfg.yaml").unwrap().config;
    assert!(!defaults.policy.lock);
    let locked = parse_str("policy:\n  lock: true\n", "cfg.yaml")
        .unwrap()
        .config;
    assert!(locked.policy.lock);
    for mode in ["audit", "disabled"] {
        let e = err(&format!("policy:\n  mode: {mode}\n  lock: true\n"));
        assert!(e.contains("policy.lock"), "{e}");
        assert!(e.contains(&format!("mode is {mode}")), "{e}");
    }
    let e = err("policy:\n  lock: yes please\n");
    assert!(e.starts_with("cfg.yaml:2:"), "{e}");
}

#[test]
fn unknown_policy_field_names_field_and_line() {
    let e = err("version: v1\npolicy:\n  mode: enforce\n  blockEnv: true\n");
    assert!(e.starts_with("cfg.yaml:4:"), "{e}");
    assert!(e.contains("blockEnv"), "{e}");
}

#[test]
fn bad_mode_is_refused_with_line() {
    let e = err("version: v1\npolicy:\n  mode: enforcing\n");
    assert!(e.starts_with("cfg.yaml:3:"), "{e}");
    // The allowed values, not the text given (it could be an aliased
    // secret `value`; see a_value_aliased_into_another_field_is_not_echoed).
    assert!(
        e.contains("unknown variant, expected one of disabled, audit, enforce"),
        "{e}"
    );
}

#[test]
fn wrong_version_is_refused() {
    let e = err("version: v2\n");
    assert!(e.contains("version") && e.contains("v2"), "{e}");
}

#[test]
fn source_with_two_kinds_is_refused_naming_both() {
    let e = err(
        "secrets:\n  - name: b\n    selector: { binary: app }\n    secretRefs:\n      - name: A\n        source: { envRef: X, fileRef: /x }\n",
    );
    assert!(e.contains("secrets[0].secretRefs[0].source"), "{e}");
    assert!(e.contains("envRef, fileRef"), "{e}");
    assert!(e.starts_with("cfg.yaml:6"), "{e}");
}

#[test]
fn source_with_no_kind_is_refused() {
    let e = err(
        "secrets:\n  - name: b\n    selector: { binary: app }\n    secretRefs:\n      - name: A\n        source: {}\n",
    );
    assert!(e.contains("found none"), "{e}");
}

#[test]
fn empty_selector_is_refused() {
    let e = err("secrets:\n  - name: b\n    secretRefs: []\n");
    assert!(
        e.contains("secrets[0].selector") && e.contains("every process"),
        "{e}"
    );
}

#[test]
fn bad_env_name_and_duplicates_are_refused() {
    let e = err(
        "secrets:\n  - name: b\n    selector: { uid: 1 }\n    secretRefs:\n      - name: 9A\n        source: { envRef: X }\n",
    );
    assert!(e.contains("secrets[0].secretRefs[0].name"), "{e}");
    let e = err(
        "secrets:\n  - name: b\n    selector: { uid: 1 }\n    secretRefs:\n      - { name: A, source: { envRef: X } }\n      - { name: A, source: { envRef: Y } }\n",
    );
    assert!(e.contains("duplicate secret name"), "{e}");
    let e = err(
        "secrets:\n  - { name: b, selector: { uid: 1 } }\n  - { name: b, selector: { uid: 2 } }\n",
    );
    assert!(e.contains("duplicate binding name"), "{e}");
}

#[test]
fn unknown_or_mistyped_provider_is_refused() {
    let e = err(
        "secrets:\n  - name: b\n    selector: { uid: 1 }\n    secretRefs:\n      - { name: A, source: { vaultRef: { provider: nope, path: p, key: k } } }\n",
    );
    assert!(e.contains("vaultRef.provider") && e.contains("nope"), "{e}");
    let e = err(
        "providers:\n  a: { type: aws }\nsecrets:\n  - name: b\n    selector: { uid: 1 }\n    secretRefs:\n      - { name: A, source: { vaultRef: { provider: a, path: p, key: k } } }\n",
    );
    assert!(e.contains("of type \"aws\""), "{e}");
    let e = err("providers:\n  a: { type: gcp }\n");
    assert!(e.contains("providers.a.type") && e.contains("gcp"), "{e}");
}

#[test]
fn literal_value_never_appears_in_errors_or_debug() {
    let secret = "hunter2-SUPER-SECRET";
    // A parse error on the same line as the literal value.
    let text = format!(
        "secrets:\n  - name: b\n    selector: {{ uid: 1 }}\n    secretRefs:\n      - {{ name: A, source: {{ value: {secret}, bogus: 1 }} }}\n"
    );
    let e = parse_str(&text, "cfg.yaml").unwrap_err();
    assert!(!e.to_string().contains(secret), "{e}");
    assert!(!format!("{e:?}").contains(secret));
    // A validation error about the source holding it.
    let text = format!(
        "secrets:\n  - name: b\n    selector: {{ uid: 1 }}\n    secretRefs:\n      - {{ name: A, source: {{ value: {secret}, envRef: X }} }}\n"
    );
    let e = parse_str(&text, "cfg.yaml").unwrap_err();
    assert!(!e.to_string().contains(secret), "{e}");
    // Debug of a loaded config.
    let text = format!(
        "secrets:\n  - name: b\n    selector: {{ uid: 1 }}\n    secretRefs:\n      - {{ name: A, source: {{ value: {secret} }} }}\n"
    );
    let loaded = parse_str(&text, "cfg.yaml").unwrap();
    assert!(!format!("{loaded:?}").contains(secret));
    let src = &loaded.config.secrets[0].value.secret_refs[0]
        .value
        .source
        .value;
    assert!(!format!("{src:?}").contains(secret));
}

#[test]
fn syntax_errors_give_the_location_once() {
    let e = err("secrets: 3\n");
    assert!(e.starts_with("cfg.yaml:1:10: "), "{e}");
    assert_eq!(e.matches("line").count(), 0, "{e}");
}

#[test]
fn pod_identity_defaults_to_preferred_and_is_checked() {
    use kernelseal_config::PodIdentityMode;
    let c = parse_str("version: v1\n", "x").unwrap().config;
    assert_eq!(c.pod_identity, PodIdentityMode::Preferred);
    let c = parse_str("version: v1\npodIdentity: required\n", "x")
        .unwrap()
        .config;
    assert_eq!(c.pod_identity, PodIdentityMode::Required);
    let e = err("version: v1\npodIdentity: sometimes\n");
    assert!(
        e.starts_with("cfg.yaml:2:") && e.contains("unknown variant, expected one of"),
        "{e}"
    );
}

#[test]
fn file_ref_mapping_is_strict() {
    let base = "secrets:\n  - name: b\n    selector: { uid: 1 }\n    secretRefs:\n      - name: A\n        source: { fileRef: ";
    // Both forms load.
    let ok = parse_str(&format!("{base}/etc/a }}\n"), "f.yaml").expect("path form");
    let src = &ok.config.secrets[0].value.secret_refs[0].value.source.value;
    assert!(
        matches!(src, SecretRef::File { path, json_key, .. } if path == Path::new("/etc/a") && json_key.is_none())
    );
    let ok = parse_str(
        &format!("{base}{{ path: /etc/a.json, jsonKey: k, ttl: 30s }} }}\n"),
        "f.yaml",
    )
    .expect("mapping form");
    let src = &ok.config.secrets[0].value.secret_refs[0].value.source.value;
    assert!(
        matches!(src, SecretRef::File { json_key, ttl, .. } if json_key.as_deref() == Some("k") && *ttl == Some(Duration::from_secs(30)))
    );
    // A misspelt jsonKey would deliver the whole file: refused, named, located.
    let e = err(&format!("{base}{{ path: /etc/a.json, jsonkey: k }} }}\n"));
    assert!(e.starts_with("cfg.yaml:6:"), "{e}");
    assert!(e.contains("unknown field `jsonkey`"), "{e}");
    let e = err(&format!("{base}[1] }}\n"));
    assert!(
        e.contains("a path, or a mapping with path, jsonKey, ttl"),
        "{e}"
    );
}

#[test]
fn a_value_aliased_into_another_field_is_not_echoed() {
    let secret = "hunter2-ALIASED-SECRET";
    // The literal value anchored, then aliased into fields that are enums,
    // numbers or booleans: serde's messages quote what they were given.
    for (selector, extra, want) in [
        (
            "{ uid: 1 }",
            "\n    delivery: *s",
            "expected one of env, file",
        ),
        ("{ uid: 1 }", "\n    onRotate: *s", "expected one of"),
        ("{ uid: *s }", "", "u32"),
    ] {
        let text = format!(
            "secrets:\n  - name: b\n    secretRefs:\n      - {{ name: A, source: {{ value: &s {secret} }} }}\n    selector: {selector}{extra}\n"
        );
        let e = parse_str(&text, "cfg.yaml").unwrap_err();
        let t = e.to_string();
        assert!(!t.contains(secret), "{t}");
        assert!(!format!("{e:?}").contains(secret), "{e:?}");
        // Still says what was wrong and where.
        assert!(t.starts_with("cfg.yaml:"), "{t}");
        assert!(t.contains(want), "{t}");
    }
}

#[test]
fn source_errors_name_the_whole_path_and_line() {
    let e = err(
        "secrets:\n  - { name: a, selector: { uid: 1 } }\n  - name: b\n    selector: { uid: 1 }\n    secretRefs:\n      - { name: A, source: { envRef: X } }\n      - name: B\n        source:\n          fileRef: { path: /x, ttl: 30y }\n",
    );
    assert!(
        e.starts_with("cfg.yaml:9:")
            && e.contains("secrets[1].secretRefs[1].source.fileRef.ttl: unknown unit"),
        "{e}"
    );
    let e = err(
        "secrets:\n  - name: b\n    selector: { uid: 1 }\n    secretRefs:\n      - { name: A, source: { vaultRef: { path: p, key: k, ttl: soon } } }\n",
    );
    assert!(
        e.contains("secrets[0].secretRefs[0].source.vaultRef.ttl: not a duration"),
        "{e}"
    );
    let e = err(
        "secrets:\n  - name: b\n    selector: { uid: 1 }\n    secretRefs:\n      - { name: A, source: { awsRef: { secretId: s, versionId: v, versionStage: AWSCURRENT } } }\n",
    );
    assert!(e.starts_with("cfg.yaml:5:"), "{e}");
    assert!(
        e.contains(
            "secrets[0].secretRefs[0].source.awsRef.versionStage: set versionId or versionStage, not both"
        ),
        "{e}"
    );
}

#[test]
fn durations_are_parsed_with_the_source() {
    let c = parse_str(
        "secrets:\n  - name: b\n    selector: { uid: 1 }\n    secretRefs:\n      - { name: A, source: { vaultRef: { path: p, key: k, engine: kv1, ttl: 1m30s } } }\n      - { name: B, source: { awsRef: { secretId: s, ttl: 250ms } } }\n",
        "cfg.yaml",
    )
    .unwrap()
    .config;
    let ttls: Vec<_> = c.secrets[0]
        .value
        .secret_refs
        .iter()
        .map(|r| r.value.source.value.ttl())
        .collect();
    assert_eq!(
        ttls,
        [
            Some(Duration::from_secs(90)),
            Some(Duration::from_millis(250))
        ]
    );
}

#[test]
fn a_literal_value_is_never_shown_by_a_parsed_config() {
    let loaded = parse_str(
        "secrets:\n  - name: b\n    selector: { uid: 1 }\n    secretRefs:\n      - { name: A, source: { value: hunter2 } }\n",
        "cfg.yaml",
    )
    .unwrap();
    let src = &loaded.config.secrets[0].value.secret_refs[0]
        .value
        .source
        .value;
    assert_eq!(src.literal_bytes(), Some(&b"hunter2"[..]));
    for shown in [
        format!("{loaded:?}"),
        format!("{:?}", loaded.config),
        format!("{src} {src:?}"),
    ] {
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}

#[test]
fn a_value_aliased_into_a_ttl_is_not_echoed() {
    let e = err(
        "secrets:\n  - name: b\n    selector: { uid: 1 }\n    secretRefs:\n      - { name: A, source: { value: &s hunter2 } }\n      - { name: B, source: { fileRef: { path: /x, ttl: *s } } }\n",
    );
    assert!(!e.contains("hunter2"), "{e}");
    assert!(
        e.starts_with("cfg.yaml:6:")
            && e.contains("secrets[0].secretRefs[1].source.fileRef.ttl: not a duration"),
        "{e}"
    );
}

const POD_IDENTITY: &str = r#"version: v1
providers:
  vault: { type: vault, address: "https://vault:8200" }
secrets:
  - name: web
    selector: { namespace: shop, serviceAccount: web }
    identity: pod
    secretRefs:
      - { name: DB_PASSWORD, source: { vaultRef: { path: web/db, key: password } } }
"#;

#[test]
fn identity_pod_loads_and_defaults_to_agent() {
    use kernelseal_config::IdentityMode;
    let loaded = parse_str(POD_IDENTITY, "t.yaml").unwrap();
    assert_eq!(
        loaded.config.secrets[0].value.identity.mode,
        IdentityMode::Pod
    );
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let agent = parse_str(ORIGINAL_QUICK_START, "t.yaml").unwrap();
    assert_eq!(
        agent.config.secrets[0].value.identity.mode,
        IdentityMode::Agent
    );
}

#[test]
fn identity_pod_refuses_what_it_cannot_do_naming_the_field() {
    let cases = [
        (
            POD_IDENTITY.replace("identity: pod", "identity: { mode: agent, vaultRole: web }"),
            "secrets[0].identity: vaultRole and awsRoleArn name the pod's login",
        ),
        (
            POD_IDENTITY.replace("version: v1\n", "version: v1\npodIdentity: disabled\n"),
            "podIdentity is disabled",
        ),
        (
            POD_IDENTITY.replace("identity: pod", "identity: { mode: pod, awsRoleArn: web }"),
            "secrets[0].identity.awsRoleArn: \"web\" is not an IAM role ARN",
        ),
        (
            POD_IDENTITY.replace("identity: pod", "identity: { mode: pod, vaultRole: a/b }"),
            "secrets[0].identity.vaultRole",
        ),
        (
            POD_IDENTITY.replace(
                "selector: { namespace: shop, serviceAccount: web }",
                "selector: { binary: web, namespace: shop }\n    delivery: file",
            ),
            "processes the kernel marks at exec, which bring no token",
        ),
        (
            POD_IDENTITY.replace(
                "{ vaultRef: { path: web/db, key: password } }",
                "{ secretKeyRef: { name: db, key: password } }",
            ),
            "secrets[0].secretRefs[0].source.secretKeyRef: identity: pod cannot read Kubernetes Secrets",
        ),
        (
            POD_IDENTITY.replace(
                "  vault: { type: vault, address: \"https://vault:8200\" }\n",
                "  aws: { type: aws }\n",
            ),
            "secrets[0].secretRefs[0].source: identity: pod logs in to vault as the pod through a configured provider",
        ),
        (
            POD_IDENTITY.replace("identity: pod", "identity: pods"),
            "7:15: identity is unknown; use agent, pod, or a mapping",
        ),
    ];
    for (text, want) in cases {
        let e = err(&text);
        assert!(e.contains(want), "{want:?} not in {e:?}");
    }
    let no_remote = POD_IDENTITY.replace(
        "{ vaultRef: { path: web/db, key: password } }",
        "{ envRef: DB_PASSWORD }",
    );
    let w = parse_str(&no_remote, "t.yaml").unwrap().warnings;
    assert!(
        w.iter()
            .any(|w| w.message.contains("identity: pod has no effect")),
        "{w:?}"
    );
}

fn ssm_binding(source: &str) -> String {
    format!(
        "providers:\n  east: {{ type: aws, region: us-east-1 }}\n  vault: {{ type: vault, address: \"https://vault:8200\" }}\nsecrets:\n  - name: b\n    selector: {{ uid: 1 }}\n    secretRefs:\n      - {{ name: A, source: {source} }}\n"
    )
}

#[test]
fn ssm_ref_loads_with_decryption_on_by_default() {
    let c = parse_str(
        &ssm_binding("{ ssmRef: { name: /app/db/password, provider: east, ttl: 2m } }"),
        "cfg.yaml",
    )
    .unwrap()
    .config;
    let SecretRef::Ssm(p) = &c.secrets[0].value.secret_refs[0].value.source.value else {
        panic!("not an ssmRef");
    };
    assert_eq!(p.name, "/app/db/password");
    assert!(p.with_decryption);
    assert_eq!(p.provider.as_deref(), Some("east"));
    assert_eq!(p.ttl, Some(std::time::Duration::from_secs(120)));
    for name in [
        "plain-name_1.x",
        "/a",
        "/aws/service/global-infrastructure/version",
    ] {
        let c = parse_str(
            &ssm_binding(&format!(
                "{{ ssmRef: {{ name: {name}, withDecryption: false }} }}"
            )),
            "cfg.yaml",
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .config;
        let SecretRef::Ssm(p) = &c.secrets[0].value.secret_refs[0].value.source.value else {
            panic!("not an ssmRef");
        };
        assert!(!p.with_decryption);
        assert_eq!(p.name, name);
    }
}

#[test]
fn ssm_ref_errors_name_the_field() {
    let field = "secrets[0].secretRefs[0].source.ssmRef";
    let cases = [
        (
            "{ ssmRef: { name: app/db } }",
            "name",
            "must start with '/'",
        ),
        (
            "{ ssmRef: { name: \"/app//db\" } }",
            "name",
            "no empty levels",
        ),
        ("{ ssmRef: { name: /app/db/ } }", "name", "no empty levels"),
        (
            "{ ssmRef: { name: \"/app/db pw\" } }",
            "name",
            "' ' is not allowed",
        ),
        (
            "{ ssmRef: { name: \"/app/db:3\" } }",
            "name",
            "':' is not allowed",
        ),
        ("{ ssmRef: { name: \"\" } }", "name", "it is empty"),
        (
            "{ ssmRef: { name: /1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16 } }",
            "name",
            "at most 15 levels",
        ),
        (
            "{ ssmRef: { name: /a, provider: vault } }",
            "provider",
            "not \"aws\"",
        ),
        (
            "{ ssmRef: { name: /a, provider: west } }",
            "provider",
            "no provider named",
        ),
    ];
    for (source, sub, want) in cases {
        let e = err(&ssm_binding(source));
        assert!(
            e.starts_with("cfg.yaml:8")
                && e.contains(&format!("{field}.{sub}: "))
                && e.contains(want),
            "{source}: {e}"
        );
    }
    let e = err(&ssm_binding("{ ssmRef: { name: /a, ttl: soon } }"));
    assert!(e.contains(&format!("{field}.ttl: not a duration")), "{e}");
    let e = err(&ssm_binding("{ ssmRef: { name: /a, withDecrypt: true } }"));
    assert!(e.contains("withDecrypt"), "{e}");
    let e = err(&ssm_binding(
        "{ ssmRef: { name: /a }, awsRef: { secretId: s } }",
    ));
    assert!(
        e.contains("exactly one of value, envRef, fileRef, secretKeyRef, vaultRef, awsRef, ssmRef")
            && e.contains("found awsRef, ssmRef"),
        "{e}"
    );
    let long = format!("/{}", "a".repeat(1011));
    let e = err(&ssm_binding(&format!("{{ ssmRef: {{ name: {long} }} }}")));
    assert!(e.contains("longer than 1011"), "{e}");
}

#[test]
fn ssm_ref_is_read_as_the_pod_through_an_aws_provider() {
    let pod = "providers:\n  aws: { type: aws, region: us-east-1 }\nsecrets:\n  - name: web\n    selector: { namespace: shop, serviceAccount: web }\n    identity: pod\n    secretRefs:\n      - { name: A, source: { ssmRef: { name: /web/key } } }\n";
    let loaded = parse_str(pod, "cfg.yaml").unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let e = err(&pod.replace(
        "  aws: { type: aws, region: us-east-1 }\n",
        "  v: { type: vault, address: \"https://v:8200\" }\n",
    ));
    assert!(e.contains("identity: pod logs in to aws as the pod"), "{e}");
}

#[test]
fn dynamic_vault_refs_load_and_refuse_what_does_not_apply() {
    let c = parse_str(
        &ssm_binding(
            "{ vaultRef: { mount: database, path: creds/app, key: username, engine: dynamic } }",
        ),
        "cfg.yaml",
    )
    .unwrap()
    .config;
    let r = &c.secrets[0].value.secret_refs[0].value.source.value;
    assert!(r.is_dynamic());
    // Never cached: every delivery reads its own.
    assert_eq!(r.cache_key(), None);
    assert_eq!(
        r.to_string(),
        "vaultRef database/creds/app#username (dynamic)"
    );
    // Without a key: the whole secret, its text naming no key.
    let c = parse_str(&ssm_binding("{ vaultRef: { path: app } }"), "cfg.yaml")
        .unwrap()
        .config;
    let r = &c.secrets[0].value.secret_refs[0].value.source.value;
    assert!(!r.is_dynamic());
    assert_eq!(r.cache_key().as_deref(), Some("vaultRef app"));

    for (field, source) in [
        (
            "version",
            "{ vaultRef: { path: creds/app, key: k, engine: dynamic, version: 2 } }",
        ),
        (
            "ttl",
            "{ vaultRef: { path: creds/app, key: k, engine: dynamic, ttl: 5m } }",
        ),
    ] {
        let e = err(&ssm_binding(source));
        assert!(
            e.contains(&format!("secrets[0].secretRefs[0].source.vaultRef.{field}: engine: dynamic is read anew for every delivery")),
            "{e}"
        );
    }
    let pod = ssm_binding("{ vaultRef: { path: creds/app, key: k, engine: dynamic } }")
        .replace("    secretRefs:", "    identity: pod\n    secretRefs:");
    let e = err(&pod);
    assert!(
        e.contains("secrets[0].secretRefs[0].source.vaultRef.engine")
            && e.contains("use identity: agent for dynamic secrets"),
        "{e}"
    );
}
