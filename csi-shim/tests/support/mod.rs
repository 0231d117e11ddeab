//! Shared test support: an in-process provider on a real unix socket and a
//! tonic client connected to it, plus the fixture.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use kernelseal_csi::proto::MountRequest;
use kernelseal_csi::proto::csi_driver_provider_client::CsiDriverProviderClient;
use kernelseal_csi::{LocalPolicy, Metrics, Mounter, ServeOptions, Service, VersionKey};
use serde_json::Value;
use tonic::transport::Channel;

pub type Client = CsiDriverProviderClient<Channel>;

/// Every env var the tests' `env` objects read, set once before any
/// server starts (setenv is not safe while other threads read the env).
pub const ENV: &[(&str, &str)] = &[
    ("KS_CSI_TEST_A", "env-secret-alpha-1"),
    ("KS_CSI_TEST_B", "env-secret-bravo-2"),
    ("KS_CSI_FIXTURE_DB_PASSWORD", "fixture-db-password-4711"),
    ("KS_CSI_FIXTURE_KEY_B64", "AAECA/+A/3NlY3JldC1rZXk="),
    ("OTHER_SECRET", "never-served-9999"),
];

pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        kernelseal_providers::install_crypto_provider();
        for (k, v) in ENV {
            // SAFETY: runs once, before any test starts a server or reads env.
            unsafe { std::env::set_var(k, v) };
        }
    });
}

/// A running provider.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub client: Client,
    pub metrics: Arc<Metrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), kernelseal_csi::Error>>>,
}

impl Server {
    /// Starts a provider with `policy`, keyed by `key_file` (created if absent).
    pub async fn start(policy: LocalPolicy, key_file: &Path) -> Server {
        init();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kernelseal.sock");
        Server::start_at(dir, socket, policy, key_file).await
    }

    pub async fn start_at(
        dir: tempfile::TempDir,
        socket: PathBuf,
        policy: LocalPolicy,
        key_file: &Path,
    ) -> Server {
        Server::start_full(
            dir,
            socket,
            policy,
            key_file,
            kernelseal_providers::Registry::new(),
            ServeOptions::default(),
        )
        .await
    }

    /// With the connection bounds of `opts`.
    pub async fn start_opts(policy: LocalPolicy, key_file: &Path, opts: ServeOptions) -> Server {
        init();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kernelseal.sock");
        let registry = kernelseal_providers::Registry::new();
        Server::start_full(dir, socket, policy, key_file, registry, opts).await
    }

    /// With the providers of a config (e.g. a kubernetes provider).
    pub async fn start_with(registry: kernelseal_providers::Registry, key_file: &Path) -> Server {
        init();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kernelseal.sock");
        let opts = ServeOptions::default();
        Server::start_full(
            dir,
            socket,
            LocalPolicy::default(),
            key_file,
            registry,
            opts,
        )
        .await
    }

    async fn start_full(
        dir: tempfile::TempDir,
        socket: PathBuf,
        policy: LocalPolicy,
        key_file: &Path,
        registry: kernelseal_providers::Registry,
        opts: ServeOptions,
    ) -> Server {
        init();
        let key = VersionKey::load_or_create(key_file).unwrap();
        let listener = kernelseal_csi::bind_socket(&socket, None).unwrap();
        let metrics = Arc::new(Metrics::default());
        let mounter = Arc::new(Mounter::new(registry, key, policy));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(kernelseal_csi::serve_with(
            listener,
            Service::new(mounter, metrics.clone()),
            metrics.clone(),
            opts,
            async move {
                let _ = rx.await;
            },
        ));
        let client = connect(&socket).await;
        Server {
            dir,
            socket,
            client,
            metrics,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops gracefully (calls in flight finish) and returns the temp dir,
    /// kept for a restart on the same path.
    pub async fn stop(self) -> tempfile::TempDir {
        let Server {
            dir,
            socket,
            stop,
            task,
            ..
        } = self;
        if let Some(tx) = stop {
            let _ = tx.send(());
        }
        if let Some(t) = task {
            t.await.unwrap().unwrap();
        }
        let _ = std::fs::remove_file(&socket);
        dir
    }
}

/// A tonic client over the unix socket, as the driver connects.
pub async fn connect(socket: &Path) -> Client {
    let path = socket.to_path_buf();
    let channel = tonic::transport::Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .expect("connect to the provider socket");
    CsiDriverProviderClient::new(channel)
}

/// Builds `attributes` as the driver does: parameters plus pod attributes.
pub fn attributes(objects: &str, extra: &[(&str, &str)], tokens: &[(&str, &str)]) -> String {
    let mut m = serde_json::Map::new();
    m.insert("objects".into(), objects.into());
    m.insert("secretProviderClass".into(), "test-class".into());
    m.insert("csi.storage.k8s.io/ephemeral".into(), "false".into());
    m.insert("csi.storage.k8s.io/pod.name".into(), "web-0".into());
    m.insert("csi.storage.k8s.io/pod.namespace".into(), "shop".into());
    m.insert("csi.storage.k8s.io/pod.uid".into(), "uid-1".into());
    m.insert(
        "csi.storage.k8s.io/serviceAccount.name".into(),
        "web".into(),
    );
    let mut t = serde_json::Map::new();
    for (aud, tok) in tokens {
        t.insert(
            aud.to_string(),
            serde_json::json!({"token": tok, "expirationTimestamp": "2030-01-01T00:00:00Z"}),
        );
    }
    m.insert(
        "csi.storage.k8s.io/serviceAccount.tokens".into(),
        Value::Object(t).to_string().into(),
    );
    for (k, v) in extra {
        m.insert(k.to_string(), (*v).into());
    }
    Value::Object(m).to_string()
}

pub fn request(attributes: String) -> MountRequest {
    MountRequest {
        attributes,
        secrets: "null".into(),
        target_path: "/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~csi/v/mount".into(),
        permission: "420".into(),
        current_object_version: vec![],
    }
}

/// The shared fixture, with `${FIXTURE_DIR}` replaced and its files written.
pub struct Fixture {
    pub json: Value,
    pub request: MountRequest,
    pub key_file: PathBuf,
}

pub fn fixture(dir: &Path) -> Fixture {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mount_request.json"),
    )
    .unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    for (name, content) in json["files"].as_object().unwrap() {
        std::fs::write(dir.join(name), content.as_str().unwrap()).unwrap();
    }
    let key_file = dir.join("hmac.key");
    let key = hex(json["hmac_key_hex"].as_str().unwrap());
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key_file)
        .unwrap()
        .write_all(&key)
        .unwrap();
    let r = &json["request"];
    let attributes = r["attributes"]
        .as_str()
        .unwrap()
        .replace("${FIXTURE_DIR}", dir.to_str().unwrap());
    let request = MountRequest {
        attributes,
        secrets: r["secrets"].as_str().unwrap().into(),
        target_path: r["target_path"].as_str().unwrap().into(),
        permission: r["permission"].as_str().unwrap().into(),
        current_object_version: vec![],
    };
    Fixture {
        json,
        request,
        key_file,
    }
}

pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Asserts that no secret of the tests appears in `text`.
pub fn assert_clean(text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "secret {s:?} leaked: {text}");
    }
}

/// Waits (generously: 30 s, which only a failing test spends) until `cond`
/// holds; false if it never did.
pub async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    cond()
}
