//! SSM Parameter Store through the `aws` provider, against moto in server
//! mode (real AWS API over HTTP).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_ssm::types::ParameterType;
use kernelseal_providers::{
    AwsProvider, AwsSettings, Error, Registry, SecretProvider, SecretRef, SsmPath, SsmRef,
};
use kernelseal_testkit::{Moto, unused_port};
use support::{assert_err_clean, assert_no_leak};

fn creds() -> SharedCredentialsProvider {
    support::moto_credentials()
}

fn admin(endpoint: &str, region: &str) -> aws_sdk_ssm::Client {
    support::ssm_admin(endpoint, region)
}

async fn put(ssm: &aws_sdk_ssm::Client, name: &str, value: &str, kind: ParameterType) -> i64 {
    support::ssm_put(ssm, name, value, kind).await
}

fn provider(region: &str, failover: Option<&str>, ssm_endpoints: &[(&str, &str)]) -> AwsProvider {
    let settings = AwsSettings {
        region: Some(region.into()),
        failover_region: failover.map(str::to_string),
        ssm_endpoints: ssm_endpoints
            .iter()
            .map(|(r, e)| (r.to_string(), e.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..AwsSettings::default()
    };
    AwsProvider::with_credentials("aws-test", settings, creds())
}

fn ssm(name: &str) -> SecretRef {
    SecretRef::Ssm(SsmRef {
        provider: None,
        name: name.into(),
        with_decryption: true,
        ttl: None,
    })
}

fn ssm_encrypted(name: &str) -> SecretRef {
    SecretRef::Ssm(SsmRef {
        provider: None,
        name: name.into(),
        with_decryption: false,
        ttl: None,
    })
}

/// How many calls of `operation` this test binary has logged so far.
fn calls(operation: &str) -> usize {
    let marker = format!("aws ssm {operation}");
    support::logs()
        .lines()
        .filter(|l| l.contains(&marker) && !l.contains(&format!("{marker}By")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_parameter_store_against_moto() {
    support::init();
    let Some(moto) = Moto::start("SSM PROVIDER TESTS") else {
        return;
    };
    let ep = moto.endpoint.as_str();
    let east = admin(ep, "us-east-1");
    let p = provider("us-east-1", None, &[("us-east-1", ep)]);
    let mut secrets: Vec<String> = Vec::new();

    // By name: a String, a new version of it, a plain (non-hierarchical) name.
    assert_eq!(
        put(&east, "/app/db/user", "ssm-user-v1", ParameterType::String).await,
        1
    );
    let v = p.fetch(&ssm("/app/db/user")).await.expect("fetch by name");
    assert_eq!(v.expose_str(), Some("ssm-user-v1"));
    assert_eq!(v.version(), Some("1"));
    assert_eq!(v.metadata().source, "ssmRef /app/db/user");
    assert!(!format!("{v:?}").contains("ssm-user-v1"));
    put(&east, "/app/db/user", "ssm-user-v2", ParameterType::String).await;
    let v = p.fetch(&ssm("/app/db/user")).await.unwrap();
    assert_eq!(v.expose_str(), Some("ssm-user-v2"));
    assert_eq!(
        v.version(),
        Some("2"),
        "the parameter's version is the value's"
    );
    put(
        &east,
        "plainparam",
        "ssm-plain-value",
        ParameterType::String,
    )
    .await;
    assert_eq!(
        p.fetch(&ssm("plainparam")).await.unwrap().expose_str(),
        Some("ssm-plain-value")
    );
    secrets.extend(["ssm-user-v1", "ssm-user-v2", "ssm-plain-value"].map(String::from));

    // SecureString: decrypted by default. With withDecryption: false AWS
    // answers the ciphertext (its documentation: "Return decrypted values
    // for secure string parameters. This flag is ignored for String and
    // StringList parameter types."), never the plaintext.
    put(
        &east,
        "/app/db/password",
        "ssm-secure-pw-9c1e",
        ParameterType::SecureString,
    )
    .await;
    let v = p.fetch(&ssm("/app/db/password")).await.unwrap();
    assert_eq!(v.expose_str(), Some("ssm-secure-pw-9c1e"));
    let cipher = p.fetch(&ssm_encrypted("/app/db/password")).await.unwrap();
    assert_ne!(cipher.expose_str(), Some("ssm-secure-pw-9c1e"));
    assert!(!cipher.is_empty());
    assert_eq!(
        p.fetch(&ssm_encrypted("/app/db/user"))
            .await
            .unwrap()
            .expose_str(),
        Some("ssm-user-v2"),
        "a String is the same either way"
    );
    secrets.push("ssm-secure-pw-9c1e".into());

    // A missing parameter: NotFound naming it, not retried, no value.
    let e = p.fetch(&ssm("/app/missing")).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    assert!(
        e.to_string().contains("SSM parameter /app/missing")
            && e.to_string().contains("ParameterNotFound"),
        "{e}"
    );
    assert!(!e.is_retryable());
    assert_err_clean(&e, &strs(&secrets));

    // Many refs read together: GetParameters, ten names a call; a name AWS
    // does not know is named in its own error; the others still arrive.
    let mut refs = Vec::new();
    for i in 0..23 {
        let name = format!("/batch/p{i:02}");
        let value = format!("batch-value-{i:02}");
        let kind = if i % 2 == 0 {
            ParameterType::SecureString
        } else {
            ParameterType::String
        };
        put(&east, &name, &value, kind).await;
        secrets.push(value);
        refs.push(ssm(&name));
    }
    refs.insert(5, ssm("/batch/missing"));
    refs.push(ssm("/batch/p03"));
    refs.push(SecretRef::literal("not-an-ssm-ref"));
    refs.push(ssm_encrypted("/batch/p01"));
    let before = calls("GetParameters");
    let got = p.fetch_many(&refs).await;
    // 24 distinct names with decryption: three calls; one without.
    assert_eq!(calls("GetParameters") - before, 4);
    assert_eq!(got.len(), refs.len());
    for (r, v) in refs.iter().zip(&got) {
        match r {
            SecretRef::Ssm(s) if s.name == "/batch/missing" => {
                let e = v.as_ref().unwrap_err();
                assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
                assert!(
                    e.to_string().contains("SSM parameter /batch/missing"),
                    "{e}"
                );
                assert!(e.to_string().contains("InvalidParameters"), "{e}");
                assert_err_clean(e, &strs(&secrets));
            }
            SecretRef::Ssm(s) => {
                let i = &s.name["/batch/p".len()..];
                let v = v.as_ref().unwrap_or_else(|e| panic!("{r}: {e}"));
                assert_eq!(
                    v.expose_str(),
                    Some(format!("batch-value-{i}").as_str()),
                    "{r}"
                );
                assert_eq!(v.version(), Some("1"));
            }
            // Any other ref gets what `fetch` answers for it.
            _ => {
                let e = v.as_ref().unwrap_err();
                assert!(e.to_string().contains("cannot resolve a value"), "{e}");
            }
        }
    }

    // By path, more than one page (ten a page): directly below, and
    // recursively; SecureStrings decrypted, each with its version.
    for i in 0..13 {
        put(
            &east,
            &format!("/svc/top{i:02}"),
            &format!("top-value-{i:02}"),
            ParameterType::SecureString,
        )
        .await;
        secrets.push(format!("top-value-{i:02}"));
    }
    for i in 0..12 {
        put(
            &east,
            &format!("/svc/nested/deep/n{i:02}"),
            &format!("nested-value-{i:02}"),
            ParameterType::String,
        )
        .await;
        secrets.push(format!("nested-value-{i:02}"));
    }
    put(
        &east,
        "/svc/top00",
        "top-value-00",
        ParameterType::SecureString,
    )
    .await;
    let flat = SsmPath {
        path: "/svc/".into(),
        recursive: false,
        with_decryption: true,
    };
    let before = calls("GetParametersByPath");
    let params = p.ssm_parameters_by_path(&flat).await.expect("by path");
    assert!(
        calls("GetParametersByPath") - before >= 2,
        "pages are followed"
    );
    let mut found: Vec<(String, String, String)> = params
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                s.value.expose_str().unwrap().to_string(),
                s.version().unwrap().to_string(),
            )
        })
        .collect();
    found.sort();
    let want: Vec<(String, String, String)> = (0..13)
        .map(|i| {
            (
                format!("/svc/top{i:02}"),
                format!("top-value-{i:02}"),
                if i == 0 { "2" } else { "1" }.to_string(),
            )
        })
        .collect();
    assert_eq!(found, want);
    assert!(!format!("{params:?}").contains("top-value-"));
    let deep = p
        .ssm_parameters_by_path(&SsmPath {
            recursive: true,
            ..flat.clone()
        })
        .await
        .unwrap();
    assert_eq!(deep.len(), 25);
    assert!(deep.iter().any(
        |s| s.name == "/svc/nested/deep/n11" && s.value.expose_str() == Some("nested-value-11")
    ));
    let e = p
        .ssm_parameters_by_path(&SsmPath {
            path: "svc".into(),
            ..flat.clone()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidRef { ref field, .. } if field == "ssmRef.path"),
        "{e}"
    );

    // Failover: the primary region's endpoint is a closed port.
    admin(ep, "eu-west-1")
        .put_parameter()
        .name("/replicated")
        .value("ssm-replica-value")
        .r#type(ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    secrets.push("ssm-replica-value".into());
    let dead = format!("http://127.0.0.1:{}", unused_port());
    let fp = provider(
        "us-east-1",
        Some("eu-west-1"),
        &[("us-east-1", dead.as_str()), ("eu-west-1", ep)],
    );
    assert_eq!(
        fp.fetch(&ssm("/replicated")).await.unwrap().expose_str(),
        Some("ssm-replica-value")
    );
    assert!(support::logs().contains("trying the failover region"));
    let np = provider("us-east-1", None, &[("us-east-1", dead.as_str())]);
    let e = np.fetch(&ssm("/replicated")).await.unwrap_err();
    assert!(
        matches!(e, Error::Unavailable { .. }) && e.is_retryable(),
        "{e:?}"
    );
    // A 4xx in the primary (the parameter only in the failover region) stands.
    let both = provider(
        "us-east-1",
        Some("eu-west-1"),
        &[("us-east-1", ep), ("eu-west-1", ep)],
    );
    let e = both.fetch(&ssm("/replicated")).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");

    // Through the registry, from a config's ssmRef naming the aws provider.
    let yaml = "providers:\n  east: { type: aws, region: us-east-1 }\nsecrets:\n  - name: app\n    selector: { binary: app, uid: 1000 }\n    secretRefs:\n      - { name: DB_PASSWORD, source: { ssmRef: { name: /app/db/password, provider: east } } }\n";
    let cfg = kernelseal_config::parse_str(yaml, "ssm.yaml")
        .unwrap()
        .config;
    let r = cfg.secrets[0].value.secret_refs[0]
        .value
        .source
        .value
        .clone();
    let mut reg = Registry::from_config(&cfg).unwrap();
    reg.insert(
        "east",
        Arc::new(provider("us-east-1", None, &[("us-east-1", ep)])),
    );
    assert_eq!(
        reg.fetch(&r).await.unwrap().expose_str(),
        Some("ssm-secure-pw-9c1e")
    );

    // A cache over the registry reads a delivery's names together: twelve
    // names and a file, prefetched, cost two GetParameters calls (ten
    // names a call); the gets that follow are served from the cache.
    let mut names = Vec::new();
    for i in 0..12 {
        let name = format!("/prefetch/p{i:02}");
        put(
            &east,
            &name,
            &format!("prefetched-{i}"),
            ParameterType::SecureString,
        )
        .await;
        names.push(SecretRef::Ssm(SsmRef {
            provider: Some("east".into()),
            name,
            with_decryption: true,
            ttl: None,
        }));
    }
    let cache = kernelseal_providers::Cache::new(Arc::new(reg), Default::default());
    let before = calls("GetParameters");
    // "GetParameter" also matches the lines of GetParameters.
    let single = calls("GetParameter") - calls("GetParameters");
    cache.prefetch(&names).await;
    assert_eq!(calls("GetParameters") - before, 2);
    for (i, r) in names.iter().enumerate() {
        let v = cache.get(r).await.unwrap();
        assert_eq!(v.expose_str(), Some(format!("prefetched-{i}").as_str()));
    }
    assert_eq!(calls("GetParameters") - before, 2, "the gets hit the cache");
    assert_eq!(
        calls("GetParameter") - calls("GetParameters"),
        single,
        "no single reads either"
    );

    // No value reached the logs.
    assert_no_leak("", &strs(&secrets));
    drop(moto);
}

fn strs(values: &[String]) -> Vec<&str> {
    values.iter().map(String::as_str).collect()
}

/// `ssmEndpoints` is read from a provider's settings, and Secrets
/// Manager's `endpoints` are not taken for SSM.
#[test]
fn ssm_endpoints_are_their_own_setting() {
    let spec: kernelseal_config::ProviderSpec = serde_json::from_value(serde_json::json!({
        "type": "aws",
        "endpoints": { "us-east-1": "https://secretsmanager.example" },
        "ssmEndpoints": { "us-east-1": "https://ssm.example" },
    }))
    .unwrap();
    let kernelseal_providers::ProviderSettings::Aws(s) =
        kernelseal_providers::ProviderSettings::parse("a", &spec).unwrap()
    else {
        panic!("not aws");
    };
    assert_eq!(s.ssm_endpoints["us-east-1"], "https://ssm.example");
    assert_eq!(s.endpoints["us-east-1"], "https://secretsmanager.example");
    let spec: kernelseal_config::ProviderSpec = serde_json::from_value(serde_json::json!({
        "type": "aws",
        "ssmEndpoints": { "us-east-1": "ssm.example" },
    }))
    .unwrap();
    let e = kernelseal_providers::ProviderSettings::parse("a", &spec).unwrap_err();
    assert!(
        e.to_string().contains("providers.a.ssmEndpoints.us-east-1"),
        "{e}"
    );
}
