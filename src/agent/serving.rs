//! The agent's delivery side, wired: metrics endpoint, pod identity, the
//! socket server and its reloadable `ServingState`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::anyhow;
use kernelseal_bpf::Gate;
use kernelseal_config::Config;
use kernelseal_injector::{
    ConnLimits, FileStore, LeaseTable, LiveSet, Metrics, PodIndex, RecordDir, ServeOptions, Shared,
    SharedGuard,
};
use tracing::{error, info, warn};

use super::AgentArgs;
use crate::exit::Failure;

/// What outlives a reload: metrics, the processes delivered to, the pod
/// index, the delivered files, and the slot the socket server reads the
/// current serving state from.
pub struct Serving {
    pub metrics: Arc<Metrics>,
    kept: Kept,
    pub shared: Shared,
}

/// The parts of the serving state that a reload keeps.
#[derive(Clone)]
struct Kept {
    metrics: Arc<Metrics>,
    live: Arc<LiveSet>,
    pods: Option<Arc<PodIndex>>,
    /// The secrets directory's store, opened by the first config with a
    /// `delivery: file` binding (a host without one need not have a tmpfs
    /// there). It knows which process has which files until it exits; a
    /// reload must not forget that.
    files: Arc<Mutex<Option<Arc<FileStore>>>>,
    /// The kernel's guarded inodes; `None` in `mode: disabled`.
    guard: Option<SharedGuard>,
    /// One bound on requests at once per Vault address or AWS region,
    /// over every identity the agent reads as, across reloads.
    upstreams: Arc<kernelseal_providers::identity::Upstreams>,
    /// The processes holding leases of dynamic secrets.
    leases: Arc<LeaseTable>,
}

impl Serving {
    /// Starts the metrics endpoint and the socket server; the socket's
    /// connection limits leave room in `open_files` for the agent's own work.
    pub async fn start(
        config: &Config,
        gate: Option<&Gate>,
        args: &AgentArgs,
        open_files: u64,
    ) -> Result<Self, Failure> {
        let metrics = Arc::new(Metrics::default());
        metrics.lsm_loaded.set(i64::from(gate.is_some()));
        start_metrics(config, args, &metrics, gate.map(|_| args.pin_dir.clone())).await?;
        let live = Arc::new(LiveSet::default());
        let pods = pod_index(config).await?;
        let guard: Option<SharedGuard> = match gate {
            Some(_) => Some(Arc::new(Mutex::new(
                kernelseal_bpf::GuardedFiles::from_pin(&args.pin_dir, args.pin_layout_version)
                    .map_err(Failure::runtime)?,
            ))),
            None => None,
        };
        let kept = Kept {
            metrics: metrics.clone(),
            live,
            pods,
            files: Arc::default(),
            guard,
            upstreams: Arc::default(),
            leases: lease_table(args),
        };
        let d = serving_state(config, gate, args, &kept)?;
        reattach_leases(&kept.leases, &d, config);
        let gid = args.socket_group.as_deref().map(socket_gid).transpose()?;
        let listener = kernelseal_injector::bind(&args.socket, gid).map_err(Failure::runtime)?;
        let shared: Shared = Arc::new(tokio::sync::RwLock::new(Arc::new(d)));
        let limits = ConnLimits::for_open_files(open_files);
        let opts = ServeOptions {
            limits,
            metrics: metrics.clone(),
        };
        tokio::spawn(kernelseal_injector::serve(listener, shared.clone(), opts));
        // /ready: an agent that cannot enforce what the config asks exits
        // before this point, so an agent whose socket is bound is ready.
        metrics
            .ready
            .store(true, std::sync::atomic::Ordering::Relaxed);
        log_secret_memory();
        info!("[OK] serving secrets on {}", args.socket.display());
        info!(
            "[OK] socket limits: {} connections, {} per uid, {}s for a request",
            limits.total,
            limits.per_uid,
            kernelseal_injector::REQUEST_TIMEOUT.as_secs()
        );
        Ok(Serving {
            metrics,
            kept,
            shared,
        })
    }

    /// The serving state of a checked config, built but not in force yet;
    /// `None` (logged) when it cannot be built (a provider's client, the
    /// secrets directory). Dropping it undoes it: its tasks end with it.
    pub fn prepare(
        &self,
        config: &Config,
        args: &AgentArgs,
        gate: Option<&Gate>,
    ) -> Option<kernelseal_injector::ServingState> {
        match serving_state(config, gate, args, &self.kept) {
            Ok(state) => Some(state),
            Err(e) => {
                error!(
                    "[CONFIG] bindings not reloaded, keeping the current ones: {}",
                    e.message()
                );
                None
            }
        }
    }

    /// Puts a prepared serving state in force.
    pub async fn install(&self, state: kernelseal_injector::ServingState) {
        *self.shared.write().await = Arc::new(state);
    }
}

/// Says what memory the cache holds values in. The gate keeps other
/// processes out of the agent either way; secret memory also keeps the
/// values off swap and out of `/proc/kcore`, so its absence is a warning,
/// not a refusal.
fn log_secret_memory() {
    use kernelseal_providers::Backing;
    match kernelseal_providers::secret_memory() {
        Some(Backing::SecretMemory) => info!(
            "[MEMORY] secret values are held in secret memory (memfd_secret): outside the \
             kernel's direct map, never swapped"
        ),
        Some(other) => warn!(
            "[MEMORY] secret values are held in {}: {}; secret memory needs a kernel with \
             CONFIG_SECRETMEM (before 6.5 also secretmem.enable=1), a seccomp profile that \
             allows memfd_secret and enough RLIMIT_MEMLOCK",
            other.describe(),
            if other == Backing::LockedMemory {
                "not safe from /proc/kcore"
            } else {
                "not safe from swap and /proc/kcore"
            }
        ),
        None => {}
    }
}

fn socket_gid(group: &str) -> Result<u32, Failure> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let name = std::ffi::CString::new(group)
        .map_err(|_| Failure::config(anyhow!("--socket-group {group:?}: bad name")))?;
    // SAFETY: getgrnam with a valid C string; the result is read at once.
    let gr = unsafe { libc::getgrnam(name.as_ptr()) };
    if gr.is_null() {
        return Err(Failure::config(anyhow!(
            "--socket-group {group:?}: no such group"
        )));
    }
    // SAFETY: non-null result of getgrnam.
    Ok(unsafe { (*gr).gr_gid })
}

fn serving_state(
    config: &Config,
    gate: Option<&Gate>,
    args: &AgentArgs,
    kept: &Kept,
) -> Result<kernelseal_injector::ServingState, Failure> {
    let registry = kernelseal_providers::Registry::from_config(config).map_err(Failure::config)?;
    let cache = kernelseal_providers::Cache::new(std::sync::Arc::new(registry), Default::default());
    let pod_reads = std::sync::Arc::new(
        kernelseal_providers::identity::PodReads::from_config(
            config,
            Default::default(),
            kept.upstreams.clone(),
        )
        .map_err(Failure::config)?,
    );
    // The refresher holds the cache weakly; the watcher holds it until
    // `stop_watch`, dropped with this serving state on a reload, ends it.
    cache.spawn_refresher();
    let (stop_watch, stop) = tokio::sync::oneshot::channel();
    tokio::spawn(kernelseal_injector::watch(
        cache.clone(),
        pod_reads.clone(),
        kept.live.clone(),
        stop,
    ));
    let bindings = kernelseal_injector::prepare(config);
    if kept.pods.is_none() {
        for b in bindings.iter().filter(|b| b.needs_pod_identity()) {
            warn!(
                "[CONFIG] binding {:?} selects by pod (namespace/labels/serviceAccount/container) \
                 but pod identity is off here (not in Kubernetes, or podIdentity: disabled): it \
                 matches no caller",
                b.name
            );
        }
    }
    // Recorded in the gate's registry: the watchdog keeps what deliveries mark.
    let marks = match gate {
        Some(g) => Some(std::sync::Arc::new(
            kernelseal_bpf::Marks::from_pin(&args.pin_dir)
                .map_err(Failure::runtime)?
                .watched_by(g.mark_registry()),
        )),
        None => None,
    };
    let wants_files = bindings
        .iter()
        .any(|b| b.delivery == kernelseal_config::Delivery::File);
    let files = file_store(args, kept, wants_files)?;
    Ok(kernelseal_injector::ServingState {
        bindings,
        cache,
        pod_reads,
        marks,
        enforce: config.policy.mode == kernelseal_config::Mode::Enforce,
        metrics: kept.metrics.clone(),
        live: kept.live.clone(),
        leases: kept.leases.clone(),
        files,
        stop_watch: Some(stop_watch),
        pods: kept.pods.clone(),
        pod_identity: config.pod_identity,
    })
}

/// The lease table, recording under `--lease-dir`; without that directory
/// leases still live and die with their processes, but an agent restart
/// forgets them and they run out at their TTL.
fn lease_table(args: &AgentArgs) -> Arc<LeaseTable> {
    let records = RecordDir::open(&args.lease_dir)
        .map_err(|e| {
            warn!("[LEASE] cannot keep lease records: {e}; leases of dynamic secrets will not survive an agent restart")
        })
        .ok();
    LeaseTable::new(records, Default::default())
}

/// Carries on with the leases an earlier agent recorded: renewed for the
/// processes still alive, revoked for the others. In the background: a
/// slow Vault must not hold up serving.
fn reattach_leases(
    table: &Arc<LeaseTable>,
    state: &kernelseal_injector::ServingState,
    config: &Config,
) {
    let table = table.clone();
    let provider = state.lease_provider();
    let on_rotate: std::collections::BTreeMap<String, Option<kernelseal_config::OnRotate>> = config
        .secrets
        .iter()
        .map(|b| (b.value.name.clone(), b.value.on_rotate.clone()))
        .collect();
    tokio::spawn(async move {
        match table
            .reattach(provider, |binding| {
                on_rotate.get(binding).cloned().flatten()
            })
            .await
        {
            Ok(r) if r == Default::default() => {}
            Ok(r) => info!(
                "[LEASE] leases recorded by an earlier agent: {} process(es) still alive, {} lease(s) of exited processes revoked, {} could not be revoked",
                r.kept, r.revoked, r.unrevoked
            ),
            Err(e) => warn!("[LEASE] cannot read the lease records: {e}"),
        }
    });
}

/// The store of the secrets directory, opened (and checked to be on tmpfs)
/// the first time a config asks for files; kept open from then on, so
/// every delivery goes to the directory verified then.
fn file_store(
    args: &AgentArgs,
    kept: &Kept,
    wanted: bool,
) -> Result<Option<Arc<FileStore>>, Failure> {
    let mut slot = kept.files.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_none() && wanted {
        let store = FileStore::open(args.secrets_dir.clone(), kept.guard.clone())
            .map_err(Failure::config)?;
        *slot = Some(Arc::new(store));
    }
    Ok(slot.clone())
}

/// Metrics on `monitoring.metricsPort` (all interfaces, like the original)
/// unless `monitoring.enabled: false`.
async fn start_metrics(
    config: &Config,
    args: &AgentArgs,
    metrics: &std::sync::Arc<Metrics>,
    pin_dir: Option<PathBuf>,
) -> Result<(), Failure> {
    if !config.monitoring.enabled {
        return Ok(());
    }
    let addr = args
        .metrics_addr
        .clone()
        .unwrap_or_else(|| format!("0.0.0.0:{}", config.monitoring.metrics_port));
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| Failure::runtime(anyhow!("metrics endpoint {addr}: {e}")))?;
    let refresh: std::sync::Arc<dyn Fn(&Metrics) + Send + Sync> =
        std::sync::Arc::new(move |m: &Metrics| {
            if let Some(dir) = &pin_dir {
                m.protected_processes
                    .set(crate::protected_count::count(dir) as i64);
            }
        });
    let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or(addr);
    tokio::spawn(kernelseal_injector::serve_http(
        listener,
        metrics.clone(),
        refresh,
    ));
    info!("[OK] metrics on http://{bound}/metrics, /healthz, /ready");
    Ok(())
}

/// Pod identity: a node-scoped pod index when running in Kubernetes (or
/// with a kubeconfig), per `podIdentity`.
async fn pod_index(
    config: &Config,
) -> Result<Option<std::sync::Arc<kernelseal_injector::PodIndex>>, Failure> {
    use kernelseal_config::PodIdentityMode;
    let mode = config.pod_identity;
    if mode == PodIdentityMode::Disabled {
        return Ok(None);
    }
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("KUBECONFIG").is_some();
    if !in_cluster && mode == PodIdentityMode::Preferred {
        info!("[IDENTITY] not in Kubernetes: callers are identified by uid and cgroup");
        return Ok(None);
    }
    let node = std::env::var("NODE_NAME").unwrap_or_else(|_| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default()
    });
    let client = match kube::Config::infer()
        .await
        .map_err(|e| e.to_string())
        .and_then(|c| kube::Client::try_from(c).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) if mode == PodIdentityMode::Required => {
            return Err(Failure::new(
                Failure::UNENFORCEABLE,
                anyhow!("podIdentity: required but no Kubernetes client could be built: {e}"),
            ));
        }
        Err(e) => {
            warn!(
                "[IDENTITY] pod identity unavailable ({e}); callers are identified by uid and cgroup"
            );
            return Ok(None);
        }
    };
    info!(
        "[IDENTITY] pod identity from the pods of node {node} (podIdentity: {})",
        mode.as_str()
    );
    Ok(Some(std::sync::Arc::new(
        kernelseal_injector::PodIndex::new(client, node),
    )))
}
