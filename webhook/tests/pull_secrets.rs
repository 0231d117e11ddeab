//! Image lookups with the pod's pull secrets, against a real registry that
//! requires a password (Debian's `docker-registry` with htpasswd auth, the
//! image pushed with `skopeo --dest-creds`) and the Kubernetes API
//! stand-in serving the pod's Secrets with RBAC-like refusals:
//!
//! - anonymous (no `--pull-secrets`, or a pod without a secret for the
//!   registry): refused, saying what to do;
//! - a `kubernetes.io/dockerconfigjson` secret: the ENTRYPOINT is found
//!   and the review wraps the container (missing and other-type secrets
//!   before it are skipped); a `kubernetes.io/dockercfg` one too;
//! - a wrong password: refused naming the secret;
//! - the private answer, cached, is not given to a pod without the
//!   credential (nor with a wrong one);
//! - secrets are read once per TTL;
//! - an identity without `get` on secrets: the refusal names the secret
//!   and the RBAC it needs;
//! - no password in any error, its `Debug`, or the log (every level).

// The registry harness; these tests use part of it.
#[allow(dead_code)]
mod support;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;
use kernelseal_testkit::kube_api::{KubeApi, NO_LIST_TOKEN, WEBHOOK_TOKEN};
use kernelseal_webhook::images::docker_config::{
    DOCKER_CONFIG_JSON_KEY, DOCKER_CONFIG_JSON_TYPE, DOCKERCFG_KEY, DOCKERCFG_TYPE,
};
use kernelseal_webhook::review::ReviewError;
use kernelseal_webhook::{
    ImageConfigs, LookupError, Patcher, PullContext, PullSecrets, PulledWith, Registry,
    RegistryConfig, Settings, Trigger, review,
};
use serde_json::{Value, json};
use support::admission::{Sent, admission_review, annotated_pod, patched_containers};
use support::registry::{Layout, TestRegistry};

const USER: &str = "robot-7";
const PASSWORD: &str = "pw-7f3a-never-logged";
const WRONG_PASSWORD: &str = "pw-wrong-91c2-never-logged";
const NAMESPACE: &str = "shop";
const WRAPPER: &str = "/kernelseal/bin/kernelseal-exec";

fn b64(s: &str) -> String {
    b64_bytes(s.as_bytes())
}

fn b64_bytes(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The Secrets' data as the API server sends it (base64 of the docker
/// configs), registered by [`setup`].
fn api_forms() -> &'static Mutex<Vec<String>> {
    static FORMS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    FORMS.get_or_init(Mutex::default)
}

/// Which forms of the secrets `text` shows: none may show up in an error
/// or the log.
fn secrets_in_plain_sight(text: &str) -> Vec<String> {
    let mut forms: Vec<(String, String)> = vec![
        ("the password".into(), PASSWORD.into()),
        ("the wrong password".into(), WRONG_PASSWORD.into()),
        ("the auth field".into(), b64(&format!("{USER}:{PASSWORD}"))),
        (
            "the wrong auth field".into(),
            b64(&format!("{USER}:{WRONG_PASSWORD}")),
        ),
    ];
    for (i, form) in api_forms().lock().unwrap().iter().enumerate() {
        forms.push((
            format!("the data of secret #{i} as the API sends it"),
            form.clone(),
        ));
    }
    forms
        .into_iter()
        .filter(|(_, f)| text.contains(f.as_str()))
        .map(|(what, _)| what)
        .collect()
}

/// Every log line of the process, at every level and from every crate
/// (oci-client's, reqwest's and hyper's included), kept to be searched.
fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        buffer
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&log().lock().unwrap()).into_owned()
}

/// A pull secret of `type` for `host`.
fn docker_config(host: &str, password: &str, secret_type: &str) -> (&'static str, Vec<u8>) {
    let entry = json!({ "auth": b64(&format!("{USER}:{password}")) });
    match secret_type {
        DOCKERCFG_TYPE => (
            DOCKERCFG_KEY,
            json!({ host: entry }).to_string().into_bytes(),
        ),
        _ => (
            DOCKER_CONFIG_JSON_KEY,
            json!({ "auths": { format!("https://{host}/v1/"): entry } })
                .to_string()
                .into_bytes(),
        ),
    }
}

struct Setup {
    registry: TestRegistry,
    api: KubeApi,
    dir: PathBuf,
    image: String,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The private registry with `app:1.0`, and the API stand-in holding the
/// namespace's secrets: `regcred` (the right password,
/// dockerconfigjson), `oldcfg` (the right password, dockercfg),
/// `wrongcred` (a wrong one), `opaque` (type Opaque).
async fn setup(name: &str) -> Option<Setup> {
    log();
    let registry = TestRegistry::start_private(name, USER, PASSWORD)?;
    let mut layout = Layout::new(&format!("private-{name}"));
    layout.image(
        "amd64",
        json!({ "Entrypoint": ["/private/serve"], "Cmd": ["--tls"] }),
        "application/vnd.oci.image.config.v1+json",
        Some("1.0"),
    );
    registry.push(&layout, "1.0", "app:1.0");
    let host = registry.host.clone();
    let api = KubeApi::start().await;
    api.pods(|p| {
        for (secret, password, secret_type) in [
            ("regcred", PASSWORD, DOCKER_CONFIG_JSON_TYPE),
            ("oldcfg", PASSWORD, DOCKERCFG_TYPE),
            ("wrongcred", WRONG_PASSWORD, DOCKER_CONFIG_JSON_TYPE),
        ] {
            let (key, value) = docker_config(&host, password, secret_type);
            api_forms().lock().unwrap().push(b64_bytes(&value));
            p.add_secret(NAMESPACE, secret, secret_type, &[(key, &value)]);
        }
        let (key, value) = docker_config(&host, PASSWORD, DOCKER_CONFIG_JSON_TYPE);
        p.add_secret(NAMESPACE, "opaque", "Opaque", &[(key, &value)]);
    });
    let dir = std::env::temp_dir().join(format!("ks-webhook-pull-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Some(Setup {
        image: format!("{host}/app:1.0"),
        registry,
        api,
        dir,
    })
}

impl Setup {
    async fn client(&self, token: &str) -> kube::Client {
        let kc =
            kube::config::Kubeconfig::read_from(self.api.kubeconfig(&self.dir, token)).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    fn anonymous_registry(&self) -> Registry {
        Registry::new(RegistryConfig {
            insecure: vec![self.registry.host.clone()],
            ..RegistryConfig::default()
        })
        .unwrap()
    }

    /// A webhook started with `--pull-secrets`, its identity `token`'s.
    async fn webhook_registry(&self, token: &str) -> Registry {
        self.anonymous_registry()
            .with_pull_secrets(PullSecrets::new(self.client(token).await))
    }
}

fn pod_of(secrets: &[&str]) -> PullContext {
    PullContext {
        namespace: NAMESPACE.into(),
        secret_names: secrets.iter().map(|s| s.to_string()).collect(),
    }
}

/// Checks that neither `e`'s message nor its `Debug` shows a secret, and
/// returns the message.
fn shown(e: &LookupError) -> String {
    let text = format!("{e} {e:?}");
    let leaked = secrets_in_plain_sight(&text);
    assert!(leaked.is_empty(), "{leaked:?} in {text}");
    e.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_image_is_read_with_the_pods_pull_secret_and_only_for_pods_that_have_it() {
    let Some(s) = setup("private").await else {
        return;
    };
    let host = &s.registry.host;
    let image = &s.image;

    // Started without --pull-secrets: anonymous, and the refusal says how
    // to enable them, even for a pod that names a secret.
    let e = s
        .anonymous_registry()
        .entrypoint(image, &pod_of(&["regcred"]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            LookupError::Denied {
                status: 401,
                with: PulledWith::NotRead,
                ..
            }
        ),
        "{e:?}"
    );
    let msg = shown(&e);
    for want in [
        format!("{image}: registry {host} refused an anonymous pull (401)"),
        "private, or does not exist".into(),
        format!("give the pod an imagePullSecret for {host}"),
        "start the webhook with --pull-secrets".into(),
    ] {
        assert!(msg.contains(&want), "{want:?} not in {msg:?}");
    }
    assert_eq!(s.api.secret_gets(), 0, "no secret read without the flag");

    let images = s.webhook_registry(WEBHOOK_TOKEN).await;
    // A pod without pull secrets: anonymous, and no secret read.
    let e = images.entrypoint(image, &pod_of(&[])).await.unwrap_err();
    let msg = shown(&e);
    assert!(
        msg.contains("(it has none)") && !msg.contains("--pull-secrets"),
        "{msg}"
    );
    assert_eq!(s.api.secret_gets(), 0);

    // A review of a pod naming a missing secret, one of another type, then
    // the right one: the first two skipped, the image read, the container
    // wrapped.
    let containers = json!([{ "name": "app", "image": image }]);
    let reviewed = review(
        &review_with_pull_secrets(&containers, &["missing", "opaque", "regcred"]),
        Trigger::Annotation,
        "kernelseal",
        &Patcher::new(Settings::default()),
        &images,
    )
    .await
    .unwrap();
    let c = patched_containers(&containers, &reviewed);
    assert_eq!(c[0]["command"], json!([WRAPPER, "--", "/private/serve"]));
    assert_eq!(c[0]["args"], json!(["--tls"]));
    let logged = log_text();
    for skipped in [
        format!("pull secret {NAMESPACE}/missing does not exist: skipped"),
        format!("pull secret {NAMESPACE}/opaque holds no registry credential"),
    ] {
        assert!(logged.contains(&skipped), "{skipped:?} not logged");
    }
    // Within the secrets' TTL, no secret is read again; the answer is kept
    // for the credential.
    let gets = s.api.secret_gets();
    let before = s.registry.settled_requests().await;
    let found = images
        .entrypoint(image, &pod_of(&["regcred"]))
        .await
        .unwrap();
    assert_eq!(found.entrypoint, vec!["/private/serve".to_string()]);
    assert_eq!(s.api.secret_gets(), gets, "the secret was kept");
    assert_eq!(
        s.registry.settled_requests().await,
        before,
        "the answer was kept"
    );
    // The same credential in a dockercfg secret is the same credential.
    let found = images
        .entrypoint(image, &pod_of(&["oldcfg"]))
        .await
        .unwrap();
    assert_eq!(found.cmd, vec!["--tls".to_string()]);
    assert_eq!(s.registry.settled_requests().await, before);

    // The cached private answer is not given to a pod without the
    // credential: it asks the registry, which refuses it.
    let e = images.entrypoint(image, &pod_of(&[])).await.unwrap_err();
    assert!(
        matches!(&e, LookupError::Denied { status: 401, with: PulledWith::NoneMatched(n), .. } if n.is_empty()),
        "{e:?}"
    );
    let e = images
        .entrypoint(image, &pod_of(&["opaque"]))
        .await
        .unwrap_err();
    let msg = shown(&e);
    assert!(
        msg.contains("(none of its pull secrets opaque holds a credential for it)"),
        "{msg}"
    );
    // Nor to one with a wrong password: refused naming the secret.
    let e = images
        .entrypoint(image, &pod_of(&["wrongcred"]))
        .await
        .unwrap_err();
    let msg = shown(&e);
    assert!(
        matches!(&e, LookupError::Denied { with: PulledWith::Secrets(n), .. } if n == &["wrongcred"]),
        "{e:?}"
    );
    assert!(
        msg.contains(&format!(
            "{image}: registry {host} refused the credentials of pull secret wrongcred (401)"
        )),
        "{msg}"
    );
    // The same through a review: the API server gets the error (the
    // webhook's failurePolicy decides), naming the image and the secret.
    let reviewed = review(
        &review_with_pull_secrets(&containers, &["wrongcred"]),
        Trigger::Annotation,
        "kernelseal",
        &Patcher::new(Settings::default()),
        &images,
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(reviewed, ReviewError::Lookup(_)), "{reviewed}");
    let msg = reviewed.to_string();
    assert!(
        msg.contains("pull secret wrongcred") && msg.contains("set command on the container"),
        "{msg}"
    );
    assert!(secrets_in_plain_sight(&format!("{msg} {reviewed:?}")).is_empty());
    // A wrong credential first, the right one next: the kubelet tries
    // each in turn, so does the webhook.
    let found = images
        .entrypoint(image, &pod_of(&["wrongcred", "regcred"]))
        .await
        .unwrap();
    assert_eq!(found.entrypoint, vec!["/private/serve".to_string()]);

    let leaked = secrets_in_plain_sight(&log_text());
    assert!(leaked.is_empty(), "{leaked:?} in the log");
    assert!(
        log_text().contains("oci_client"),
        "the log holds the registry client's own lines (else it proves nothing)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_get_on_secrets_the_refusal_names_the_secret_and_the_rbac_it_needs() {
    let Some(s) = setup("forbidden").await else {
        return;
    };
    let images = s.webhook_registry(NO_LIST_TOKEN).await;
    let e = images
        .entrypoint(&s.image, &pod_of(&["regcred"]))
        .await
        .unwrap_err();
    let msg = shown(&e);
    assert!(
        matches!(&e, LookupError::PullSecret { namespace, secret, .. } if namespace == NAMESPACE && secret == "regcred"),
        "{e:?}"
    );
    for want in [
        format!("pull secret {NAMESPACE}/regcred: the webhook may not read it (403"),
        "cannot get resource \"secrets\"".into(),
        "needs get on secrets".into(),
    ] {
        assert!(msg.contains(&want), "{want:?} not in {msg:?}");
    }
    // Not kept: each lookup asks again (RBAC may be fixed any moment).
    let gets = s.api.secret_gets();
    images
        .entrypoint(&s.image, &pod_of(&["regcred"]))
        .await
        .unwrap_err();
    assert_eq!(s.api.secret_gets(), gets + 1);
    let leaked = secrets_in_plain_sight(&log_text());
    assert!(leaked.is_empty(), "{leaked:?} in the log");
}

/// The review of a pod with these containers and pull secrets.
fn review_with_pull_secrets(containers: &Value, pull_secrets: &[&str]) -> Vec<u8> {
    let secrets: Vec<Value> = pull_secrets.iter().map(|n| json!({ "name": n })).collect();
    admission_review(
        &annotated_pod(containers, json!({ "imagePullSecrets": secrets })),
        &Sent {
            namespace: NAMESPACE,
            ..Sent::default()
        },
    )
}
