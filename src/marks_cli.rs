//! `kernelseal protect | unprotect | status PID…`. Changes go through the
//! running agent's admin socket, so its tamper watchdog knows them for its
//! own; with no agent listening (none running, or one killed), through the
//! maps it pinned. `status` only reads, always from the pinned map.

use std::path::PathBuf;

use anyhow::anyhow;
use kernelseal_bpf::{Marks, ProcessFacts};

use crate::admin::{self, AskError, Op, Reply, Request};
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

/// `protect` and `unprotect`: they change marks, through the agent.
#[derive(clap::Args)]
pub struct ChangeArgs {
    #[command(flatten)]
    marks: MarkArgs,
    /// The running agent's admin socket (`kernelseal agent --admin-socket`).
    #[arg(long, default_value = admin::DEFAULT_ADMIN_SOCKET, value_name = "PATH")]
    admin_socket: PathBuf,
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

/// Runs `op` on every PID, reporting each; fails if any failed. `op`'s
/// outer error stops the run (nothing to reach), the inner one is the PID's.
fn each(
    args: &MarkArgs,
    mut op: impl FnMut(u32) -> Result<Result<String, String>, Failure>,
) -> Result<(), Failure> {
    let mut failed = 0;
    for &pid in &args.pids {
        match op(pid)? {
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

/// What `kernelseal protect` prints for a process it marked.
pub fn protected_line(p: &ProcessFacts) -> String {
    format!(
        "[PROTECT] PID {} marked as protected ({}, exe {}, started {} ticks after boot)",
        p.tgid,
        p.comm,
        p.exe.as_deref().unwrap_or("unknown"),
        p.start_ticks
    )
}

/// What `kernelseal unprotect` prints for a process it unmarked.
pub fn unprotected_line(p: &ProcessFacts) -> String {
    format!(
        "[UNPROTECT] PID {} no longer protected, every thread ({}, exe {}, started {} ticks after boot)",
        p.tgid,
        p.comm,
        p.exe.as_deref().unwrap_or("unknown"),
        p.start_ticks
    )
}

/// Where `protect` and `unprotect` change marks: through the agent while
/// one answers for this pin directory, else in the pinned map.
struct Changer<'a> {
    args: &'a ChangeArgs,
    agent: bool,
    direct: Option<Marks>,
}

impl Changer<'_> {
    fn change(&mut self, op: Op, pid: u32) -> Result<Result<String, String>, Failure> {
        if self.agent
            && let Some(done) = self.through_agent(op, pid)
        {
            return Ok(done);
        }
        self.directly(op, pid)
    }

    /// `None` when no agent answers for this pin directory (from now on).
    fn through_agent(&mut self, op: Op, pid: u32) -> Option<Result<String, String>> {
        let req = Request {
            op,
            pid,
            pin_dir: self.args.marks.pin_dir.clone(),
        };
        match admin::ask(&self.args.admin_socket, &req) {
            Ok(Reply::Done(line)) => return Some(Ok(line)),
            Ok(Reply::Failed(msg)) => return Some(Err(msg)),
            Ok(Reply::Elsewhere) | Err(AskError::NoAgent(_)) => {}
            Err(e @ AskError::Broken { .. }) => eprintln!(
                "kernelseal: {e}; changing the pinned map directly (a running agent puts back \
                 the marks it set unless it removed them itself)"
            ),
        }
        self.agent = false;
        None
    }

    fn directly(&mut self, op: Op, pid: u32) -> Result<Result<String, String>, Failure> {
        let marks = match self.direct.take() {
            Some(m) => m,
            None => open_marks(&self.args.marks)?,
        };
        let done = match op {
            Op::Protect => marks.protect(pid, 0).map(|p| protected_line(&p)),
            Op::Unprotect => marks.unprotect(pid).map(|p| unprotected_line(&p)),
        };
        self.direct = Some(marks);
        Ok(done.map_err(|e| e.to_string()))
    }
}

fn change(args: &ChangeArgs, op: Op) -> Result<(), Failure> {
    if let Err(why) = crate::caps::check_bpf_privileges() {
        return Err(Failure::runtime(anyhow!(why)));
    }
    if op == Op::Unprotect {
        refuse_on_locked_node(&args.marks.pin_dir).map_err(Failure::runtime)?;
    }
    let mut changer = Changer {
        args,
        agent: true,
        direct: None,
    };
    each(&args.marks, |pid| changer.change(op, pid))
}

/// On a locked node (policy.lock) marks are only ever added: the agent (its
/// admin socket) and this command refuse to remove one. The kernel does not:
/// a trusted KernelSeal process may still write the marks map, and root's
/// code cannot run as one while locked (`lock-self-code`).
pub fn refuse_on_locked_node(pin_dir: &std::path::Path) -> anyhow::Result<()> {
    match kernelseal_bpf::pinned_policy_locked(pin_dir) {
        Ok(false) => Ok(()),
        Ok(true) => Err(anyhow!(kernelseal_bpf::BpfError::Locked {
            what: "unprotect"
        })),
        Err(e) => Err(anyhow!("cannot tell whether the node is locked: {e}")),
    }
}

pub fn protect(args: &ChangeArgs) -> Result<(), Failure> {
    change(args, Op::Protect)
}

pub fn unprotect(args: &ChangeArgs) -> Result<(), Failure> {
    change(args, Op::Unprotect)
}

pub fn status(args: &MarkArgs) -> Result<(), Failure> {
    let marks = open_marks(args)?;
    each(args, |pid| {
        Ok(marks
            .state(pid)
            .map(|state| match state {
                Some(s) if s.agent => format!("PID {pid}: protected (agent)"),
                Some(s) => format!("PID {pid}: protected (binding {})", s.binding_id),
                None => format!("PID {pid}: not protected"),
            })
            .map_err(|e| e.to_string()))
    })
}
