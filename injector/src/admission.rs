//! Admission to the agent socket. Every connection costs the agent
//! descriptors (its socket, then the caller's pidfd) and a task: unbounded,
//! 3,000 idle connections exhausted the agent's 1,024 descriptors and the
//! wrappers behind them failed. So a peer uid holds at most `per_uid`
//! connections and the agent at most `total`.
//!
//! At a limit, the oldest connection of that uid (or of anyone, for the
//! agent's limit) that has not sent its request yet is closed to make room;
//! the new one is refused only when all are being served. Refusing the new
//! one instead would let a flood that keeps its idle connections topped up
//! lock out every caller of its uid (root, or the uid 0 of every container)
//! for as long as it lasts; a wrapper sends its request as it connects, so
//! it is not the idle one.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// How many connections the socket holds at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub per_uid: usize,
    pub total: usize,
}

/// Descriptors kept for the agent's own work: BPF programs and maps,
/// provider connections, /proc reads, secret files, the metrics endpoint.
const FD_RESERVE: u64 = 256;
/// A connection holds its socket and, once identified, the caller's pidfd.
const FDS_PER_CONNECTION: u64 = 2;
const MIN_CONNECTIONS: usize = 16;
/// Beyond the descriptors, memory: a connection may buffer a request of
/// up to 64 KiB, so 4,096 of them bound that to 256 MiB.
const MAX_CONNECTIONS: usize = 4096;

impl ConnLimits {
    /// Concurrent connections per peer uid: far more than the wrappers one
    /// uid starts at once, far fewer than the descriptors.
    pub const PER_UID: usize = 64;

    /// Limits for an agent that may hold `open_files` descriptors.
    pub fn for_open_files(open_files: u64) -> Self {
        let fit = open_files.saturating_sub(FD_RESERVE) / FDS_PER_CONNECTION;
        let total = usize::try_from(fit)
            .unwrap_or(usize::MAX)
            .clamp(MIN_CONNECTIONS, MAX_CONNECTIONS);
        ConnLimits {
            per_uid: Self::PER_UID.min(total),
            total,
        }
    }
}

/// Which limit a connection met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    Uid,
    Agent,
}

/// An idle connection closed to make room for a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Evicted {
    pub uid: u32,
    pub limit: Limit,
}

struct Entry {
    uid: u32,
    evict: Arc<Notify>,
}

/// Connections by id; ids grow, so the smallest idle id is the oldest.
#[derive(Default)]
struct Table {
    entries: HashMap<u64, Entry>,
    per_uid: HashMap<u32, usize>,
    idle: BTreeSet<u64>,
    idle_by_uid: HashMap<u32, BTreeSet<u64>>,
    next_id: u64,
}

impl Table {
    fn count(&self, uid: u32) -> usize {
        self.per_uid.get(&uid).copied().unwrap_or(0)
    }

    fn oldest_idle(&self, uid: Option<u32>) -> Option<u64> {
        match uid {
            Some(uid) => self.idle_by_uid.get(&uid)?.first().copied(),
            None => self.idle.first().copied(),
        }
    }

    fn insert(&mut self, uid: u32, idle: bool) -> (u64, Arc<Notify>) {
        let id = self.next_id;
        self.next_id += 1;
        let evict = Arc::new(Notify::new());
        *self.per_uid.entry(uid).or_default() += 1;
        if idle {
            self.idle.insert(id);
            self.idle_by_uid.entry(uid).or_default().insert(id);
        }
        let entry = Entry {
            uid,
            evict: evict.clone(),
        };
        self.entries.insert(id, entry);
        (id, evict)
    }

    fn unmark_idle(&mut self, id: u64, uid: u32) {
        self.idle.remove(&id);
        if let Some(set) = self.idle_by_uid.get_mut(&uid) {
            set.remove(&id);
            if set.is_empty() {
                self.idle_by_uid.remove(&uid);
            }
        }
    }

    /// Forgets a connection; `None` when it was already evicted.
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        self.unmark_idle(id, entry.uid);
        if let Some(n) = self.per_uid.get_mut(&entry.uid) {
            *n -= 1;
            if *n == 0 {
                self.per_uid.remove(&entry.uid);
            }
        }
        Some(entry)
    }

    /// Frees an idle connection's place and tells its task to close it.
    fn evict(&mut self, uid: Option<u32>, limit: Limit) -> Option<Evicted> {
        let entry = self.remove(self.oldest_idle(uid)?)?;
        entry.evict.notify_one();
        Some(Evicted {
            uid: entry.uid,
            limit,
        })
    }
}

/// The connections the socket holds, shared by the accept loop and the
/// connection tasks.
pub(crate) struct Admission {
    limits: ConnLimits,
    table: Mutex<Table>,
}

impl Admission {
    pub(crate) fn new(limits: ConnLimits) -> Arc<Self> {
        Arc::new(Admission {
            limits,
            table: Mutex::new(Table::default()),
        })
    }

    /// Admits a connection from `uid` (`idle`: its request has not arrived
    /// yet), closing an idle one to make room when a limit is reached, or
    /// says which limit refuses it.
    pub(crate) fn admit(
        self: &Arc<Self>,
        uid: u32,
        idle: bool,
    ) -> Result<(Slot, Option<Evicted>), Limit> {
        let mut table = self.table();
        let mut evicted = None;
        if table.count(uid) >= self.limits.per_uid {
            evicted = Some(table.evict(Some(uid), Limit::Uid).ok_or(Limit::Uid)?);
        }
        if table.entries.len() >= self.limits.total {
            evicted = Some(table.evict(None, Limit::Agent).ok_or(Limit::Agent)?);
        }
        let (id, evict) = table.insert(uid, idle);
        let slot = Slot {
            id,
            evict,
            admission: self.clone(),
        };
        Ok((slot, evicted))
    }

    /// A panic elsewhere while holding the lock leaves a consistent table
    /// (each method completes its changes before it can panic): keep it.
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One admitted connection's place; freed when dropped.
pub(crate) struct Slot {
    id: u64,
    evict: Arc<Notify>,
    admission: Arc<Admission>,
}

impl Slot {
    /// Completes when the connection was closed to make room.
    pub(crate) async fn evicted(&self) {
        self.evict.notified().await
    }

    /// The request arrived: not idle any more, so never evicted. False when
    /// it was evicted meanwhile (its place is gone; close it).
    pub(crate) fn mark_busy(&self) -> bool {
        let mut table = self.admission.table();
        let Some(uid) = table.entries.get(&self.id).map(|e| e.uid) else {
            return false;
        };
        table.unmark_idle(self.id, uid);
        true
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.table().remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn admission(per_uid: usize, total: usize) -> Arc<Admission> {
        Admission::new(ConnLimits { per_uid, total })
    }

    fn count(a: &Admission) -> usize {
        a.table().entries.len()
    }

    #[test]
    fn limits_follow_the_descriptors() {
        assert_eq!(
            ConnLimits::for_open_files(1024),
            ConnLimits {
                per_uid: 64,
                total: 384
            }
        );
        assert_eq!(ConnLimits::for_open_files(1 << 20).total, MAX_CONNECTIONS);
        let tiny = ConnLimits::for_open_files(64);
        assert_eq!((tiny.per_uid, tiny.total), (16, 16));
    }

    #[test]
    fn the_oldest_idle_connection_of_the_uid_makes_room() {
        let a = admission(2, 100);
        let (first, _) = a.admit(1, true).unwrap();
        let (_second, _) = a.admit(1, true).unwrap();
        let (_other, _) = a.admit(2, true).unwrap();
        let (_third, evicted) = a.admit(1, true).unwrap();
        assert_eq!(
            evicted,
            Some(Evicted {
                uid: 1,
                limit: Limit::Uid
            })
        );
        assert!(!first.mark_busy(), "the first one was evicted");
        assert_eq!(count(&a), 3);
    }

    #[test]
    fn busy_connections_are_never_evicted_and_a_full_uid_is_refused() {
        let a = admission(2, 100);
        let (x, _) = a.admit(1, false).unwrap();
        let (y, _) = a.admit(1, true).unwrap();
        assert!(y.mark_busy());
        assert_eq!(a.admit(1, true).err(), Some(Limit::Uid));
        assert!(a.admit(2, true).is_ok(), "another uid is not affected");
        drop(x);
        assert!(a.admit(1, true).is_ok(), "a dropped slot frees its place");
    }

    #[test]
    fn the_agent_limit_evicts_across_uids_or_refuses() {
        let a = admission(10, 2);
        let (_idle, _) = a.admit(1, true).unwrap();
        let (_busy, _) = a.admit(2, false).unwrap();
        let (_new, evicted) = a.admit(3, false).unwrap();
        assert_eq!(
            evicted,
            Some(Evicted {
                uid: 1,
                limit: Limit::Agent
            })
        );
        assert_eq!(a.admit(4, true).err(), Some(Limit::Agent));
        assert_eq!(count(&a), 2);
    }

    #[tokio::test]
    async fn an_evicted_connection_is_told() {
        let a = admission(1, 10);
        let (first, _) = a.admit(7, true).unwrap();
        let (second, _) = a.admit(7, true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), first.evicted())
            .await
            .expect("the evicted slot is notified");
        drop(first);
        assert!(
            second.mark_busy(),
            "dropping the evicted slot frees nothing else"
        );
        assert_eq!(count(&a), 1);
    }
}
