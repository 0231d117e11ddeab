//! Connection bounds of the gRPC socket (issue 13, item 9): connections
//! that never start HTTP/2 or never answer a ping are closed, no more than
//! `max_connections` are open, and a real client keeps working after its
//! connection aged out. Real unix sockets, a real tonic client; waits have
//! generous deadlines and nothing asserts on timing.

mod support;

use std::time::Duration;

use kernelseal_csi::{LocalPolicy, ServeOptions};
use support::{Server, attributes, connect, request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const DEADLINE: Duration = Duration::from_secs(30);
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: the rest of a client's connection preface.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

fn policy() -> LocalPolicy {
    LocalPolicy {
        env_prefixes: vec!["KS_CSI_TEST_".into()],
        ..LocalPolicy::default()
    }
}

fn mount_request() -> kernelseal_csi::proto::MountRequest {
    request(attributes(
        "- objectName: a\n  env: KS_CSI_TEST_A\n",
        &[],
        &[],
    ))
}

/// Reads (whatever the server sends) until the server closes the
/// connection; false if it is still open at the deadline.
async fn closed_by_server(s: &mut UnixStream) -> bool {
    let read_to_end = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(DEADLINE, read_to_end).await.is_ok()
}

/// Open: nothing but (possibly) the server's own frames to read, no EOF.
fn still_open(s: &UnixStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.try_read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_start_http2_are_closed() {
    let keys = tempfile::tempdir().unwrap();
    let opts = ServeOptions {
        handshake_timeout: Duration::from_millis(200),
        max_connections: 200,
        ..ServeOptions::default()
    };
    let mut s = Server::start_opts(policy(), &keys.path().join("k"), opts).await;
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(UnixStream::connect(&s.socket).await.unwrap());
    }
    for (i, c) in silent.iter_mut().enumerate() {
        assert!(
            closed_by_server(c).await,
            "silent connection {i} still open"
        );
    }
    let gauge = s.metrics.connections.clone();
    assert!(
        support::eventually(|| gauge.get() == 1).await,
        "{} connections counted open, only the client's should be",
        gauge.get()
    );
    // The client's connection did start HTTP/2 and is kept.
    let r = s.client.mount(mount_request()).await.unwrap().into_inner();
    assert_eq!(r.files[0].contents, b"env-secret-alpha-1");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_does_not_answer_pings_is_closed() {
    let keys = tempfile::tempdir().unwrap();
    let opts = ServeOptions {
        keepalive_interval: Duration::from_millis(100),
        keepalive_timeout: Duration::from_millis(100),
        ..ServeOptions::default()
    };
    let mut s = Server::start_opts(policy(), &keys.path().join("k"), opts).await;
    // A complete HTTP/2 start, then silence: the server's PINGs go unanswered.
    let mut c = UnixStream::connect(&s.socket).await.unwrap();
    c.write_all(PREFACE).await.unwrap();
    c.write_all(SETTINGS).await.unwrap();
    assert!(closed_by_server(&mut c).await, "still open");
    // A real client answers the pings and keeps its connection.
    let r = s.client.mount(mount_request()).await.unwrap().into_inner();
    assert_eq!(r.files[0].contents, b"env-secret-alpha-1");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_at_once() {
    let keys = tempfile::tempdir().unwrap();
    let opts = ServeOptions {
        max_connections: 3,
        handshake_timeout: Duration::from_secs(3600),
        ..ServeOptions::default()
    };
    let s = Server::start_opts(policy(), &keys.path().join("k"), opts).await;
    let gauge = s.metrics.connections.clone();
    // The support client holds one; two raw ones fill the bound.
    let a = UnixStream::connect(&s.socket).await.unwrap();
    let b = UnixStream::connect(&s.socket).await.unwrap();
    assert!(
        support::eventually(|| gauge.get() == 3).await,
        "{}",
        gauge.get()
    );
    let mut over = UnixStream::connect(&s.socket).await.unwrap();
    assert!(closed_by_server(&mut over).await, "the fourth was kept");
    assert_eq!(s.metrics.connections_refused.get(), 1);
    assert!(still_open(&a) && still_open(&b));
    assert!(
        s.metrics
            .encode()
            .contains("kernelseal_csi_connections_refused_total 1")
    );

    // One closes: its slot is free again for a real client.
    drop(a);
    assert!(
        support::eventually(|| gauge.get() == 2).await,
        "{}",
        gauge.get()
    );
    let mut client = connect(&s.socket).await;
    let r = client.mount(mount_request()).await.unwrap().into_inner();
    assert_eq!(r.files[0].contents, b"env-secret-alpha-1");
    drop(b);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_keeps_working_after_its_connection_aged_out() {
    let keys = tempfile::tempdir().unwrap();
    let opts = ServeOptions {
        max_connection_age: Duration::from_millis(300),
        max_connection_age_grace: Duration::from_millis(300),
        ..ServeOptions::default()
    };
    let mut s = Server::start_opts(policy(), &keys.path().join("k"), opts).await;
    let r = s.client.mount(mount_request()).await.unwrap().into_inner();
    assert_eq!(r.files[0].contents, b"env-secret-alpha-1");
    let gauge = s.metrics.connections.clone();
    assert!(
        support::eventually(|| gauge.get() == 0).await,
        "the client's connection was not closed at its age"
    );
    // The same client reconnects by itself, as the driver's does.
    let again = s.client.mount(mount_request()).await.unwrap().into_inner();
    assert_eq!(again.object_version, r.object_version);
    s.stop().await;
}
