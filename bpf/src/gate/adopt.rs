//! Re-adopting the programs a previous agent of this build pinned: nothing
//! is loaded, the running links and maps are taken over as they are.

use aya::maps::MapData;
use aya::programs::links::{FdLink, PinnedLink};

use super::{Gate, Origin, ProgramRef, VERSIONED_MAPS, error_chain, wrap_map};
use crate::abi::RawPolicy;
use crate::error::BpfError;
use crate::filter::ExecFilter;
use crate::marks::Marks;
use crate::pins::PinLayout;
use crate::tamper::MarkRegistry;
use crate::trust::CommandTrust;

impl Gate {
    pub(super) fn adopt(layout: PinLayout, expected: &[&'static str]) -> Result<Self, BpfError> {
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
            command: CommandTrust::Absent,
        })
    }
}
