//! The kernel gate: the programs and maps this agent enforces through,
//! loaded and pinned (`load`) or re-adopted from pins (`adopt`), with the
//! policy it enforces (`enforced`).

use std::path::PathBuf;

use aya::Ebpf;
use aya::maps::{Map, MapData, PerCpuArray, RingBuf};
use aya::programs::links::{FdLink, PinnedLink};

use crate::abi::{self, LAYOUT_VERSION, RawPolicy};

use crate::error::BpfError;
use crate::events::EventStream;
use crate::filter::ExecFilter;
use crate::kernel;
use crate::marks::{MARKS_MAP, Marks};
use crate::pins::PinLayout;
use crate::policy::KernelPolicy;
use crate::tamper::{MarkRegistry, PinWatch};

mod adopt;
mod enforced;
mod load;

use crate::trust::{self, AdmittedBuild, CommandTrust};
pub(crate) use enforced::read_policy_map;

pub(crate) const POLICY_MAP: &str = "ks_policy";
const EVENTS_MAP: &str = "ks_events";
const STATS_MAP: &str = "ks_stats";
const BINARIES_MAP: &str = "ks_exec_binaries";
const PATHS_MAP: &str = "ks_exec_paths";
pub(crate) const GUARDED_FILES_MAP: &str = "ks_guarded_files";
/// Maps pinned per layout version (the marks map is pinned apart).
const VERSIONED_MAPS: [&str; 8] = [
    POLICY_MAP,
    EVENTS_MAP,
    STATS_MAP,
    BINARIES_MAP,
    PATHS_MAP,
    GUARDED_FILES_MAP,
    trust::TRUST_MAP,
    trust::SELF_EXES_MAP,
];

/// The exec tracepoint program (C function name).
pub const EXEC_TRACEPOINT: &str = "sched_process_exec";

/// Counters the programs keep (summed over CPUs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub events_dropped: u64,
    pub denied: u64,
    pub audited: u64,
    pub inherited: u64,
    pub exec_marked: u64,
    pub exec_events: u64,
}

/// How the programs this gate runs came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Loaded and attached now.
    Loaded,
    /// Already attached through pins of this layout version; nothing loaded.
    Adopted,
    /// Loaded now; the pins of an older layout were replaced after the new
    /// links were attached.
    Upgraded { from: u32 },
    /// Loaded now; this layout version's pins ran another build's programs
    /// (or an attach that was cut short) and were replaced after the new
    /// links were attached.
    Replaced,
}

/// Identifies the BPF object built into this binary: a restarted agent
/// adopts pinned programs only if they came from the same object, so an
/// upgrade that fixes a program without a new layout still loads it.
pub fn object_hash() -> u64 {
    static HASH: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *HASH.get_or_init(|| {
        // FNV-1a: stable across builds and Rust versions, unlike std's hasher.
        crate::OBJECT.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    })
}

/// An attached program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramRef {
    pub name: String,
    pub id: u32,
}

/// What to load.
#[derive(Debug, Clone)]
pub struct GateOptions {
    pub policy: KernelPolicy,
    pub filter: ExecFilter,
    /// Pin programs and maps here (under a bpffs mount); `None` keeps them
    /// only as long as the `Gate` lives.
    pub pin_dir: Option<PathBuf>,
    /// `false` loads only the exec tracepoint (for hosts that refuse LSM
    /// programs: exec events still work there).
    pub lsm: bool,
    /// The pin layout version to write; [`LAYOUT_VERSION`] except in upgrade
    /// tests.
    pub layout_version: u32,
}

impl GateOptions {
    pub fn new(policy: KernelPolicy, filter: ExecFilter, pin_dir: Option<PathBuf>) -> Self {
        GateOptions {
            policy,
            filter,
            pin_dir,
            lsm: true,
            layout_version: LAYOUT_VERSION,
        }
    }
}

enum LinkHold {
    Owned(#[allow(dead_code)] FdLink),
    Pinned(PinnedLink),
}

/// The loaded (or adopted) programs and their maps. Dropping it detaches
/// programs that are not pinned; pinned ones stay attached.
pub struct Gate {
    _ebpf: Option<Ebpf>,
    marks: Marks,
    maps: std::collections::HashMap<&'static str, Map>,
    links: Vec<LinkHold>,
    layout: Option<PinLayout>,
    origin: Origin,
    programs: Vec<ProgramRef>,
    /// What the agent last wrote into the policy map and the exec filter
    /// maps: the tamper watchdog's reference.
    policy: RawPolicy,
    filter: ExecFilter,
    /// The pins this gate made or adopted; `None` without a pin directory.
    pins: Option<PinWatch>,
    /// Whether the `kernelseal` command beside the agent's binary is trusted.
    command: CommandTrust,
}

/// The programs this kernel gets, in attach order.
fn expected_programs(lsm: bool) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    if lsm {
        names.extend(kernel::LSM_PROGRAMS);
    }
    names.push(EXEC_TRACEPOINT);
    names
}

impl Gate {
    /// Adopts the pinned programs of this layout version when they are all
    /// there; otherwise loads and attaches (replacing pins of another layout
    /// only after the new links are in place). Any refusal by the kernel is
    /// an error, never a partial gate.
    pub fn open(opts: GateOptions) -> Result<Self, BpfError> {
        let btf = kernel::btf()?;
        let expected = expected_programs(opts.lsm);
        let layout = opts
            .pin_dir
            .as_ref()
            .map(|d| PinLayout::with_version(d, opts.layout_version));
        if let Some(l) = &layout
            && l.marks().exists()
            && trust::refused_pin(&l.marks())
        {
            return Err(BpfError::Untrusted {
                dir: l.root().display().to_string(),
            });
        }
        let mut gate = match &layout {
            Some(l)
                if sorted(&l.pinned_links(l.version())) == sorted(&expected)
                    && l.object_marker(l.version(), object_hash()).is_dir() =>
            {
                Self::adopt(l.clone(), &expected)?
            }
            _ => Self::load(&btf, layout.clone(), &expected, opts.policy)?,
        };
        gate.set_filter(opts.filter)?;
        gate.trust_self()?;
        // Last: a locked policy refuses attaching and the handover, so it
        // goes in once the agent is a trusted KernelSeal binary.
        gate.apply_policy(opts.policy)?;
        if let Some(l) = layout {
            let mut paths = vec![l.marks()];
            paths.extend(VERSIONED_MAPS.iter().map(|name| l.map(name)));
            paths.extend(expected.iter().map(|name| l.link(l.version(), name)));
            gate.pins = Some(PinWatch::take(l, object_hash(), paths)?);
        }
        Ok(gate)
    }

    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// The attached programs and their kernel ids.
    pub fn programs(&self) -> &[ProgramRef] {
        &self.programs
    }

    /// Whether an LSM hook is among the attached programs.
    pub fn has_program(&self, name: &str) -> bool {
        self.programs.iter().any(|p| p.name == name)
    }

    pub fn marks(&self) -> &Marks {
        &self.marks
    }

    /// Records the pin root for the programs, trusts this binary and the
    /// `kernelseal` command beside it, and closes a handover (this agent is
    /// the build it was for, or it was never used).
    fn trust_self(&mut self) -> Result<(), BpfError> {
        let root = self.layout.as_ref().map(|l| l.root().to_path_buf());
        let mut trust = self.take_map(trust::TRUST_MAP)?;
        let exes = self.take_map(trust::SELF_EXES_MAP);
        let result = exes.and_then(|mut exes| {
            let fresh = self.origin == Origin::Loaded;
            let r = trust::trust_self(&mut trust, &mut exes, root.as_deref(), fresh);
            self.maps.insert(trust::SELF_EXES_MAP, exes);
            r
        });
        self.maps.insert(trust::TRUST_MAP, trust);
        self.command = result?;
        self.marks.mark_self()
    }

    /// Whether the `kernelseal` command beside the agent's binary is trusted.
    pub fn command(&self) -> &CommandTrust {
        &self.command
    }

    /// The `kernelseal` command trusted beside the agent's binary, if any.
    pub fn trusted_command(&self) -> Option<&std::path::Path> {
        match &self.command {
            CommandTrust::Trusted(path) => Some(path),
            _ => None,
        }
    }

    /// For a stopping agent that leaves its programs pinned: the next
    /// KernelSeal build started within `period` may take them over.
    pub fn open_handover(&mut self, period: std::time::Duration) -> Result<(), BpfError> {
        let map = self
            .maps
            .get_mut(trust::TRUST_MAP)
            .ok_or(BpfError::MissingMap {
                map: trust::TRUST_MAP,
            })?;
        trust::open_handover(map, period)
    }

    /// The KernelSeal builds the kernel admitted during handovers.
    pub fn admitted_builds(&self) -> Result<Vec<AdmittedBuild>, BpfError> {
        let map = self
            .maps
            .get(trust::SELF_EXES_MAP)
            .ok_or(BpfError::MissingMap {
                map: trust::SELF_EXES_MAP,
            })?;
        trust::admitted_builds(map)
    }

    fn take_map(&mut self, name: &'static str) -> Result<Map, BpfError> {
        self.maps
            .remove(name)
            .ok_or(BpfError::MissingMap { map: name })
    }

    /// The registry of the marks set through this gate: give it to every
    /// other [`Marks`] handle the agent writes through
    /// ([`Marks::watched_by`]), so the watchdog keeps their marks too.
    pub fn mark_registry(&self) -> std::sync::Arc<MarkRegistry> {
        self.marks
            .registry()
            .cloned()
            .expect("a gate's marks always record into its registry")
    }

    /// Writes a new policy (a config reload); refused on a locked node.
    /// Takes the event stream; `None` after the first call.
    pub fn take_events(&mut self) -> Option<Result<EventStream, BpfError>> {
        let map = self.maps.remove(EVENTS_MAP)?;
        Some(
            RingBuf::try_from(map)
                .map_err(|_| BpfError::MissingMap { map: EVENTS_MAP })
                .and_then(EventStream::new),
        )
    }

    pub fn stats(&self) -> Result<Stats, BpfError> {
        let map = self
            .maps
            .get(STATS_MAP)
            .ok_or(BpfError::MissingMap { map: STATS_MAP })?;
        let arr: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(|_| BpfError::MissingMap { map: STATS_MAP })?;
        let sum = |idx: u32| -> Result<u64, BpfError> {
            let values = arr
                .get(&idx, 0)
                .map_err(|e| map_error("lookup", STATS_MAP, e))?;
            Ok(values.iter().sum())
        };
        Ok(Stats {
            events_dropped: sum(abi::STAT_EVENTS_DROPPED)?,
            denied: sum(abi::STAT_DENIED)?,
            audited: sum(abi::STAT_AUDITED)?,
            inherited: sum(abi::STAT_INHERITED)?,
            exec_marked: sum(abi::STAT_EXEC_MARKED)?,
            exec_events: sum(abi::STAT_EXEC_EVENTS)?,
        })
    }

    /// Removes every pin (programs detach once this gate is dropped). For
    /// `--unpin-on-exit` and uninstall.
    pub fn unpin_all(&mut self) -> Result<(), BpfError> {
        let Some(layout) = self.layout.take() else {
            return Ok(());
        };
        // Its descriptors would keep the links attached, and its checks
        // would pin again what is removed here on purpose.
        self.pins = None;
        for hold in self.links.drain(..) {
            if let LinkHold::Pinned(p) = hold {
                let _ = p.unpin();
            }
        }
        layout.remove_all().map_err(|e| BpfError::Pin {
            what: "pin directory (removal)",
            path: layout.root().display().to_string(),
            reason: e.to_string(),
        })
    }
}

fn sorted(names: &[impl AsRef<str>]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|n| n.as_ref().to_string()).collect();
    v.sort();
    v
}

fn wrap_map(name: &'static str, data: MapData) -> Result<Map, BpfError> {
    Map::from_map_data(data).map_err(|_| BpfError::MissingMap { map: name })
}

fn map_error(op: &'static str, map: &'static str, e: aya::maps::MapError) -> BpfError {
    BpfError::Map {
        op,
        map,
        source: std::io::Error::other(error_chain(&e)),
    }
}

/// aya's errors wrap the errno and the verifier log in `source()`s; a
/// refusal is only diagnosable with the whole chain.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    // aya appends the verifier log even when it is empty.
    match out.strip_suffix(". Verifier output: ") {
        Some(short) => short.to_string(),
        None => out,
    }
}
