//! `kernelseal agent`: loads the kernel gate, applies the policy, protects
//! itself, and logs every refusal until SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::anyhow;
use kernelseal_bpf::{BpfError, Event, Gate, KernelPolicy};
use kernelseal_config::{Config, LogFormat, Mode};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::event_log::EventLog;
use crate::exit::Failure;

mod admin_socket;
mod cgroup_ns;
mod gate_start;
mod open_files;
mod policy;
mod reload;
mod serving;
mod shutdown;
mod static_binary;
mod watchdog;

pub use policy::exec_filter;

#[derive(clap::Args)]
pub struct AgentArgs {
    /// The config file (the original KernelSeal schema).
    #[arg(
        long,
        short = 'c',
        env = "KERNELSEAL_CONFIG",
        default_value = "/etc/kernelseal/config.yaml",
        value_name = "FILE"
    )]
    config: PathBuf,
    /// Log format; overrides monitoring.logFormat.
    #[arg(long, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormatArg>,
    /// Directory under a bpffs mount where the agent pins its programs and
    /// maps. Pinned programs keep enforcing when the agent exits or dies; a
    /// restarted agent re-adopts them.
    #[arg(long, default_value = crate::DEFAULT_PIN_DIR, value_name = "DIR")]
    pin_dir: PathBuf,
    /// On SIGTERM/SIGINT remove every pin, so the programs detach (tests,
    /// uninstall). Without it enforcement outlives the agent.
    #[arg(long)]
    unpin_on_exit: bool,
    /// The agent socket the `kernelseal exec` wrapper asks for secrets.
    #[arg(long, default_value = kernelseal_protocol::DEFAULT_SOCKET, value_name = "PATH")]
    socket: PathBuf,
    /// Where `delivery: file` bindings write (must be on tmpfs: the kernel
    /// guard covers tmpfs files).
    #[arg(long, default_value = "/run/kernelseal/secrets", value_name = "DIR")]
    secrets_dir: PathBuf,
    /// Where the lease ids of dynamic secrets are recorded (0700), with the
    /// process each was read for, so that a restarted agent renews the
    /// leases of processes still alive and revokes the others'. Keep it on
    /// disk that outlives the agent (a hostPath in Kubernetes).
    #[arg(long, default_value = "/var/lib/kernelseal/leases", value_name = "DIR")]
    lease_dir: PathBuf,
    /// The socket `kernelseal protect` and `unprotect` ask the agent on
    /// (mode 0600), so that the tamper watchdog knows their changes.
    #[arg(long, default_value = crate::admin::DEFAULT_ADMIN_SOCKET, value_name = "PATH")]
    admin_socket: PathBuf,
    /// Group (name or GID) given access to the socket (mode 0660).
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,
    /// Address for /metrics, /healthz and /ready; overrides
    /// monitoring.metricsPort (e.g. 127.0.0.1:9090).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
    /// Pin layout version to write (upgrade tests stage an older agent's
    /// pins with it).
    #[arg(long, hide = true, default_value_t = kernelseal_bpf::abi::LAYOUT_VERSION)]
    pin_layout_version: u32,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

fn load_config(path: &Path) -> Result<Config, Failure> {
    let loaded = kernelseal_config::load_file(path).map_err(Failure::config)?;
    for w in &loaded.warnings {
        // Logging is not set up before the config says how; stderr it is.
        eprintln!("[CONFIG] warning: {}: {w}", path.display());
    }
    Ok(loaded.config)
}

pub fn run(args: AgentArgs) -> Result<(), Failure> {
    let config = load_config(&args.config)?;
    // Before any program is loaded or pinned: a config error must not
    // leave kernel state behind.
    // Every problem at once (kernelseal_injector::check_config).
    kernelseal_injector::check_config(&config).map_err(|e| {
        Failure::config(anyhow::Error::new(e).context(format!("{}", args.config.display())))
    })?;
    let format = match args.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        None => config.monitoring.log_format,
    };
    crate::logging::init(format, &config.monitoring.log_level);
    info!("[START] Starting KernelSeal agent - Secret Protection System");
    cgroup_ns::join_host_cgroup_namespace();
    info!("   Version: {}", env!("CARGO_PKG_VERSION"));
    info!("   Config: {}", args.config.display());
    info!(
        "[CONFIG] Loaded KernelSeal configuration from {}",
        args.config.display()
    );
    // Before anything opens descriptors: programs, maps, the socket.
    let open_files = open_files::raise();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(anyhow!(e).context("starting the async runtime")))?;
    runtime.block_on(serve(args, config, open_files))
}

async fn serve(args: AgentArgs, config: Config, open_files: u64) -> Result<(), Failure> {
    // Before anything else: a SIGHUP sent while the programs load must
    // reload, not kill the agent with the default action.
    let mut term = signal(SignalKind::terminate()).map_err(signal_failure)?;
    let mut int = signal(SignalKind::interrupt()).map_err(signal_failure)?;
    let mut hup = signal(SignalKind::hangup()).map_err(signal_failure)?;
    // Mode disabled loads no programs: nothing to tell them.
    let secrets_dev = match config.policy.mode {
        Mode::Disabled => 0,
        _ => policy::secrets_dev(&args.secrets_dir, &args.pin_dir),
    };
    let policy = KernelPolicy::new(config.policy, secrets_dev);
    info!("[CONFIG] Policy applied: mode={}", config.policy.mode);
    harden_self();

    let (filter, names) = exec_filter(&config).map_err(Failure::config)?;
    let mut log = EventLog::new(names);
    let mut gate = if policy.mode() == Mode::Disabled {
        warn!(
            "[WARN] policy.mode=disabled: the LSM programs are not loaded and NOTHING is \
             protected; use this for local testing only"
        );
        None
    } else {
        Some(gate_start::open_gate(policy, filter, &args)?)
    };
    if gate.is_some() {
        reload::log_filter(&config);
    }
    let mut events = match gate.as_mut().and_then(Gate::take_events) {
        Some(stream) => Some(stream.map_err(Failure::runtime)?),
        None => None,
    };
    let serving = serving::Serving::start(&config, gate.as_ref(), &args, open_files).await?;
    log.metrics = Some(serving.metrics.clone());
    if let Some(g) = &gate {
        let marks = kernelseal_bpf::Marks::from_pin(&args.pin_dir)
            .map_err(Failure::runtime)?
            .watched_by(g.mark_registry());
        admin_socket::start(&args.admin_socket, Arc::new(marks), args.pin_dir.clone())?;
    }
    let mut watchdog = watchdog::Watchdog::new(serving.metrics.clone());
    let mut tamper_check = tokio::time::interval(watchdog::CHECK_EVERY);
    tamper_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    log.mode = config.policy.mode.as_str();
    reload::log_policy(&config);
    info!("[OK] KernelSeal agent running - monitoring for process execution");

    let mut flush = tokio::time::interval(crate::audit::WINDOW);
    let mut dropped_seen = 0u64;
    // File changes reload like SIGHUP. Polled, not inotify: a Kubernetes
    // ConfigMap update swaps a symlink above the file, which a watch on the
    // file itself would miss.
    let mut config_poll = tokio::time::interval(reload::CONFIG_POLL);
    let mut config_stamp = reload::file_stamp(&args.config);
    loop {
        tokio::select! {
            _ = config_poll.tick() => {
                let stamp = reload::file_stamp(&args.config);
                if stamp != config_stamp {
                    config_stamp = stamp;
                    info!("[CONFIG] {} changed on disk, reloading", args.config.display());
                    reload_all(&args, secrets_dev, gate.as_mut(), &mut log, &serving).await;
                }
            }
            _ = tamper_check.tick(), if gate.is_some() => {
                if let Some(g) = gate.as_mut() {
                    watchdog.check(g);
                }
            }
            _ = term.recv() => { info!("[STOP] SIGTERM received"); break; }
            _ = int.recv() => { info!("[STOP] SIGINT received"); break; }
            _ = hup.recv() => {
                // What SIGHUP loads, the file poll must not load again.
                config_stamp = reload::file_stamp(&args.config);
                info!("[CONFIG] SIGHUP received, reloading {}", args.config.display());
                reload_all(&args, secrets_dev, gate.as_mut(), &mut log, &serving).await;
            }
            _ = flush.tick() => {
                log.flush();
                warn_dropped_events(gate.as_ref(), &mut dropped_seen);
            }
            batch = next_events(&mut events) => match batch {
                Ok(batch) => for ev in &batch {
                    on_event(ev, &mut log, gate.as_ref(), &serving).await;
                },
                Err(e) => {
                    error!("[ERROR] event stream failed: {e}; refusals are still enforced but no longer logged");
                    events = None;
                }
            },
        }
    }
    shutdown::stop(gate, &args);
    info!("[STOP] KernelSeal agent stopped");
    Ok(())
}

/// The policy, the exec filter and the bindings of the config file as it
/// is now; a file that fails a check, or whose bindings cannot be built,
/// changes none of them.
async fn reload_all(
    args: &AgentArgs,
    secrets_dev: u64,
    gate: Option<&mut Gate>,
    log: &mut EventLog,
    serving: &serving::Serving,
) {
    let Some(config) = reload::load_checked(&args.config) else {
        return;
    };
    // Bindings built before anything changes: the kernel's exec filter
    // numbers bindings by position, so the filter and the bindings change
    // together or not at all.
    let Some(state) = serving.prepare(&config, args, gate.as_deref()) else {
        return;
    };
    if reload::apply_policy(&config, secrets_dev, gate, log) {
        serving.install(state).await;
    }
}

/// Logs one kernel event; a binary the kernel marked at exec is watched
/// like the marks the agent sets and gets its secrets.
async fn on_event(ev: &Event, log: &mut EventLog, gate: Option<&Gate>, serving: &serving::Serving) {
    match ev {
        Event::Access(a) => log.access(a),
        Event::Exec(e) => {
            log.exec(e);
            if e.binding_id == 0 || !e.protected {
                return;
            }
            if let Some(g) = gate {
                let _ = g.marks().watch_marked(e.pid, e.binding_id);
            }
            let d = serving.shared.read().await.clone();
            let (pid, filename) = (e.pid, e.filename.clone());
            tokio::spawn(async move {
                kernelseal_injector::deliver_on_exec(&d, pid, &filename).await;
            });
        }
    }
}

/// Refusals are enforced whether or not their events reach us; a full ring
/// buffer only loses the log lines, which the operator must know.
fn warn_dropped_events(gate: Option<&Gate>, dropped_seen: &mut u64) {
    if let Some(stats) = gate.and_then(|g| g.stats().ok())
        && stats.events_dropped > *dropped_seen
    {
        warn!(
            events_dropped = stats.events_dropped,
            "[WARN] ring buffer full: {} kernel event(s) lost since start (refusals were still enforced)",
            stats.events_dropped
        );
        *dropped_seen = stats.events_dropped;
    }
}

async fn next_events(
    events: &mut Option<kernelseal_bpf::EventStream>,
) -> Result<Vec<Event>, BpfError> {
    match events {
        Some(stream) => stream.next_batch().await,
        None => std::future::pending().await,
    }
}

fn signal_failure(e: std::io::Error) -> Failure {
    Failure::runtime(anyhow!(e).context("installing signal handlers"))
}

/// The agent holds every secret and its envRef sources sit in its own
/// environment: no core dumps, not dumpable (so /proc/<agent>/mem and
/// ptrace need CAP_SYS_PTRACE even before the LSM mark).
fn harden_self() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on this process with valid arguments.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &zero);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}
