//! How the agent stops: its final counters, then what happens to the
//! pinned programs (they stay and enforce, are unpinned for tests and
//! uninstall, or stay locked), and its sockets go.

use kernelseal_bpf::Gate;
use tracing::{error, info, warn};

use super::AgentArgs;

pub fn stop(mut gate: Option<Gate>, args: &AgentArgs) {
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
        if g.is_locked() {
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
}

/// A stopping agent lets the next KernelSeal build take its pins over: the
/// first file named `kernelseal-core` exec'd within the handover (an upgraded
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
