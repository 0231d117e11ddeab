//! The gRPC server on a unix socket: safe socket creation and removal,
//! the `CSIDriverProvider` service, one log line per Mount, graceful stop.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::UnixListenerStream;
use zeroize::Zeroize;

use crate::authority::AuthorityFix;
use crate::conn::{Guarded, ServeOptions, Slot};

use crate::error::{Error, Outcome};
use crate::metrics::{Metrics, OutcomeLabel};
use crate::mount::Mounter;
use crate::proto::csi_driver_provider_server::{CsiDriverProvider, CsiDriverProviderServer};
use crate::proto::{MountRequest, MountResponse, VersionRequest, VersionResponse};

/// The gRPC service.
pub struct Service {
    mounter: Arc<Mounter>,
    metrics: Arc<Metrics>,
}

impl Service {
    pub fn new(mounter: Arc<Mounter>, metrics: Arc<Metrics>) -> Self {
        Service { mounter, metrics }
    }

    pub fn into_server(self) -> CsiDriverProviderServer<Service> {
        CsiDriverProviderServer::new(self)
    }
}

#[tonic::async_trait]
impl CsiDriverProvider for Service {
    async fn version(
        &self,
        _request: tonic::Request<VersionRequest>,
    ) -> Result<tonic::Response<VersionResponse>, tonic::Status> {
        Ok(tonic::Response::new(VersionResponse {
            version: "v1alpha1".into(),
            runtime_name: "kernelseal".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
        }))
    }

    async fn mount(
        &self,
        request: tonic::Request<MountRequest>,
    ) -> Result<tonic::Response<MountResponse>, tonic::Status> {
        let start = Instant::now();
        let mut req = request.into_inner();
        let result = self.mounter.mount(&req).await;
        // The attributes carry the pod's service-account tokens.
        req.attributes.zeroize();
        req.secrets.zeroize();
        let elapsed = start.elapsed();
        self.metrics.duration.observe(elapsed.as_secs_f64());
        let duration_ms = (elapsed.as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
        match result {
            Ok(m) => {
                let n = m.response.files.len();
                self.metrics
                    .mounts
                    .get_or_create(&OutcomeLabel {
                        outcome: Outcome::Ok.as_str().into(),
                    })
                    .inc();
                self.metrics.objects.inc_by(n as u64);
                tracing::info!(pod = %m.pod, objects = n, duration_ms, outcome = "ok", "mount");
                Ok(tonic::Response::new(m.response))
            }
            Err((pod, e)) => {
                let outcome = e.outcome();
                self.metrics
                    .mounts
                    .get_or_create(&OutcomeLabel {
                        outcome: outcome.as_str().into(),
                    })
                    .inc();
                // The error text is built to be safe to log (no values, no tokens).
                tracing::warn!(pod = %pod, objects = 0, duration_ms, outcome = outcome.as_str(), error = %e, "mount");
                Err(e.to_status())
            }
        }
    }
}

/// Binds the socket: a stale socket (nobody answers) is removed first; a
/// live one or any other file type is an error. The socket is created
/// mode 0600, or 0660 owned by `group`.
pub fn bind_socket(path: &Path, group: Option<u32>) -> Result<UnixListener, Error> {
    let fail = |message: String| Error::Socket {
        path: path.to_path_buf(),
        message,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(fail(
                        "another process is serving on it; stop it first".into(),
                    ));
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "removing stale socket");
                    std::fs::remove_file(path)
                        .map_err(|e| fail(format!("removing stale socket: {e}")))?;
                }
                Err(e) => return Err(fail(format!("exists and cannot be probed: {e}"))),
            }
        }
        Ok(_) => {
            return Err(fail(
                "exists and is not a socket; refusing to remove it".into(),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| fail(format!("creating its directory: {e}")))?;
    }
    // The umask closes the window between bind() and chmod(), in which a
    // socket created 0777 & ~umask could be connected to by anyone.
    // SAFETY: umask only swaps the process's file-creation mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above; restores the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|e| fail(e.to_string()))?;
    let mode = if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| fail(format!("chown to group {gid}: {e}")))?;
        0o660
    } else {
        0o600
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| fail(format!("chmod: {e}")))?;
    Ok(listener)
}

/// Removes the socket if it is still the one we created (same inode).
pub struct SocketGuard {
    path: PathBuf,
    ino: u64,
}

impl SocketGuard {
    pub fn new(path: &Path) -> Self {
        let ino = std::fs::symlink_metadata(path)
            .map(|m| m.ino())
            .unwrap_or(0);
        SocketGuard {
            path: path.to_path_buf(),
            ino,
        }
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Serves the provider on `listener` until `shutdown` resolves, then
/// finishes the calls in flight; with the default [`ServeOptions`].
pub async fn serve(
    listener: UnixListener,
    service: Service,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    serve_with(
        listener,
        service,
        metrics,
        ServeOptions::default(),
        shutdown,
    )
    .await
}

/// [`serve`] with the connection bounds of `opts`.
pub async fn serve_with(
    listener: UnixListener,
    service: Service,
    metrics: Arc<Metrics>,
    opts: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    metrics.ready.store(true, Ordering::Relaxed);
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let mut refusals = Refusals::default();
    let conn_opts = opts.clone();
    let gauge = metrics.connections.clone();
    let refused = metrics.connections_refused.clone();
    let incoming = UnixListenerStream::new(listener).filter_map(move |c| match c {
        Ok(stream) => match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let slot = Slot::new(permit, gauge.clone());
                Some(Ok(AuthorityFix::new(Guarded::new(
                    stream, slot, &conn_opts,
                ))))
            }
            Err(_) => {
                refused.inc();
                // Dropped here: closed at once, so the peer sees EOF
                // instead of waiting in the listen backlog.
                refusals.refused(conn_opts.max_connections);
                None
            }
        },
        Err(e) => Some(Err(e)),
    });
    let out = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(opts.keepalive_interval))
        .http2_keepalive_timeout(Some(opts.keepalive_timeout))
        // Graceful only: tonic's own grace period closes without GOAWAY,
        // so Guarded closes the connection after the grace instead.
        .max_connection_age(opts.max_connection_age)
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Serve {
            what: "gRPC server".into(),
            message: e.to_string(),
        });
    metrics.ready.store(false, Ordering::Relaxed);
    out
}

/// Connections refused at the bound: one warning per minute at most, with
/// the count since the last, as a peer at the bound may retry in a loop.
#[derive(Default)]
struct Refusals {
    last_warned: Option<Instant>,
    since: u64,
}

impl Refusals {
    fn refused(&mut self, limit: usize) {
        self.since += 1;
        if self
            .last_warned
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        tracing::warn!(
            limit,
            refused = self.since,
            "connection refused: the provider has its maximum of gRPC connections open"
        );
        self.last_warned = Some(Instant::now());
        self.since = 0;
    }
}
