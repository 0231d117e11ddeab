//! Loading, attaching, pinning and re-adopting the programs: the kernel gate.

use std::path::PathBuf;

use aya::maps::{Array, Map, MapData, PerCpuArray, RingBuf};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{BtfTracePoint, Lsm};
use aya::{Btf, Ebpf, EbpfLoader};

use crate::abi::{self, LAYOUT_VERSION, RawFileKey, RawFileOwner, RawPolicy};

use crate::error::BpfError;
use crate::events::EventStream;
use crate::filter::{self, ExecFilter};
use crate::kernel;
use crate::marks::{MARKS_MAP, Marks};
use crate::pins::PinLayout;
use crate::policy::KernelPolicy;
use crate::tamper::{MarkRegistry, PinWatch, TamperReport, Tampered};
use crate::trust::{self, AdmittedBuild};

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

/// What became of this layout version's links before a load.
enum Aside {
    /// There were none.
    Nothing,
    /// Moved here, still attached, until the new links are in place.
    MovedTo(PathBuf),
    /// Removed (this bpffs could not rename them).
    Removed,
}

/// Moves this version's links (another build's, or a partial set from an
/// agent that died while attaching) out of the way; they keep enforcing
/// until the new links are attached.
///
/// The build marker goes first: until the new programs write theirs, no
/// build may adopt this version as its own.
fn set_aside(l: &PinLayout) -> Aside {
    let _ = l.remove_object_markers();
    let dir = l.replaced_links_dir(l.version());
    if l.pinned_links(l.version()).is_empty() {
        // An agent killed after moving links aside and before pinning its
        // own left them there, still attached: they go once ours are in.
        let left = std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some());
        return if left {
            Aside::MovedTo(dir)
        } else {
            Aside::Nothing
        };
    }
    let _ = l.remove_links(&dir);
    if std::fs::rename(l.links_dir(l.version()), &dir).is_ok() {
        Aside::MovedTo(dir)
    } else {
        let _ = l.remove_links(&l.links_dir(l.version()));
        Aside::Removed
    }
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

    fn adopt(layout: PinLayout, expected: &[&'static str]) -> Result<Self, BpfError> {
        let adopt_err = |reason: String| BpfError::Adopt {
            dir: layout.root().display().to_string(),
            reason,
        };
        let mut maps = std::collections::HashMap::new();
        for name in VERSIONED_MAPS {
            let data = MapData::from_pin(layout.map(name))
                .map_err(|e| adopt_err(format!("map {name}: {}", error_chain(&e))))?;
            maps.insert(name, wrap_map(name, data)?);
        }
        let marks = Marks::from_pin(layout.root())?;
        let mut programs = Vec::new();
        for name in expected {
            let pinned = PinnedLink::from_pin(layout.link(layout.version(), name))
                .map_err(|e| adopt_err(format!("link {name}: {}", error_chain(&e))))?;
            let link = FdLink::from(pinned);
            let info = link
                .info()
                .map_err(|e| adopt_err(format!("link {name}: {}", error_chain(&e))))?;
            programs.push(ProgramRef {
                name: name.to_string(),
                id: info.program_id(),
            });
        }
        // Links an agent set aside and was killed before removing: the
        // adopted ones are complete and of this build, those are a second
        // gate nobody owns.
        let _ = layout.remove_links(&layout.replaced_links_dir(layout.version()));
        Ok(Gate {
            _ebpf: None,
            marks: marks.watched_by(MarkRegistry::new()),
            maps,
            links: Vec::new(),
            layout: Some(layout),
            origin: Origin::Adopted,
            programs,
            policy: RawPolicy::default(),
            filter: ExecFilter::default(),
            pins: None,
        })
    }

    /// Loads and attaches. A failure leaves the kernel as it found it: the
    /// links of this attempt are unpinned (detached) and links moved aside
    /// come back, so a refused start neither leaves a partial gate nor
    /// removes a working one.
    fn load(
        btf: &Btf,
        layout: Option<PinLayout>,
        expected: &[&'static str],
        policy: KernelPolicy,
    ) -> Result<Self, BpfError> {
        let aside = layout.as_ref().map(set_aside).unwrap_or(Aside::Nothing);
        let result = Self::load_attached(btf, layout.clone(), expected, &aside, policy);
        if result.is_err()
            && let Some(l) = &layout
        {
            let _ = l.remove_links(&l.links_dir(l.version()));
            if let Aside::MovedTo(dir) = &aside {
                let _ = std::fs::rename(dir, l.links_dir(l.version()));
            }
        }
        result
    }

    fn load_attached(
        btf: &Btf,
        layout: Option<PinLayout>,
        expected: &[&'static str],
        aside: &Aside,
        policy: KernelPolicy,
    ) -> Result<Self, BpfError> {
        let mut origin = match aside {
            Aside::Removed => Origin::Replaced,
            _ => Origin::Loaded,
        };
        let mut pin_paths: Vec<(&'static str, PathBuf)> = Vec::new();
        if let Some(l) = &layout {
            let maps_dir = l
                .map(POLICY_MAP)
                .parent()
                .map(PathBuf::from)
                .unwrap_or_default();
            for dir in [maps_dir, l.links_dir(l.version())] {
                std::fs::create_dir_all(&dir).map_err(|e| BpfError::Pin {
                    what: "directory",
                    path: dir.display().to_string(),
                    reason: format!(
                        "{e}; is bpffs mounted at /sys/fs/bpf? (mount -t bpf bpf /sys/fs/bpf)"
                    ),
                })?;
            }
            pin_paths.push((MARKS_MAP, l.marks()));
            for name in VERSIONED_MAPS {
                pin_paths.push((name, l.map(name)));
            }
        }
        let mut loader = EbpfLoader::new();
        loader.allow_unsupported_maps().btf(Some(btf));
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(crate::OBJECT).map_err(|e| BpfError::Object {
            reason: error_chain(&e),
        })?;

        let mut maps = std::collections::HashMap::new();
        for name in VERSIONED_MAPS {
            let map = ebpf
                .take_map(name)
                .ok_or(BpfError::MissingMap { map: name })?;
            maps.insert(name, map);
        }
        let marks = match ebpf.take_map(MARKS_MAP) {
            Some(Map::Unsupported(data)) => Marks::from_map(data),
            _ => return Err(BpfError::MissingMap { map: MARKS_MAP }),
        };
        let mut gate = Gate {
            _ebpf: None,
            marks: marks.watched_by(MarkRegistry::new()),
            maps,
            links: Vec::new(),
            layout: layout.clone(),
            origin,
            programs: Vec::new(),
            policy: RawPolicy::default(),
            filter: ExecFilter::default(),
            pins: None,
        };
        // The caller's policy before the programs attach. Never a "nothing
        // blocked" placeholder: a map of this layout version that already
        // exists is the one the programs being replaced read, and they must
        // go on enforcing until the new ones are in (and after, should this
        // load fail). The exec filter follows in `open`.
        gate.write_policy(policy.unlocked().to_raw())?;
        // Files delivered under an older layout stay guarded: their entries
        // move to this layout's map before its programs attach, while the
        // old programs still run. Failing here leaves the old gate in place.
        if let Some(l) = &layout {
            gate.adopt_guarded_files(l)?;
        }
        for name in expected {
            let (link, id) = attach(&mut ebpf, btf, name)?;
            gate.programs.push(ProgramRef {
                name: name.to_string(),
                id,
            });
            let hold = match &layout {
                Some(l) => LinkHold::Pinned(link.pin(l.link(l.version(), name)).map_err(|e| {
                    BpfError::Pin {
                        what: "link",
                        path: l.link(l.version(), name).display().to_string(),
                        reason: error_chain(&e),
                    }
                })?),
                None => LinkHold::Owned(link),
            };
            gate.links.push(hold);
        }
        // Only now, with the new links attached, drop the replaced links and
        // other layouts' links: there is no moment without a gate.
        // The marker first: its failure still finds the old links to restore.
        if let Some(l) = &layout {
            l.mark_object(object_hash()).map_err(|e| BpfError::Pin {
                what: "object marker",
                path: l
                    .object_marker(l.version(), object_hash())
                    .display()
                    .to_string(),
                reason: e.to_string(),
            })?;
            if let Aside::MovedTo(dir) = aside {
                let _ = l.remove_links(dir);
                origin = Origin::Replaced;
            }
            for version in l.versions().into_iter().filter(|v| *v != l.version()) {
                for name in l.pinned_links(version) {
                    if let Ok(old) = PinnedLink::from_pin(l.link(version, &name)) {
                        let _ = old.unpin();
                    }
                }
                let _ = l.remove_version(version);
                origin = Origin::Upgraded { from: version };
            }
        }
        gate.origin = origin;
        gate._ebpf = Some(ebpf);
        Ok(gate)
    }

    fn adopt_guarded_files(&mut self, layout: &PinLayout) -> Result<(), BpfError> {
        let target = self
            .maps
            .get_mut(GUARDED_FILES_MAP)
            .ok_or(BpfError::MissingMap {
                map: GUARDED_FILES_MAP,
            })?;
        let mut target: aya::maps::HashMap<&mut MapData, RawFileKey, RawFileOwner> =
            aya::maps::HashMap::try_from(target)
                .map_err(|e| map_error("open", GUARDED_FILES_MAP, e))?;
        for version in layout.versions() {
            if version == layout.version() {
                continue;
            }
            let old_path = PinLayout::with_version(layout.root(), version).map(GUARDED_FILES_MAP);
            if !old_path.exists() {
                continue; // a layout from before file delivery
            }
            let old = crate::GuardedFiles::from_pin(layout.root(), version)?;
            for (key, value) in old.entries() {
                target
                    .insert(key, value, 0)
                    .map_err(|e| map_error("update", GUARDED_FILES_MAP, e))?;
            }
        }
        Ok(())
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

    /// Records the pin root for the programs, trusts this binary and closes
    /// a handover (this agent is the build it was for, or it was never
    /// used).
    fn trust_self(&mut self) -> Result<(), BpfError> {
        let root = self.layout.as_ref().map(|l| l.root().to_path_buf());
        let mut trust = self.take_map(trust::TRUST_MAP)?;
        let exes = self.take_map(trust::SELF_EXES_MAP);
        let result = exes.and_then(|mut exes| {
            let r = trust::trust_self(&mut trust, &mut exes, root.as_deref());
            self.maps.insert(trust::SELF_EXES_MAP, exes);
            r
        });
        self.maps.insert(trust::TRUST_MAP, trust);
        result.and_then(|()| self.marks.mark_self())
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
    pub fn set_policy(&mut self, policy: KernelPolicy) -> Result<(), BpfError> {
        if self.is_locked()? {
            return Err(BpfError::Locked {
                what: "a policy change",
            });
        }
        self.write_then_freeze(policy)
    }

    /// The policy at start: on a node locked by an earlier agent the policy
    /// in the kernel stands and is adopted, whatever `policy` says.
    fn apply_policy(&mut self, policy: KernelPolicy) -> Result<(), BpfError> {
        let found = self.read_policy()?;
        if found.flags & abi::POLICY_LOCK != 0 {
            self.policy = found;
            return Ok(());
        }
        self.write_then_freeze(policy)
    }

    /// An unlocked node's policy written; a locked one is frozen after.
    fn write_then_freeze(&mut self, policy: KernelPolicy) -> Result<(), BpfError> {
        self.write_policy(policy.to_raw())?;
        if policy.lock {
            self.freeze_policy()?;
        }
        Ok(())
    }

    /// Whether the policy in the kernel is locked (policy.lock, by this or
    /// an earlier agent): then it and the pins stay until reboot.
    pub fn is_locked(&self) -> Result<bool, BpfError> {
        Ok(self.read_policy()?.flags & abi::POLICY_LOCK != 0)
    }

    fn freeze_policy(&mut self) -> Result<(), BpfError> {
        use std::os::fd::AsFd;
        let map = self
            .maps
            .get(POLICY_MAP)
            .ok_or(BpfError::MissingMap { map: POLICY_MAP })?;
        let data: &MapData = match map {
            Map::Array(d) => d,
            _ => return Err(BpfError::MissingMap { map: POLICY_MAP }),
        };
        crate::sys::map_freeze(data.fd().as_fd()).map_err(|source| BpfError::Freeze { source })
    }

    fn write_policy(&mut self, raw: RawPolicy) -> Result<(), BpfError> {
        let map = self
            .maps
            .get_mut(POLICY_MAP)
            .ok_or(BpfError::MissingMap { map: POLICY_MAP })?;
        let mut arr: Array<&mut MapData, RawPolicy> =
            Array::try_from(map).map_err(|_| BpfError::MissingMap { map: POLICY_MAP })?;
        arr.set(0, raw, 0)
            .map_err(|e| map_error("update", POLICY_MAP, e))?;
        self.policy = raw;
        Ok(())
    }

    fn read_policy(&self) -> Result<RawPolicy, BpfError> {
        let map = self
            .maps
            .get(POLICY_MAP)
            .ok_or(BpfError::MissingMap { map: POLICY_MAP })?;
        read_policy_map(map)
    }

    /// Compares the pins, the policy, the exec filter and the marks set
    /// through this gate with what the agent made and wrote, and puts back
    /// whatever differs. Each difference is a finding; a check that could
    /// not be made is a failure, and the others still run.
    pub fn check_tampering(&mut self) -> TamperReport {
        let mut report = TamperReport::default();
        // Pins first: the policy and filter checks go through the gate's own
        // descriptors, but other processes reach the maps only by the pins.
        if let Some(pins) = &self.pins {
            pins.check(&mut report);
        }
        self.check_policy(&mut report);
        self.check_filter(&mut report);
        let exec_bindings = self
            .filter
            .binaries
            .values()
            .chain(self.filter.paths.values())
            .copied()
            .collect();
        self.marks.check_watched(&exec_bindings, &mut report);
        report
    }

    fn check_policy(&mut self, report: &mut TamperReport) {
        let found = match self.read_policy() {
            Ok(found) => found,
            Err(e) => return report.failed(Tampered::Policy, e),
        };
        if let Some(detail) = crate::tamper::policy_drift(self.policy, found) {
            let restored = self.write_policy(self.policy);
            report.found(Tampered::Policy, detail, restored);
        }
    }

    fn check_filter(&mut self, report: &mut TamperReport) {
        let (Some(binaries), Some(paths)) = (self.maps.get(BINARIES_MAP), self.maps.get(PATHS_MAP))
        else {
            return report.failed(
                Tampered::ExecFilter,
                BpfError::MissingMap { map: BINARIES_MAP },
            );
        };
        let (found, malformed) = match filter::read(binaries, paths) {
            Ok(found) => found,
            Err(e) => return report.failed(Tampered::ExecFilter, e),
        };
        if let Some(detail) = crate::tamper::filter_drift(&self.filter, &found, malformed) {
            let restored = self.set_filter(self.filter.clone());
            report.found(Tampered::ExecFilter, detail, restored);
        }
    }

    /// Replaces the exec filter (bindings marked at exec by binary or path).
    pub fn set_filter(&mut self, filter: ExecFilter) -> Result<(), BpfError> {
        let mut binaries = self
            .maps
            .remove(BINARIES_MAP)
            .ok_or(BpfError::MissingMap { map: BINARIES_MAP })?;
        let mut paths = self
            .maps
            .remove(PATHS_MAP)
            .ok_or(BpfError::MissingMap { map: PATHS_MAP })?;
        let result = filter::apply(&mut binaries, &mut paths, &filter);
        self.maps.insert(BINARIES_MAP, binaries);
        self.maps.insert(PATHS_MAP, paths);
        result?;
        self.filter = filter;
        Ok(())
    }

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

fn attach(ebpf: &mut Ebpf, btf: &Btf, name: &'static str) -> Result<(FdLink, u32), BpfError> {
    let refused = |reason: String| BpfError::LsmRefused {
        program: name,
        reason,
    };
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| refused("missing from the object".into()))?;
    let link: FdLink = if name == EXEC_TRACEPOINT {
        let tp: &mut BtfTracePoint = program
            .try_into()
            .map_err(|e: aya::programs::ProgramError| refused(error_chain(&e)))?;
        tp.load(name, btf).map_err(|e| refused(error_chain(&e)))?;
        let id = tp.attach().map_err(|e| refused(error_chain(&e)))?;
        tp.take_link(id)
            .map_err(|e| refused(error_chain(&e)))?
            .into()
    } else {
        let lsm: &mut Lsm = program
            .try_into()
            .map_err(|e: aya::programs::ProgramError| refused(error_chain(&e)))?;
        lsm.load(name, btf).map_err(|e| refused(error_chain(&e)))?;
        let id = lsm.attach().map_err(|e| refused(error_chain(&e)))?;
        lsm.take_link(id)
            .map_err(|e| refused(error_chain(&e)))?
            .into()
    };
    let id = link
        .info()
        .map(|i| i.program_id())
        .map_err(|e| refused(error_chain(&e)))?;
    Ok((link, id))
}

/// The one entry of a policy map (the gate's, or a pinned one).
pub(crate) fn read_policy_map(map: &Map) -> Result<RawPolicy, BpfError> {
    let arr: Array<&MapData, RawPolicy> =
        Array::try_from(map).map_err(|_| BpfError::MissingMap { map: POLICY_MAP })?;
    arr.get(&0, 0)
        .map_err(|e| map_error("lookup", POLICY_MAP, e))
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
