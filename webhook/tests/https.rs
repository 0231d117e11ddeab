//! The webhook over real HTTPS: a client that verifies the certificate
//! against the CA that signed it, reviews answered, bad input refused
//! while the server keeps serving, the certificate rotated on disk (new
//! connections get the new one, an open connection is not dropped), and
//! the server stopped gracefully.

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kernelseal_webhook::server::{MAX_BODY, Webhook, serve, serve_until};
use kernelseal_webhook::tls::{CertFiles, ReloadingCert};
use kernelseal_webhook::{NoRegistry, Patcher, Settings};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::{Value, json};
use support::admission::{Sent, admission_review, annotated_pod};

/// A CA and a server certificate for `localhost` it signed, as PEM.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki(name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("test CA {name}"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// Writes the pair the way cert-manager's Secret volume changes: new
/// files, then renamed over the old ones.
fn install(dir: &Path, p: &Pki) -> CertFiles {
    let files = CertFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    for (path, text) in [(&files.key, &p.key_pem), (&files.cert, &p.cert_pem)] {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
    files
}

fn client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The uid of every review these tests send.
const UID: &str = "3f1c2b4a-0000-4000-8000-00000000beef";

/// The review of a pod with these annotations, its container with a
/// command (no lookup).
fn review_body(annotations: Value) -> Vec<u8> {
    let containers = json!([{ "name": "web", "image": "w", "command": ["/app"] }]);
    let mut pod = annotated_pod(&containers, json!({}));
    pod["metadata"]["annotations"] = annotations;
    admission_review(
        &pod,
        &Sent {
            uid: UID,
            ..Sent::default()
        },
    )
}

/// What a server is started with: a certificate of CA `name` installed in
/// `dir`, a listener on a free port, a webhook without registry.
struct Parts {
    pki: Pki,
    cert: Arc<ReloadingCert>,
    listener: tokio::net::TcpListener,
    port: u16,
    webhook: Arc<Webhook>,
}

async fn parts(dir: &Path, name: &str) -> Parts {
    let pki = pki(name);
    let cert = ReloadingCert::new(install(dir, &pki)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let webhook = Arc::new(Webhook::new(
        Patcher::new(Settings::default()),
        "kernelseal".into(),
        Box::new(NoRegistry),
        Default::default(),
    ));
    Parts {
        pki,
        cert,
        listener,
        port,
        webhook,
    }
}

async fn start(dir: &Path) -> (String, Pki) {
    let p = parts(dir, "one").await;
    tokio::spawn(p.cert.clone().watch(Duration::from_millis(50)));
    tokio::spawn(serve(p.listener, p.cert, p.webhook));
    (format!("https://localhost:{}", p.port), p.pki)
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ks-webhook-https-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_over_verified_tls_and_bad_input_keeps_the_server_serving() {
    install_crypto();
    let dir = scratch("serve");
    let (base, p) = start(&dir).await;
    let c = client(&p.ca_pem);
    let r = c
        .post(format!("{base}/mutate"))
        .header("content-type", "application/json")
        .body(review_body(json!({ "kernelseal.io/inject": "true" })))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["response"]["uid"], UID);
    assert_eq!(v["response"]["allowed"], true);
    assert_eq!(v["response"]["patchType"], "JSONPatch");
    // `[]byte` in Kubernetes' JSON: a base64 string holding the JSON Patch.
    let wire = v["response"]["patch"]
        .as_str()
        .expect("the patch is a base64 string");
    let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, wire).unwrap();
    let ops: Value = serde_json::from_slice(&raw).unwrap();
    assert!(ops.as_array().is_some_and(|o| !o.is_empty()), "{ops}");

    let bad: [(Vec<u8>, u16, &str); 3] = [
        (vec![b' '; MAX_BODY + 1], 413, "over 3145728 bytes"),
        (b"{not json".to_vec(), 400, "not an AdmissionReview"),
        (
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1beta1"}"#.to_vec(),
            400,
            "only admission.k8s.io/v1 AdmissionReview",
        ),
    ];
    for (body, status, want) in bad {
        let r = c
            .post(format!("{base}/mutate"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
        let text = r.text().await.unwrap();
        assert!(text.contains(want), "{want:?} not in {text:?}");
    }
    for (path, want) in [("/healthz", "ok"), ("/ready", "ready")] {
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(
            (
                r.status().as_u16(),
                r.text().await.unwrap().trim().to_string()
            ),
            (200, want.to_string())
        );
    }
    let metrics = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("kernelseal_webhook_reviews_total{decision=\"patched\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kernelseal_webhook_reviews_total{decision=\"error\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kernelseal_webhook_review_seconds_count 4"),
        "{metrics}"
    );
    // An image that cannot be looked up is no answer but an error, for the
    // API server's failurePolicy, naming the image and what to do.
    let mut body: Value =
        serde_json::from_slice(&review_body(json!({ "kernelseal.io/inject": "true" }))).unwrap();
    body["request"]["object"]["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("command");
    let r = c
        .post(format!("{base}/mutate"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("its image \"w\"") && text.contains("set command on the container"),
        "{text}"
    );
    // A client that trusts another CA is refused at the handshake.
    let stranger = client(&pki("other").ca_pem);
    assert!(
        stranger
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_to_new_connections_without_dropping_open_ones() {
    install_crypto();
    let dir = scratch("rotate");
    let (base, old) = start(&dir).await;
    let kept = client(&old.ca_pem);
    let ok = kept.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let new = pki("two");
    install(&dir, &new);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A fresh client each time: a new connection, a new handshake.
        if client(&new.ca_pem)
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        client(&old.ca_pem)
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err(),
        "new connections no longer get the old certificate"
    );
    // The connection opened before the rotation still serves.
    let again = kept.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(again.status(), 200);
    // A broken pair is refused; the current one stays.
    std::fs::write(dir.join("tls.key"), "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        client(&new.ca_pem)
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok()
    );
}

/// A review sent by hand over its own TLS connection, its body cut in two
/// so that it is under way when the server stops.
struct SlowReview {
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    rest: Vec<u8>,
}

impl SlowReview {
    async fn start(port: u16, ca_pem: &str) -> SlowReview {
        use tokio::io::AsyncWriteExt;
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        let ca = rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap();
        roots.add(ca).unwrap();
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        let body = review_body(json!({ "kernelseal.io/inject": "true" }));
        let head = format!(
            "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        );
        let (first, rest) = body.split_at(body.len() / 2);
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.write_all(first).await.unwrap();
        tls.flush().await.unwrap();
        SlowReview {
            tls,
            rest: rest.to_vec(),
        }
    }

    /// Sends the rest of the body; the answer's status line and body.
    async fn finish(mut self) -> (String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.tls.write_all(&self.rest).await.unwrap();
        self.tls.flush().await.unwrap();
        let mut answer = Vec::new();
        // The server closes the connection after this answer: it is
        // stopping.
        self.tls.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8(answer).unwrap();
        let status = answer.lines().next().unwrap_or_default().to_string();
        let body = answer
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        (status, body)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_turns_not_ready_answers_for_the_delay_then_finishes_reviews_under_way() {
    install_crypto();
    let Parts {
        pki: p,
        cert,
        listener,
        port,
        webhook,
    } = parts(&scratch("stop"), "stop").await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let delay = Duration::from_millis(800);
    let server = tokio::spawn(serve_until(
        listener,
        cert,
        webhook,
        async move {
            let _ = stopped.await;
        },
        delay,
    ));
    let base = format!("https://localhost:{port}");
    let kept = client(&p.ca_pem);
    let ready = |c: reqwest::Client| {
        let url = format!("{base}/ready");
        async move { c.get(url).send().await.map(|r| r.status().as_u16()) }
    };
    assert_eq!(ready(kept.clone()).await.unwrap(), 200);
    let slow = SlowReview::start(port, &p.ca_pem).await;

    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        ready(kept.clone()).await.unwrap(),
        503,
        "stopping: /ready says so at once"
    );
    let during = client(&p.ca_pem)
        .post(format!("{base}/mutate"))
        .body(review_body(json!({ "kernelseal.io/inject": "true" })))
        .send()
        .await
        .expect("during the delay, a new connection is still served");
    assert_eq!(during.status(), 200);

    tokio::time::sleep(delay).await;
    let after = client(&p.ca_pem)
        .get(format!("{base}/healthz"))
        .send()
        .await;
    assert!(
        after.is_err(),
        "after the delay no connection is accepted: {after:?}"
    );
    let (status, body) = slow.finish().await;
    assert!(status.ends_with("200 OK"), "{status}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert!(answer["response"]["patch"].is_string(), "{answer}");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server returns once its connections are closed")
        .unwrap();
}
