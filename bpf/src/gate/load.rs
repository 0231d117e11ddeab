//! Loading the programs built into this binary, attaching and pinning
//! them, without a moment where no gate enforces: the links of another
//! build or layout are set aside first and removed only once the new ones
//! are attached, and put back if the load fails.

use std::path::PathBuf;

use aya::maps::{Map, MapData};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{BtfTracePoint, Lsm};
use aya::{Btf, Ebpf, EbpfLoader};

use super::{
    EXEC_TRACEPOINT, GUARDED_FILES_MAP, Gate, LinkHold, MARKS_MAP, Origin, POLICY_MAP, ProgramRef,
    VERSIONED_MAPS, error_chain, map_error, object_hash,
};
use crate::abi::{RawFileKey, RawFileOwner, RawPolicy};
use crate::error::BpfError;
use crate::filter::ExecFilter;
use crate::marks::Marks;
use crate::pins::PinLayout;
use crate::policy::KernelPolicy;
use crate::tamper::MarkRegistry;
use crate::trust::CommandTrust;

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

impl Gate {
    /// Loads and attaches. A failure leaves the kernel as it found it: the
    /// links of this attempt are unpinned (detached) and links moved aside
    /// come back, so a refused start neither leaves a partial gate nor
    /// removes a working one.
    pub(super) fn load(
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
        let pin_paths = match &layout {
            Some(l) => pin_paths(l)?,
            None => Vec::new(),
        };
        let mut ebpf = load_object(btf, &pin_paths)?;
        let origin = match aside {
            Aside::Removed => Origin::Replaced,
            _ => Origin::Loaded,
        };
        let mut gate = Gate::with_maps_of(&mut ebpf, layout.clone(), origin)?;
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
            gate.attach_and_pin(&mut ebpf, btf, name)?;
        }
        // Only now, with the new links attached, drop the replaced links and
        // other layouts' links: there is no moment without a gate.
        if let Some(l) = &layout {
            gate.origin = retire_replaced(l, aside, gate.origin)?;
        }
        gate._ebpf = Some(ebpf);
        Ok(gate)
    }

    /// A gate over the maps of a freshly loaded object, no program yet.
    fn with_maps_of(
        ebpf: &mut Ebpf,
        layout: Option<PinLayout>,
        origin: Origin,
    ) -> Result<Self, BpfError> {
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
        Ok(Gate {
            _ebpf: None,
            marks: marks.watched_by(MarkRegistry::new()),
            maps,
            links: Vec::new(),
            layout,
            origin,
            programs: Vec::new(),
            policy: RawPolicy::default(),
            filter: ExecFilter::default(),
            pins: None,
            command: CommandTrust::Absent,
        })
    }

    /// Attaches one program and pins its link (or holds it, unpinned).
    fn attach_and_pin(
        &mut self,
        ebpf: &mut Ebpf,
        btf: &Btf,
        name: &'static str,
    ) -> Result<(), BpfError> {
        let (link, id) = attach(ebpf, btf, name)?;
        self.programs.push(ProgramRef {
            name: name.to_string(),
            id,
        });
        let hold = match &self.layout {
            Some(l) => LinkHold::Pinned(link.pin(l.link(l.version(), name)).map_err(|e| {
                BpfError::Pin {
                    what: "link",
                    path: l.link(l.version(), name).display().to_string(),
                    reason: error_chain(&e),
                }
            })?),
            None => LinkHold::Owned(link),
        };
        self.links.push(hold);
        Ok(())
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
}

/// Where each map is pinned (the directories made first): the marks map
/// apart, every other map under this layout version.
fn pin_paths(l: &PinLayout) -> Result<Vec<(&'static str, PathBuf)>, BpfError> {
    let maps_dir = l
        .map(POLICY_MAP)
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    for dir in [maps_dir, l.links_dir(l.version())] {
        std::fs::create_dir_all(&dir).map_err(|e| BpfError::Pin {
            what: "directory",
            path: dir.display().to_string(),
            reason: format!("{e}; is bpffs mounted at /sys/fs/bpf? (mount -t bpf bpf /sys/fs/bpf)"),
        })?;
    }
    let mut paths = vec![(MARKS_MAP, l.marks())];
    paths.extend(VERSIONED_MAPS.iter().map(|name| (*name, l.map(name))));
    Ok(paths)
}

/// The object built into this binary, its maps created or reused at their
/// pins.
fn load_object(btf: &Btf, pin_paths: &[(&'static str, PathBuf)]) -> Result<Ebpf, BpfError> {
    let mut loader = EbpfLoader::new();
    loader.allow_unsupported_maps().btf(Some(btf));
    for (name, path) in pin_paths {
        loader.map_pin_path(name, path.as_path());
    }
    loader.load(crate::OBJECT).map_err(|e| BpfError::Object {
        reason: error_chain(&e),
    })
}

/// With the new links attached: the build marker written, then the links
/// set aside and every other layout's links removed. The marker goes first,
/// so its failure still finds the old links to restore.
fn retire_replaced(l: &PinLayout, aside: &Aside, mut origin: Origin) -> Result<Origin, BpfError> {
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
    Ok(origin)
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
