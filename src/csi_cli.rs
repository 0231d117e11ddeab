//! `kernelseal csi-provider` (the Secrets Store CSI Driver provider) and
//! `kernelseal csi validate FILE`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::anyhow;
use kernelseal_csi::{LocalPolicy, Metrics, Mounter, Service, SocketGuard, VersionKey};

use crate::exit::Failure;

#[derive(clap::Args)]
pub struct ProviderArgs {
    /// The unix socket the driver connects to.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/var/run/secrets-store-csi-providers/kernelseal.sock"
    )]
    socket: PathBuf,
    /// Group id that may connect (socket mode 0660); default: owner only (0600).
    #[arg(long, value_name = "GID")]
    socket_group: Option<u32>,
    /// KernelSeal config: its `providers:` (kubernetes settings, …) and
    /// `monitoring` log settings. Vault and AWS objects use the pod's
    /// identity and the class's parameters, not this file.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// `/healthz`, `/ready` and `/metrics` over HTTP; `off` disables.
    #[arg(long, value_name = "ADDR|off", default_value = "127.0.0.1:8095")]
    health_addr: String,
    /// Key for object versions (HMAC-SHA256); created 0600 when absent.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/var/lib/kernelseal/csi-version.key"
    )]
    hmac_key_file: PathBuf,
    /// Serve `env` objects whose variable starts with PREFIX (repeatable).
    /// Without it, `env` objects are refused.
    #[arg(long = "allow-env", value_name = "PREFIX")]
    allow_env: Vec<String>,
    /// Serve `file` objects under DIR (repeatable). Without it, `file`
    /// objects are refused.
    #[arg(long = "allow-file-dir", value_name = "DIR")]
    allow_file_dir: Vec<PathBuf>,
    /// Let `awsSecretId` objects without `roleArn` use this node's AWS
    /// credential chain (every pod then reads with the node's identity).
    #[arg(long)]
    allow_aws_node_credentials: bool,
}

#[derive(clap::Subcommand)]
pub enum CsiCommand {
    /// Check the SecretProviderClass manifests of a file (one or several
    /// `---`-separated documents; other kinds are skipped) or a bare
    /// parameters map with the parser Mount uses; exit 2 on errors.
    Validate {
        /// YAML file (a regular file); `-` reads standard input.
        file: PathBuf,
    },
}

/// Largest manifest `csi validate` reads: a class is a few KiB, and a
/// file of many `---` documents still far below the config's bound.
const MAX_MANIFEST_BYTES: u64 = kernelseal_config::MAX_CONFIG_BYTES;

pub fn validate(cmd: CsiCommand) -> Result<(), Failure> {
    let CsiCommand::Validate { file } = cmd;
    use kernelseal_config::input;
    let (bytes, name) =
        input::read_arg(&file, "manifest", MAX_MANIFEST_BYTES).map_err(Failure::config)?;
    let text = input::into_text(bytes, &name, "manifest").map_err(Failure::config)?;
    let classes = kernelseal_csi::validate::validate_documents(&text)
        .map_err(|e| Failure::config(anyhow!("{name}: {e}")))?;
    for v in &classes {
        for w in &v.warnings {
            println!("warning: {name}: {w}");
        }
        println!(
            "{}: OK{} ({} object(s))",
            name,
            v.name
                .as_ref()
                .map(|n| format!(" SecretProviderClass {n}"))
                .unwrap_or_default(),
            v.params.objects.len()
        );
    }
    Ok(())
}

pub fn run(args: ProviderArgs) -> Result<(), Failure> {
    let (config, log_format, log_level) = match &args.config {
        Some(path) => {
            let loaded = kernelseal_config::load_file(path).map_err(Failure::config)?;
            let m = loaded.config.monitoring.clone();
            (Some(loaded.config), m.log_format, m.log_level)
        }
        None => (None, Default::default(), "info".to_string()),
    };
    crate::logging::init(log_format, &log_level);
    let registry = match &config {
        Some(c) => kernelseal_providers::Registry::from_config(c).map_err(Failure::config)?,
        None => kernelseal_providers::Registry::new(),
    };
    let health: Option<SocketAddr> = match args.health_addr.as_str() {
        "off" => None,
        a => Some(
            a.parse()
                .map_err(|e| Failure::config(anyhow!("--health-addr {a:?}: {e}")))?,
        ),
    };
    let key = VersionKey::load_or_create(&args.hmac_key_file).map_err(Failure::config)?;
    let policy = LocalPolicy {
        env_prefixes: args.allow_env.clone(),
        file_dirs: args.allow_file_dir.clone(),
        aws_node_credentials: args.allow_aws_node_credentials,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(anyhow!(e).context("starting the async runtime")))?;
    runtime.block_on(async move {
        let listener =
            kernelseal_csi::bind_socket(&args.socket, args.socket_group).map_err(Failure::config)?;
        let _guard = SocketGuard::new(&args.socket);
        let metrics = Arc::new(Metrics::default());
        let mounter = Arc::new(Mounter::new(registry, key, policy));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let health_listener = match health {
            Some(addr) => Some(
                kernelseal_csi::metrics::bind_health(addr)
                    .await
                    .map_err(Failure::config)?,
            ),
            None => None,
        };
        let health_task = health_listener.map(|listener| {
            let mut rx = stop_rx.clone();
            let m = metrics.clone();
            tokio::spawn(async move {
                kernelseal_csi::metrics::serve_health(listener, m, async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
            })
        });
        let memory = kernelseal_providers::secret_memory().map_or("none yet", |b| b.describe());
        tracing::info!(socket = %args.socket.display(), health = %args.health_addr, memory, "csi provider serving");
        let mut rx = stop_rx.clone();
        let grpc = kernelseal_csi::serve(
            listener,
            Service::new(mounter, metrics.clone()),
            metrics,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        );
        tokio::pin!(grpc);
        let result = tokio::select! {
            r = &mut grpc => r,
            sig = shutdown_signal() => {
                tracing::info!(signal = sig, "shutting down: finishing calls in flight");
                let _ = stop_tx.send(true);
                grpc.await
            }
        };
        let _ = stop_tx.send(true);
        if let Some(t) = health_task
            && let Ok(Err(e)) = t.await
        {
            tracing::warn!(error = %e, "health endpoint failed");
        }
        result.map_err(Failure::runtime)
    })
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return "";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
