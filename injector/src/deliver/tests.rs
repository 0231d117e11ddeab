//! The pipeline without a kernel (`mode: disabled`: no marks) and without
//! a secrets directory: what each occasion selects, gets and is refused.

use std::sync::Arc;

use kernelseal_providers::identity::PodReads;
use kernelseal_providers::{Cache, Registry};

use super::*;
use crate::error::{FilesProblem, InjectError};
use crate::pod_identity::PodRequired;

pub(super) fn state(secrets: &str) -> ServingState {
    let text = format!("policy:\n  mode: disabled\nsecrets:\n{secrets}");
    let config = kernelseal_config::parse_str(&text, "t").unwrap().config;
    let registry = Registry::from_config(&config).unwrap();
    let pod_reads = PodReads::from_config(&config, Default::default(), Arc::default()).unwrap();
    ServingState {
        bindings: crate::prepare(&config),
        cache: Cache::new(Arc::new(registry), Default::default()),
        pod_reads: Arc::new(pod_reads),
        marks: None,
        enforce: false,
        metrics: Arc::default(),
        live: Arc::default(),
        leases: crate::LeaseTable::new(None, Default::default()),
        files: None,
        stop_watch: None,
        pods: None,
        pod_identity: config.pod_identity,
    }
}

/// This test process, as a socket peer.
pub(super) fn me() -> Caller {
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    Caller::of(&a).unwrap()
}

/// Why planning for `occasion` refuses.
async fn plan_refused(s: &ServingState, caller: &Caller, occasion: Occasion<'_>) -> Refusal {
    match plan(s, caller, occasion).await {
        Ok(_) => panic!("planned, not refused"),
        Err(r) => r,
    }
}

const UNSET: &str = "KERNELSEAL_DELIVER_TEST_UNSET";

#[tokio::test]
async fn a_request_gets_its_environment_unprotected_in_mode_disabled() {
    let s = state(
        "  - name: app\n    selector: { binary: app }\n    secretRefs:\n      - { name: A, source: { value: one } }\n",
    );
    let d = deliver(
        &s,
        &me(),
        Occasion::Request {
            binary: "/usr/bin/app",
            tokens: &[],
        },
    )
    .await
    .unwrap();
    assert_eq!(d.bindings, ["app"]);
    assert_eq!(d.env.len(), 1);
    assert_eq!(
        (d.env[0].name.as_str(), d.env[0].value.as_str()),
        ("A", "one")
    );
    assert!(!d.protected);
    assert_eq!(s.metrics.secrets_injected.get(), 1);
    assert_eq!(s.live.len(), 1, "tracked for rotations");
}

#[tokio::test]
async fn a_request_is_refused_when_none_of_a_binding_s_secrets_can_be_had() {
    let s = state(&format!(
        "  - name: app\n    selector: {{ binary: app }}\n    secretRefs:\n      - {{ name: A, source: {{ envRef: {UNSET} }} }}\n"
    ));
    let refusal = deliver(
        &s,
        &me(),
        Occasion::Request {
            binary: "app",
            tokens: &[],
        },
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(refusal, Refusal::Unresolved { .. }), "{refusal:?}");
    assert!(
        refusal
            .reason()
            .starts_with("no secret of binding \"app\" could be resolved: A: "),
        "{}",
        refusal.reason()
    );
    assert!(
        !refusal.retry(),
        "an unset variable is the source's answer, not an outage"
    );
    assert_eq!(s.live.len(), 0, "nothing released");
}

#[tokio::test]
async fn no_binding_and_a_name_from_two_bindings_are_refused_before_any_fetch() {
    let s = state(
        "  - name: a\n    selector: { binary: app }\n    secretRefs:\n      - { name: X, source: { value: one } }\n  - name: b\n    selector: { binary: app }\n    secretRefs:\n      - { name: X, source: { value: two } }\n",
    );
    let caller = me();
    let none = plan_refused(
        &s,
        &caller,
        Occasion::Request {
            binary: "other",
            tokens: &[],
        },
    )
    .await;
    assert_eq!(
        none.reason(),
        format!(
            "no binding matched: PID {} (other, uid {})",
            caller.pid, caller.uid
        )
    );
    assert!(!none.retry());
    let shared = plan_refused(
        &s,
        &caller,
        Occasion::Request {
            binary: "app",
            tokens: &[],
        },
    )
    .await;
    assert_eq!(
        shared.reason(),
        "X is delivered by both binding \"a\" and \"b\": a config error"
    );
    assert!(!shared.retry());
}

#[tokio::test]
async fn an_exec_is_offered_only_file_bindings_that_name_a_program() {
    let s = state(
        "  - name: env\n    selector: { binary: app }\n    secretRefs:\n      - { name: A, source: { value: one } }\n  - name: anyone\n    delivery: file\n    selector: { uid: 0 }\n    secretRefs:\n      - { name: b.txt, source: { value: two } }\n  - name: named\n    delivery: file\n    selector: { binary: app }\n    secretRefs:\n      - { name: c.txt, source: { value: three } }\n",
    );
    let offered: Vec<&str> = s
        .bindings
        .iter()
        .filter(|b| {
            Occasion::Exec {
                filename: "/usr/bin/app",
            }
            .offers(b)
        })
        .map(|b| b.name.as_str())
        .collect();
    assert_eq!(offered, ["named"]);
    // A binding that reads as the pod needs a token, which no exec brings:
    // never offered there, even if a config got past validation.
    let mut as_pod = s.bindings[2].clone();
    as_pod.identity.mode = kernelseal_config::IdentityMode::Pod;
    assert!(
        !Occasion::Exec {
            filename: "/usr/bin/app"
        }
        .offers(&as_pod)
    );
    assert!(s.bindings.iter().all(|b| {
        Occasion::Request {
            binary: "app",
            tokens: &[],
        }
        .offers(b)
    }));
    // Planned like a request, then refused at the write: this state has
    // no secrets directory.
    let caller = me();
    let p = plan(
        &s,
        &caller,
        Occasion::Exec {
            filename: "/usr/bin/app",
        },
    )
    .await
    .unwrap();
    assert_eq!(p.selected.len(), 1);
    assert_eq!(p.files.len(), 1);
    let refusal = release(
        &s,
        &caller,
        Occasion::Exec {
            filename: "/usr/bin/app",
        },
        p,
    )
    .err()
    .unwrap();
    assert!(
        matches!(
            &refusal,
            Refusal::Files(InjectError::Files {
                problem: FilesProblem::Refused(_),
                ..
            })
        ),
        "{refusal:?}"
    );
    assert_eq!(
        refusal.reason(),
        "writing the secret files failed: secret files at (none): no secrets directory is \
         open: the config had no delivery: file binding"
    );
    assert!(refusal.retry());
}

#[tokio::test]
async fn an_exec_takes_what_it_can_and_counts_each_secret_it_could_not_get() {
    let s = state(&format!(
        "  - name: named\n    delivery: file\n    selector: {{ binary: app }}\n    secretRefs:\n      - {{ name: a.txt, source: {{ envRef: {UNSET} }} }}\n      - {{ name: b.txt, source: {{ value: two }} }}\n"
    ));
    let caller = me();
    let p = plan(&s, &caller, Occasion::Exec { filename: "app" })
        .await
        .unwrap();
    assert_eq!(p.files.len(), 1, "the one that could be had");
    assert_eq!(s.metrics.secrets_denied.get(), 1);
    let s = state(&format!(
        "  - name: named\n    delivery: file\n    selector: {{ binary: app }}\n    secretRefs:\n      - {{ name: a.txt, source: {{ envRef: {UNSET} }} }}\n"
    ));
    let refusal = plan_refused(&s, &caller, Occasion::Exec { filename: "app" }).await;
    assert!(matches!(refusal, Refusal::NothingFetched), "{refusal:?}");
    assert_eq!(s.metrics.secrets_denied.get(), 1);
}

#[test]
fn pod_identity_refusals_say_whether_the_pod_may_yet_be_listed() {
    let unknown = Refusal::from(PodRequired::UnknownPod {
        pod_uid: "1b2c".into(),
    });
    assert_eq!(
        unknown.reason(),
        "podIdentity: required and pod 1b2c is not (yet) known on this node"
    );
    assert!(unknown.retry());
    let outside = Refusal::from(PodRequired::NotInPod);
    assert_eq!(
        outside.reason(),
        "podIdentity: required and the caller is not in a Kubernetes pod"
    );
    assert!(!outside.retry());
}

// Expansion: one entry, many names, known only after the fetch.

fn request() -> Occasion<'static> {
    Occasion::Request {
        binary: "app",
        tokens: &[],
    }
}

fn env_of(d: &Delivered) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = d
        .env
        .iter()
        .map(|v| (v.name.clone(), v.value.clone()))
        .collect();
    env.sort();
    env
}

#[tokio::test]
async fn keys_all_and_jmes_path_deliver_each_value_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("db.json");
    std::fs::write(
        &json,
        r#"{"user":"app","pass-word":"s3cr3t-x","db":{"port":5432,"hosts":["a","b"]}}"#,
    )
    .unwrap();
    let s = state(&format!(
        "  - name: app\n    selector: {{ binary: app }}\n    secretRefs:\n      - {{ keys: all, prefix: DB_, source: {{ fileRef: {p} }} }}\n      - {{ jmesPath: [{{ path: 'db.hosts[-1]', name: HOST }}, {{ path: user, name: LOGIN }}], source: {{ fileRef: {p} }} }}\n      - {{ name: PLAIN, source: {{ value: one }} }}\n",
        p = json.display()
    ));
    let d = deliver(&s, &me(), request()).await.unwrap();
    assert_eq!(
        env_of(&d),
        [
            ("DB_db", r#"{"hosts":["a","b"],"port":5432}"#),
            ("DB_pass_word", "s3cr3t-x"),
            ("DB_user", "app"),
            ("HOST", "b"),
            ("LOGIN", "app"),
            ("PLAIN", "one"),
        ]
        .map(|(n, v)| (n.to_string(), v.to_string()))
    );
    assert_eq!(s.metrics.secrets_injected.get(), 6);
    assert!(d.missing.is_empty(), "{:?}", d.warnings);
}

#[tokio::test]
async fn rotation_keys_cover_every_expanded_name() {
    let s = state(
        "  - name: app\n    selector: { binary: app }\n    secretRefs:\n      - { keys: all, source: { value: '{\"A\":\"1\",\"B\":\"2\"}' } }\n      - { jmesPath: [{ path: B, name: C }], source: { envRef: KERNELSEAL_EXPAND_TEST } }\n",
    );
    // SAFETY: set before any thread of this test reads the environment;
    // the variable is this test's own.
    unsafe { std::env::set_var("KERNELSEAL_EXPAND_TEST", r#"{"B":"3"}"#) };
    let p = plan(&s, &me(), request()).await.unwrap();
    let keys: Vec<(&str, &str, Option<&str>)> = p.rotation_keys[0]
        .iter()
        .map(|k| {
            (
                k.name.as_str(),
                k.key.as_str(),
                k.part.as_ref().map(|p| p.as_str()),
            )
        })
        .collect();
    // A literal is never rotated (it has no cache key); the envRef's one
    // name is announced under the ref's key, with where it sits.
    assert_eq!(
        keys,
        [("C", "envRef KERNELSEAL_EXPAND_TEST", Some("B"))],
        "{keys:?}"
    );
    let names: Vec<&str> = p.env.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["A", "B", "C"]);
}

#[tokio::test]
async fn an_expanded_name_twice_is_refused_naming_the_bindings() {
    let entry = r#"{ keys: all, source: { value: '{"X":"from-json"}' } }"#;
    let within = state(&format!(
        "  - name: a\n    selector: {{ binary: app }}\n    secretRefs:\n      - {{ name: X, source: {{ value: one }} }}\n      - {entry}\n"
    ));
    let refusal = plan_refused(&within, &me(), request()).await;
    assert_eq!(
        refusal.reason(),
        "X is delivered twice by binding \"a\" (an expanded key and another entry): a config error"
    );
    assert!(!refusal.retry());
    let across = state(&format!(
        "  - name: a\n    selector: {{ binary: app }}\n    secretRefs:\n      - {{ name: X, source: {{ value: one }} }}\n  - name: b\n    selector: {{ binary: app }}\n    secretRefs:\n      - {entry}\n"
    ));
    let refusal = plan_refused(&across, &me(), request()).await;
    assert_eq!(
        refusal.reason(),
        "X is delivered by both binding \"a\" and \"b\": a config error"
    );
    assert!(!refusal.reason().contains("from-json"));
}

#[tokio::test]
async fn a_value_that_is_not_an_object_is_refused_naming_the_ref_not_the_value() {
    let s = state(
        "  - name: app\n    selector: { binary: app }\n    secretRefs:\n      - { keys: all, prefix: P_, source: { envRef: PATH } }\n",
    );
    let refusal = plan_refused(&s, &me(), request()).await;
    let reason = refusal.reason();
    assert!(
        reason.starts_with(
            "no secret of binding \"app\" could be resolved: P_*: envRef PATH: keys: the value is not valid JSON"
        ),
        "{reason}"
    );
    let path = std::env::var("PATH").unwrap();
    assert!(!reason.contains(&path), "{reason}");
    assert!(!refusal.retry());
}
