//! `kernelseal check`: one line per requirement for enforcement, each
//! failure with its fix; exit 0 only when enforcement is possible.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use kernelseal_bpf::{ExecFilter, Gate, GateOptions, KernelPolicy, PinLayout, abi, kernel};

use crate::exit::Failure;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Where the agent pins its programs (to report on them).
    #[arg(long, default_value = crate::DEFAULT_PIN_DIR, value_name = "DIR")]
    pin_dir: PathBuf,
}

struct Report {
    failed: usize,
}

impl Report {
    fn ok(&self, what: &str, detail: impl AsRef<str>) {
        println!("[ OK ] {what}: {}", detail.as_ref());
    }
    fn info(&self, what: &str, detail: impl AsRef<str>) {
        println!("[INFO] {what}: {}", detail.as_ref());
    }
    fn fail(&mut self, what: &str, detail: impl AsRef<str>, fix: impl AsRef<str>) {
        self.failed += 1;
        println!("[FAIL] {what}: {} — fix: {}", detail.as_ref(), fix.as_ref());
    }
}

pub fn run(args: &CheckArgs) -> Result<(), Failure> {
    let mut r = Report { failed: 0 };
    report_kernel(&r);
    let privileged = check_privileges(&mut r);
    let btf = check_btf(&mut r);
    check_lsm_list(&mut r);
    if kernel::has_perfmon_fallback() {
        r.ok(
            "perfmon fallback",
            "this kernel (>= 6.15) lets perfmon-capable callers read environ/maps after an LSM \
             refusal; the capable program refuses that too",
        );
    }
    // Loading needs both; without them the probes would only repeat why.
    if privileged && btf {
        probe(
            &mut r,
            true,
            "LSM programs load and attach",
            "see the kernel's reason; a sandbox or container runtime may forbid BPF trampolines (run on the host or privileged)",
        );
        probe(
            &mut r,
            false,
            "tp_btf exec monitor",
            "the kernel or sandbox refuses tp_btf programs; exec events are unavailable",
        );
    }
    report_pins(&r, &args.pin_dir);
    report_lock(&r, &args.pin_dir);
    verdict(&r)
}

fn report_kernel(r: &Report) {
    match kernel::version() {
        Some((maj, min)) => r.ok("kernel", format!("{maj}.{min}")),
        None => r.info(
            "kernel",
            "version unreadable from /proc/sys/kernel/osrelease",
        ),
    }
}

fn check_privileges(r: &mut Report) -> bool {
    match crate::caps::check_bpf_privileges() {
        Ok(()) => {
            r.ok("privileges", "root or CAP_BPF + CAP_PERFMON");
            true
        }
        Err(why) => {
            r.fail(
                "privileges",
                why,
                "run as root or add CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN",
            );
            false
        }
    }
}

fn check_btf(r: &mut Report) -> bool {
    match kernel::btf() {
        Ok(_) => {
            r.ok("BTF", "/sys/kernel/btf/vmlinux");
            true
        }
        Err(e) => {
            r.fail(
                "BTF",
                e.to_string(),
                "use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
            );
            false
        }
    }
}

fn check_lsm_list(r: &mut Report) {
    match kernel::active_lsms() {
        Some(list) if list.iter().any(|l| l == "bpf") => r.ok("LSM list", list.join(",")),
        Some(list) => r.fail(
            "LSM list",
            format!(
                "{} (no \"bpf\": BPF-LSM programs would attach but never run)",
                list.join(",")
            ),
            format!("boot with lsm={},bpf", list.join(",")),
        ),
        None => r.fail(
            "LSM list",
            "/sys/kernel/security/lsm unreadable",
            "mount securityfs: mount -t securityfs none /sys/kernel/security",
        ),
    }
}

/// Which pin layouts are on disk and which programs they hold.
fn report_pins(r: &Report, pin_dir: &Path) {
    let layout = PinLayout::new(pin_dir);
    let versions = layout.versions();
    if versions.is_empty() {
        r.info(
            "pins",
            format!(
                "none under {} (no agent has run, or it unpinned)",
                pin_dir.display()
            ),
        );
    }
    for v in versions {
        let links = layout.pinned_links(v);
        let current = if v == abi::LAYOUT_VERSION {
            "current layout"
        } else {
            "OTHER layout: the next agent start replaces it"
        };
        r.info(
            "pins",
            format!(
                "v{v} ({current}) under {}: {}",
                pin_dir.display(),
                links.join(", ")
            ),
        );
    }
}

fn report_lock(r: &Report, pin_dir: &Path) {
    match kernelseal_bpf::pinned_policy_locked(pin_dir) {
        Ok(true) => r.info(
            "lock",
            "LOCKED (policy.lock) until reboot: no process but KernelSeal loads BPF programs, \
             modules or kexec images or uses the kernel's lockdown reasons; KernelSeal's policy \
             and pins cannot change",
        ),
        Ok(false) => r.info("lock", "not locked"),
        Err(e) => r.info("lock", format!("unknown: {e}")),
    }
}

fn verdict(r: &Report) -> Result<(), Failure> {
    if r.failed == 0 {
        println!("enforcement is possible on this host");
        Ok(())
    } else {
        Err(Failure::new(
            Failure::UNENFORCEABLE,
            anyhow!(
                "{} requirement(s) failed: enforcement is NOT possible on this host",
                r.failed
            ),
        ))
    }
}

/// Loads and attaches the programs with an inert policy, then detaches.
fn probe(r: &mut Report, lsm: bool, what: &str, fix: &str) {
    let opened = Gate::open(GateOptions {
        lsm,
        ..GateOptions::new(KernelPolicy::inert(), ExecFilter::default(), None)
    });
    match opened {
        Ok(gate) => {
            let names: Vec<&str> = gate.programs().iter().map(|p| p.name.as_str()).collect();
            r.ok(what, names.join(", "));
        }
        Err(e) => r.fail(what, e.to_string(), fix),
    }
}
