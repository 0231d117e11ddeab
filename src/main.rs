//! `kernelseal-core`: the node agent and its command-line tools, every
//! subcommand of the `kernelseal` command. `kernelseal` itself (a binary of
//! the kernelseal-exec crate) runs `exec` without loading this 28 MB file
//! and execs it for everything else; `kernelseal-core exec` works too.

mod admin;
mod agent;
mod audit;
mod caps;
mod check;
mod csi_cli;
mod event_log;
mod exit;
mod logging;
mod marks_cli;
mod protected_count;
mod providers_cli;
mod selftest;
mod webhook_cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::exit::Failure;

/// Where the agent pins the maps other commands reach it through.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/kernelseal";

#[derive(Parser)]
#[command(
    name = "kernelseal",
    bin_name = "kernelseal",
    version,
    about = "Kernel-level secret protection: deliver secrets to exactly the processes bound to \
             them, and stop everyone else on the node, root included, from reading them back.",
    after_help = "Exit codes: 0 success; 1 runtime error; 2 bad usage or config; \
                  3 protection requested but the kernel cannot enforce it."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the BPF-LSM programs, apply the policy and protect marked processes.
    ///
    /// With `policy.mode` audit or enforce the agent refuses to start when the
    /// kernel cannot run the LSM programs (exit 3), and says why.
    Agent(agent::AgentArgs),
    /// Mark running processes protected (asks the running agent, or its
    /// pinned maps when none answers).
    ///
    /// A process is protected from the moment it is marked. Marking cannot
    /// revoke a file descriptor or a ptrace attachment taken before: protect
    /// a process before it holds secrets (the `exec` wrapper does).
    Protect(marks_cli::ChangeArgs),
    /// Remove the protection mark of running processes (through the running
    /// agent, so that its tamper watchdog does not put the mark back).
    Unprotect(marks_cli::ChangeArgs),
    /// Show whether processes are marked protected.
    Status(marks_cli::MarkArgs),
    /// Check every requirement for enforcement on this host, one line each,
    /// with the fix for each failure; exit 0 only when enforcement is possible.
    Check(check::CheckArgs),
    /// Secret provider tools.
    #[command(subcommand)]
    Providers(providers_cli::ProvidersCommand),
    /// Run CMD with the secrets bound to it (the entrypoint wrapper; also the
    /// standalone `kernelseal-exec`). See `kernelseal exec --help`.
    #[command(disable_help_flag = true)]
    Exec {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Configuration file tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Serve secrets to the Secrets Store CSI Driver (provider `kernelseal`)
    /// on a unix socket; SIGTERM stops it after the calls in flight.
    CsiProvider(csi_cli::ProviderArgs),
    /// Secrets Store CSI Driver tools.
    #[command(subcommand)]
    Csi(csi_cli::CsiCommand),
    /// Serve the mutating admission webhook that puts kernelseal-exec in
    /// front of pods annotated `kernelseal.io/inject: "true"` (HTTPS; the
    /// certificate files are read again when they change).
    Webhook(webhook_cli::WebhookArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Parse and validate a config file; print warnings; exit 2 on errors.
    Validate {
        /// The config file (a regular file); `-` reads standard input.
        file: PathBuf,
    },
}

/// The system allocator for everything but `kernelseal exec`, which
/// activates it so the secrets it receives live in secret memory.
#[global_allocator]
static HEAP: kernelseal_exec::SecretHeap = kernelseal_exec::SecretHeap::new();

fn main() -> ExitCode {
    // `kernelseal exec …` is the wrapper itself: its own hand-parsed flags,
    // then CMD ARGS untouched by clap. First, before anything else starts:
    // it runs in front of every wrapped program and uses no TLS.
    if std::env::args_os().nth(1).is_some_and(|a| a == "exec") {
        let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(2).collect();
        return ExitCode::from(kernelseal_exec::main_with(&argv, &HEAP) as u8);
    }
    // One rustls crypto provider (aws-lc-rs) for every TLS client, before any
    // is built: with two compiled in, rustls panics on first use.
    kernelseal_providers::install_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Agent(args) => agent::run(args),
        Command::Protect(args) => marks_cli::protect(&args),
        Command::Unprotect(args) => marks_cli::unprotect(&args),
        Command::Status(args) => marks_cli::status(&args),
        Command::Check(args) => check::run(&args),
        Command::Exec { args } => std::process::exit(kernelseal_exec::main_with(&args, &HEAP)),
        Command::Providers(cmd) => providers_cli::run(cmd),
        Command::Config(ConfigCommand::Validate { file }) => validate(&file),
        Command::CsiProvider(args) => csi_cli::run(args),
        Command::Csi(cmd) => csi_cli::validate(cmd),
        Command::Webhook(args) => webhook_cli::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("kernelseal: {}", failure.message());
            ExitCode::from(failure.code())
        }
    }
}

fn validate(file: &std::path::Path) -> Result<(), Failure> {
    let loaded = kernelseal_config::load_arg(file).map_err(Failure::config)?;
    let name = if file.as_os_str() == "-" {
        kernelseal_config::input::STDIN_NAME.to_string()
    } else {
        file.display().to_string()
    };
    let invalid = |e: &dyn std::fmt::Display| Failure::config(anyhow::anyhow!("{name}: {e}"));
    kernelseal_injector::check_config(&loaded.config).map_err(|e| invalid(&e))?;
    for w in &loaded.warnings {
        println!("warning: {name}: {w}");
    }
    println!(
        "{name}: OK ({} binding(s), mode {})",
        loaded.config.secrets.len(),
        loaded.config.policy.mode
    );
    Ok(())
}
