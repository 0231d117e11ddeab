//! `kernelseal providers check --config FILE`: resolve every secretRefs
//! entry once and print OK with source and version, or the error. Never a
//! value.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::anyhow;

use crate::exit::Failure;

#[derive(clap::Subcommand)]
pub enum ProvidersCommand {
    /// Resolve every secretRefs entry of a config once; print OK with the
    /// source and version, or the error (values are never printed). Exits 1
    /// if any entry fails, 2 if the config itself is invalid.
    Check {
        /// The config file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
}

pub fn run(cmd: ProvidersCommand) -> Result<(), Failure> {
    let ProvidersCommand::Check { config } = cmd;
    let loaded = kernelseal_config::load_file(&config).map_err(Failure::config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(anyhow!(e).context("starting the async runtime")))?;
    let start = Instant::now();
    let checks = runtime.block_on(kernelseal_providers::check_config(&loaded.config));
    let failed = checks.iter().filter(|c| !c.is_ok()).count();
    for c in &checks {
        println!("{c}");
    }
    println!(
        "{} ref(s) checked in {:.1}s: {} ok, {failed} failed",
        checks.len(),
        start.elapsed().as_secs_f64(),
        checks.len() - failed
    );
    if failed == 0 {
        Ok(())
    } else {
        Err(Failure::runtime(anyhow!(
            "{failed} of {} secret ref(s) failed",
            checks.len()
        )))
    }
}
