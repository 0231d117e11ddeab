//! Test-only helpers shared by the crates whose tests talk to real peers.
//!
//! The providers and the CSI provider both test AWS against a real
//! `moto_server`; they must not depend on each other, so the launcher lives
//! here, as a dev-dependency of each. The binary's own tests, which run the
//! real agent and wrapper, share the child reaper and the poll loop.
//! `kube_api` (feature `kube-api`) stands in for the Kubernetes API's pod
//! list; `vault` (feature `vault`) for HashiCorp Vault with kubernetes auth
//! and ACL policies, and `sa_token` mints the service-account tokens a pod
//! logs in with. `cgroup` makes the cgroups a pod's container runs in.
//! `admission` (feature `admission`) is what the API server sends a
//! mutating webhook for a Deployment's pod.

#![forbid(unsafe_code)]

#[cfg(feature = "admission")]
pub mod admission;
pub mod cgroup;

#[cfg(feature = "kube-api")]
pub mod kube_api;
#[cfg(feature = "vault")]
pub mod sa_token;
#[cfg(feature = "vault")]
pub mod vault;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port on 127.0.0.1 that nothing listened on a moment ago (bound, then
/// released): for a server to start on, or as a "server down" address.
pub fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `moto_server` in server mode on 127.0.0.1, killed on drop.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL` or an SDK endpoint.
    pub endpoint: String,
}

impl Moto {
    /// Starts moto and waits until it accepts connections. Where it is not
    /// installed, returns `None` with a loud message naming `what` is
    /// skipped; under CI (`CI` set) a missing moto fails the test instead,
    /// so a missing install step cannot turn into a silent skip.
    pub fn start(what: &str) -> Option<Moto> {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("moto_server").is_file()));
        if !found {
            let msg = "moto_server not found: install it with  pip install 'moto[server]'";
            if std::env::var_os("CI").is_some() {
                panic!("{msg} (required in CI)");
            }
            eprintln!("\n!!!!!!!!!! SKIPPING {what}: {msg} !!!!!!!!!!\n");
            return None;
        }
        let port = unused_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn moto_server");
        // Built before the wait so that a start-up timeout still kills it.
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
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

/// A child killed and reaped when the test ends, passed or failed, so a
/// failing test leaves no app or agent running.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `done` until it holds; after `secs` seconds fails with `context()`
/// (a log, say), read only then.
pub fn wait_until(secs: u64, mut done: impl FnMut() -> bool, context: impl FnOnce() -> String) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(secs), "{}", context());
        std::thread::sleep(Duration::from_millis(20));
    }
}
