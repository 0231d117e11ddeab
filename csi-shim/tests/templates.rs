//! `template` objects over the real socket: rendered over the values of
//! other objects of the class (a JSON file as a map, an environment
//! variable as a string); a class whose template reads an unknown name or
//! names a missing object is refused naming the object and the key, and no
//! error carries a value.

mod support;

use std::path::Path;

use kernelseal_csi::LocalPolicy;
use support::{Server, attributes, request};

const PASSWORD: &str = "p@ss-template-s3cret";

fn policy(dir: &Path) -> LocalPolicy {
    LocalPolicy {
        env_prefixes: vec!["KS_TEMPLATE_TEST_".into()],
        file_dirs: vec![dir.to_path_buf()],
        aws_node_credentials: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_object_is_rendered_over_the_class_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(tmp.path()).unwrap();
    let creds = dir.join("db.json");
    std::fs::write(
        &creds,
        format!(r#"{{"username":"app","password":"{PASSWORD}"}}"#),
    )
    .unwrap();
    // SAFETY: set before the server starts; no other thread reads it yet.
    unsafe { std::env::set_var("KS_TEMPLATE_TEST_HOST", "db.internal") };
    let keys = tempfile::tempdir().unwrap();
    let mut s = Server::start(policy(&dir), &keys.path().join("k")).await;

    let objects = format!(
        r#"- objectName: db.json
  file: {}
- objectName: host
  env: KS_TEMPLATE_TEST_HOST
- objectName: database-url
  template: "postgresql://{{{{ db.username }}}}:{{{{ db.password | percent_encode }}}}@{{{{ host }}}}:5432/app"
  templateRefs: "db=db.json, host=host"
  filePermission: "0400"
"#,
        creds.display()
    );
    let resp = s
        .client
        .mount(request(attributes(&objects, &[], &[])))
        .await
        .unwrap()
        .into_inner();
    let url = resp
        .files
        .iter()
        .find(|f| f.path == "database-url")
        .expect("the template's file");
    assert_eq!(
        String::from_utf8_lossy(&url.contents),
        "postgresql://app:p%40ss-template-s3cret@db.internal:5432/app"
    );
    assert_eq!(url.mode, 0o400);
    // The objects it reads are mounted as well, in the class's order.
    let paths: Vec<&str> = resp.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["db.json", "host", "database-url"]);
    assert!(resp.object_version.iter().any(|v| v.id == "database-url"));

    // A key the value does not have: the Mount fails naming the object,
    // the ref and the key, and nothing of the value.
    let missing = objects.replace("db.username", "db.user");
    let e = s
        .client
        .mount(request(attributes(&missing, &[], &[])))
        .await
        .unwrap_err();
    assert!(
        e.message().contains("database-url") && e.message().contains("user"),
        "{e:?}"
    );
    assert!(!e.message().contains(PASSWORD), "{e:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_class_that_cannot_render_is_refused_before_any_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let mut s = Server::start(policy(tmp.path()), &keys.path().join("k")).await;
    let cases = [
        (
            "- objectName: t\n  template: \"{{ nope }}\"\n  templateRefs: \"db=x\"\n- objectName: x\n  env: KS_TEMPLATE_TEST_HOST\n",
            "reads nope, which templateRefs does not name",
        ),
        (
            "- objectName: t\n  template: \"{{ db }}\"\n  templateRefs: \"db=missing\"\n",
            "db=missing: no object of the class is named missing",
        ),
        (
            "- objectName: t\n  template: \"{{ db }\"\n  templateRefs: \"db=x\"\n- objectName: x\n  env: KS_TEMPLATE_TEST_HOST\n",
            "does not compile",
        ),
        (
            "- objectName: t\n  template: \"{{ db }}\"\n  templateRefs: \"db=u\"\n- objectName: u\n  template: \"{{ h }}\"\n  templateRefs: \"h=x\"\n- objectName: x\n  env: KS_TEMPLATE_TEST_HOST\n",
            "db=u: u is a template",
        ),
        (
            "- objectName: t\n  template: \"{{ db }}\"\n  templateRefs: \"db x\"\n",
            "is not name=objectName",
        ),
    ];
    for (objects, want) in cases {
        let e = s
            .client
            .mount(request(attributes(objects, &[], &[])))
            .await
            .unwrap_err();
        assert!(e.message().contains(want), "{objects}: {e:?}");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{objects}: {e:?}");
    }
    s.stop().await;
}
