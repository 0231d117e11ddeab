//! AWS objects against moto in server mode: the pod's web identity
//! (`AssumeRoleWithWebIdentity` with its `sts.amazonaws.com` token, then
//! `GetSecretValue` or SSM's `GetParameter`), and node credentials only
//! behind the flag.

mod support;

use aws_credential_types::Credentials;
use kernelseal_csi::LocalPolicy;
use kernelseal_testkit::Moto;
use support::{Server, assert_clean, attributes, request};
use tonic::Code;

const STS_JWT: &str = "eyJ.web-pod-token-for-sts.sig";

/// A Mount of `objects` (one object, `gone`, that does not exist) fails
/// NotFound naming the object, with neither the pod's token nor `secret`
/// in the error.
async fn missing_is_not_found(
    s: &mut Server,
    objects: &str,
    params: &[(&str, &str)],
    secret: &str,
) {
    let e = s
        .client
        .mount(request(attributes(
            objects,
            params,
            &[("sts.amazonaws.com", STS_JWT)],
        )))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().starts_with("object gone: "), "{}", e.message());
    assert_clean(&format!("{e:?}"), &[STS_JWT, secret]);
}

#[test]
fn aws_web_identity_and_node_credentials_against_moto() {
    support::init();
    let Some(moto) = Moto::start("CSI AWS TESTS") else {
        return;
    };
    let endpoint = moto.endpoint.clone();
    // Before any runtime thread exists: the SDK reads these at client build.
    // SAFETY: single-threaded at this point of this test binary.
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL", &endpoint);
        std::env::set_var("AWS_ACCESS_KEY_ID", "node-testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "node-testing");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let conf = aws_sdk_secretsmanager::config::Builder::new()
            .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
            .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
            .credentials_provider(Credentials::new("admin", "admin", None, None, "test"))
            .endpoint_url(&endpoint)
            .build();
        let sm = aws_sdk_secretsmanager::Client::from_conf(conf);
        sm.create_secret()
            .name("prod/web")
            .secret_string(r#"{"token":"aws-json-token-1","user":"web"}"#)
            .send()
            .await
            .expect("create secret");

        let keys = tempfile::tempdir().unwrap();
        let mut s = Server::start(LocalPolicy::default(), &keys.path().join("k")).await;
        let objects = "- objectName: token\n  awsSecretId: prod/web\n  jsonKey: token\n- objectName: whole.json\n  awsSecretId: prod/web\n";
        let params = [
            ("region", "us-east-1"),
            ("roleArn", "arn:aws:iam::123456789012:role/web"),
        ];
        let req = request(attributes(objects, &params, &[("sts.amazonaws.com", STS_JWT)]));
        let r = s.client.mount(req.clone()).await.expect("mount").into_inner();
        assert_eq!(r.files[0].contents, b"aws-json-token-1");
        assert_eq!(r.files[1].contents, br#"{"token":"aws-json-token-1","user":"web"}"#);
        let again = s.client.mount(req).await.unwrap().into_inner();
        assert_eq!(again.object_version, r.object_version);

        // SSM parameters, with the same identity: a String, a
        // SecureString decrypted (the default), a missing one.
        let ssm_conf = aws_sdk_ssm::config::Builder::new()
            .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
            .region(aws_sdk_ssm::config::Region::new("us-east-1"))
            .credentials_provider(Credentials::new("admin", "admin", None, None, "test"))
            .endpoint_url(&endpoint)
            .build();
        let ssm = aws_sdk_ssm::Client::from_conf(ssm_conf);
        for (name, value, kind) in [
            ("/prod/web/url", "https://db.internal:5432", aws_sdk_ssm::types::ParameterType::String),
            ("/prod/web/db-password", "ssm-secure-password-7", aws_sdk_ssm::types::ParameterType::SecureString),
        ] {
            ssm.put_parameter()
                .name(name)
                .value(value)
                .r#type(kind)
                .send()
                .await
                .expect("put parameter");
        }
        let ssm_objects = "- objectName: url\n  ssmParameter: /prod/web/url\n- objectName: db-password\n  ssmParameter: /prod/web/db-password\n";
        let r = s
            .client
            .mount(request(attributes(ssm_objects, &params, &[("sts.amazonaws.com", STS_JWT)])))
            .await
            .expect("mount SSM objects")
            .into_inner();
        assert_eq!(r.files[0].contents, b"https://db.internal:5432");
        assert_eq!(r.files[1].contents, b"ssm-secure-password-7");
        missing_is_not_found(
            &mut s,
            "- objectName: gone\n  ssmParameter: /prod/web/none\n",
            &params,
            "ssm-secure-password-7",
        )
        .await;

        // A missing secret: an error naming the object.
        missing_is_not_found(
            &mut s,
            "- objectName: gone\n  awsSecretId: prod/none\n",
            &params,
            "aws-json-token-1",
        )
        .await;

        // Without roleArn: refused, unless node credentials are allowed.
        let node = request(attributes(objects, &[("region", "us-east-1")], &[]));
        let e = s.client.mount(node.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        s.stop().await;
        let keys2 = tempfile::tempdir().unwrap();
        let mut s = Server::start(
            LocalPolicy {
                aws_node_credentials: true,
                ..LocalPolicy::default()
            },
            &keys2.path().join("k"),
        )
        .await;
        let r = s.client.mount(node).await.expect("node credentials").into_inner();
        assert_eq!(r.files[0].contents, b"aws-json-token-1");
        s.stop().await;
    });
}
