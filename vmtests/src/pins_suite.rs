//! Pinned programs of another build at the same layout version: replaced
//! (new links attached before the old go), never silently adopted.

use crate::agent::{Agent, Policy, log_text};
use crate::exec_suite::all;
use crate::suite::{Ctx, TestResult};
use crate::victim::Victim;

const PIN_ROOT: &str = "/sys/fs/bpf/kernelseal";

/// The `v<N>/object-<hash>` marker directories under the pin root.
fn object_markers() -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for v in std::fs::read_dir(PIN_ROOT).into_iter().flatten().flatten() {
        for e in std::fs::read_dir(v.path()).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with("object-") {
                out.push(e.path());
            }
        }
    }
    out
}

/// The last line telling how the agent got its programs.
fn last_origin_line() -> String {
    log_text()
        .lines()
        .rev()
        .find(|l| {
            l.contains("[OK] LSM BPF programs loaded and attached")
                || l.contains("[OK] adopted the programs pinned")
        })
        .unwrap_or_default()
        .to_string()
}

/// Restart over the pins of "another build" (marker renamed) → replaced,
/// protection continuous; restart over our own pins → adopted.
pub fn programs_of_another_build_are_replaced(ctx: &mut Ctx) -> TestResult {
    // A pinning agent (the suite's default unpins on exit; kill -9 keeps pins).
    ctx.agent.set_policy(Policy::ENFORCE_ALL)?;
    let v = Victim::spawn_bound()?;
    all("before", v.pid, v.pid, v.addr, true)?;
    ctx.agent.kill9();
    let markers = object_markers();
    let [ours] = markers.as_slice() else {
        return Err(format!("want one object marker, found {markers:?}"));
    };
    let stale = ours.with_file_name("object-0000000000000000");
    std::fs::rename(ours, &stale).map_err(|e| format!("renaming {}: {e}", ours.display()))?;
    all(
        "agent dead, pins of 'another build'",
        v.pid,
        v.pid,
        v.addr,
        true,
    )?;

    ctx.agent = Agent::start(Policy::ENFORCE_ALL)?;
    let origin = last_origin_line();
    if !origin.contains("replaced the pinned programs of another build") {
        return Err(format!("stale programs were not replaced: {origin}"));
    }
    all("after the replacement", v.pid, v.pid, v.addr, true)?;
    let fresh = Victim::spawn_bound()?;
    all(
        "marked at exec by the new programs",
        fresh.pid,
        fresh.pid,
        fresh.addr,
        true,
    )?;
    if stale.exists() || object_markers() != vec![ours.clone()] {
        return Err(format!(
            "markers after the replacement: {:?}",
            object_markers()
        ));
    }
    let aside = ours.with_file_name("links-replaced");
    if aside.exists() {
        return Err(format!("{} left behind", aside.display()));
    }

    // Same build again: adopted, nothing loaded.
    ctx.agent.kill9();
    ctx.agent = Agent::start(Policy::ENFORCE_ALL)?;
    let origin = last_origin_line();
    if !origin.contains("[OK] adopted the programs pinned") {
        return Err(format!("our own pins were not adopted: {origin}"));
    }
    all("after adoption", v.pid, v.pid, v.addr, true)
}
