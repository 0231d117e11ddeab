//! The policy and exec filter the gate enforces: written (and frozen by
//! lock mode), and checked against what the agent wrote, so a change made
//! outside KernelSeal is found and put back.

use aya::maps::{Array, Map, MapData};

use super::{BINARIES_MAP, Gate, PATHS_MAP, POLICY_MAP, map_error};
use crate::abi::{self, RawPolicy};
use crate::error::BpfError;
use crate::filter::{self, ExecFilter};
use crate::policy::KernelPolicy;
use crate::tamper::{TamperReport, Tampered};

impl Gate {
    pub fn set_policy(&mut self, policy: KernelPolicy) -> Result<(), BpfError> {
        if self.is_locked() {
            return Err(BpfError::Locked {
                what: "a policy change",
            });
        }
        self.write_then_freeze(policy)
    }

    /// The policy at start: on a node locked by an earlier agent the policy
    /// in the kernel stands and is adopted, whatever `policy` says.
    pub(super) fn apply_policy(&mut self, policy: KernelPolicy) -> Result<(), BpfError> {
        let found = self.read_policy()?;
        if found.flags & abi::POLICY_LOCK != 0 {
            self.policy = found;
            // Locked means frozen: an earlier agent may have died between
            // its write and its freeze. The kernel strips write access from
            // a frozen map's fds, so freezing one again is EPERM (or EBUSY):
            // frozen already.
            return match self.freeze_policy() {
                Err(BpfError::Freeze { source }) if source.raw_os_error() == Some(libc::EPERM) => {
                    Ok(())
                }
                other => other,
            };
        }
        self.write_then_freeze(policy)
    }

    /// An unlocked node's policy written; a locked one is frozen after.
    fn write_then_freeze(&mut self, policy: KernelPolicy) -> Result<(), BpfError> {
        self.write_policy(policy.to_raw())?;
        if policy.lock() {
            self.freeze_policy()?;
        }
        Ok(())
    }

    /// Whether the policy in the kernel is locked (policy.lock, by this or
    /// an earlier agent): then it and the pins stay until reboot. What the
    /// gate wrote or adopted says so: a locked policy map is frozen, so the
    /// kernel's copy cannot differ from it.
    pub fn is_locked(&self) -> bool {
        self.policy.flags & abi::POLICY_LOCK != 0
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
        match crate::sys::map_freeze(data.fd().as_fd()) {
            // EBUSY: frozen already, which is what was asked.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
            other => other.map_err(|source| BpfError::Freeze { source }),
        }
    }

    pub(super) fn write_policy(&mut self, raw: RawPolicy) -> Result<(), BpfError> {
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
}

/// The one entry of a policy map (the gate's, or a pinned one).
pub(crate) fn read_policy_map(map: &Map) -> Result<RawPolicy, BpfError> {
    let arr: Array<&MapData, RawPolicy> =
        Array::try_from(map).map_err(|_| BpfError::MissingMap { map: POLICY_MAP })?;
    arr.get(&0, 0)
        .map_err(|e| map_error("lookup", POLICY_MAP, e))
}
