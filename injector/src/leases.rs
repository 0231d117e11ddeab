//! Leases held for the processes they were read for (`engine: dynamic`):
//! each process's leases live exactly as long as it does. While it runs
//! they are renewed at about 2/3 of their TTL (spread, so that processes
//! started together do not renew together); when Vault grants less than
//! asked, the lease is near its max TTL and the binding's `onRotate` says
//! what happens to the process before the credential stops working; when
//! the process exits (its pidfd becomes readable) they are revoked.
//!
//! Each process's lease ids are recorded under the agent's state directory
//! ([`record`]), so a restarted agent carries on with the processes still
//! alive and revokes the leases of those that died while it was away.

pub mod record;

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kernelseal_config::OnRotate;
use kernelseal_providers::{HeldLease, SecretProvider};
use tokio::time::Instant;
use tracing::{info, warn};

pub use record::{LeaseRecord, RecordDir, RecordError};

/// When leases are renewed, and how renewals are spread.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    /// Fraction of the granted TTL after which a lease is renewed.
    pub renew_at: f64,
    /// Each renewal is moved by up to this fraction of the TTL either way,
    /// at random.
    pub spread: f64,
    /// How soon a failed renewal or revocation is tried again (at most;
    /// never later than a third of what is left of the lease).
    pub retry: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            renew_at: 2.0 / 3.0,
            spread: 0.1,
            retry: Duration::from_secs(10),
        }
    }
}

/// One process and the leases it was handed.
pub struct Holder {
    pub pid: u32,
    pub start_time: u64,
    pub pidfd: OwnedFd,
    pub binding: String,
    pub on_rotate: Option<OnRotate>,
    pub leases: Vec<HeldLease>,
}

/// The processes holding leases; outlives config reloads.
pub struct LeaseTable {
    records: Option<RecordDir>,
    timing: LeaseTiming,
    /// This boot's id, written into every record (read once: it cannot
    /// change while the agent runs).
    boot_id: String,
    /// Processes holding leases now.
    holders: AtomicUsize,
}

/// What a restarted agent found in its lease records.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reattached {
    /// Processes still alive: their leases are renewed again.
    pub kept: usize,
    /// Leases of processes that died meanwhile, revoked now.
    pub revoked: usize,
    /// Leases that could not be revoked; their records stay for the next
    /// start.
    pub unrevoked: usize,
}

impl LeaseTable {
    /// `records`: where lease ids are kept across restarts (`None`: not
    /// kept, a restart forgets them and they run out at their TTL).
    pub fn new(records: Option<RecordDir>, timing: LeaseTiming) -> Arc<LeaseTable> {
        Arc::new(LeaseTable {
            records,
            timing,
            boot_id: boot_id(),
            holders: AtomicUsize::new(0),
        })
    }

    /// Processes holding leases now.
    pub fn holders(&self) -> usize {
        self.holders.load(Ordering::Relaxed)
    }

    /// Takes over `holder`'s leases: records them, then renews them while it
    /// lives and revokes them when it exits, through `provider`.
    pub fn hold(self: &Arc<Self>, holder: Holder, provider: Arc<dyn SecretProvider>) {
        if holder.leases.is_empty() {
            return;
        }
        let record = LeaseRecord {
            pid: holder.pid,
            start_time: holder.start_time,
            boot_id: self.boot_id.clone(),
            binding: holder.binding.clone(),
            leases: holder.leases.clone(),
        };
        self.holders.fetch_add(1, Ordering::Relaxed);
        let table = self.clone();
        tokio::spawn(async move {
            let path = table.record(record).await;
            table.keep(holder, path, provider, false).await
        });
    }

    /// Writes `record` (off the async workers: it is fsynced). The process
    /// has its credential already; without a record only a restart of the
    /// agent meanwhile would leave the lease to run out at its TTL.
    async fn record(&self, record: LeaseRecord) -> Option<std::path::PathBuf> {
        let dir = self.records.clone()?;
        let pid = record.pid;
        let written = tokio::task::spawn_blocking(move || dir.write(&record)).await;
        match written {
            Ok(Ok(path)) => Some(path),
            Ok(Err(e)) => {
                warn!(
                    pid,
                    "[LEASE] cannot record the leases of PID {pid}: {e}; they will not be revoked if the agent restarts first"
                );
                None
            }
            Err(_) => None,
        }
    }

    /// Revokes leases read for a delivery that did not happen.
    pub fn revoke_unused(
        self: &Arc<Self>,
        leases: Vec<HeldLease>,
        provider: Arc<dyn SecretProvider>,
    ) {
        if leases.is_empty() {
            return;
        }
        let table = self.clone();
        tokio::spawn(async move {
            for held in &leases {
                table.revoke(&*provider, held, None).await;
            }
        });
    }

    /// Reads the lease records of an earlier agent: processes still alive
    /// (the same PID and start time) are held again, with their leases
    /// renewed at once since nobody renewed them meanwhile; the leases of
    /// the others are revoked. `on_rotate_of` gives a binding's `onRotate`
    /// in the config in force.
    pub async fn reattach(
        self: &Arc<Self>,
        provider: Arc<dyn SecretProvider>,
        on_rotate_of: impl Fn(&str) -> Option<OnRotate>,
    ) -> Result<Reattached, RecordError> {
        let Some(dir) = &self.records else {
            return Ok(Reattached::default());
        };
        let mut found = Reattached::default();
        for (path, r) in dir.read_all()? {
            // Start times count from boot: after a reboot they name nobody.
            let same_boot = r.boot_id.is_empty() || r.boot_id == self.boot_id;
            match alive(r.pid, r.start_time).filter(|_| same_boot) {
                Some(pidfd) => {
                    found.kept += 1;
                    info!(
                        pid = r.pid,
                        "[LEASE] PID {} still holds {} lease(s) of binding {}: renewing them again",
                        r.pid,
                        r.leases.len(),
                        r.binding
                    );
                    self.holders.fetch_add(1, Ordering::Relaxed);
                    let holder = Holder {
                        pid: r.pid,
                        start_time: r.start_time,
                        pidfd,
                        on_rotate: on_rotate_of(&r.binding),
                        binding: r.binding,
                        leases: r.leases,
                    };
                    let table = self.clone();
                    let provider = provider.clone();
                    tokio::spawn(
                        async move { table.keep(holder, Some(path), provider, true).await },
                    );
                }
                None => {
                    let mut left = 0;
                    for held in &r.leases {
                        if self.revoke(&*provider, held, Some(r.pid)).await {
                            found.revoked += 1;
                        } else {
                            left += 1;
                        }
                    }
                    found.unrevoked += left;
                    if left == 0 {
                        dir.remove(&path);
                    }
                }
            }
        }
        Ok(found)
    }

    /// Renews `holder`'s leases until it exits, then revokes them.
    async fn keep(
        self: Arc<Self>,
        holder: Holder,
        record: Option<std::path::PathBuf>,
        provider: Arc<dyn SecretProvider>,
        renew_now: bool,
    ) {
        let pid = holder.pid;
        let exited = exit_of(holder.pidfd.try_clone().ok());
        tokio::pin!(exited);
        let now = Instant::now();
        let mut leases: Vec<Kept> = holder
            .leases
            .iter()
            .map(|held| Kept {
                next: if renew_now {
                    now
                } else {
                    now + self.renew_delay(held.lease.duration)
                },
                nudged: false,
                stopped: false,
            })
            .collect();
        loop {
            let due = holder
                .leases
                .iter()
                .zip(&leases)
                .filter(|(h, k)| h.lease.renewable && !k.stopped)
                .map(|(_, k)| k.next)
                .min();
            let sleep = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut exited => break,
                () = sleep => {
                    for (held, kept) in holder.leases.iter().zip(leases.iter_mut()) {
                        if held.lease.renewable && !kept.stopped && kept.next <= Instant::now() {
                            self.renew(&*provider, &holder, held, kept).await;
                        }
                    }
                }
            }
        }
        let mut left = 0;
        for held in &holder.leases {
            if !self.revoke(&*provider, held, Some(pid)).await {
                left += 1;
            }
        }
        self.holders.fetch_sub(1, Ordering::Relaxed);
        if left == 0
            && let (Some(dir), Some(path)) = (&self.records, &record)
        {
            dir.remove(path);
        }
        info!(
            pid,
            "[LEASE] PID {pid} exited; {} lease(s) of binding {} revoked",
            holder.leases.len() - left,
            holder.binding
        );
    }

    /// Renews one lease and sets when to renew it next. Vault grants less
    /// than asked only when the lease's max TTL is near: the process is
    /// then told per `onRotate`, once, while the credential still works.
    async fn renew(
        &self,
        provider: &dyn SecretProvider,
        holder: &Holder,
        held: &HeldLease,
        kept: &mut Kept,
    ) {
        let asked = held.lease.duration;
        match provider.renew_held(held).await {
            Ok(Some(granted)) => {
                if granted < asked {
                    kept.nudge_once(holder, || {
                        format!(
                            "the lease of {} ends in {}s (its max TTL)",
                            held.reference,
                            granted.as_secs()
                        )
                    });
                    // Renewing again cannot go further; the process's exit
                    // still revokes it.
                    kept.next = Instant::now() + granted.max(Duration::from_secs(1));
                } else {
                    kept.next = Instant::now() + self.renew_delay(granted);
                }
            }
            Ok(None) => kept.next = Instant::now() + asked.max(Duration::from_secs(1)),
            // Vault out of reach: tried again while the lease may still
            // be alive.
            Err(e) if e.is_availability() => {
                warn!(
                    pid = holder.pid,
                    "[LEASE] renewing the lease of {} for PID {} failed: {e}",
                    held.reference,
                    holder.pid
                );
                kept.next =
                    Instant::now() + self.timing.retry.min(asked / 3).max(Duration::from_secs(1));
            }
            // Vault's answer (the lease is gone, or renewing it is not
            // allowed): asking again would only repeat it.
            Err(e) => {
                warn!(
                    pid = holder.pid,
                    "[LEASE] the lease of {} for PID {} can no longer be renewed: {e}",
                    held.reference,
                    holder.pid
                );
                kept.stopped = true;
                kept.nudge_once(holder, || {
                    format!("the lease of {} can no longer be renewed", held.reference)
                });
            }
        }
    }

    /// Revokes one lease; false when the upstream could not be told.
    async fn revoke(
        &self,
        provider: &dyn SecretProvider,
        held: &HeldLease,
        pid: Option<u32>,
    ) -> bool {
        match provider.revoke_held(held).await {
            Ok(()) => true,
            Err(e) => {
                warn!(
                    pid,
                    "[LEASE] revoking the lease of {} failed: {e}; it runs out at its TTL",
                    held.reference
                );
                false
            }
        }
    }

    /// `renew_at` of the TTL, moved at random by up to `spread` of it.
    fn renew_delay(&self, ttl: Duration) -> Duration {
        let jitter = (random_unit() * 2.0 - 1.0) * self.timing.spread;
        ttl.mul_f64((self.timing.renew_at + jitter).clamp(0.05, 0.95))
            .max(Duration::from_secs(1))
    }
}

struct Kept {
    next: Instant,
    /// `onRotate` was acted on for the coming max TTL.
    nudged: bool,
    /// Vault refused a renewal: not asked again (still revoked at exit).
    stopped: bool,
}

impl Kept {
    /// Acts on the binding's `onRotate` for the end of this lease, once:
    /// whether the end is its max TTL or a renewal Vault refused.
    fn nudge_once(&mut self, holder: &Holder, event: impl FnOnce() -> String) {
        if std::mem::replace(&mut self.nudged, true) {
            return;
        }
        crate::rotate::nudge(
            holder.pid,
            &holder.pidfd,
            &holder.binding,
            holder.on_rotate.as_ref(),
            &event(),
        );
    }
}

/// Resolves when the process exits. Without a pidfd to watch, at once:
/// leases nobody can tie to the process's life are revoked now (logged).
async fn exit_of(pidfd: Option<OwnedFd>) {
    let watched = match pidfd {
        Some(fd) => crate::identity::exit_of(fd).await,
        None => Err(std::io::Error::other("no pidfd")),
    };
    if watched.is_err() {
        warn!("[LEASE] cannot watch for a lease holder's exit; its leases are revoked now");
    }
}

/// A pidfd for `pid` if it is still the process that was handed the
/// leases (the same start time, checked after the pidfd pins the PID).
fn alive(pid: u32, start_time: u64) -> Option<OwnedFd> {
    let pidfd = kernelseal_bpf::pidfd_open(pid).ok()?;
    (crate::identity::start_time(pid) == Some(start_time)).then_some(pidfd)
}

/// This boot's id: a record from another boot names no live process.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// 64 bits from the kernel's random source.
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom into an 8-byte buffer; a short read leaves zeros,
    // which only makes a renewal less spread or a record name less random.
    unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), 8, 0) };
    u64::from_ne_bytes(bytes)
}

/// A uniform draw in [0, 1).
fn random_unit() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernelseal_providers::{Error, Lease, SecretRef, SecretValue};
    use std::sync::atomic::AtomicUsize;

    /// Refuses every renewal as Vault refuses a lease that is gone.
    #[derive(Default)]
    struct Refusing {
        renewals: AtomicUsize,
        revocations: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl SecretProvider for Refusing {
        fn kind(&self) -> &'static str {
            "vault"
        }
        async fn fetch(&self, r: &SecretRef) -> Result<SecretValue, Error> {
            Err(Error::Provider {
                reference: r.to_string(),
                message: "not used".into(),
            })
        }
        async fn renew_held(&self, held: &HeldLease) -> Result<Option<Duration>, Error> {
            self.renewals.fetch_add(1, Ordering::Relaxed);
            Err(Error::Upstream {
                reference: held.reference.clone(),
                status: Some(400),
                message: "lease renewal refused: Vault answered 400".into(),
            })
        }
        async fn revoke_held(&self, _held: &HeldLease) -> Result<(), Error> {
            self.revocations.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_refused_renewal_is_not_asked_again_and_the_lease_is_still_revoked_at_exit() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let provider = Arc::new(Refusing::default());
        let table = LeaseTable::new(None, LeaseTiming::default());
        table.hold(
            Holder {
                pid,
                start_time: 0,
                pidfd: kernelseal_bpf::pidfd_open(pid).unwrap(),
                binding: "db".into(),
                on_rotate: None,
                leases: vec![HeldLease {
                    provider: "vault".into(),
                    reference: "vaultRef database/creds/app (dynamic)".into(),
                    lease: Lease {
                        id: "database/creds/app/x".into(),
                        duration: Duration::from_secs(1),
                        renewable: true,
                    },
                }],
            },
            provider.clone(),
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(provider.renewals.load(Ordering::Relaxed), 1);
        child.kill().unwrap();
        child.wait().unwrap();
        for _ in 0..200 {
            if provider.revocations.load(Ordering::Relaxed) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(provider.revocations.load(Ordering::Relaxed), 1);
        assert_eq!(table.holders(), 0);
    }

    #[test]
    fn renewals_are_spread_around_two_thirds_of_the_ttl() {
        let table = LeaseTable::new(None, LeaseTiming::default());
        let ttl = Duration::from_secs(60);
        let delays: Vec<Duration> = (0..500).map(|_| table.renew_delay(ttl)).collect();
        let (lo, hi) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
        assert!(
            *lo >= Duration::from_secs(34) && *hi <= Duration::from_secs(46),
            "{lo:?}..{hi:?}"
        );
        // Spread: not one instant for all.
        assert!(*hi - *lo > Duration::from_secs(8), "{lo:?}..{hi:?}");
    }
}
