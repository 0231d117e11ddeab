//! `kernelseal protect | unprotect | status PID…`, through the maps the
//! running agent pinned.

use std::path::PathBuf;

use anyhow::anyhow;
use kernelseal_bpf::Marks;

use crate::exit::Failure;

#[derive(clap::Args)]
pub struct MarkArgs {
    /// Process IDs (a thread ID is resolved to its process).
    #[arg(required = true, value_name = "PID")]
    pids: Vec<u32>,
    /// Directory where the agent pinned its maps.
    #[arg(long, default_value = crate::DEFAULT_PIN_DIR, value_name = "DIR")]
    pin_dir: PathBuf,
}

fn open_marks(args: &MarkArgs) -> Result<Marks, Failure> {
    if let Err(why) = crate::caps::check_bpf_privileges() {
        return Err(Failure::runtime(anyhow!(why)));
    }
    let marks = Marks::from_pin(&args.pin_dir).map_err(Failure::runtime)?;
    match marks.in_use() {
        Ok(true) => Ok(marks),
        Ok(false) => Err(Failure::new(
            Failure::UNENFORCEABLE,
            anyhow!(
                "the marks map pinned at {} is not used by any loaded program: the agent that \
                 pinned it is gone; start `kernelseal agent`",
                args.pin_dir.display()
            ),
        )),
        Err(e) => Err(Failure::runtime(e)),
    }
}

/// Runs `op` on every PID, reporting each; fails if any failed.
fn each(
    args: &MarkArgs,
    op: impl Fn(&Marks, u32) -> Result<String, kernelseal_bpf::BpfError>,
) -> Result<(), Failure> {
    let marks = open_marks(args)?;
    let mut failed = 0;
    for &pid in &args.pids {
        match op(&marks, pid) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("kernelseal: PID {pid}: {e}");
                failed += 1;
            }
        }
    }
    if failed == 0 {
        Ok(())
    } else {
        Err(Failure::runtime(anyhow!(
            "{failed} of {} PID(s) failed",
            args.pids.len()
        )))
    }
}

pub fn protect(args: &MarkArgs) -> Result<(), Failure> {
    each(args, |marks, pid| {
        let p = marks.protect(pid, 0)?;
        Ok(format!(
            "[PROTECT] PID {} marked as protected ({}, exe {}, started {} ticks after boot)",
            p.tgid,
            p.comm,
            p.exe.as_deref().unwrap_or("unknown"),
            p.start_ticks
        ))
    })
}

pub fn unprotect(args: &MarkArgs) -> Result<(), Failure> {
    each(args, |marks, pid| {
        let p = marks.unprotect(pid)?;
        Ok(format!(
            "[UNPROTECT] PID {} no longer protected, every thread ({}, exe {}, started {} ticks after boot)",
            p.tgid,
            p.comm,
            p.exe.as_deref().unwrap_or("unknown"),
            p.start_ticks
        ))
    })
}

pub fn status(args: &MarkArgs) -> Result<(), Failure> {
    each(args, |marks, pid| {
        Ok(match marks.state(pid)? {
            Some(s) if s.agent => format!("PID {pid}: protected (agent)"),
            Some(s) => format!("PID {pid}: protected (binding {})", s.binding_id),
            None => format!("PID {pid}: not protected"),
        })
    })
}
