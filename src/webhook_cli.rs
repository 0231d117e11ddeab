//! `kernelseal webhook`: the mutating admission webhook that wraps
//! annotated pods.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use kernelseal_webhook::metrics::Metrics;
use kernelseal_webhook::server::{Webhook, serve_until};
use kernelseal_webhook::tls::{CertFiles, ReloadingCert};
use kernelseal_webhook::{Patcher, PullSecrets, Registry, RegistryConfig, Settings};

use crate::exit::Failure;

/// The namespace file of an in-cluster pod.
const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

#[derive(clap::Args)]
pub struct WebhookArgs {
    /// Address to serve HTTPS on (`POST /mutate`, `POST /mutate-namespace`,
    /// `/healthz`, `/ready`, `/metrics`).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// PEM certificate chain the API server verifies (the Service's name).
    #[arg(long, value_name = "FILE")]
    cert_file: PathBuf,
    /// PEM private key of the certificate.
    #[arg(long, value_name = "FILE")]
    key_file: PathBuf,
    /// How often the certificate files are checked for a new pair
    /// (cert-manager rotates them in place); new connections use it.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    reload_interval: Duration,
    /// The KernelSeal image the injected init container copies the static
    /// wrapper from.
    #[arg(long, value_name = "IMAGE", default_value = "kernelseal:0.1.0")]
    image: String,
    /// The agent's socket directory on the nodes, mounted read-only at the
    /// same path; the socket in it is `kernelseal.sock` (another directory
    /// than the default is passed to the wrapper as `--socket`).
    #[arg(long, value_name = "DIR", default_value = "/run/kernelseal")]
    socket_dir: String,
    /// The agent socket's group (its `--socket-group`), added to the pod's
    /// supplementalGroups.
    #[arg(long, value_name = "GID", default_value_t = 7373)]
    socket_group: i64,
    /// Life of the projected service-account tokens it mounts.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = duration)]
    token_expiry: Duration,
    /// The webhook's own namespace, whose pods are never touched; default:
    /// `$POD_NAMESPACE`, else the in-cluster namespace file.
    #[arg(long, value_name = "NAME")]
    namespace: Option<String>,
    /// A registry (`HOST:PORT`, as image references write it) whose image
    /// configs are read over plain HTTP; every other one over verified
    /// HTTPS. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT", value_parser = registry_host)]
    insecure_registries: Vec<String>,
    /// How long the ENTRYPOINT/CMD read for a tag is kept (a digest's is
    /// kept for good); `0s`: tags are read for every pod.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = duration)]
    image_cache_ttl: Duration,
    /// On SIGTERM: `/ready` answers 503 at once, reviews go on being
    /// answered this long (while the Service's endpoints drop this pod:
    /// with failurePolicy Fail a review finding no webhook fails the pod),
    /// then the connections open finish their review (10 s at most).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration)]
    shutdown_delay: Duration,
    /// Look images up with the pod's imagePullSecrets (its service
    /// account's included), as the kubelet pulls them: each Secret a pod
    /// names is read with `get` in the pod's namespace, so the webhook's
    /// identity needs cluster-wide `get` on `secrets`. Off: lookups are
    /// anonymous and private images are refused.
    #[arg(long)]
    pull_secrets: bool,
}

fn duration(s: &str) -> Result<Duration, String> {
    kernelseal_config::parse_duration(s)
        .map_err(|_| format!("{s:?} is not a duration (e.g. 10s, 10m)"))
}

/// A registry as image references name it: a host, with a port or not.
fn registry_host(s: &str) -> Result<String, String> {
    let bad = s.is_empty() || s.contains('/') || s.chars().any(char::is_whitespace);
    if bad {
        return Err(format!(
            "{s:?} is not a registry: give HOST:PORT as image references write it (no scheme, no path)"
        ));
    }
    Ok(s.to_string())
}

fn own_namespace(given: Option<String>) -> Result<String, Failure> {
    if let Some(n) = given.or_else(|| std::env::var("POD_NAMESPACE").ok()) {
        return Ok(n);
    }
    std::fs::read_to_string(NAMESPACE_FILE)
        .map(|s| s.trim().to_string())
        .map_err(|e| {
            Failure::config(anyhow!(
                "the webhook's own namespace is unknown: give --namespace or POD_NAMESPACE ({NAMESPACE_FILE}: {e})"
            ))
        })
}

pub fn run(args: WebhookArgs) -> Result<(), Failure> {
    crate::logging::init(Default::default(), "info");
    let own_namespace = own_namespace(args.namespace)?;
    let token_expiry_secs = i64::try_from(args.token_expiry.as_secs())
        .ok()
        .filter(|s| *s >= 600)
        .ok_or_else(|| {
            Failure::config(anyhow!(
                "--token-expiry must be at least 10m (the API server's minimum)"
            ))
        })?;
    let cert = ReloadingCert::new(CertFiles {
        cert: args.cert_file,
        key: args.key_file,
    })
    .map_err(Failure::config)?;
    let registry = Registry::new(RegistryConfig {
        insecure: args.insecure_registries,
        tag_ttl: args.image_cache_ttl,
        ..RegistryConfig::default()
    })
    .map_err(|e| Failure::runtime(anyhow!(e)))?;
    let patcher = Patcher::new(Settings {
        image: args.image,
        socket_dir: args.socket_dir,
        socket_group: args.socket_group,
        token_expiry_secs,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(anyhow!(e).context("starting the async runtime")))?;
    let metrics = Metrics::default();
    runtime.block_on(async move {
        let images = if args.pull_secrets {
            registry.with_pull_secrets(PullSecrets::new(kube_client().await?))
        } else {
            registry
        };
        let webhook = Arc::new(Webhook::new(
            patcher,
            own_namespace,
            Box::new(images.counting(metrics.lookup_counts())),
            metrics,
        ));
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| Failure::config(anyhow!("--listen {}: {e}", args.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Failure::runtime(anyhow!(e)))?;
        tokio::spawn(cert.clone().watch(args.reload_interval));
        tracing::info!(
            listen = %addr, namespace = %webhook.own_namespace, pull_secrets = args.pull_secrets,
            "[WEBHOOK] serving admission reviews on https://{addr}/mutate"
        );
        let stop = stop_signal().map_err(|e| Failure::runtime(anyhow!(e)))?;
        serve_until(listener, cert, webhook, stop, args.shutdown_delay).await;
        Ok(())
    })
}

/// Resolves on the first SIGTERM or SIGINT, saying which.
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = (
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    );
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!("[WEBHOOK] {name} received");
    })
}

/// The API client pull secrets are read with: in-cluster, the pod's
/// service-account token (the Deployment must mount one); elsewhere
/// `$KUBECONFIG` or `~/.kube/config`.
async fn kube_client() -> Result<kube::Client, Failure> {
    kube::Client::try_default().await.map_err(|e| {
        Failure::config(anyhow!(
            "--pull-secrets: no Kubernetes API client ({e}): run in-cluster with a \
             service-account token mounted, or set KUBECONFIG"
        ))
    })
}
