//! Expansion of values fetched from AWS, against moto in server mode: an
//! AWS secret whose SecretString is a JSON object (`keys: all`,
//! `jmesPath`), and every SSM parameter below a path (`ssmRef: { path }`),
//! through more than one page.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_ssm::types::ParameterType;
use kernelseal_config::{Delivery, JsonPath, NamedPath, Naming};
use kernelseal_providers::{
    AwsProvider, AwsRef, AwsSettings, Error, Registry, SecretProvider, SecretRef, SecretValue,
    SsmPathRef, expand,
};
use kernelseal_testkit::Moto;
use support::{assert_err_clean, assert_no_leak};

fn creds() -> SharedCredentialsProvider {
    support::moto_credentials()
}

fn provider(endpoint: &str) -> AwsProvider {
    let at = |e: &str| BTreeMap::from([("us-east-1".to_string(), e.to_string())]);
    let settings = AwsSettings {
        region: Some("us-east-1".into()),
        endpoints: at(endpoint),
        ssm_endpoints: at(endpoint),
        ..AwsSettings::default()
    };
    AwsProvider::with_credentials("aws-test", settings, creds())
}

fn secrets_manager(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    let conf = aws_sdk_secretsmanager::config::Builder::new()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
        .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
        .credentials_provider(creds())
        .endpoint_url(endpoint)
        .build();
    aws_sdk_secretsmanager::Client::from_conf(conf)
}

fn ssm(endpoint: &str) -> aws_sdk_ssm::Client {
    support::ssm_admin(endpoint, "us-east-1")
}

async fn put(client: &aws_sdk_ssm::Client, name: &str, value: &str, kind: ParameterType) {
    support::ssm_put(client, name, value, kind).await;
}

fn aws_ref(id: &str) -> SecretRef {
    SecretRef::Aws(AwsRef {
        provider: None,
        secret_id: id.into(),
        json_key: None,
        version_id: None,
        version_stage: None,
        ttl: None,
    })
}

fn ssm_path(path: &str, recursive: bool, with_decryption: bool) -> SecretRef {
    SecretRef::SsmPath(SsmPathRef {
        provider: None,
        path: path.into(),
        recursive,
        with_decryption,
        ttl: None,
    })
}

fn all(prefix: &str) -> Naming {
    Naming::AllKeys {
        prefix: prefix.into(),
    }
}

/// (name, value) of each expanded name, in order.
fn expanded(naming: &Naming, delivery: Delivery, v: SecretValue) -> Vec<(String, String)> {
    expand(naming, delivery, v)
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.value.expose_str().unwrap().to_string()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// How many `GetParametersByPath` calls this test binary has logged.
fn by_path_calls() -> usize {
    support::logs()
        .lines()
        .filter(|l| l.contains("aws ssm GetParametersByPath"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_json_secrets_and_ssm_paths_expand_against_moto() {
    support::init();
    let Some(moto) = Moto::start("EXPANSION TESTS") else {
        return;
    };
    let ep = moto.endpoint.as_str();
    let p = provider(ep);
    let mut secrets: Vec<String> = Vec::new();

    // An AWS secret whose SecretString is a JSON object, without jsonKey.
    let sm = secrets_manager(ep);
    sm.create_secret()
        .name("app/db")
        .secret_string(
            r#"{"username":"db-user-7f","password":"db-pw-1e9a","db.port":5432,"replica":{"host":"replica-h-3c","ports":[1,2]}}"#,
        )
        .send()
        .await
        .unwrap();
    secrets.extend(["db-pw-1e9a".into(), "replica-h-3c".into()]);
    let v = p.fetch(&aws_ref("app/db")).await.expect("fetch app/db");
    assert_eq!(
        expanded(&all("DB_"), Delivery::Env, v.clone()),
        pairs(&[
            ("DB_db_port", "5432"),
            ("DB_password", "db-pw-1e9a"),
            ("DB_replica", r#"{"host":"replica-h-3c","ports":[1,2]}"#),
            ("DB_username", "db-user-7f"),
        ])
    );
    let named = |path: &str, name: &str| NamedPath {
        path: JsonPath::parse(path).unwrap(),
        name: name.into(),
    };
    let paths = Naming::Paths(vec![
        named("replica.host", "REPLICA_HOST"),
        named("replica.ports[1]", "REPLICA_PORT"),
        named(r#""db.port""#, "PORT"),
    ]);
    assert_eq!(
        expanded(&paths, Delivery::Env, v.clone()),
        pairs(&[
            ("REPLICA_HOST", "replica-h-3c"),
            ("REPLICA_PORT", "2"),
            ("PORT", "5432"),
        ])
    );
    // A secret that is not a JSON object, and a path that selects nothing:
    // the ref is named, the value never.
    sm.create_secret()
        .name("app/plain")
        .secret_string("plain-secret-5d")
        .send()
        .await
        .unwrap();
    secrets.push("plain-secret-5d".into());
    let plain = p.fetch(&aws_ref("app/plain")).await.unwrap();
    let e = expand(&all(""), Delivery::Env, plain).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("awsRef app/plain: keys: the value is not valid JSON"),
        "{e}"
    );
    let e = expand(
        &Naming::Paths(vec![named("replica.user", "U")]),
        Delivery::Env,
        v,
    )
    .unwrap_err();
    assert!(matches!(e, Error::KeyNotFound { .. }), "{e}");
    assert_err_clean(&e, &strs(&secrets));

    // SSM: thirteen parameters directly below the path (two pages of at
    // most ten), SecureStrings among them, and two levels below it.
    let client = ssm(ep);
    for i in 0..13 {
        let kind = if i % 2 == 0 {
            ParameterType::SecureString
        } else {
            ParameterType::String
        };
        let value = format!("path-value-{i:02}");
        put(&client, &format!("/exp/app/p{i:02}"), &value, kind).await;
        secrets.push(value);
    }
    put(
        &client,
        "/exp/app/db/password",
        "nested-pw-8b",
        ParameterType::SecureString,
    )
    .await;
    put(
        &client,
        "/exp/app/db/tls/key",
        "nested-key-2a",
        ParameterType::SecureString,
    )
    .await;
    secrets.extend(["nested-pw-8b".into(), "nested-key-2a".into()]);
    let before = by_path_calls();
    let flat = p
        .fetch(&ssm_path("/exp/app/", false, true))
        .await
        .expect("flat path");
    assert!(by_path_calls() - before >= 2, "every page is read");
    assert_eq!(flat.metadata().source, "ssmRef path /exp/app/");
    let flat_env = expanded(&all("APP_"), Delivery::Env, flat.clone());
    let want: Vec<(String, String)> = (0..13)
        .map(|i| (format!("APP_p{i:02}"), format!("path-value-{i:02}")))
        .collect();
    assert_eq!(flat_env, want, "SecureStrings decrypted, one level only");

    // Recursive: the levels below become part of the name.
    let deep = p
        .fetch(&ssm_path("/exp/app", true, true))
        .await
        .expect("recursive path");
    let deep_env = expanded(&all(""), Delivery::Env, deep.clone());
    assert_eq!(deep_env.len(), 15);
    assert!(deep_env.contains(&("db_password".into(), "nested-pw-8b".into())));
    assert!(deep_env.contains(&("db_tls_key".into(), "nested-key-2a".into())));
    let deep_files = expanded(&all("app."), Delivery::File, deep.clone());
    assert!(deep_files.contains(&("app.db_tls_key".into(), "nested-key-2a".into())));
    assert!(deep_files.contains(&("app.p00".into(), "path-value-00".into())));

    // Without decryption a SecureString is not its plaintext.
    let cipher = p
        .fetch(&ssm_path("/exp/app/db", false, false))
        .await
        .unwrap();
    let cipher = expanded(&all(""), Delivery::Env, cipher);
    assert_eq!(cipher.len(), 1);
    assert_eq!(cipher[0].0, "password");
    assert_ne!(cipher[0].1, "nested-pw-8b");

    // A new version of one parameter is a new version of the path's value.
    put(
        &client,
        "/exp/app/p03",
        "path-value-03-v2",
        ParameterType::String,
    )
    .await;
    secrets.push("path-value-03-v2".into());
    let again = p.fetch(&ssm_path("/exp/app/", false, true)).await.unwrap();
    assert_ne!(again.version(), flat.version());
    assert!(!format!("{again:?} {deep:?}").contains("path-value-"));

    // A path with nothing below it is an error, not an empty delivery.
    let e = p
        .fetch(&ssm_path("/exp/nothing/", true, true))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::NotFound { .. }) && e.to_string().contains("/exp/nothing/"),
        "{e}"
    );
    let e = p
        .fetch(&ssm_path("/exp/app/db/tls/key/", false, true))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("recursive: true"), "{e}");

    // Through the registry, from a config naming the aws provider.
    let yaml = "providers:\n  east: { type: aws, region: us-east-1 }\nsecrets:\n  - name: app\n    selector: { binary: app, uid: 1000 }\n    secretRefs:\n      - { keys: all, prefix: CFG_, source: { ssmRef: { path: /exp/app/db, recursive: true, provider: east } } }\n";
    let cfg = kernelseal_config::parse_str(yaml, "expand.yaml")
        .unwrap()
        .config;
    let entry = &cfg.secrets[0].value.secret_refs[0].value;
    let mut reg = Registry::from_config(&cfg).unwrap();
    reg.insert("east", Arc::new(provider(ep)));
    let v = reg.fetch(&entry.source.value).await.unwrap();
    assert_eq!(
        v.metadata().source,
        "ssmRef east:path /exp/app/db (recursive)"
    );
    assert_eq!(
        expanded(&entry.naming, Delivery::Env, v),
        pairs(&[
            ("CFG_password", "nested-pw-8b"),
            ("CFG_tls_key", "nested-key-2a")
        ])
    );

    assert_no_leak("", &strs(&secrets));
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
