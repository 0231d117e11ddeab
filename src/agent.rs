//! `kernelseal agent`: loads the kernel gate, applies the policy, protects
//! itself, and logs every refusal until SIGTERM.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use kernelseal_bpf::{AccessEvent, BpfError, Decision, Gate, KernelMode, KernelPolicy};
use kernelseal_config::{Config, LogFormat, Mode};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::exit::Failure;

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
    /// Directory under a bpffs mount where the agent pins its maps.
    #[arg(long, default_value = crate::DEFAULT_PIN_DIR, value_name = "DIR")]
    pin_dir: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

pub fn kernel_policy(config: &Config) -> KernelPolicy {
    let p = &config.policy;
    KernelPolicy {
        mode: match p.mode {
            Mode::Disabled => KernelMode::Disabled,
            Mode::Audit => KernelMode::Audit,
            Mode::Enforce => KernelMode::Enforce,
        },
        block_environ: p.block_environ,
        block_mem: p.block_mem,
        block_maps: p.block_maps,
        block_ptrace: p.block_ptrace,
        allow_self_read: p.allow_self_read,
        audit_all: p.audit_all,
        inherit_protection: p.inherit_protection,
    }
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
    let format = match args.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        None => config.monitoring.log_format,
    };
    crate::logging::init(format, &config.monitoring.log_level);
    info!("[START] Starting KernelSeal agent - Secret Protection System");
    info!("   Version: {}", env!("CARGO_PKG_VERSION"));
    info!("   Config: {}", args.config.display());
    info!(
        "[CONFIG] Loaded KernelSeal configuration from {}",
        args.config.display()
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(anyhow!(e).context("starting the async runtime")))?;
    runtime.block_on(serve(args, config))
}

async fn serve(args: AgentArgs, config: Config) -> Result<(), Failure> {
    // Before anything else: a SIGHUP sent while the programs load must
    // reload, not kill the agent with the default action.
    let mut term = signal(SignalKind::terminate()).map_err(signal_failure)?;
    let mut int = signal(SignalKind::interrupt()).map_err(signal_failure)?;
    let mut hup = signal(SignalKind::hangup()).map_err(signal_failure)?;
    let policy = kernel_policy(&config);
    info!("[CONFIG] Policy applied: mode={}", config.policy.mode);
    harden_self();

    let mut gate = if policy.mode == KernelMode::Disabled {
        warn!(
            "[WARN] policy.mode=disabled: the LSM programs are not loaded and NOTHING is \
             protected; use this for local testing only"
        );
        None
    } else {
        Some(load_gate(policy, &args.pin_dir)?)
    };
    let mut events = match gate.as_mut().and_then(Gate::take_events) {
        Some(stream) => Some(stream.map_err(Failure::runtime)?),
        None => None,
    };
    log_policy(&config);
    info!("[OK] KernelSeal agent running - protecting marked processes");

    loop {
        tokio::select! {
            _ = term.recv() => { info!("[STOP] SIGTERM received, detaching programs"); break; }
            _ = int.recv() => { info!("[STOP] SIGINT received, detaching programs"); break; }
            _ = hup.recv() => reload(&args.config, gate.as_mut()),
            batch = next_events(&mut events) => match batch {
                Ok(batch) => batch.iter().for_each(log_event),
                Err(e) => {
                    error!("[ERROR] event stream failed: {e}; refusals are still enforced but no longer logged");
                    events = None;
                }
            },
        }
    }
    if let Some(gate) = &gate
        && let Ok(stats) = gate.stats()
    {
        info!(
            denied = stats.denied,
            audited = stats.audited,
            inherited = stats.inherited,
            events_dropped = stats.events_dropped,
            "[STOP] final counters"
        );
    }
    drop(gate);
    info!("[STOP] KernelSeal agent stopped");
    Ok(())
}

async fn next_events(
    events: &mut Option<kernelseal_bpf::EventStream>,
) -> Result<Vec<AccessEvent>, BpfError> {
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

fn load_gate(policy: KernelPolicy, pin_dir: &Path) -> Result<Gate, Failure> {
    let unenforceable = |msg: String| Failure::new(Failure::UNENFORCEABLE, anyhow!(msg));
    if let Err(why) = crate::caps::check_bpf_privileges() {
        return Err(unenforceable(format!("protection requested but {why}")));
    }
    let mut gate = Gate::load(policy).map_err(|e| unenforceable(explain_load_failure(&e)))?;
    info!(
        "[OK] LSM BPF programs loaded and attached: {}",
        gate.attached().join(", ")
    );
    if !gate
        .attached()
        .contains(&kernelseal_bpf::kernel::POST_OPEN_HOOK)
    {
        info!(
            "[OK] kernel has no file_post_open hook (older than 6.9): ptrace_access_check alone \
             guards /proc opens there"
        );
    }
    gate.pin_marks(pin_dir).map_err(|e| {
        unenforceable(format!(
            "{e}; is bpffs mounted at /sys/fs/bpf? (mount -t bpf bpf /sys/fs/bpf)"
        ))
    })?;
    let me = std::process::id();
    gate.marks()
        .protect_agent(me)
        .context("marking the agent itself")
        .map_err(Failure::runtime)?;
    info!("[ALLOW] PID {me} added to allowed list");
    Ok(gate)
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

fn reload(path: &Path, gate: Option<&mut Gate>) {
    info!("[CONFIG] SIGHUP received, reloading {}", path.display());
    let config = match kernelseal_config::load_file(path) {
        Ok(l) => l.config,
        Err(e) => {
            error!("[CONFIG] reload failed, keeping the current policy: {e}");
            return;
        }
    };
    let policy = kernel_policy(&config);
    match gate {
        Some(gate) if policy.mode != KernelMode::Disabled => match gate.set_policy(policy) {
            Ok(()) => log_policy(&config),
            Err(e) => {
                error!("[CONFIG] applying the new policy failed, keeping the current one: {e}")
            }
        },
        Some(_) => warn!(
            "[CONFIG] switching an enforcing agent to mode=disabled needs a restart; policy kept"
        ),
        None => warn!("[CONFIG] the agent started in mode=disabled; restart it to enforce"),
    }
}

fn log_policy(config: &Config) {
    let p = &config.policy;
    info!(
        "[CONFIG] Policy configured: mode={}, environ={}, mem={}, maps={}, ptrace={}, selfRead={}, auditAll={}, inherit={}",
        p.mode,
        p.block_environ,
        p.block_mem,
        p.block_maps,
        p.block_ptrace,
        p.allow_self_read,
        p.audit_all,
        p.inherit_protection
    );
}

fn log_event(ev: &AccessEvent) {
    let kind = ev.kind.as_str();
    let fields = (
        ev.accessor_pid,
        ev.accessor_uid,
        ev.accessor_comm.as_str(),
        ev.target_pid,
        ev.target_tid,
        ev.target_comm.as_str(),
        ev.decision.as_str(),
    );
    macro_rules! event {
        ($lvl:ident, $($msg:tt)+) => {
            $lvl!(
                accessor_pid = fields.0, accessor_uid = fields.1, accessor_comm = fields.2,
                target_pid = fields.3, target_tid = fields.4, target_comm = fields.5,
                kind, decision = fields.6, binding_id = ev.binding_id,
                $($msg)+
            )
        };
    }
    match ev.decision {
        Decision::Denied => event!(
            warn,
            "[LSM BLOCKED] PID={} attempted {kind} access to PID={} ({})",
            ev.accessor_pid,
            ev.target_pid,
            ev.accessor_comm
        ),
        Decision::Audit => event!(
            warn,
            "[LSM AUDIT] PID={} {kind} access to PID={} ({}) would be blocked",
            ev.accessor_pid,
            ev.target_pid,
            ev.accessor_comm
        ),
        Decision::Allowed => event!(
            info,
            "[LSM ALLOW] PID={} {kind} access to PID={} ({}) allowed",
            ev.accessor_pid,
            ev.target_pid,
            ev.accessor_comm
        ),
    }
}
