//! env, value and file sources; the registry built from a config; the
//! `providers check` report.

mod support;

use std::sync::Arc;

use kernelseal_providers::{
    EnvProvider, Error, FileProblem, FileProvider, KvEngine, Registry, SecretProvider, SecretRef,
    VaultRef, check_config,
};
use support::assert_err_clean;

fn file_ref(path: &std::path::Path, key: Option<&str>) -> SecretRef {
    SecretRef::File {
        path: path.to_path_buf(),
        json_key: key.map(str::to_string),
        ttl: None,
    }
}

#[tokio::test]
async fn env_and_literal() {
    support::init();
    let p = EnvProvider;
    let path = std::env::var("PATH").unwrap();
    let v = p
        .fetch(&SecretRef::Env { var: "PATH".into() })
        .await
        .unwrap();
    assert_eq!(v.expose_str(), Some(path.as_str()));
    assert!(v.version().unwrap().starts_with("h:"));
    assert!(!v.version().unwrap().contains(&path));
    let e = p
        .fetch(&SecretRef::Env {
            var: "KERNELSEAL_SURELY_UNSET_VAR".into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::EnvNotSet { .. }));
    assert!(e.to_string().contains("KERNELSEAL_SURELY_UNSET_VAR"));
    let v = p
        .fetch(&SecretRef::literal("literal-s3cret"))
        .await
        .unwrap();
    assert_eq!(v.expose_str(), Some("literal-s3cret"));
    assert!(!format!("{v:?} {:?}", v.metadata()).contains("literal-s3cret"));
    // Same content, same version tag; different content, different tag.
    let w = p
        .fetch(&SecretRef::literal("literal-s3cret"))
        .await
        .unwrap();
    assert_eq!(v.version(), w.version());
    let x = p.fetch(&SecretRef::literal("other")).await.unwrap();
    assert_ne!(v.version(), x.version());
}

#[tokio::test]
async fn files_beneath_a_directory() {
    support::init();
    let root = tempfile::tempdir().unwrap();
    let (allowed, outside) = (root.path().join("allowed"), root.path().join("outside"));
    std::fs::create_dir_all(allowed.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(allowed.join("sub/key"), "beneath-s3cret").unwrap();
    std::fs::write(outside.join("key"), "outside-s3cret").unwrap();
    std::os::unix::fs::symlink(&outside, allowed.join("out")).unwrap();
    std::fs::create_dir(allowed.join("dir")).unwrap();
    let p = FileProvider::default();

    let v = p
        .fetch_beneath(&allowed, std::path::Path::new("sub/key"))
        .await
        .unwrap();
    assert_eq!(v.expose_bytes(), b"beneath-s3cret");
    assert!(v.version().unwrap().starts_with("mtime:"));

    let problem = |rel: &'static str| {
        let (p, allowed) = (p.clone(), allowed.clone());
        async move {
            match p.fetch_beneath(&allowed, std::path::Path::new(rel)).await {
                Err(Error::File { problem, path, .. }) => {
                    assert_eq!(path, allowed.join(rel));
                    problem
                }
                other => panic!("{rel}: {other:?}"),
            }
        }
    };
    assert_eq!(problem("out/key").await, FileProblem::Symlink);
    assert_eq!(problem("../outside/key").await, FileProblem::NotBeneath);
    assert_eq!(problem("sub/nope").await, FileProblem::Missing);
    assert_eq!(problem("dir").await, FileProblem::IsDirectory);
    let e = FileProvider::with_limit(5)
        .fetch_beneath(&allowed, std::path::Path::new("sub/key"))
        .await
        .unwrap_err();
    assert_err_clean(&e, &["beneath-s3cret", "outside-s3cret"]);
    assert!(
        matches!(
            e,
            Error::File {
                problem: FileProblem::TooLarge { size: 14, limit: 5 },
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn files() {
    support::init();
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "file-s3cret\n").unwrap();
    let json = dir.path().join("creds.json");
    std::fs::write(&json, r#"{"user":"u","password":"json-file-s3cret"}"#).unwrap();
    let bad_json = dir.path().join("bad.json");
    std::fs::write(&bad_json, r#"{"password": "half-written-s3cret"#).unwrap();
    let p = FileProvider::default();

    let v = p.fetch(&file_ref(&plain, None)).await.unwrap();
    assert_eq!(v.expose_bytes(), b"file-s3cret\n");
    assert!(v.version().unwrap().starts_with("mtime:"));
    let v = p.fetch(&file_ref(&json, Some("password"))).await.unwrap();
    assert_eq!(v.expose_str(), Some("json-file-s3cret"));

    let secrets = ["file-s3cret", "json-file-s3cret", "half-written-s3cret"];
    let e = p.fetch(&file_ref(&json, Some("token"))).await.unwrap_err();
    assert!(
        matches!(e, Error::KeyNotFound { ref field, .. } if field == "fileRef.jsonKey"),
        "{e}"
    );
    assert_err_clean(&e, &secrets);
    let e = p
        .fetch(&file_ref(&bad_json, Some("password")))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e}");
    assert!(e.to_string().contains("not valid JSON"), "{e}");
    assert_err_clean(&e, &secrets);
    let e = p.fetch(&file_ref(&plain, Some("k"))).await.unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e}");
    assert_err_clean(&e, &secrets);

    let e = p.fetch(&file_ref(dir.path(), None)).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::File {
                problem: FileProblem::IsDirectory,
                ..
            }
        ),
        "{e}"
    );
    let e = p
        .fetch(&file_ref(&dir.path().join("nope"), None))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::File {
                problem: FileProblem::Missing,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("nope"));
    let e = FileProvider::with_limit(5)
        .fetch(&file_ref(&plain, None))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::File {
                problem: FileProblem::TooLarge { size: 12, limit: 5 },
                ..
            }
        ),
        "{e}"
    );
    assert_err_clean(&e, &secrets);

    // A FIFO would block a reader forever.
    let fifo = dir.path().join("fifo");
    if std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success())
    {
        let e = p.fetch(&file_ref(&fifo, None)).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::File {
                    problem: FileProblem::NotRegular,
                    ..
                }
            ),
            "{e}"
        );
    }

    // Permission problems (meaningless as root, who reads anything).
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    if uid != 0 {
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o000)).unwrap();
        let e = p.fetch(&file_ref(&plain, None)).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::File {
                    problem: FileProblem::PermissionDenied { .. },
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("permission denied"), "{e}");
    } else {
        eprintln!("running as root: file permission-denied case not exercised");
    }
}

const CONFIG: &str = r#"
version: v1
providers:
  vault-prod:
    type: vault
    address: http://127.0.0.1:PORT
    namespace: team-a
    auth: { kubernetes: { role: app, jwtFile: /nonexistent/jwt } }
  aws-main: { type: aws, region: eu-west-1, failoverRegion: eu-central-1, endpoints: { eu-west-1: "http://127.0.0.1:PORT" } }
secrets:
  - name: app
    selector: { binary: app, uid: 1000 }
    secretRefs:
      - name: LITERAL
        source: { value: literal-in-config-s3cret }
      - name: FROM_ENV
        source: { envRef: PATH }
      - name: FROM_FILE
        source: { fileRef: { path: @FILE@, jsonKey: password } }
      - name: MISSING_FILE
        source: { fileRef: /nonexistent/kernelseal/secret }
      - name: API_KEY
        source: { vaultRef: { provider: vault-prod, path: app, key: api_key } }
"#;

#[tokio::test]
async fn registry_and_check_report() {
    support::init();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("creds.json");
    std::fs::write(&file, r#"{"password":"json-file-s3cret"}"#).unwrap();
    let port = kernelseal_testkit::unused_port().to_string();
    let text = CONFIG
        .replace("PORT", &port)
        .replace("@FILE@", file.to_str().unwrap());
    let cfg = kernelseal_config::parse_str(&text, "test.yaml")
        .unwrap()
        .config;

    let reg = Registry::from_config(&cfg).unwrap();
    let vr = SecretRef::Vault(VaultRef {
        provider: None,
        mount: None,
        path: "app".into(),
        key: Some("k".into()),
        version: None,
        engine: Some(KvEngine::V2),
        ttl: None,
    });
    // The single vault and the single aws instance are the defaults.
    assert_eq!(reg.resolve(&vr).unwrap().0, "vault-prod");
    let ar: SecretRef =
        serde_json::from_value(serde_json::json!({"awsRef": {"secretId": "x"}})).unwrap();
    assert_eq!(reg.resolve(&ar).unwrap().0, "aws-main");
    // Wrong type, unknown name, ambiguous default.
    let named = |p: &str| {
        SecretRef::Vault(VaultRef {
            provider: Some(p.into()),
            ..match &vr {
                SecretRef::Vault(v) => v.clone(),
                _ => unreachable!(),
            }
        })
    };
    let e = reg.resolve(&named("aws-main")).err().unwrap();
    assert!(
        e.to_string().contains("vaultRef.provider") && e.to_string().contains("of type aws"),
        "{e}"
    );
    let e = reg.resolve(&named("nope")).err().unwrap();
    assert!(e.to_string().contains("no provider named \"nope\""), "{e}");
    let mut two = Registry::from_config(&cfg).unwrap();
    two.insert("vault-dr", reg.resolve(&vr).unwrap().1);
    let e = two.resolve(&vr).err().unwrap();
    assert!(e.to_string().contains("2 providers of type vault"), "{e}");
    // With no kubernetes provider configured, the default one serves secretKeyRef.
    let kr = SecretRef::Kubernetes(kernelseal_providers::KubernetesRef {
        namespace: None,
        name: "n".into(),
        key: "k".into(),
    });
    assert_eq!(reg.resolve(&kr).unwrap().0, "kubernetes");

    // The check report: OK lines with version, FAIL lines with the error, no values.
    let checks = check_config(&cfg).await;
    assert_eq!(checks.len(), 5);
    let report: String = checks.iter().map(|c| format!("{c}\n")).collect();
    eprintln!("{report}");
    let by = |n: &str| checks.iter().find(|c| c.secret == n).unwrap();
    assert!(by("LITERAL").is_ok() && by("FROM_ENV").is_ok() && by("FROM_FILE").is_ok());
    assert!(!by("MISSING_FILE").is_ok() && !by("API_KEY").is_ok());
    assert!(format!("{}", by("FROM_FILE")).starts_with("OK   app/FROM_FILE  fileRef "));
    assert!(format!("{}", by("FROM_FILE")).contains("version=mtime:"));
    assert!(format!("{}", by("MISSING_FILE")).starts_with("FAIL app/MISSING_FILE"));
    assert!(format!("{}", by("MISSING_FILE")).contains("no such file"));
    assert_eq!(by("API_KEY").provider.as_deref(), Some("vault-prod"));
    assert_eq!(by("API_KEY").source_kind, "vaultRef");
    let path = std::env::var("PATH").unwrap();
    support::assert_no_leak(
        &format!("{report} {checks:?}"),
        &["literal-in-config-s3cret", "json-file-s3cret", &path],
    );
}

#[tokio::test]
async fn provider_settings_errors_name_the_field() {
    support::init();
    let cases = [
        (
            "providers: { vault-prod: { type: vault, address: https://v:8200, auth: { kubernetes: { mount: k8s } } } }",
            "providers.vault-prod.auth.kubernetes.role: missing",
        ),
        (
            "providers: { v: { type: vault, address: https://v, tlsSkipVerfy: true } }",
            "providers.v.tlsSkipVerfy: unknown setting",
        ),
        (
            "providers: { a: { type: aws, region: eu-west-1, failoverRegion: eu-west-1 } }",
            "providers.a.failoverRegion: is the same as region",
        ),
        (
            "providers: { k: { type: kubernetes, namespace: 7, color: blue } }",
            "providers.k.color: unknown setting",
        ),
        (
            "providers: { v: { type: vault, address: https://v, caCert: /nonexistent/ca.pem } }",
            "providers.v.caCert: cannot read CA bundle /nonexistent/ca.pem: ",
        ),
    ];
    for (yaml, want) in cases {
        let cfg = kernelseal_config::parse_str(yaml, "t.yaml").unwrap().config;
        let e = Registry::from_config(&cfg).expect_err(yaml);
        assert!(matches!(e, Error::Settings { .. }));
        assert!(e.to_string().starts_with(want), "{e} (wanted {want})");
        // check_config reports it instead of failing as a whole.
        assert!(check_config(&cfg).await.is_empty());
    }
    let _ = Arc::new(EnvProvider);
}
