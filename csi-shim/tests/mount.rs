//! The provider over a real unix socket with a tonic client: Version,
//! Mount with env/file sources, permissions, rotation, all-or-nothing and
//! bad input.

mod support;

use std::os::unix::fs::PermissionsExt;

use kernelseal_csi::LocalPolicy;
use kernelseal_csi::proto::VersionRequest;
use support::{Server, assert_clean, attributes, request};
use tonic::Code;

fn policy(dir: &std::path::Path) -> LocalPolicy {
    LocalPolicy {
        env_prefixes: vec!["KS_CSI_".into()],
        file_dirs: vec![dir.to_path_buf()],
        aws_node_credentials: false,
    }
}

const SECRETS: &[&str] = &[
    "env-secret-alpha-1",
    "env-secret-bravo-2",
    "never-served-9999",
    "file-secret",
    "fixture-db-password-4711",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version() {
    let keys = tempfile::tempdir().unwrap();
    let mut s = Server::start(LocalPolicy::default(), &keys.path().join("k")).await;
    let v = s
        .client
        .version(VersionRequest {
            version: "v1alpha1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.version, "v1alpha1");
    assert_eq!(v.runtime_name, "kernelseal");
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_mount_env_and_file() {
    let data = tempfile::tempdir().unwrap();
    let fx = support::fixture(data.path());
    let mut s = Server::start(policy(data.path()), &fx.key_file).await;
    let resp = s
        .client
        .mount(fx.request.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(resp.error.is_none());
    let expected = fx.json["expected"].as_array().unwrap();
    assert_eq!(resp.files.len(), expected.len());
    for (f, e) in resp.files.iter().zip(expected) {
        assert_eq!(f.path, e["path"].as_str().unwrap());
        assert_eq!(f.mode as i64, e["mode"].as_i64().unwrap(), "{}", f.path);
        assert_eq!(
            f.contents,
            support::hex(e["contents_hex"].as_str().unwrap())
        );
    }
    let ids: Vec<&str> = resp.object_version.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, ["db-password", "config/api.json", "tls/key.bin"]);
    for v in &resp.object_version {
        // base64url of 32 bytes, no padding; reveals nothing of the value.
        assert_eq!(v.version.len(), 43, "{}", v.version);
        assert!(
            v.version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }
    let again = s
        .client
        .mount(fx.request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.object_version, resp.object_version);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_same_key_file_across_restart() {
    let data = tempfile::tempdir().unwrap();
    let key = data.path().join("state/hmac.key");
    std::fs::write(data.path().join("rot"), "file-secret-v1").unwrap();
    let objects = format!(
        "- objectName: a\n  env: KS_CSI_TEST_A\n- objectName: rot\n  file: {}/rot\n",
        data.path().display()
    );
    let req = request(attributes(&objects, &[], &[]));
    let mut s = Server::start(policy(data.path()), &key).await;
    let first = s.client.mount(req.clone()).await.unwrap().into_inner();
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "generated key file mode");
    s.stop().await;

    // Restart with the same key file: same content, same versions.
    let mut s = Server::start(policy(data.path()), &key).await;
    let second = s.client.mount(req.clone()).await.unwrap().into_inner();
    assert_eq!(first.object_version, second.object_version);

    // Change the file: only its version changes, and it shows at once
    // (local sources are re-read on every Mount).
    std::fs::write(data.path().join("rot"), "file-secret-v2").unwrap();
    let third = s.client.mount(req.clone()).await.unwrap().into_inner();
    assert_eq!(third.object_version[0], first.object_version[0]);
    assert_ne!(
        third.object_version[1].version,
        first.object_version[1].version
    );
    assert_eq!(third.files[1].contents, b"file-secret-v2");
    s.stop().await;

    // Another key: other versions for the same content.
    let other = data.path().join("other.key");
    std::fs::write(data.path().join("rot"), "file-secret-v1").unwrap();
    let mut s = Server::start(policy(data.path()), &other).await;
    let fourth = s.client.mount(req).await.unwrap().into_inner();
    assert_ne!(
        fourth.object_version[0].version,
        first.object_version[0].version
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_and_socket() {
    let data = tempfile::tempdir().unwrap();
    let objects = "- objectName: a\n  env: KS_CSI_TEST_A\n- objectName: b\n  env: KS_CSI_TEST_B\n  filePermission: \"0400\"\n";
    let mut req = request(attributes(objects, &[], &[]));
    req.permission = "416".into(); // 0640
    let mut s = Server::start(policy(data.path()), &data.path().join("k")).await;
    let mode = std::fs::metadata(&s.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode");
    let resp = s.client.mount(req).await.unwrap().into_inner();
    assert_eq!(resp.files[0].mode, 0o640);
    assert_eq!(resp.files[1].mode, 0o400);

    // A live socket is not removed by a second provider.
    let e = kernelseal_csi::bind_socket(&s.socket, None).unwrap_err();
    assert!(e.to_string().contains("another process is serving"), "{e}");
    let socket = s.socket.clone();
    let dir = s.stop().await;

    // A stale socket (nobody answers) is replaced.
    let stale = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    drop(stale);
    assert!(socket.exists());
    let mut s = Server::start_at(
        dir,
        socket.clone(),
        policy(data.path()),
        &data.path().join("k"),
    )
    .await;
    s.client
        .version(VersionRequest {
            version: "v1alpha1".into(),
        })
        .await
        .unwrap();
    s.stop().await;

    // Anything but a socket is never removed.
    let plain = data.path().join("not-a-socket");
    std::fs::write(&plain, "keep me").unwrap();
    let e = kernelseal_csi::bind_socket(&plain, None).unwrap_err();
    assert!(e.to_string().contains("not a socket"), "{e}");
    assert_eq!(std::fs::read_to_string(&plain).unwrap(), "keep me");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_sources_off_unless_allowed_and_all_or_nothing() {
    let data = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("x"), "file-secret-outside").unwrap();
    std::os::unix::fs::symlink(outside.path().join("x"), data.path().join("link")).unwrap();
    let mut s = Server::start(policy(data.path()), &data.path().join("k")).await;
    let cases = [
        (
            "- objectName: a\n  env: KS_CSI_TEST_A\n- objectName: o\n  env: OTHER_SECRET\n",
            "object o: refused: env source not served",
        ),
        (
            &*format!(
                "- objectName: a\n  env: KS_CSI_TEST_A\n- objectName: f\n  file: {}/x\n",
                outside.path().display()
            ),
            "object f: refused: file source not served",
        ),
        (
            &*format!(
                "- objectName: a\n  env: KS_CSI_TEST_A\n- objectName: l\n  file: {}/link\n",
                data.path().display()
            ),
            "object l: refused: file source not served",
        ),
    ];
    for (objects, want) in cases {
        let e = s
            .client
            .mount(request(attributes(objects, &[], &[])))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(e.message().starts_with(want), "{}", e.message());
        assert_clean(&format!("{e:?}"), SECRETS);
        assert_clean(&format!("{e:?}"), &["file-secret-outside"]);
    }
    // Nothing allowed at all: env objects are refused by default.
    let keys = tempfile::tempdir().unwrap();
    let mut closed = Server::start(LocalPolicy::default(), &keys.path().join("k")).await;
    let e = closed
        .client
        .mount(request(attributes(
            "- objectName: a\n  env: KS_CSI_TEST_A\n",
            &[],
            &[],
        )))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    closed.stop().await;
    // A fetch failure late in the list fails the whole Mount.
    let e = s
        .client
        .mount(request(attributes(
            "- objectName: a\n  env: KS_CSI_TEST_A\n- objectName: m\n  env: KS_CSI_TEST_MISSING\n",
            &[],
            &[],
        )))
        .await
        .unwrap_err();
    assert!(e.message().starts_with("object m: "), "{}", e.message());
    assert_clean(&format!("{e:?}"), SECRETS);
    let text = s.metrics.encode();
    assert!(
        text.contains("kernelseal_csi_mounts_total{outcome=\"InvalidParameters\"}"),
        "{text}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_parameter_and_object() {
    let data = tempfile::tempdir().unwrap();
    let mut s = Server::start(policy(data.path()), &data.path().join("k")).await;
    let vault = [("vaultAddress", "http://127.0.0.1:1"), ("roleName", "app")];
    let cases: Vec<(String, Code, &str)> = vec![
        (
            "{not json".into(),
            Code::InvalidArgument,
            "attributes: not a JSON map",
        ),
        (
            attributes("objectName: a\nenv: KS_CSI_TEST_A\n", &[], &[]),
            Code::InvalidArgument,
            "parameter objects: not a YAML list",
        ),
        (
            attributes(
                "- objectName: a\n  env: KS_CSI_TEST_A\n- objectName: a\n  env: KS_CSI_TEST_B\n",
                &[],
                &[],
            ),
            Code::InvalidArgument,
            "object a: objectName: duplicate",
        ),
        (
            attributes("- objectName: ../a\n  env: KS_CSI_TEST_A\n", &[], &[]),
            Code::InvalidArgument,
            "object objects[0]: objectName: \"../a\"",
        ),
        (
            attributes("- objectName: x/../../a\n  env: KS_CSI_TEST_A\n", &[], &[]),
            Code::InvalidArgument,
            "object objects[0]: objectName: \"x/../../a\"",
        ),
        (
            attributes(
                "- objectName: \"a\\nINFO forged\"\n  env: KS_CSI_TEST_A\n",
                &[],
                &[],
            ),
            Code::InvalidArgument,
            "object objects[0]: objectName: holds the control character U+000A",
        ),
        (
            attributes("- objectName: /etc/a\n  env: KS_CSI_TEST_A\n", &[], &[]),
            Code::InvalidArgument,
            "object objects[0]: objectName: \"/etc/a\"",
        ),
        (
            attributes(
                "- objectName: a\n  gcpSecret: projects/p/secrets/s\n",
                &[],
                &[],
            ),
            Code::InvalidArgument,
            "object a: gcpSecret: unknown key",
        ),
        (
            attributes("- objectName: a\n", &[], &[]),
            Code::InvalidArgument,
            "object a: source: none given",
        ),
        (
            attributes(
                "- objectName: a\n  env: KS_CSI_TEST_A\n  filePermission: rw-r--r--\n",
                &[],
                &[],
            ),
            Code::InvalidArgument,
            "object a: filePermission:",
        ),
        (
            attributes(
                "- objectName: v\n  vaultPath: secret/data/app\n  vaultKey: k\n",
                &vault,
                &[],
            ),
            Code::PermissionDenied,
            "object v: no service-account token for audience \"vault\"",
        ),
        (
            attributes(
                "- objectName: v\n  vaultPath: secret/data/app\n  vaultKey: k\n",
                &[],
                &[("vault", "tok")],
            ),
            Code::InvalidArgument,
            "parameter vaultAddress: missing",
        ),
        (
            attributes(
                "- objectName: s\n  awsSecretId: prod/app\n",
                &[("roleArn", "arn:aws:iam::123456789012:role/web")],
                &[],
            ),
            Code::PermissionDenied,
            "object s: no service-account token for audience \"sts.amazonaws.com\"",
        ),
        (
            attributes("- objectName: s\n  awsSecretId: prod/app\n", &[], &[]),
            Code::PermissionDenied,
            "object s: refused: parameter roleArn is missing",
        ),
    ];
    for (attrs, code, want) in cases {
        let e = s.client.mount(request(attrs.clone())).await.unwrap_err();
        assert_eq!(e.code(), code, "{attrs}: {e:?}");
        assert!(
            e.message().starts_with(want),
            "want {want:?}, got {:?}",
            e.message()
        );
        assert_clean(&format!("{e:?}"), SECRETS);
    }
    // permission (the request's default mode) not a number
    let mut req = request(attributes(
        "- objectName: a\n  env: KS_CSI_TEST_A\n",
        &[],
        &[],
    ));
    req.permission = "rw-r--r--".into();
    let e = s.client.mount(req).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("permission: "), "{}", e.message());
    // Unknown parameters are warnings, not errors; driver keys are ignored.
    let ok = s
        .client
        .mount(request(attributes(
            "- objectName: a\n  env: KS_CSI_TEST_A\n",
            &[("someFutureSetting", "x")],
            &[],
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.files.len(), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_over_4mib_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let mut objects = String::new();
    for i in 0..5 {
        std::fs::write(data.path().join(format!("big{i}")), vec![b'x'; 1000 * 1000]).unwrap();
        objects.push_str(&format!(
            "- objectName: big{i}\n  file: {}/big{i}\n",
            data.path().display()
        ));
    }
    let mut s = Server::start(policy(data.path()), &data.path().join("k")).await;
    let e = s
        .client
        .mount(request(attributes(&objects, &[], &[])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(
        e.message().contains("4194304-byte gRPC limit"),
        "{}",
        e.message()
    );
    s.stop().await;
}

/// Versions are keyed by namespace: the same class and content mounted in
/// two namespaces gives two versions, so a version seen in one namespace
/// says nothing about another's secret; in one namespace it stays stable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_differ_across_namespaces() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("shared"), "same-content").unwrap();
    let objects = format!(
        "- objectName: a\n  file: {}/shared\n",
        data.path().display()
    );
    let shop = attributes(&objects, &[], &[]);
    let other = shop.replace("\"shop\"", "\"other\"");
    assert_ne!(shop, other);
    let mut s = Server::start(policy(data.path()), &data.path().join("k")).await;
    let a = s
        .client
        .mount(request(shop.clone()))
        .await
        .unwrap()
        .into_inner();
    let b = s.client.mount(request(other)).await.unwrap().into_inner();
    let again = s.client.mount(request(shop)).await.unwrap().into_inner();
    assert_eq!(a.files[0].contents, b.files[0].contents);
    assert_ne!(a.object_version[0].version, b.object_version[0].version);
    assert_eq!(a.object_version, again.object_version);
    s.stop().await;
}
