//! Shared test support: crypto provider, log capture, leak assertions and
//! a moto_server process that is killed on drop.
#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the crypto provider and a global subscriber that records every
/// log line of this test binary (ours at TRACE, libraries at DEBUG).
pub fn init() {
    kernelseal_providers::install_crypto_provider();
    let buf = LOGS
        .get_or_init(|| Arc::new(Mutex::new(Vec::new())))
        .clone();
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let targets = tracing_subscriber::filter::Targets::new()
        .with_target("kernelseal_providers", tracing::Level::TRACE)
        .with_default(tracing::Level::DEBUG);
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || Sink(buf.clone())),
        )
        .with(targets)
        .try_init();
}

/// Everything logged so far by this test binary.
pub fn logs() -> String {
    let buf = LOGS.get_or_init(|| Arc::new(Mutex::new(Vec::new())));
    String::from_utf8_lossy(&buf.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

/// Asserts that none of `secrets` appears in `text` (an error's Display and
/// Debug) nor in the captured logs.
pub fn assert_no_leak(text: &str, secrets: &[&str]) {
    let logs = logs();
    for s in secrets {
        assert!(
            !text.contains(s),
            "secret {s:?} leaked into error text: {text}"
        );
        assert!(!logs.contains(s), "secret {s:?} leaked into logs");
    }
}

/// Asserts no leak for an error, checking both Display and Debug.
pub fn assert_err_clean(e: &kernelseal_providers::Error, secrets: &[&str]) {
    assert_no_leak(&format!("{e} {e:?}"), secrets);
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A port nothing listens on (bound then released).
pub fn closed_port() -> u16 {
    free_port()
}

/// `moto_server` in server mode on 127.0.0.1, killed on drop.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    /// Starts moto, or returns `None` (with a loud message) when it is not
    /// installed outside CI. In CI a missing moto fails the test.
    pub fn start() -> Option<Moto> {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("moto_server").is_file()));
        if !found {
            let msg = "moto_server not found: install it with  pip install 'moto[server]'";
            if std::env::var_os("CI").is_some() {
                panic!("{msg} (required in CI)");
            }
            eprintln!("\n!!!!!!!!!! SKIPPING AWS TESTS: {msg} !!!!!!!!!!\n");
            return None;
        }
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn moto_server");
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not start within 60s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
