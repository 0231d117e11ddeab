//! The AWS provider against moto in server mode (real AWS API over HTTP).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_secretsmanager::primitives::Blob;
use kernelseal_providers::{
    AwsProvider, AwsRef, AwsSettings, Cache, CacheOptions, Error, SecretProvider, SecretRef,
};
use kernelseal_testkit::{Moto, unused_port};
use support::assert_err_clean;

fn creds() -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(Credentials::new("testing", "testing", None, None, "test"))
}

/// An SDK client used to create secrets in moto, as a user would.
async fn admin(endpoint: &str, region: &str) -> aws_sdk_secretsmanager::Client {
    let conf = aws_sdk_secretsmanager::config::Builder::new()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
        .region(aws_sdk_secretsmanager::config::Region::new(
            region.to_string(),
        ))
        .credentials_provider(creds())
        .endpoint_url(endpoint)
        .build();
    aws_sdk_secretsmanager::Client::from_conf(conf)
}

fn provider(region: &str, failover: Option<&str>, endpoints: &[(&str, &str)]) -> AwsProvider {
    let settings = AwsSettings {
        region: Some(region.into()),
        failover_region: failover.map(str::to_string),
        endpoints: endpoints
            .iter()
            .map(|(r, e)| (r.to_string(), e.to_string()))
            .collect::<BTreeMap<_, _>>(),
        profile: None,
        timeout: std::time::Duration::from_secs(10),
        cache_ttl: None,
        ..AwsSettings::default()
    };
    AwsProvider::with_credentials("aws-test", settings, creds())
}

fn aws_ref(id: &str) -> AwsRef {
    AwsRef {
        provider: None,
        secret_id: id.into(),
        json_key: None,
        version_id: None,
        version_stage: None,
        ttl: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_secrets_manager_against_moto() {
    support::init();
    let Some(moto) = Moto::start("AWS PROVIDER TESTS") else {
        return;
    };
    let ep = moto.endpoint.as_str();
    let sm = admin(ep, "us-east-1").await;

    // Plain string secret, then a second version.
    let created = sm
        .create_secret()
        .name("app/plain")
        .secret_string("plain-secret-v1")
        .send()
        .await
        .expect("create secret");
    let v1_id = created.version_id().unwrap().to_string();
    let p = provider("us-east-1", None, &[("us-east-1", ep)]);
    let r = SecretRef::Aws(aws_ref("app/plain"));
    let v = p.fetch(&r).await.expect("fetch plain");
    assert_eq!(v.expose_str(), Some("plain-secret-v1"));
    assert_eq!(v.version(), Some(v1_id.as_str()));
    assert!(!format!("{v:?}").contains("plain-secret-v1"));

    let put = sm
        .put_secret_value()
        .secret_id("app/plain")
        .secret_string("plain-secret-v2")
        .send()
        .await
        .expect("put v2");
    let v2_id = put.version_id().unwrap().to_string();
    let v = p.fetch(&r).await.unwrap();
    assert_eq!(v.expose_str(), Some("plain-secret-v2"));
    assert_eq!(v.version(), Some(v2_id.as_str()));
    // Stage and id pinning.
    let prev = SecretRef::Aws(AwsRef {
        version_stage: Some("AWSPREVIOUS".into()),
        ..aws_ref("app/plain")
    });
    assert_eq!(
        p.fetch(&prev).await.unwrap().expose_str(),
        Some("plain-secret-v1")
    );
    let by_id = SecretRef::Aws(AwsRef {
        version_id: Some(v1_id.clone()),
        ..aws_ref("app/plain")
    });
    let v = p.fetch(&by_id).await.unwrap();
    assert_eq!(v.expose_str(), Some("plain-secret-v1"));
    assert_eq!(v.version(), Some(v1_id.as_str()));
    sm.put_secret_value()
        .secret_id("app/plain")
        .secret_string("plain-secret-staged")
        .version_stages("STAGING")
        .send()
        .await
        .unwrap();
    let staged = SecretRef::Aws(AwsRef {
        version_stage: Some("STAGING".into()),
        ..aws_ref("app/plain")
    });
    assert_eq!(
        p.fetch(&staged).await.unwrap().expose_str(),
        Some("plain-secret-staged")
    );
    assert_eq!(
        p.fetch(&r).await.unwrap().expose_str(),
        Some("plain-secret-v2"),
        "a custom stage must not move AWSCURRENT"
    );

    // JSON secret with a key; a missing key; jsonKey on a non-JSON secret.
    sm.create_secret()
        .name("app/json")
        .secret_string(r#"{"user":"svc-user-7f3d","token":"json-token-xyz","port":5432}"#)
        .send()
        .await
        .unwrap();
    let jr = |k: &str| {
        SecretRef::Aws(AwsRef {
            json_key: Some(k.into()),
            ..aws_ref("app/json")
        })
    };
    assert_eq!(
        p.fetch(&jr("token")).await.unwrap().expose_str(),
        Some("json-token-xyz")
    );
    assert_eq!(
        p.fetch(&jr("port")).await.unwrap().expose_str(),
        Some("5432")
    );
    let e = p.fetch(&jr("nope")).await.unwrap_err();
    assert!(
        matches!(e, Error::KeyNotFound { ref field, .. } if field == "awsRef.jsonKey"),
        "{e}"
    );
    assert!(
        e.to_string().contains("app/json") && e.to_string().contains("nope"),
        "{e}"
    );
    assert_err_clean(&e, &["json-token-xyz", "svc-user-7f3d"]);
    let e = p
        .fetch(&SecretRef::Aws(AwsRef {
            json_key: Some("k".into()),
            ..aws_ref("app/plain")
        }))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e}");
    assert_err_clean(&e, &["plain-secret-v2"]);

    // Binary secret.
    sm.create_secret()
        .name("app/bin")
        .secret_binary(Blob::new(vec![0u8, 1, 2, 255, 254]))
        .send()
        .await
        .unwrap();
    let v = p.fetch(&SecretRef::Aws(aws_ref("app/bin"))).await.unwrap();
    assert_eq!(v.expose_bytes(), &[0u8, 1, 2, 255, 254]);
    assert_eq!(v.expose_str(), None);

    // Missing secret: NotFound naming the id, no failover on a 4xx.
    let e = p
        .fetch(&SecretRef::Aws(aws_ref("app/missing")))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("app/missing"), "{e}");
    assert!(!e.is_retryable());

    // Failover: primary endpoint is a closed port, failover region at moto.
    let sm_eu = admin(ep, "eu-west-1").await;
    sm_eu
        .create_secret()
        .name("app/replicated")
        .secret_string("replica-secret")
        .send()
        .await
        .unwrap();
    let dead = format!("http://127.0.0.1:{}", unused_port());
    let fp = provider(
        "us-east-1",
        Some("eu-west-1"),
        &[("us-east-1", dead.as_str()), ("eu-west-1", ep)],
    );
    let rr = SecretRef::Aws(aws_ref("app/replicated"));
    assert_eq!(
        fp.fetch(&rr).await.unwrap().expose_str(),
        Some("replica-secret")
    );
    assert!(support::logs().contains("trying the failover region"));
    // Without failover the same setup is a retryable Unavailable error.
    let np = provider("us-east-1", None, &[("us-east-1", dead.as_str())]);
    let e = np.fetch(&rr).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert!(e.is_retryable());
    // A 4xx in the primary (secret only in the failover region) is not failed over.
    let both = provider(
        "us-east-1",
        Some("eu-west-1"),
        &[("us-east-1", ep), ("eu-west-1", ep)],
    );
    let e = both.fetch(&rr).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");

    // Through the cache: retries then error, value never in the error.
    let cache = Cache::new(
        Arc::new(np),
        CacheOptions {
            attempts: 2,
            backoff_base: std::time::Duration::from_millis(5),
            ..CacheOptions::default()
        },
    );
    let e = cache.get(&rr).await.unwrap_err();
    assert_eq!(cache.upstream_calls(), 2);
    assert_err_clean(
        &e,
        &[
            "plain-secret-v1",
            "plain-secret-v2",
            "json-token-xyz",
            "replica-secret",
            "plain-secret-staged",
        ],
    );
    drop(moto);
}

/// The default AWS provider (no `providers:` entry) with the SDK's standard
/// chains: region from `AWS_REGION`, credentials from the environment and
/// the endpoint from `AWS_ENDPOINT_URL`. The environment is set for a child
/// process (this test binary, running only the ignored test below), because
/// changing the environment of a running multi-threaded test is unsound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_chain_and_aws_endpoint_url() {
    support::init();
    let Some(moto) = Moto::start("AWS PROVIDER TESTS") else {
        return;
    };
    admin(&moto.endpoint, "us-west-2")
        .await
        .create_secret()
        .name("chain/app")
        .secret_string(r#"{"token":"chain-token-value"}"#)
        .send()
        .await
        .unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "standard_chain_child",
            "--ignored",
            "--nocapture",
        ])
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_REGION", "us-west-2")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_CONFIG_FILE", "/nonexistent/aws/config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws/credentials",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env("KERNELSEAL_AWS_CHAIN_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("OK   app/TOKEN  awsRef chain/app#token via aws"),
        "{stderr}"
    );
    assert!(!stdout.contains("chain-token-value") && !stderr.contains("chain-token-value"));
    drop(moto);
}

#[tokio::test]
#[ignore = "run by standard_chain_and_aws_endpoint_url in a child process with AWS_* set"]
async fn standard_chain_child() {
    if std::env::var_os("KERNELSEAL_AWS_CHAIN_CHILD").is_none() {
        return;
    }
    support::init();
    let yaml = "secrets:\n  - name: app\n    selector: { binary: app, uid: 1000 }\n    secretRefs:\n      - name: TOKEN\n        source: { awsRef: { secretId: chain/app, jsonKey: token } }\n";
    let cfg = kernelseal_config::parse_str(yaml, "chain.yaml")
        .unwrap()
        .config;
    let checks = kernelseal_providers::check_config(&cfg).await;
    for c in &checks {
        eprintln!("{c}");
    }
    assert!(checks.iter().all(|c| c.is_ok()));
    let r = cfg.secrets[0].value.secret_refs[0]
        .value
        .source
        .value
        .clone();
    let reg = kernelseal_providers::Registry::from_config(&cfg).unwrap();
    let v = reg.fetch(&r).await.unwrap();
    assert_eq!(v.expose_str(), Some("chain-token-value"));
}
