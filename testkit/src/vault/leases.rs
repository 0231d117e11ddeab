//! Dynamic secrets and their leases, as Vault's secrets engines and its
//! expiration manager hand them out: every read of a role's `creds` path
//! is a new credential with a lease of its own, renewed (never past the
//! role's max TTL) or revoked by lease id, and revoked by the expiration
//! manager when it runs out.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::kv::rfc3339;

/// A dynamic role (`database/roles/app` read through `database/creds/app`):
/// the lease every credential gets.
#[derive(Debug, Clone, Copy)]
pub struct DynamicRole {
    /// The lease's TTL when issued, and a renewal's without `increment`.
    pub ttl: Duration,
    /// How long after issue the lease ends whatever the renewals.
    pub max_ttl: Duration,
}

struct Lease {
    issued_wall: SystemTime,
    expires: Instant,
    /// Issue time + max TTL: no renewal goes past it.
    ends: Instant,
    last_renewal: Option<SystemTime>,
    username: String,
    password: String,
}

/// What happened to leases so far, for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseCounts {
    pub issued: usize,
    pub renewed: usize,
    /// Revoked through `sys/leases/revoke`.
    pub revoked: usize,
    /// Revoked by the expiration manager at the end of their TTL.
    pub expired: usize,
}

#[derive(Default)]
pub(super) struct LeaseStore {
    /// By creds path under the API (`database/creds/app`).
    roles: BTreeMap<String, DynamicRole>,
    live: BTreeMap<String, Lease>,
    counts: LeaseCounts,
}

impl LeaseStore {
    pub(super) fn add_role(&mut self, creds_path: &str, role: DynamicRole) {
        assert!(
            role.ttl <= role.max_ttl,
            "dynamic role {creds_path}: ttl above max_ttl"
        );
        self.roles.insert(creds_path.to_string(), role);
    }

    pub(super) fn is_creds_path(&self, path: &str) -> bool {
        self.roles.contains_key(path)
    }

    /// A new credential on `creds_path`: the response's `lease_id`,
    /// `lease_duration` and `data`.
    pub(super) fn issue(&mut self, creds_path: &str) -> Option<(String, u64, Value)> {
        self.expire_due();
        let role = *self.roles.get(creds_path)?;
        let now = Instant::now();
        let lease_id = format!("{creds_path}/{}", crate::sa_token::random_uuid());
        let role_name = creds_path.rsplit('/').next().unwrap_or("role");
        let username = format!("v-{role_name}-{}", &crate::sa_token::random_uuid()[..8]);
        let password = crate::sa_token::random_uuid();
        self.live.insert(
            lease_id.clone(),
            Lease {
                issued_wall: SystemTime::now(),
                expires: now + role.ttl,
                ends: now + role.max_ttl,
                last_renewal: None,
                username: username.clone(),
                password: password.clone(),
            },
        );
        self.counts.issued += 1;
        let data = json!({ "username": username, "password": password });
        Some((lease_id, role.ttl.as_secs(), data))
    }

    /// `sys/leases/renew`: the lease's new duration, `increment` seconds
    /// (else the role's TTL) capped at what is left of its max TTL; `None`
    /// for a lease that is not live.
    pub(super) fn renew(&mut self, lease_id: &str, increment: Option<u64>) -> Option<u64> {
        self.expire_due();
        let role = self.role_of(lease_id)?;
        let lease = self.live.get_mut(lease_id)?;
        let now = Instant::now();
        let wanted = increment
            .filter(|i| *i > 0)
            .map_or(role.ttl, Duration::from_secs);
        lease.expires = (now + wanted).min(lease.ends);
        lease.last_renewal = Some(SystemTime::now());
        self.counts.renewed += 1;
        Some(lease.expires.saturating_duration_since(now).as_secs())
    }

    /// `sys/leases/revoke`: Vault answers 204 whether or not the lease
    /// exists (there is nothing left to revoke).
    pub(super) fn revoke(&mut self, lease_id: &str) {
        self.expire_due();
        if self.live.remove(lease_id).is_some() {
            self.counts.revoked += 1;
        }
    }

    /// `sys/leases/lookup`'s `data`; `None` for a lease that is not live.
    pub(super) fn lookup(&mut self, lease_id: &str) -> Option<Value> {
        self.expire_due();
        let lease = self.live.get(lease_id)?;
        let now = Instant::now();
        let ttl = lease.expires.saturating_duration_since(now);
        let expire_wall = SystemTime::now() + ttl;
        Some(json!({
            "id": lease_id,
            "issue_time": rfc3339(lease.issued_wall),
            "expire_time": rfc3339(expire_wall),
            "last_renewal": lease.last_renewal.map(rfc3339),
            "renewable": true,
            "ttl": ttl.as_secs(),
        }))
    }

    pub(super) fn counts(&mut self) -> LeaseCounts {
        self.expire_due();
        self.counts
    }

    /// Live leases, after the expiration manager's pass.
    pub(super) fn live(&mut self) -> usize {
        self.expire_due();
        self.live.len()
    }

    /// Whether the credential named `username` still works (its lease is
    /// live), as the database would answer a login.
    pub(super) fn accepts(&mut self, username: &str) -> bool {
        self.expire_due();
        self.live.values().any(|l| l.username == username)
    }

    /// Whether `username` logs in with `password`: the two were issued
    /// together and their lease is live.
    pub(super) fn accepts_login(&mut self, username: &str, password: &str) -> bool {
        self.expire_due();
        self.live
            .values()
            .any(|l| l.username == username && l.password == password)
    }

    fn role_of(&self, lease_id: &str) -> Option<DynamicRole> {
        let (creds_path, _) = lease_id.rsplit_once('/')?;
        self.roles.get(creds_path).copied()
    }

    /// The expiration manager: a lease whose TTL ran out is revoked.
    fn expire_due(&mut self) {
        let now = Instant::now();
        let before = self.live.len();
        self.live.retain(|_, l| l.expires > now);
        self.counts.expired += before - self.live.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(ttl: u64, max_ttl: u64) -> LeaseStore {
        let mut s = LeaseStore::default();
        s.add_role(
            "database/creds/app",
            DynamicRole {
                ttl: Duration::from_secs(ttl),
                max_ttl: Duration::from_secs(max_ttl),
            },
        );
        s
    }

    #[test]
    fn every_read_is_a_new_credential_with_its_own_lease() {
        let mut s = store(60, 600);
        let (a, ttl, da) = s.issue("database/creds/app").unwrap();
        let (b, _, db) = s.issue("database/creds/app").unwrap();
        assert_ne!(a, b);
        assert_ne!(da["username"], db["username"]);
        assert_ne!(da["password"], db["password"]);
        assert!(a.starts_with("database/creds/app/"));
        assert_eq!(ttl, 60);
        assert_eq!(s.live(), 2);
        assert!(s.issue("database/creds/other").is_none());
    }

    #[test]
    fn renewal_is_capped_at_the_max_ttl() {
        let mut s = store(60, 100);
        let (id, _, _) = s.issue("database/creds/app").unwrap();
        assert_eq!(s.renew(&id, None), Some(60));
        let capped = s.renew(&id, Some(3600)).unwrap();
        assert!((99..=100).contains(&capped), "{capped}");
        assert_eq!(s.counts().renewed, 2);
    }

    #[test]
    fn revoked_and_unknown_leases_are_not_found_and_revoke_is_idempotent() {
        let mut s = store(60, 600);
        let (id, _, data) = s.issue("database/creds/app").unwrap();
        let user = data["username"].as_str().unwrap().to_string();
        assert!(s.accepts(&user));
        s.revoke(&id);
        s.revoke(&id);
        s.revoke("database/creds/app/unknown");
        assert!(!s.accepts(&user));
        assert_eq!(s.renew(&id, None), None);
        assert_eq!(s.lookup(&id), None);
        assert_eq!(s.counts().revoked, 1);
        assert_eq!(s.live(), 0);
    }

    #[test]
    fn a_lease_that_runs_out_is_revoked_by_the_expiration_manager() {
        let mut s = store(0, 0);
        let (id, ttl, _) = s.issue("database/creds/app").unwrap();
        assert_eq!(ttl, 0);
        assert_eq!(s.renew(&id, None), None);
        assert_eq!(s.counts().expired, 1);
    }
}
