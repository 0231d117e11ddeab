//! Protection marks: task-local storage keyed by pidfd.

use std::collections::BTreeSet;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use aya::maps::MapData;

use crate::abi::{self, RawTaskMark};
use crate::error::BpfError;
use crate::process::ProcessFacts;
use crate::sys;
use crate::tamper::{
    ExpectedMark, MarkCheck, MarkRegistry, TamperReport, Tampered, Watched, mark_check,
};

pub(crate) const MARKS_MAP: &str = "ks_marks";

/// The state of one process's mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkState {
    pub protected: bool,
    pub agent: bool,
    pub binding_id: u32,
    /// The owner id of the delivered files this process (or the ancestor
    /// it inherited the mark from) may open; 0 for none.
    pub owner_id: u32,
}

/// A handle on the marks map: either the one a [`crate::Gate`] loaded, or the
/// agent's pinned copy (for `kernelseal protect` from another process).
pub struct Marks {
    map: MapData,
    /// Where the marks set through this handle are recorded for the tamper
    /// watchdog; `None` outside the agent.
    registry: Option<Arc<MarkRegistry>>,
}

impl Marks {
    pub(crate) fn from_map(map: MapData) -> Self {
        Marks {
            map,
            registry: None,
        }
    }

    /// Records every mark this handle sets (and forgets every one it
    /// removes) in `registry`, whose marks the watchdog keeps as set.
    pub fn watched_by(mut self, registry: Arc<MarkRegistry>) -> Self {
        self.registry = Some(registry);
        self
    }

    pub(crate) fn registry(&self) -> Option<&Arc<MarkRegistry>> {
        self.registry.as_ref()
    }

    /// Gives this process the mark the kernel gives a trusted KernelSeal
    /// binary at exec: an agent exec'd before its binary was trusted (the
    /// first start) may then reopen its own pins. Its agent mark replaces
    /// this one once the self-test is done.
    pub(crate) fn mark_self(&self) -> Result<(), BpfError> {
        let pid = std::process::id();
        let pidfd = sys::pidfd_open(pid)?;
        let key = std::os::fd::AsRawFd::as_raw_fd(&pidfd);
        let mut mark: RawTaskMark = sys::lookup(self.fd(), &key)
            .map_err(|source| map_err("lookup", source, pid))?
            .unwrap_or_default();
        mark.flags |= abi::MARK_SELF;
        sys::update(self.fd(), &key, &mark).map_err(|source| map_err("update", source, pid))
    }

    /// Opens the marks map the agent pinned under `dir`.
    pub fn from_pin(dir: &Path) -> Result<Self, BpfError> {
        let path = dir.join(MARKS_MAP);
        let map = MapData::from_pin(&path).map_err(|e| BpfError::NotPinned {
            dir: dir.display().to_string(),
            reason: crate::gate::error_chain(&e),
        })?;
        Ok(Marks::from_map(map))
    }

    /// The kernel id of the map, to check that a loaded program still uses it.
    pub fn map_id(&self) -> Result<u32, BpfError> {
        self.map.info().map(|i| i.id()).map_err(|e| BpfError::Map {
            op: "info",
            map: MARKS_MAP,
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// Whether a loaded BPF program still uses this map. A pin can outlive
    /// the agent that made it (killed with SIGKILL); marking such an orphan
    /// map would protect nothing, so callers check this first.
    pub fn in_use(&self) -> Result<bool, BpfError> {
        let id = self.map_id()?;
        let failed = |e: aya::programs::ProgramError| BpfError::Map {
            op: "list programs",
            map: MARKS_MAP,
            source: std::io::Error::other(e.to_string()),
        };
        for prog in aya::programs::loaded_programs() {
            let prog = prog.map_err(failed)?;
            if prog
                .map_ids()
                .map_err(failed)?
                .unwrap_or_default()
                .contains(&id)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.map.fd().as_fd()
    }

    /// Marks a process (and, through its group leader, all its threads)
    /// protected, then reads the mark back: a mark that did not stick is an
    /// error, never a silent success. Returns the process that was marked
    /// (a TID is resolved to its process).
    pub fn protect(&self, pid: u32, binding_id: u32) -> Result<ProcessFacts, BpfError> {
        self.set(pid, abi::MARK_PROTECTED, binding_id)
    }

    /// Marks the agent itself: protected, and allowed to access protected tasks.
    pub fn protect_agent(&self, pid: u32) -> Result<ProcessFacts, BpfError> {
        self.set(pid, abi::MARK_PROTECTED | abi::MARK_AGENT, 0)
    }

    fn set(&self, pid: u32, flags: u32, binding_id: u32) -> Result<ProcessFacts, BpfError> {
        let facts = ProcessFacts::read(pid)?;
        if facts.kernel_thread {
            return Err(BpfError::KernelThread { pid });
        }
        let pidfd = sys::pidfd_open(facts.tgid)?;
        // Held from the write to the record: the watchdog must not see the
        // new mark while the registry still expects the old one.
        let mut watched = self.registry.as_ref().map(|r| r.lock());
        // `protect` of the agent itself must not drop its allowed flag.
        let keep = match self.state_of_pidfd(&pidfd, facts.tgid)? {
            Some(s) if s.agent => abi::MARK_AGENT,
            _ => 0,
        };
        let mark = RawTaskMark {
            flags: flags | keep,
            binding_id,
            ..Default::default()
        };
        let key = std::os::fd::AsRawFd::as_raw_fd(&pidfd);
        sys::update(self.fd(), &key, &mark)
            .map_err(|source| map_err("update", source, facts.tgid))?;
        match self.state_of_pidfd(&pidfd, facts.tgid)? {
            Some(s) if s.protected && s.binding_id == binding_id => {
                if let Some(w) = watched.as_mut() {
                    let expected = ExpectedMark {
                        flags: mark.flags,
                        binding_id,
                        owner_id: 0,
                    };
                    w.insert(facts.tgid, Watched { pidfd, expected });
                }
                Ok(facts)
            }
            _ => Err(BpfError::Map {
                op: "verify",
                map: MARKS_MAP,
                source: std::io::Error::other(format!(
                    "mark for PID {} did not read back",
                    facts.tgid
                )),
            }),
        }
    }

    /// Marks the process a pidfd names (a caller of the agent socket, taken
    /// from SO_PEERPIDFD) and reads the mark back. A non-zero `owner_id`
    /// lets its process tree open the secret files guarded under that id.
    pub fn protect_pidfd(
        &self,
        pidfd: &OwnedFd,
        pid: u32,
        binding_id: u32,
        owner_id: u32,
    ) -> Result<(), BpfError> {
        let mark = RawTaskMark {
            flags: abi::MARK_PROTECTED,
            binding_id,
            owner_id,
            ..Default::default()
        };
        let key = std::os::fd::AsRawFd::as_raw_fd(pidfd);
        // The caller keeps its pidfd for the delivery; the registry needs its
        // own for as long as the process lives. Taken before the write, so a
        // failure leaves no mark behind.
        let own = match &self.registry {
            Some(_) => Some(
                pidfd
                    .try_clone()
                    .map_err(|source| BpfError::Pidfd { pid, source })?,
            ),
            None => None,
        };
        let mut watched = self.registry.as_ref().map(|r| r.lock());
        sys::update(self.fd(), &key, &mark).map_err(|source| map_err("update", source, pid))?;
        match self.state_of_pidfd(pidfd, pid)? {
            Some(s) if s.protected => {
                if let (Some(w), Some(own)) = (watched.as_mut(), own) {
                    let expected = ExpectedMark {
                        flags: mark.flags,
                        binding_id,
                        owner_id,
                    };
                    w.insert(
                        pid,
                        Watched {
                            pidfd: own,
                            expected,
                        },
                    );
                }
                Ok(())
            }
            _ => Err(BpfError::Map {
                op: "verify",
                map: MARKS_MAP,
                source: std::io::Error::other(format!("mark for PID {pid} did not read back")),
            }),
        }
    }

    /// Removes a process's mark and those of all its threads (a thread
    /// created after the mark inherited one of its own). Its children are
    /// processes of their own and keep their marks.
    pub fn unprotect(&self, pid: u32) -> Result<ProcessFacts, BpfError> {
        let facts = ProcessFacts::read(pid)?;
        let pidfd = sys::pidfd_open(facts.tgid)?;
        // Forgotten before the delete, under the lock: the watchdog must not
        // put back a mark the agent itself removes.
        if let Some(r) = &self.registry {
            r.lock().remove(&facts.tgid);
        }
        let key = std::os::fd::AsRawFd::as_raw_fd(&pidfd);
        sys::delete(self.fd(), &key).map_err(|source| map_err("delete", source, facts.tgid))?;
        for tid in ProcessFacts::other_threads(facts.tgid)? {
            let thread = match sys::thread_pidfd_open(tid) {
                Ok(fd) => fd,
                // Exited since the listing: its mark went with it.
                Err(BpfError::NoSuchProcess { .. }) => continue,
                Err(e) => return Err(e),
            };
            let key = std::os::fd::AsRawFd::as_raw_fd(&thread);
            match sys::delete(self.fd(), &key) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => continue,
                Err(source) => return Err(map_err("delete", source, tid)),
            }
        }
        Ok(facts)
    }

    /// The mark of a process, `None` when it has none.
    pub fn state(&self, pid: u32) -> Result<Option<MarkState>, BpfError> {
        let facts = ProcessFacts::read(pid)?;
        let pidfd = sys::pidfd_open(facts.tgid)?;
        self.state_of_pidfd(&pidfd, facts.tgid)
    }

    /// Starts watching the mark the kernel gave process `pid` at an exec
    /// that matched `binding_id` (the agent learns of it from the exec
    /// event). Only a mark that is there with that binding is taken: the PID
    /// may have been reused since the event. `Ok(false)` when nothing was
    /// taken, or the process is watched already.
    pub fn watch_marked(&self, pid: u32, binding_id: u32) -> Result<bool, BpfError> {
        let Some(registry) = &self.registry else {
            return Ok(false);
        };
        let mut watched = registry.lock();
        if watched
            .get(&pid)
            .is_some_and(|w| sys::pidfd_alive(w.pidfd.as_fd()))
        {
            return Ok(false);
        }
        let pidfd = sys::pidfd_open(pid)?;
        let key = std::os::fd::AsRawFd::as_raw_fd(&pidfd);
        let found: Option<RawTaskMark> =
            sys::lookup(self.fd(), &key).map_err(|source| map_err("lookup", source, pid))?;
        let Some(m) = found.filter(|m| m.flags & abi::MARK_PROTECTED != 0) else {
            return Ok(false);
        };
        if m.binding_id != binding_id {
            return Ok(false);
        }
        let expected = ExpectedMark {
            flags: m.flags & (abi::MARK_PROTECTED | abi::MARK_AGENT),
            binding_id,
            owner_id: m.owner_id,
        };
        watched.insert(pid, Watched { pidfd, expected });
        Ok(true)
    }

    /// Compares every recorded mark of a live process with the map and
    /// writes back those that differ; forgets processes that exited.
    pub(crate) fn check_watched(&self, exec_bindings: &BTreeSet<u32>, report: &mut TamperReport) {
        let Some(registry) = &self.registry else {
            return;
        };
        registry
            .lock()
            .retain(|&pid, w| self.check_one(pid, w, exec_bindings, report));
    }

    /// Checks one watched mark; `false` once its process is gone.
    fn check_one(
        &self,
        pid: u32,
        w: &mut Watched,
        exec_bindings: &BTreeSet<u32>,
        report: &mut TamperReport,
    ) -> bool {
        if !sys::pidfd_alive(w.pidfd.as_fd()) {
            return false;
        }
        let key = std::os::fd::AsRawFd::as_raw_fd(&w.pidfd);
        let found: Option<RawTaskMark> = match sys::lookup(self.fd(), &key) {
            Ok(found) => found,
            Err(e) if gone(&e) => return false,
            Err(source) => {
                report.failed(Tampered::Mark, map_err("lookup", source, pid));
                return true;
            }
        };
        let detail = match mark_check(w.expected, found, exec_bindings) {
            MarkCheck::Same => return true,
            MarkCheck::Rebound(binding_id) => {
                w.expected.binding_id = binding_id;
                return true;
            }
            MarkCheck::Drift(detail) => detail,
        };
        match sys::update(self.fd(), &key, &w.expected.restored(found)) {
            // Exited between the check and the write.
            Err(e) if gone(&e) => false,
            result => {
                let result = result.map_err(|source| map_err("update", source, pid));
                report.found(Tampered::Mark, format!("PID {pid}: {detail}"), result);
                true
            }
        }
    }

    fn state_of_pidfd(&self, pidfd: &OwnedFd, pid: u32) -> Result<Option<MarkState>, BpfError> {
        let key = std::os::fd::AsRawFd::as_raw_fd(pidfd);
        let raw: Option<RawTaskMark> =
            sys::lookup(self.fd(), &key).map_err(|source| map_err("lookup", source, pid))?;
        Ok(raw
            .filter(|m| m.flags & (abi::MARK_PROTECTED | abi::MARK_AGENT) != 0)
            .map(|m| MarkState {
                protected: m.flags & abi::MARK_PROTECTED != 0,
                agent: m.flags & abi::MARK_AGENT != 0,
                binding_id: m.binding_id,
                owner_id: m.owner_id,
            }))
    }
}

/// The errors of a map operation on a pidfd whose process is gone.
fn gone(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ESRCH) | Some(libc::EBADF))
}

fn map_err(op: &'static str, source: std::io::Error, pid: u32) -> BpfError {
    if gone(&source) {
        return BpfError::NoSuchProcess { pid };
    }
    BpfError::Map {
        op,
        map: MARKS_MAP,
        source,
    }
}
