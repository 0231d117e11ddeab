//! A real registry for the tests: Debian's `docker-registry` (the
//! Distribution registry) on 127.0.0.1 with its storage in a temporary
//! directory, images the test writes itself as an OCI layout and pushes
//! with `skopeo`, and the registry's access log to count the requests the
//! webhook makes. [`TestRegistry::start_private`] requires a user name and
//! password (Distribution's `htpasswd` auth, bcrypt as it demands) for
//! every request, pushes included.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A free port on 127.0.0.1 (nothing listens on it once returned).
pub fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// `docker-registry serve` on 127.0.0.1, killed on drop.
pub struct TestRegistry {
    child: Child,
    dir: PathBuf,
    /// `127.0.0.1:PORT`, as image references name it.
    pub host: String,
    /// `user:password` every request needs, if any.
    creds: Option<String>,
}

impl TestRegistry {
    /// Starts the registry and waits until it accepts connections. Where
    /// `docker-registry` or `skopeo` is missing, returns `None` with a loud
    /// message naming `what` is skipped; under CI (`CI` set) that fails the
    /// test instead, so a missing install step cannot turn into a skip.
    pub fn start(what: &str) -> Option<TestRegistry> {
        TestRegistry::start_with(what, None)
    }

    /// As [`TestRegistry::start`], every request (pushes included) needing
    /// `user` and `password` over HTTP basic auth. Distribution's
    /// documentation says htpasswd "MUST be used under TLS"; its 2.8
    /// serves it over plain HTTP all the same, which on loopback is what a
    /// test needs.
    pub fn start_private(what: &str, user: &str, password: &str) -> Option<TestRegistry> {
        TestRegistry::start_with(what, Some((user, password)))
    }

    fn start_with(what: &str, auth: Option<(&str, &str)>) -> Option<TestRegistry> {
        let missing: Vec<&str> = ["docker-registry", "skopeo"]
            .into_iter()
            .filter(|t| !on_path(t))
            .collect();
        if !missing.is_empty() {
            let msg = format!(
                "{} not found: install the Debian packages  docker-registry skopeo  (scripts/setup does)",
                missing.join(", ")
            );
            if std::env::var_os("CI").is_some() {
                panic!("{msg} (required in CI)");
            }
            eprintln!("\n!!!!!!!!!! SKIPPING {what}: {msg} !!!!!!!!!!\n");
            return None;
        }
        let port = unused_port();
        let dir =
            std::env::temp_dir().join(format!("ks-webhook-registry-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("storage")).unwrap();
        let mut yaml = config_yaml(&dir.join("storage"), port);
        if let Some((user, password)) = auth {
            // The lowest cost bcrypt allows: the registry checks it on
            // every request.
            let hash = bcrypt::hash(password, 4).expect("bcrypt");
            let htpasswd = dir.join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kernelseal-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config = dir.join("config.yml");
        std::fs::write(&config, yaml).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            // The access log (one line a request) goes to stdout.
            .stdout(std::fs::File::create(dir.join("access.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("registry.log")).unwrap())
            .spawn()
            .expect("spawn docker-registry");
        // Built before the wait so that a start-up timeout still kills it.
        let registry = TestRegistry {
            child,
            dir,
            host: format!("127.0.0.1:{port}"),
            creds: auth.map(|(u, p)| format!("{u}:{p}")),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start within 30s: {}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(registry)
    }

    /// The registry's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// The requests served so far, one access-log line each.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The number of requests once the log has stopped growing (a line is
    /// written just after its answer is sent).
    pub async fn settled_requests(&self) -> usize {
        let mut last = self.requests().len();
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = self.requests().len();
            if now == last {
                return now;
            }
            last = now;
        }
    }

    /// Pushes `image` to `REPO:TAG` here with skopeo, digests kept (with
    /// the registry's credentials when it has some).
    pub fn push(&self, image: &Layout, reference: &str, repo_tag: &str) {
        let mut skopeo = Command::new("skopeo");
        skopeo.args([
            "--insecure-policy",
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ]);
        if let Some(creds) = &self.creds {
            skopeo.arg(format!("--dest-creds={creds}"));
        }
        let out = skopeo
            .arg(format!("oci:{}:{reference}", image.dir.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host))
            .output()
            .expect("running skopeo");
        assert!(
            out.status.success(),
            "skopeo copy to {repo_tag}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config_yaml(storage: &Path, port: u16) -> String {
    format!(
        "version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {}
http:
  addr: 127.0.0.1:{port}
  secret: kernelseal-webhook-test
",
        storage.display()
    )
}

pub fn sha256(bytes: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A tar holding one small executable file: the image's only layer.
fn layer_tar(name: &str, content: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    let field = |h: &mut [u8; 512], at: usize, value: &[u8]| {
        h[at..at + value.len()].copy_from_slice(value);
    };
    field(&mut header, 0, name.as_bytes());
    field(&mut header, 100, b"0000755\0");
    field(&mut header, 108, b"0000000\0");
    field(&mut header, 116, b"0000000\0");
    field(
        &mut header,
        124,
        format!("{:011o}\0", content.len()).as_bytes(),
    );
    field(&mut header, 136, b"00000000000\0");
    field(&mut header, 148, b"        ");
    header[156] = b'0';
    field(&mut header, 257, b"ustar\0");
    field(&mut header, 263, b"00");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    field(&mut header, 148, format!("{sum:06o}\0 ").as_bytes());
    let mut tar = header.to_vec();
    tar.extend_from_slice(content);
    tar.resize(tar.len().next_multiple_of(512) + 1024, 0);
    tar
}

/// An OCI image layout directory the test writes.
pub struct Layout {
    dir: PathBuf,
    refs: Vec<Value>,
}

/// A descriptor of a blob written to the layout.
#[derive(Clone)]
pub struct Blob {
    pub media_type: &'static str,
    pub digest: String,
    pub size: usize,
}

impl Blob {
    fn descriptor(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.size })
    }
}

impl Layout {
    pub fn new(name: &str) -> Layout {
        let dir =
            std::env::temp_dir().join(format!("ks-webhook-layout-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let layout = Layout {
            dir,
            refs: Vec::new(),
        };
        layout.write_index();
        layout
    }

    fn blob(&self, media_type: &'static str, bytes: &[u8]) -> Blob {
        let digest = sha256(bytes);
        let file = digest.trim_start_matches("sha256:");
        std::fs::write(self.dir.join("blobs/sha256").join(file), bytes).unwrap();
        Blob {
            media_type,
            digest,
            size: bytes.len(),
        }
    }

    fn write_index(&self) {
        let index = json!({ "schemaVersion": 2, "manifests": self.refs });
        std::fs::write(self.dir.join("index.json"), index.to_string()).unwrap();
    }

    fn tag(&mut self, blob: &Blob, reference: &str) {
        let mut d = blob.descriptor();
        d["annotations"] = json!({ "org.opencontainers.image.ref.name": reference });
        self.refs.push(d);
        self.write_index();
    }

    /// A linux image for `arch` whose config is `exec` (its `config`
    /// object: `Entrypoint`, `Cmd`) with `config_type` as the config's media
    /// type; tagged `reference` in the layout when given. Returns the
    /// manifest.
    pub fn image(
        &mut self,
        arch: &str,
        exec: Value,
        config_type: &'static str,
        reference: Option<&str>,
    ) -> Blob {
        let layer = layer_tar("hello", b"#!/bin/sh\necho hello\n");
        let layer_blob = self.blob("application/vnd.oci.image.layer.v1.tar", &layer);
        let config = json!({
            "architecture": arch, "os": "linux", "config": exec,
            "rootfs": { "type": "layers", "diff_ids": [layer_blob.digest] }
        });
        let config_blob = self.blob(config_type, config.to_string().as_bytes());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_blob.descriptor(),
            "layers": [layer_blob.descriptor()]
        });
        let blob = self.blob(
            "application/vnd.oci.image.manifest.v1+json",
            manifest.to_string().as_bytes(),
        );
        if let Some(r) = reference {
            self.tag(&blob, r);
        }
        blob
    }

    /// An index of `images` (architecture, manifest), tagged `reference`.
    pub fn index(&mut self, images: &[(&str, &Blob)], reference: &str) -> Blob {
        let manifests: Vec<Value> = images
            .iter()
            .map(|(arch, m)| {
                let mut d = m.descriptor();
                d["platform"] = json!({ "os": "linux", "architecture": arch });
                d
            })
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests
        });
        let blob = self.blob(
            "application/vnd.oci.image.index.v1+json",
            index.to_string().as_bytes(),
        );
        self.tag(&blob, reference);
        blob
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
