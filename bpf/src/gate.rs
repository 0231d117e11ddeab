//! Loading and attaching the LSM programs: the kernel gate.

use std::path::{Path, PathBuf};

use aya::maps::{Array, Map, MapData, PerCpuArray, RingBuf};
use aya::programs::Lsm;
use aya::{Btf, Ebpf, EbpfLoader};

use crate::abi::{self, RawPolicy};
use crate::error::BpfError;
use crate::events::EventStream;
use crate::kernel;
use crate::marks::{MARKS_MAP, Marks};
use crate::policy::KernelPolicy;

const POLICY_MAP: &str = "ks_policy";
const EVENTS_MAP: &str = "ks_events";
const STATS_MAP: &str = "ks_stats";

/// Counters the programs keep (summed over CPUs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub events_dropped: u64,
    pub denied: u64,
    pub audited: u64,
    pub inherited: u64,
}

/// The loaded and attached LSM programs and their maps. Dropping it
/// detaches everything.
pub struct Gate {
    ebpf: Ebpf,
    marks: Marks,
    attached: Vec<&'static str>,
    pinned: Option<PathBuf>,
}

impl Gate {
    /// Loads the object and attaches every LSM program the kernel has a hook
    /// for. `file_post_open` is skipped only where the kernel predates it;
    /// any other refusal is an error, never a partial gate.
    pub fn load(policy: KernelPolicy) -> Result<Self, BpfError> {
        let btf = kernel::btf()?;
        let mut ebpf = EbpfLoader::new()
            .allow_unsupported_maps()
            .btf(Some(&btf))
            .load(crate::OBJECT)
            .map_err(|e| BpfError::Object {
                reason: error_chain(&e),
            })?;
        // Policy first, so the programs never run with an empty policy.
        set_policy(&mut ebpf, policy)?;
        let marks = match ebpf.take_map(MARKS_MAP) {
            Some(Map::Unsupported(data)) => Marks::from_map(data),
            _ => return Err(BpfError::MissingMap { map: MARKS_MAP }),
        };
        let mut attached = Vec::new();
        for name in kernel::LSM_PROGRAMS {
            if name == kernel::POST_OPEN_HOOK && !kernel::has_lsm_hook(&btf, name) {
                continue;
            }
            attach_lsm(&mut ebpf, &btf, name)?;
            attached.push(name);
        }
        Ok(Gate {
            ebpf,
            marks,
            attached,
            pinned: None,
        })
    }

    /// The LSM hooks attached, by name.
    pub fn attached(&self) -> &[&'static str] {
        &self.attached
    }

    pub fn marks(&self) -> &Marks {
        &self.marks
    }

    pub fn set_policy(&mut self, policy: KernelPolicy) -> Result<(), BpfError> {
        set_policy(&mut self.ebpf, policy)
    }

    pub fn policy(&self) -> Result<RawPolicy, BpfError> {
        let map = self
            .ebpf
            .map(POLICY_MAP)
            .ok_or(BpfError::MissingMap { map: POLICY_MAP })?;
        let arr: Array<&MapData, RawPolicy> =
            Array::try_from(map).map_err(|_| BpfError::MissingMap { map: POLICY_MAP })?;
        arr.get(&0, 0)
            .map_err(|e| map_error("lookup", POLICY_MAP, e))
    }

    /// Takes the event stream; `None` after the first call.
    pub fn take_events(&mut self) -> Option<Result<EventStream, BpfError>> {
        let map = self.ebpf.take_map(EVENTS_MAP)?;
        Some(
            RingBuf::try_from(map)
                .map_err(|_| BpfError::MissingMap { map: EVENTS_MAP })
                .and_then(EventStream::new),
        )
    }

    pub fn stats(&self) -> Result<Stats, BpfError> {
        let map = self
            .ebpf
            .map(STATS_MAP)
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
        })
    }

    /// Pins the marks map under `dir` so `kernelseal protect` can reach it.
    /// A pin left by an agent that died is replaced.
    pub fn pin_marks(&mut self, dir: &Path) -> Result<(), BpfError> {
        std::fs::create_dir_all(dir).map_err(|e| BpfError::Pin {
            what: "directory",
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let path = dir.join(MARKS_MAP);
        let _ = std::fs::remove_file(&path);
        self.marks.pin(&path)?;
        self.pinned = Some(path);
        Ok(())
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(path) = self.pinned.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn set_policy(ebpf: &mut Ebpf, policy: KernelPolicy) -> Result<(), BpfError> {
    let map = ebpf
        .map_mut(POLICY_MAP)
        .ok_or(BpfError::MissingMap { map: POLICY_MAP })?;
    let mut arr: Array<&mut MapData, RawPolicy> =
        Array::try_from(map).map_err(|_| BpfError::MissingMap { map: POLICY_MAP })?;
    arr.set(0, policy.to_raw(), 0)
        .map_err(|e| map_error("update", POLICY_MAP, e))
}

fn attach_lsm(ebpf: &mut Ebpf, btf: &Btf, name: &'static str) -> Result<(), BpfError> {
    let refused = |reason: String| BpfError::LsmRefused {
        program: name,
        reason,
    };
    let prog: &mut Lsm = ebpf
        .program_mut(name)
        .ok_or_else(|| refused("missing from the object".into()))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| refused(error_chain(&e)))?;
    prog.load(name, btf).map_err(|e| refused(error_chain(&e)))?;
    prog.attach().map_err(|e| refused(error_chain(&e)))?;
    Ok(())
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
