//! `kernelseal agent`: loads the kernel gate, applies the policy, protects
//! itself, and logs every refusal until SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow};
use kernelseal_bpf::{
    BpfError, Event, ExecFilter, Gate, GateOptions, KernelMode, KernelPolicy, Origin,
};
use kernelseal_config::{Config, LogFormat, Mode};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::event_log::EventLog;
use crate::exit::Failure;

mod admin_socket;
mod cgroup_ns;
mod open_files;
mod policy;
mod serving;
mod static_binary;
mod watchdog;

pub use policy::{exec_filter, kernel_policy};

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

/// What the agent refuses at start beyond the schema: provider settings,
/// each binding's refs (durations, versionId with versionStage) and the
/// exec filter's keys. Nothing is contacted, read or loaded, so the agent
/// runs it before it touches the kernel, and `config validate` runs it too.
pub fn check_config(config: &Config) -> anyhow::Result<()> {
    kernelseal_providers::check_settings(config)?;
    kernelseal_injector::prepare(config)?;
    exec_filter(config)?;
    Ok(())
}

pub fn run(args: AgentArgs) -> Result<(), Failure> {
    let config = load_config(&args.config)?;
    // Before any program is loaded or pinned: a config error must not
    // leave kernel state behind.
    check_config(&config)
        .map_err(|e| Failure::config(e.context(format!("{}", args.config.display()))))?;
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
    let policy = kernel_policy(&config, secrets_dev);
    info!("[CONFIG] Policy applied: mode={}", config.policy.mode);
    harden_self();

    let (filter, names) = exec_filter(&config).map_err(Failure::config)?;
    let mut log = EventLog::new(names);
    let mut gate = if policy.mode == KernelMode::Disabled {
        warn!(
            "[WARN] policy.mode=disabled: the LSM programs are not loaded and NOTHING is \
             protected; use this for local testing only"
        );
        None
    } else {
        Some(open_gate(policy, filter, &args)?)
    };
    if gate.is_some() {
        log_filter(&config);
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
    log_policy(&config);
    info!("[OK] KernelSeal agent running - monitoring for process execution");

    let mut flush = tokio::time::interval(crate::audit::WINDOW);
    let mut dropped_seen = 0u64;
    // File changes reload like SIGHUP. Polled, not inotify: a Kubernetes
    // ConfigMap update swaps a symlink above the file, which a watch on the
    // file itself would miss.
    let mut config_poll = tokio::time::interval(CONFIG_POLL);
    let mut config_stamp = file_stamp(&args.config);
    loop {
        tokio::select! {
            _ = config_poll.tick() => {
                let stamp = file_stamp(&args.config);
                if stamp != config_stamp {
                    config_stamp = stamp;
                    info!("[CONFIG] {} changed on disk, reloading", args.config.display());
                    reload(&args.config, secrets_dev, gate.as_mut(), &mut log);
                    serving.reload(&args, gate.as_ref()).await;
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
                config_stamp = file_stamp(&args.config);
                info!("[CONFIG] SIGHUP received, reloading {}", args.config.display());
                reload(&args.config, secrets_dev, gate.as_mut(), &mut log);
                serving.reload(&args, gate.as_ref()).await;
            }
            _ = flush.tick() => {
                log.flush();
                if let Some(stats) = gate.as_ref().and_then(|g| g.stats().ok())
                    && stats.events_dropped > dropped_seen
                {
                    warn!(
                        events_dropped = stats.events_dropped,
                        "[WARN] ring buffer full: {} kernel event(s) lost since start (refusals were still enforced)",
                        stats.events_dropped
                    );
                    dropped_seen = stats.events_dropped;
                }
            }
            batch = next_events(&mut events) => match batch {
                Ok(batch) => for ev in &batch {
                    match ev {
                        Event::Access(a) => log.access(a),
                        Event::Exec(e) => {
                            log.exec(e);
                            if e.binding_id != 0
                                && e.protected
                                && let Some(g) = gate.as_ref()
                            {
                                // The kernel marked it, not the agent: watch
                                // it from now on like the marks the agent sets.
                                let _ = g.marks().watch_marked(e.pid, e.binding_id);
                            }
                            if e.binding_id != 0 && e.protected {
                                let d = serving.shared.read().await.clone();
                                let (pid, filename) = (e.pid, e.filename.clone());
                                tokio::spawn(async move {
                                    kernelseal_injector::deliver_on_exec(&d, pid, &filename).await;
                                });
                            }
                        }
                    }
                },
                Err(e) => {
                    error!("[ERROR] event stream failed: {e}; refusals are still enforced but no longer logged");
                    events = None;
                }
            },
        }
    }
    let gate_loaded = gate.is_some();
    if let Some(gate) = &gate
        && let Ok(stats) = gate.stats()
    {
        info!(
            denied = stats.denied,
            audited = stats.audited,
            inherited = stats.inherited,
            exec_marked = stats.exec_marked,
            exec_events = stats.exec_events,
            events_dropped = stats.events_dropped,
            "[STOP] final counters"
        );
    }
    if let Some(mut g) = gate.take() {
        if g.is_locked().unwrap_or(false) {
            info!(
                "[STOP] the node is locked (policy.lock): the programs stay pinned and enforcing \
                 until reboot, and only this build can take them over (no handover)"
            );
            if args.unpin_on_exit {
                warn!("[STOP] --unpin-on-exit ignored: the node is locked");
            }
        } else if args.unpin_on_exit {
            match g.unpin_all() {
                Ok(()) => info!(
                    "[STOP] pins removed from {}: programs detach now",
                    args.pin_dir.display()
                ),
                Err(e) => error!("[STOP] removing pins failed: {e}"),
            }
        } else {
            info!(
                "[STOP] programs stay attached through {} (enforcement continues; a restarted agent re-adopts them)",
                args.pin_dir.display()
            );
            open_handover(&mut g);
        }
    }
    kernelseal_injector::unbind(&args.socket);
    if gate_loaded {
        kernelseal_injector::unbind(&args.admin_socket);
    }
    info!("[STOP] KernelSeal agent stopped");
    Ok(())
}

/// A stopping agent lets the next KernelSeal build take its pins over: the
/// first file named `kernelseal` exec'd within the handover (an upgraded
/// agent; the same build is trusted anyway).
fn open_handover(gate: &mut Gate) {
    let minutes = kernelseal_bpf::HANDOVER.as_secs() / 60;
    match gate.open_handover(kernelseal_bpf::HANDOVER) {
        Ok(()) => info!(
            "[STOP] handover open for {minutes} min: the next KernelSeal build started takes \
             over the pinned programs"
        ),
        Err(e) => error!(
            "[STOP] opening the handover failed ({e}): only this build can take over the \
             pinned programs"
        ),
    }
}

/// Builds the kernel admitted during handovers: each may change
/// KernelSeal's maps and pins, so the operator should know them.
fn log_admitted_builds(gate: &Gate) {
    match gate.admitted_builds() {
        Ok(builds) => {
            for b in builds {
                info!(
                    "[START] trusted KernelSeal build admitted during a handover: file {}:{} \
                     (inode {}), first run as PID {}",
                    b.dev >> 20,
                    b.dev & 0xfffff,
                    b.ino,
                    b.pid
                );
            }
        }
        Err(e) => warn!("[START] listing trusted KernelSeal builds failed: {e}"),
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

fn open_gate(policy: KernelPolicy, filter: ExecFilter, args: &AgentArgs) -> Result<Gate, Failure> {
    let pin_dir = args.pin_dir.as_path();
    let unenforceable = |msg: String| Failure::new(Failure::UNENFORCEABLE, anyhow!(msg));
    if let Err(why) = crate::caps::check_bpf_privileges() {
        return Err(unenforceable(format!("protection requested but {why}")));
    }
    if policy.lock {
        refuse_lock_on_dynamic_binary().map_err(unenforceable)?;
    }
    match kernelseal_bpf::kernel::active_lsms() {
        Some(list) if !list.iter().any(|l| l == "bpf") => {
            return Err(unenforceable(format!(
                "protection requested but the active LSM list is {:?}: without \"bpf\" BPF-LSM \
                 programs attach and never run. Fix: boot with lsm={},bpf",
                list.join(","),
                list.join(",")
            )));
        }
        Some(_) => {}
        None => warn!(
            "[WARN] /sys/kernel/security/lsm is unreadable (securityfs not mounted?); relying on \
             the start-up self-test"
        ),
    }
    let gate = Gate::open(GateOptions {
        layout_version: args.pin_layout_version,
        ..GateOptions::new(policy, filter, Some(pin_dir.to_path_buf()))
    })
    .map_err(|e| unenforceable(explain_load_failure(&e)))?;
    let ids: Vec<String> = gate
        .programs()
        .iter()
        .map(|p| format!("{}#{}", p.name, p.id))
        .collect();
    match gate.origin() {
        Origin::Loaded => info!(
            "[OK] LSM BPF programs loaded and attached: {}",
            ids.join(", ")
        ),
        Origin::Adopted => info!(
            "[OK] adopted the programs pinned under {}: {}",
            pin_dir.display(),
            ids.join(", ")
        ),
        Origin::Replaced => info!(
            "[OK] LSM BPF programs loaded and attached: {}; replaced the pinned programs of \
             another build after attaching",
            ids.join(", ")
        ),
        Origin::Upgraded { from } => info!(
            "[OK] LSM BPF programs loaded and attached: {}; replaced layout v{from} pins after attaching",
            ids.join(", ")
        ),
    }
    info!("[OK] Exec monitor BPF programs loaded and attached");
    log_admitted_builds(&gate);
    log_lock(&gate, policy.lock);
    // Before the agent marks itself allowed: it is an ordinary accessor now.
    match crate::selftest::run(&gate, &policy) {
        Ok(what) => info!("[OK] self-test: {what}"),
        Err(why) => {
            return Err(unenforceable(format!(
                "enforcement self-test failed: {why}"
            )));
        }
    }
    let me = std::process::id();
    gate.marks()
        .protect_agent(me)
        .context("marking the agent itself")
        .map_err(Failure::runtime)?;
    info!("[ALLOW] PID {me} added to allowed list");
    Ok(gate)
}

/// A locked node runs KernelSeal's processes on their own binary's code
/// only: a dynamically linked agent would lock itself out of its restart.
fn refuse_lock_on_dynamic_binary() -> Result<(), String> {
    let exe = std::path::Path::new("/proc/self/exe");
    match static_binary::needs_interpreter(exe) {
        Ok(false) => Ok(()),
        Ok(true) => Err(
            "policy.lock needs a statically linked kernelseal (a locked node lets KernelSeal's \
             processes run only their own binary's code, never a dynamic loader or a library): \
             build it with cargo xtask static (target/static/kernelseal)"
                .into(),
        ),
        Err(e) => Err(format!(
            "policy.lock: cannot tell whether this kernelseal is statically linked: {e}"
        )),
    }
}

/// What lock mode means on this node now; a crash kernel loaded before the
/// lock is the one way left to read memory without a reboot of our choosing.
fn log_lock(gate: &Gate, requested: bool) {
    match gate.is_locked() {
        Ok(true) => {
            if requested {
                info!(
                    "[LOCK] the node is locked until reboot: no process but KernelSeal loads BPF \
                     programs, kernel modules or kexec images or uses the kernel's lockdown \
                     reasons; KernelSeal's policy and pins cannot change"
                );
            } else {
                warn!(
                    "[LOCK] the node was locked by an earlier agent: the policy in the kernel \
                     stands until reboot; this config's policy section is not applied"
                );
            }
            if std::fs::read_to_string("/sys/kernel/kexec_crash_loaded")
                .is_ok_and(|v| v.trim() == "1")
            {
                warn!(
                    "[LOCK] a crash kernel (kdump) was loaded before the lock: a kernel panic \
                     boots it with all of memory readable; unload it (kexec -p -u) before \
                     locking where that matters"
                );
            }
        }
        Ok(false) => {}
        Err(e) => warn!("[LOCK] cannot read whether the node is locked: {e}"),
    }
}

fn log_filter(config: &Config) {
    for b in &config.secrets {
        let b = &b.value;
        let count = b.secret_refs.len();
        if let Some(bin) = &b.selector.binary {
            info!("[REGISTER] Registered {count} secrets for binary: {bin}");
        }
        if let Some(path) = &b.selector.path {
            info!("[REGISTER] Registered {count} secrets for path: {path}");
        }
    }
    if config.policy.kernel_binary_filter {
        info!(
            "[FILTER] Kernel-side binary filtering ENABLED - exec events only for configured binaries"
        );
    } else {
        info!(
            "[FILTER] Kernel-side binary filtering DISABLED by config - monitoring all processes"
        );
    }
}

/// Turns a load failure into the reason and the fix.
fn explain_load_failure(e: &BpfError) -> String {
    let lsms = kernelseal_bpf::kernel::active_lsms();
    let fix = match &lsms {
        Some(list) if !list.iter().any(|l| l == "bpf") => format!(
            "the active LSM list is {:?} and lacks \"bpf\": add it to the kernel command line, \
             e.g. lsm={},bpf, and reboot",
            list.join(","),
            list.join(",")
        ),
        None => "cannot read /sys/kernel/security/lsm (is securityfs mounted?); BPF-LSM needs \
                 \"bpf\" in the lsm= boot parameter"
            .to_string(),
        Some(_) if e.to_string().contains("Operation not permitted") => {
            "\"bpf\" is an active LSM but attaching was refused (EPERM): the runtime or sandbox \
             forbids BPF trampolines (lsm/fentry programs); run on the host or in a privileged \
             container with CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN"
                .to_string()
        }
        Some(_) => {
            "see the kernel's reason above; `kernelseal check` lists every requirement".to_string()
        }
    };
    format!(
        "protection requested but the kernel gate cannot load: {e}. Fix: {fix}. Refusing to run without enforcement (set policy.mode: disabled for local testing without protection)"
    )
}

fn reload(path: &Path, secrets_dev: u64, gate: Option<&mut Gate>, log: &mut EventLog) {
    let config = match kernelseal_config::load_file(path) {
        Ok(l) => l.config,
        Err(e) => {
            error!("[CONFIG] reload failed, keeping the current policy: {e}");
            return;
        }
    };
    let policy = kernel_policy(&config, secrets_dev);
    let Some(gate) = gate else {
        warn!("[CONFIG] the agent started in mode=disabled; restart it to enforce");
        return;
    };
    if policy.mode == KernelMode::Disabled {
        warn!("[CONFIG] switching a running gate to mode=disabled needs a restart; policy kept");
        return;
    }
    let (filter, names) = match exec_filter(&config) {
        Ok(f) => f,
        Err(e) => {
            error!("[CONFIG] reload failed, keeping the current policy: {e}");
            return;
        }
    };
    // Marks live in the kernel and are untouched: running processes stay
    // protected across a reload.
    if let Err(e) = gate
        .set_filter(filter)
        .and_then(|()| gate.set_policy(policy))
    {
        error!("[CONFIG] applying the new policy failed: {e}");
        return;
    }
    log.names = names;
    log_filter(&config);
    log_policy(&config);
}

fn log_policy(config: &Config) {
    let p = &config.policy;
    info!(
        "[CONFIG] Policy configured: mode={}, environ={}, mem={}, maps={}, ptrace={}, selfRead={}, auditAll={}, inherit={}, perf={}",
        p.mode,
        p.block_environ,
        p.block_mem,
        p.block_maps,
        p.block_ptrace,
        p.allow_self_read,
        p.audit_all,
        p.inherit_protection,
        p.block_perf
    );
}

const CONFIG_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// What identifies a config file's content cheaply: modification time and
/// size of the file the path resolves to now.
fn file_stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}
