//! Image lookups against a real registry (Debian's `docker-registry`, the
//! Distribution registry, on 127.0.0.1), the images written by the test
//! as an OCI layout and pushed with `skopeo`: ENTRYPOINT/CMD found by tag,
//! by digest and through an index, applied by the review; a cached lookup
//! makes no request and concurrent ones make one; an unknown tag, a
//! registry that is down, an HTTPS-only client and an artifact are refused
//! naming the image.

// The registry harness; these tests use part of it.
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use kernelseal_webhook::metrics::Metrics;
use kernelseal_webhook::review::{ReviewError, Reviewed};
use kernelseal_webhook::{
    Entrypoint, ImageConfigs, LookupError, Patcher, PullContext, Registry, RegistryConfig,
    Settings, Trigger, review,
};
use serde_json::{Value, json};
use support::admission::{Sent, admission_review, annotated_pod, patched_containers};
use support::registry::{Layout, TestRegistry, unused_port};

const WRAPPER: &str = "/kernelseal/bin/kernelseal-exec";
const IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// A pod without pull secrets.
fn anonymous() -> PullContext {
    PullContext::default()
}

fn plain_http(host: &str) -> Registry {
    Registry::new(RegistryConfig {
        insecure: vec![host.to_string()],
        ..RegistryConfig::default()
    })
    .unwrap()
}

/// Pushes `app:1.0` (ENTRYPOINT and CMD) and returns its manifest digest.
fn push_app(registry: &TestRegistry, name: &str) -> String {
    let mut layout = Layout::new(name);
    let manifest = layout.image(
        "amd64",
        json!({ "Entrypoint": ["/app/serve"], "Cmd": ["--port", "8080"], "Env": ["A=1"] }),
        IMAGE_CONFIG,
        Some("1.0"),
    );
    registry.push(&layout, "1.0", "app:1.0");
    manifest.digest
}
async fn run(containers: Value, images: &dyn ImageConfigs) -> Result<Reviewed, ReviewError> {
    review(
        &admission_review(&annotated_pod(&containers, json!({})), &Sent::default()),
        Trigger::Annotation,
        "kernelseal",
        &Patcher::new(Settings::default()),
        images,
    )
    .await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_tag_by_digest_and_through_an_index_the_image_entrypoint_and_cmd_are_applied() {
    let Some(registry) = TestRegistry::start("image lookups by tag and digest") else {
        return;
    };
    let digest = push_app(&registry, "by-tag");
    let mut layout = Layout::new("multi");
    let amd64 = layout.image(
        "amd64",
        json!({ "Entrypoint": ["/amd64"] }),
        IMAGE_CONFIG,
        None,
    );
    let arm64 = layout.image(
        "arm64",
        json!({ "Entrypoint": ["/arm64"] }),
        IMAGE_CONFIG,
        None,
    );
    let index = layout.index(&[("arm64", &arm64), ("amd64", &amd64)], "multi");
    registry.push(&layout, "multi", "multi:1");
    let host = &registry.host;

    let containers = json!([
        { "name": "by-tag", "image": format!("{host}/app:1.0") },
        { "name": "by-digest", "image": format!("{host}/app@{digest}"), "args": ["--debug"] },
        { "name": "index", "image": format!("{host}/multi:1") },
        // Not in the registry: looking it up would fail the review.
        { "name": "own", "image": format!("{host}/unlooked:1"), "command": ["/x"] }
    ]);
    let r = run(containers.clone(), &plain_http(host)).await.unwrap();
    let c = patched_containers(&containers, &r);
    assert_eq!(c[0]["command"], json!([WRAPPER, "--", "/app/serve"]));
    assert_eq!(c[0]["args"], json!(["--port", "8080"]), "CMD as args");
    assert_eq!(c[1]["command"], json!([WRAPPER, "--", "/app/serve"]));
    assert_eq!(c[1]["args"], json!(["--debug"]), "the pod's args win");
    let own = if std::env::consts::ARCH == "aarch64" {
        "/arm64"
    } else {
        "/amd64"
    };
    assert_eq!(c[2]["command"], json!([WRAPPER, "--", own]));
    assert!(c[2].get("args").is_none());
    assert_eq!(c[3]["command"], json!([WRAPPER, "--", "/x"]));
    let requests = registry.requests();
    for path in [
        "/v2/app/manifests/1.0 ".to_string(),
        format!("/v2/app/manifests/{digest} "),
        "/v2/multi/manifests/1 ".to_string(),
    ] {
        assert!(
            requests.iter().any(|l| l.contains(&path)),
            "no request for {path}: {requests:#?}"
        );
    }
    assert!(
        !requests.iter().any(|l| l.contains("unlooked")),
        "a container with a command needs no lookup"
    );
    // The index itself, pinned by digest, resolves the same way.
    let pinned = plain_http(host)
        .entrypoint(&format!("{host}/multi@{}", index.digest), &anonymous())
        .await
        .unwrap();
    assert_eq!(pinned.entrypoint, vec![own.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_lookup_makes_no_request_and_concurrent_ones_make_one() {
    let Some(registry) = TestRegistry::start("image lookup cache") else {
        return;
    };
    let digest = push_app(&registry, "cached");
    let host = &registry.host;
    let images = plain_http(host);
    let want = Entrypoint {
        entrypoint: vec!["/app/serve".into()],
        cmd: vec!["--port".into(), "8080".into()],
    };
    let before = registry.settled_requests().await;
    assert_eq!(
        images
            .entrypoint(&format!("{host}/app:1.0"), &anonymous())
            .await,
        Ok(want.clone())
    );
    let after_first = registry.settled_requests().await;
    assert!(after_first > before, "the first lookup asked the registry");
    assert_eq!(
        images
            .entrypoint(&format!("{host}/app:1.0"), &anonymous())
            .await,
        Ok(want.clone())
    );
    assert_eq!(
        images
            .entrypoint(&format!("{host}/app@{digest}"), &anonymous())
            .await,
        Ok(want.clone()),
        "the digest the tag resolved to is known"
    );
    assert_eq!(
        registry.settled_requests().await,
        after_first,
        "cached: no request"
    );

    // A fresh webhook: eight reviews at once of a pod with this image make
    // one manifest request.
    let images = plain_http(host);
    let containers = json!([{ "name": "app", "image": format!("{host}/app:1.0") }]);
    let reviews = futures_util::future::join_all((0..8).map(|_| run(containers.clone(), &images)));
    for r in reviews.await {
        let c = patched_containers(&containers, &r.unwrap());
        assert_eq!(c[0]["command"], json!([WRAPPER, "--", "/app/serve"]));
    }
    registry.settled_requests().await;
    let manifest_gets = registry.requests()[after_first..]
        .iter()
        .filter(|l| l.contains("GET /v2/app/manifests/1.0 "))
        .count();
    assert_eq!(manifest_gets, 1, "{:#?}", registry.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_and_registry_reads_are_counted_in_the_metrics() {
    let Some(registry) = TestRegistry::start("lookup metrics") else {
        return;
    };
    push_app(&registry, "counted");
    let host = &registry.host;
    let metrics = Metrics::default();
    let images = plain_http(host).counting(metrics.lookup_counts());
    for image in ["app:1.0", "app:1.0", "app:1.0", "nothing:here"] {
        let _ = images
            .entrypoint(&format!("{host}/{image}"), &anonymous())
            .await;
    }
    let text = metrics.render();
    for line in [
        "kernelseal_webhook_image_lookups_total{outcome=\"found\"} 3",
        "kernelseal_webhook_image_lookups_total{outcome=\"failed\"} 1",
        // app:1.0 once, then the cache; a failure is not kept, and read.
        "kernelseal_webhook_registry_reads_total 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_tag_an_artifact_and_https_to_a_plain_registry_are_refused_naming_the_image() {
    let Some(registry) = TestRegistry::start("image lookup refusals") else {
        return;
    };
    push_app(&registry, "refusals");
    let mut layout = Layout::new("artifact");
    layout.image(
        "amd64",
        json!({}),
        "application/vnd.example.thing.config.v1+json",
        Some("1"),
    );
    registry.push(&layout, "1", "thing:1");
    let host = &registry.host;
    let images = plain_http(host);

    let missing = format!("{host}/app:nope");
    let containers = json!([{ "name": "app", "image": missing }]);
    let e = run(containers, &images).await.err().unwrap();
    assert!(matches!(e, ReviewError::Lookup(_)), "{e}");
    let msg = e.to_string();
    for want in [
        format!("its image \"{missing}\""),
        format!("registry {host} has no such image (404"),
        "set command on the container".to_string(),
    ] {
        assert!(msg.contains(&want), "{want:?} not in {msg:?}");
    }
    assert!(matches!(
        images
            .entrypoint(&format!("{host}/nothere:1"), &anonymous())
            .await,
        Err(LookupError::NotFound { .. })
    ));
    // Failures are not kept: pushed now, the tag is found.
    let mut later = Layout::new("later");
    later.image(
        "amd64",
        json!({ "Cmd": ["/later"] }),
        IMAGE_CONFIG,
        Some("nope"),
    );
    registry.push(&later, "nope", "app:nope");
    assert_eq!(
        images
            .entrypoint(&missing, &anonymous())
            .await
            .map(|e| e.cmd),
        Ok(vec!["/later".to_string()])
    );

    let artifact = images
        .entrypoint(&format!("{host}/thing:1"), &anonymous())
        .await;
    match artifact {
        Err(LookupError::NotAnImage { image, why }) => {
            assert_eq!(image, format!("{host}/thing:1"));
            assert!(
                why.contains("application/vnd.example.thing.config.v1+json"),
                "{why}"
            );
        }
        other => panic!("{other:?}"),
    }

    // Not listed as plain HTTP: spoken to over HTTPS, which it does not
    // speak.
    let https_only = Registry::new(RegistryConfig::default()).unwrap();
    let e = https_only
        .entrypoint(&format!("{host}/app:1.0"), &anonymous())
        .await
        .unwrap_err();
    assert!(matches!(e, LookupError::Unreachable { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_is_down_is_the_same_kind_of_refusal_and_fast() {
    // Nothing listens here; no registry binary is needed for that.
    let host = format!("127.0.0.1:{}", unused_port());
    let image = format!("{host}/app:1.0");
    let images = plain_http(&host);
    let started = Instant::now();
    let e = run(json!([{ "name": "app", "image": image }]), &images)
        .await
        .err()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(e, ReviewError::Lookup(_)), "{e}");
    let msg = e.to_string();
    for want in [
        format!("its image \"{image}\""),
        format!("registry {host} could not be reached"),
        "set command on the container".to_string(),
    ] {
        assert!(msg.contains(&want), "{want:?} not in {msg:?}");
    }
    assert!(matches!(
        images.entrypoint(&image, &anonymous()).await,
        Err(LookupError::Unreachable { .. })
    ));
    // A timeout bounds a registry that accepts but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = silent.local_addr().unwrap().to_string();
    let slow = Registry::new(RegistryConfig {
        insecure: vec![host.clone()],
        timeout: Duration::from_millis(500),
        ..RegistryConfig::default()
    })
    .unwrap();
    let started = Instant::now();
    let e = slow
        .entrypoint(&format!("{host}/app:1.0"), &anonymous())
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "{e}");
    assert!(
        matches!(
            e,
            LookupError::TimedOut { .. } | LookupError::Unreachable { .. }
        ),
        "{e}"
    );
    drop(silent);
}
