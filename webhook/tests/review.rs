//! Reviews of pods as the API server sends them for a Deployment's
//! ReplicaSet (generateName, ownerReferences, defaulted fields, the
//! service-account volume the ServiceAccount admission plugin added): the
//! returned JSON Patch is applied to the pod, the result checked field by
//! field and validated with `kubernetes-validate --strict`.

#[allow(dead_code)]
mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use base64::Engine;
use kernelseal_testkit::admission::container;
use kernelseal_webhook::review::{Decision, ReviewError, Reviewed};
use kernelseal_webhook::{
    Entrypoint, ImageConfigs, LookupError, NoRegistry, Patcher, PullContext, Settings, Trigger,
    review,
};
use serde_json::{Value, json};
use support::admission::{Sent, admission_review};

/// web's pod in shop, as its ReplicaSet has the API server create it.
fn deployment_pod(annotations: Value, containers: Vec<Value>) -> Value {
    kernelseal_testkit::admission::deployment_pod("shop", annotations, containers)
}

const OWN_NAMESPACE: &str = "kernelseal";
const WRAPPER: &str = "/kernelseal/bin/kernelseal-exec";

struct Images(HashMap<&'static str, Entrypoint>);

#[async_trait::async_trait]
impl ImageConfigs for Images {
    async fn entrypoint(
        &self,
        image: &str,
        _pull: &PullContext,
    ) -> Result<Entrypoint, LookupError> {
        self.0
            .get(image)
            .cloned()
            .ok_or_else(|| LookupError::NotFound {
                image: image.into(),
                registry: "the test's".into(),
                why: "not in its map".into(),
            })
    }
}

async fn run(pod: &Value, images: &dyn ImageConfigs) -> Reviewed {
    review(
        &admission_review(pod, &Sent::default()),
        Trigger::Annotation,
        OWN_NAMESPACE,
        &Patcher::new(Settings::default()),
        images,
    )
    .await
    .unwrap()
}

/// `pod` reviewed as sent from `namespace` (`dry_run` or not) to the
/// path of `trigger`; no image lookups.
async fn review_as(pod: &Value, namespace: &str, dry_run: bool, trigger: Trigger) -> Reviewed {
    review(
        &admission_review(
            pod,
            &Sent {
                namespace,
                dry_run,
                ..Sent::default()
            },
        ),
        trigger,
        OWN_NAMESPACE,
        &Patcher::new(Settings::default()),
        &NoRegistry,
    )
    .await
    .unwrap()
}

/// The pod with the answer's patch applied, read from the answer as the
/// API server gets it; the answer must allow the pod.
fn patched(pod: &Value, r: &Reviewed) -> Value {
    let wire: Value = serde_json::from_slice(&r.clone().into_json()).unwrap();
    assert_eq!(
        (&wire["apiVersion"], &wire["kind"]),
        (&json!("admission.k8s.io/v1"), &json!("AdmissionReview")),
        "the API server refuses an answer of another type"
    );
    let resp = &wire["response"];
    assert_eq!(resp["allowed"], true, "{resp}");
    assert_eq!(resp["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(resp["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(
            resp["patch"]
                .as_str()
                .expect("the patch is a base64 string"),
        )
        .unwrap();
    assert_eq!(Some(&bytes), r.response.patch.as_ref());
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    out
}

fn validate_all(pods: &[Value]) {
    // A directory per call: the tests run in parallel threads of one
    // process, and two writing pod-0.json at once made a file of both.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ks-webhook-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<PathBuf> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut p = p.clone();
            // A created pod has a name; kubernetes-validate wants one.
            p["metadata"]["name"] = json!(format!("web-6d4cf56db6-x{i}"));
            let f = dir.join(format!("pod-{i}.json"));
            std::fs::write(&f, serde_json::to_vec_pretty(&p).unwrap()).unwrap();
            f
        })
        .collect();
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "-k", "1.37.0"])
        .args(&files)
        .output()
        .expect("kubernetes-validate (scripts/setup installs it from PyPI)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("passed").count(), files.len(), "{text}");
}

fn annotated() -> Value {
    json!({ "kernelseal.io/inject": "true" })
}

#[tokio::test]
async fn a_container_with_a_command_is_wrapped_and_the_pod_gets_what_it_needs() {
    let pod = deployment_pod(
        annotated(),
        vec![container(
            "web",
            "registry.example/web:1.4",
            Some(&["/app/server", "--port=8080"]),
        )],
    );
    let r = run(&pod, &NoRegistry).await;
    assert_eq!(r.decision, Decision::Patched(vec!["web".into()]));
    assert_eq!(r.subject.name, "web-6d4cf56db6-*");
    let p = patched(&pod, &r);
    let web = &p["spec"]["containers"][0];
    assert_eq!(
        web["command"],
        json!([WRAPPER, "--", "/app/server", "--port=8080"])
    );
    assert!(web.get("args").is_none(), "args untouched");
    assert_eq!(
        web["volumeMounts"],
        json!([
            { "name": "kube-api-access-7xk2p", "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount" },
            { "name": "kernelseal-bin", "mountPath": "/kernelseal/bin", "readOnly": true },
            { "name": "kernelseal-run", "mountPath": "/run/kernelseal", "readOnly": true },
            { "name": "kernelseal-tokens", "mountPath": "/var/run/secrets/kernelseal.io/tokens", "readOnly": true }
        ])
    );
    let init = &p["spec"]["initContainers"][0];
    assert_eq!(init["name"], "kernelseal-exec");
    assert_eq!(
        init["command"],
        json!(["cp", "/usr/bin/kernelseal-exec", WRAPPER])
    );
    assert_eq!(
        p["spec"]["securityContext"]["supplementalGroups"],
        json!([7373])
    );
    let volumes = p["spec"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 4);
    assert_eq!(volumes[1]["emptyDir"]["medium"], "Memory");
    assert_eq!(volumes[2]["hostPath"]["path"], "/run/kernelseal");
    assert_eq!(
        volumes[3]["projected"]["sources"],
        json!([{ "serviceAccountToken": { "audience": "vault", "expirationSeconds": 600, "path": "vault" } }])
    );
    assert_eq!(
        p["metadata"]["annotations"]["kernelseal.io/status"],
        "injected"
    );
    validate_all(&[p]);
}

#[tokio::test]
async fn another_socket_directory_is_mounted_and_named_to_the_wrapper() {
    let pod = deployment_pod(
        annotated(),
        vec![container("web", "w", Some(&["/app/server"]))],
    );
    let settings = Settings {
        socket_dir: "/var/lib/kernelseal/run".into(),
        ..Settings::default()
    };
    let r = review(
        &admission_review(&pod, &Sent::default()),
        Trigger::Annotation,
        OWN_NAMESPACE,
        &Patcher::new(settings),
        &NoRegistry,
    )
    .await
    .unwrap();
    let p = patched(&pod, &r);
    let web = &p["spec"]["containers"][0];
    assert_eq!(
        web["command"],
        json!([
            WRAPPER,
            "--socket",
            "/var/lib/kernelseal/run/kernelseal.sock",
            "--",
            "/app/server"
        ])
    );
    assert_eq!(
        web["volumeMounts"][2],
        json!({ "name": "kernelseal-run", "mountPath": "/var/lib/kernelseal/run", "readOnly": true })
    );
    assert_eq!(
        p["spec"]["volumes"][2]["hostPath"]["path"],
        "/var/lib/kernelseal/run"
    );
    validate_all(&[p]);
}

#[tokio::test]
async fn several_containers_init_containers_groups_and_flags() {
    let mut pod = deployment_pod(
        json!({
            "kernelseal.io/inject": "true",
            "kernelseal.io/containers": "web",
            "kernelseal.io/on-error": "continue",
            "kernelseal.io/timeout": "30s",
            "kernelseal.io/token-audience": "vault,sts.amazonaws.com"
        }),
        vec![
            container("web", "registry.example/web:1.4", Some(&["/app/server"])),
            container("proxy", "registry.example/envoy:1.30", Some(&["envoy"])),
        ],
    );
    pod["spec"]["initContainers"] = json!([container(
        "migrate",
        "registry.example/web:1.4",
        Some(&["/app/migrate"])
    )]);
    pod["spec"]["securityContext"] = json!({ "runAsNonRoot": true, "supplementalGroups": [1000] });
    let r = run(&pod, &NoRegistry).await;
    let p = patched(&pod, &r);
    assert_eq!(
        p["spec"]["containers"][0]["command"],
        json!([
            WRAPPER,
            "--timeout",
            "30000ms",
            "--on-error",
            "continue",
            "--",
            "/app/server"
        ])
    );
    assert_eq!(
        p["spec"]["containers"][1], pod["spec"]["containers"][1],
        "proxy untouched"
    );
    let inits = p["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(
        (inits[0]["name"].as_str(), inits[1]["name"].as_str()),
        (Some("kernelseal-exec"), Some("migrate"))
    );
    assert_eq!(
        p["spec"]["securityContext"]["supplementalGroups"],
        json!([1000, 7373])
    );
    assert_eq!(p["spec"]["securityContext"]["runAsNonRoot"], true);
    let sources = &p["spec"]["volumes"][3]["projected"]["sources"];
    assert_eq!(
        sources[1]["serviceAccountToken"]["audience"],
        "sts.amazonaws.com"
    );
    assert_eq!(
        sources[1]["serviceAccountToken"]["path"],
        "sts.amazonaws.com"
    );
    validate_all(&[p]);
}

#[tokio::test]
async fn without_command_the_image_entrypoint_and_cmd_are_used() {
    let images = Images(HashMap::from([
        (
            "registry.example/api:2",
            Entrypoint {
                entrypoint: vec!["/docker-entrypoint.sh".into()],
                cmd: vec!["api".into(), "--serve".into()],
            },
        ),
        (
            "registry.example/cmd-only:1",
            Entrypoint {
                entrypoint: vec![],
                cmd: vec!["/bin/worker".into()],
            },
        ),
    ]));
    let mut with_args = container("api", "registry.example/api:2", None);
    with_args["args"] = json!(["api", "--debug"]);
    let pod = deployment_pod(
        annotated(),
        vec![
            container("api", "registry.example/api:2", None),
            container("worker", "registry.example/cmd-only:1", None),
        ],
    );
    let p = patched(&pod, &run(&pod, &images).await);
    assert_eq!(
        p["spec"]["containers"][0]["command"],
        json!([WRAPPER, "--", "/docker-entrypoint.sh"])
    );
    assert_eq!(
        p["spec"]["containers"][0]["args"],
        json!(["api", "--serve"]),
        "CMD kept as args"
    );
    assert_eq!(
        p["spec"]["containers"][1]["command"],
        json!([WRAPPER, "--"])
    );
    assert_eq!(p["spec"]["containers"][1]["args"], json!(["/bin/worker"]));
    let own_args = deployment_pod(annotated(), vec![with_args]);
    let q = patched(&own_args, &run(&own_args, &images).await);
    assert_eq!(
        q["spec"]["containers"][0]["command"],
        json!([WRAPPER, "--", "/docker-entrypoint.sh"])
    );
    assert_eq!(
        q["spec"]["containers"][0]["args"],
        json!(["api", "--debug"]),
        "the pod's args win"
    );
    validate_all(&[p, q]);

    // No lookup possible: an error for the API server's failurePolicy,
    // naming the image and what to do.
    let e = review(
        &admission_review(&pod, &Sent::default()),
        Trigger::Annotation,
        OWN_NAMESPACE,
        &Patcher::new(Settings::default()),
        &NoRegistry,
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(e, ReviewError::Lookup(_)), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("\"registry.example/api:2\"") && msg.contains("set command on the container"),
        "{msg}"
    );
}

#[tokio::test]
async fn injected_unannotated_and_own_namespace_pods_are_left_alone_and_dry_run_is_the_same() {
    let already = deployment_pod(
        json!({ "kernelseal.io/inject": "true", "kernelseal.io/status": "injected" }),
        vec![container("web", "w", Some(&["/w"]))],
    );
    let plain = deployment_pod(json!({}), vec![container("web", "w", Some(&["/w"]))]);
    for (pod, why) in [(&already, "already injected"), (&plain, "not annotated")] {
        let r = run(pod, &NoRegistry).await;
        assert_eq!(r.decision, Decision::Skipped(why));
        assert!(r.response.allowed && r.response.patch.is_none());
    }
    let pod = deployment_pod(annotated(), vec![container("web", "w", Some(&["/w"]))]);
    let own = review_as(&pod, OWN_NAMESPACE, false, Trigger::Annotation).await;
    assert_eq!(
        own.decision,
        Decision::Skipped("in the webhook's own namespace")
    );
    let dry = review_as(&pod, "shop", true, Trigger::Annotation).await;
    assert!(dry.subject.dry_run);
    assert_eq!(
        dry.response.patch,
        run(&pod, &NoRegistry).await.response.patch
    );
    // A labelled namespace injects unless the pod opts out.
    let by_ns = review_as(&plain, "shop", false, Trigger::Namespace).await;
    assert_eq!(by_ns.decision, Decision::Patched(vec!["web".into()]));
    let out = deployment_pod(
        json!({ "kernelseal.io/inject": "false" }),
        vec![container("web", "w", Some(&["/w"]))],
    );
    let opted = review_as(&out, "shop", false, Trigger::Namespace).await;
    assert_eq!(opted.decision, Decision::Skipped("opted out"));
}

#[tokio::test]
async fn collisions_and_bad_annotations_are_refused_by_name() {
    let mut taken = deployment_pod(annotated(), vec![container("web", "w", Some(&["/w"]))]);
    taken["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "kernelseal-bin", "emptyDir": {} }));
    let mut mounted = deployment_pod(annotated(), vec![container("web", "w", Some(&["/w"]))]);
    mounted["spec"]["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "x", "mountPath": "/run/kernelseal" }));
    let typo = deployment_pod(
        json!({ "kernelseal.io/inject": "true", "kernelseal.io/timeout": "soon" }),
        vec![container("web", "w", Some(&["/w"]))],
    );
    let unknown = deployment_pod(
        json!({ "kernelseal.io/inject": "true", "kernelseal.io/containers": "db" }),
        vec![container("web", "w", Some(&["/w"]))],
    );
    for (pod, want) in [
        (
            taken,
            "the pod already has a volume named \"kernelseal-bin\"",
        ),
        (
            mounted,
            "container \"web\" already mounts something at /run/kernelseal",
        ),
        (
            typo,
            "annotation kernelseal.io/timeout: \"soon\" is not a duration",
        ),
        (
            unknown,
            "kernelseal.io/containers names \"db\", which is not a container of the pod",
        ),
    ] {
        let r = run(&pod, &NoRegistry).await;
        let resp = r.response;
        assert!(!resp.allowed && resp.patch.is_none());
        assert!(
            resp.result.message.contains(want),
            "{want:?} not in {:?}",
            resp.result.message
        );
        assert!(matches!(r.decision, Decision::Refused(_)));
    }
}

#[tokio::test]
async fn bad_input_is_an_error_that_quotes_nothing() {
    let cases: [(&[u8], &str); 4] = [
        (b"not json at all", "not an AdmissionReview"),
        (br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1beta1","request":null}"#, "only admission.k8s.io/v1 AdmissionReview"),
        (br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#, "has no request"),
        (br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"secret-looking-uid"}}"#, "not an AdmissionReview"),
    ];
    for (body, want) in cases {
        let e = review(
            body,
            Trigger::Annotation,
            OWN_NAMESPACE,
            &Patcher::new(Settings::default()),
            &NoRegistry,
        )
        .await
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains(want), "{want:?} not in {e:?}");
        assert!(!e.contains("secret-looking-uid"), "{e}");
    }
    // A pod that is not a Pod: refused, the uid answered.
    let mut odd = deployment_pod(annotated(), vec![container("web", "w", Some(&["/w"]))]);
    odd["spec"]["containers"] = json!("web");
    let r = run(&odd, &NoRegistry).await;
    let resp = r.response;
    assert!(!resp.allowed);
    assert!(
        resp.result.message.contains("the pod is not a valid Pod"),
        "{}",
        resp.result.message
    );
}

#[tokio::test]
async fn metadata_is_read_as_far_as_the_review_needs() {
    let pod = || deployment_pod(annotated(), vec![container("web", "w", Some(&["/w"]))]);
    // What the review reads, of the wrong type: refused, saying where.
    for (field, odd) in [
        ("annotations", json!("kernelseal.io/inject=true")),
        ("annotations", json!({ "kernelseal.io/inject": true })),
        ("generateName", json!(5)),
        ("name", json!({})),
        ("namespace", json!(["shop"])),
    ] {
        let mut p = pod();
        p["metadata"][field] = odd;
        let answer = review(
            &admission_review(&p, &Sent::default()),
            Trigger::Annotation,
            OWN_NAMESPACE,
            &Patcher::new(Settings::default()),
            &NoRegistry,
        )
        .await;
        let decision = answer.map(|r| r.decision);
        assert!(
            matches!(&decision, Ok(Decision::Refused(why)) if why.starts_with("the pod is not a valid Pod: ")),
            "{field}: {decision:?}"
        );
    }
    // What it skips is not checked: the API server validates the pod
    // after the mutating webhooks.
    let mut p = pod();
    p["metadata"]["labels"] = json!("app=web");
    p["metadata"]["ownerReferences"] = json!(7);
    p["metadata"]["managedFields"] = json!({ "manager": "kubectl" });
    let r = run(&p, &NoRegistry).await;
    assert!(
        matches!(r.decision, Decision::Patched(_)),
        "{:?}",
        r.decision
    );
    assert_eq!(r.subject.name, "web-6d4cf56db6-*");
}
