//! The plan: what the caller gets, found out without touching it.

use std::collections::BTreeMap;
use std::time::SystemTime;

use kernelseal_config::{Delivery as Kind, JsonPath};
use kernelseal_protocol::EnvVar;
use kernelseal_providers::{Expanded, HeldLease, SecretRef, SecretValue, expand};

use super::as_pod::PodLogins;
use super::dynamic::DynamicReads;
use super::{Occasion, Refusal};
use crate::identity::Caller;
use crate::pod_identity::{PodIdentity, pod_identity};
use crate::select::{PreparedBinding, matches};
use crate::state::ServingState;

/// What a caller is to get, fetched and not yet released.
pub(crate) struct Plan<'s> {
    /// The bindings that select the caller, in config order; the first
    /// one's id goes in its mark.
    pub(super) selected: Vec<&'s PreparedBinding>,
    /// For a wrapper to set in the environment of the program it execs.
    pub(super) env: Vec<EnvVar>,
    /// To write as files, by file name.
    pub(super) files: Vec<(String, SecretValue)>,
    /// Per selected binding, each delivered name with the key its
    /// rotations are announced under.
    pub(super) rotation_keys: Vec<Vec<RotationKey>>,
    /// The names of the secrets the caller will not get, and why.
    pub(super) missing: Vec<String>,
    pub(super) warnings: Vec<String>,
    /// (binding, lease) of the dynamic secrets read for the caller alone.
    pub(super) leases: Vec<(String, HeldLease)>,
}

/// One delivered name and how a rotation reaches it.
pub(crate) struct RotationKey {
    /// The variable or file name.
    pub(crate) name: String,
    /// The key rotations of its ref are announced under: the cache key, or
    /// for a ref read as the pod one naming the identity too.
    pub(crate) key: String,
    /// Where the name's value sits in its ref's JSON object, for an
    /// expanded entry (`keys: all`, `jmesPath`).
    pub(crate) part: Option<JsonPath>,
}

/// Pod identity, the selection, the check of names, the fetch.
pub(crate) async fn plan<'s>(
    state: &'s ServingState,
    caller: &Caller,
    occasion: Occasion<'_>,
) -> Result<Plan<'s>, Refusal> {
    let pods = pod_identity(caller, state).await?;
    let selected = select(state, caller, occasion, &pods)?;
    check_names(&selected)?;
    // Before any upstream call: a caller with another pod's token gets
    // nothing read on its behalf.
    let logins = PodLogins::check(
        &state.pod_reads,
        state.pods.as_deref(),
        &pods,
        &selected,
        occasion.tokens(),
        SystemTime::now(),
    )
    .await?;
    let mut reads = DynamicReads::default();
    let fetched = fetch(
        state,
        caller,
        occasion,
        selected,
        logins.as_ref(),
        &mut reads,
    )
    .await;
    match fetched {
        Ok(mut plan) => {
            plan.leases = reads.leases;
            Ok(plan)
        }
        Err(refusal) => {
            state.revoke_unused(reads.leases);
            Err(refusal)
        }
    }
}

/// The bindings whose every selector field matches the caller.
fn select<'s>(
    state: &'s ServingState,
    caller: &Caller,
    occasion: Occasion<'_>,
    pods: &PodIdentity,
) -> Result<Vec<&'s PreparedBinding>, Refusal> {
    let program = occasion.program();
    let selected: Vec<&PreparedBinding> = state
        .bindings
        .iter()
        .filter(|b| occasion.offers(b) && matches(b, caller, program, pods.caller()))
        .collect();
    if !selected.is_empty() {
        return Ok(selected);
    }
    // A pod or container the list does not show yet may match on a retry.
    let retry = pods.incomplete() && state.bindings.iter().any(|b| b.needs_pod_identity());
    Err(Refusal::NoBinding {
        pid: caller.pid,
        uid: caller.uid,
        program: program.to_string(),
        pod: pods.describe(),
        retry,
    })
}

/// No name comes from two bindings: the names known before the fetch, so
/// that nothing is read for a request refused anyway. Names expanded from
/// fetched values are checked once they are known
/// ([`claim`]).
fn check_names(selected: &[&PreparedBinding]) -> Result<(), Refusal> {
    let mut binding_of: BTreeMap<&str, &str> = BTreeMap::new();
    for b in selected {
        for name in b.refs.iter().flat_map(|(naming, _)| naming.fixed_names()) {
            if let Some(first) = binding_of.insert(name, &b.name)
                && first != b.name
            {
                return Err(Refusal::SharedName {
                    name: name.to_string(),
                    first: first.to_string(),
                    second: b.name.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Records that `binding` delivers `name`, refusing a name delivered
/// twice, expanded ones included: from two bindings, or within one (an
/// expanded key and another entry's name); which value would win is
/// arbitrary.
fn claim(
    binding_of: &mut BTreeMap<String, String>,
    name: &str,
    binding: &str,
) -> Result<(), Refusal> {
    match binding_of.insert(name.to_string(), binding.to_string()) {
        None => Ok(()),
        Some(first) if first == binding => Err(Refusal::NameTwice {
            name: name.to_string(),
            binding: binding.to_string(),
        }),
        Some(first) => Err(Refusal::SharedName {
            name: name.to_string(),
            first,
            second: binding.to_string(),
        }),
    }
}

impl Plan<'_> {
    /// Adds one value under `name`, as an environment variable or a file;
    /// false (and a warning) when the environment cannot hold it.
    fn take(&mut self, delivery: Kind, name: &str, v: SecretValue) -> bool {
        if delivery == Kind::File {
            self.files.push((name.to_string(), v));
            return true;
        }
        match v.expose_str().filter(|s| !s.contains('\0')) {
            Some(s) => {
                self.env.push(EnvVar {
                    name: name.to_string(),
                    value: s.to_string(),
                });
                true
            }
            None => {
                self.missing.push(name.to_string());
                self.warnings.push(format!(
                    "{name}: value is not text without NUL bytes; cannot go in the environment"
                ));
                false
            }
        }
    }
}

/// Reads together the refs the agent reads with its own identity (not the
/// dynamic ones: those are the caller's own), so that a provider can batch
/// them (SSM's `GetParameters`, ten names a call); each is then taken from
/// the cache below.
async fn prefetch(state: &ServingState, selected: &[&PreparedBinding]) {
    // Borrowed, not cloned: the cache clones only what it must read. A
    // plain Vec, as an iterator of closures held across the await trips
    // rustc's higher-ranked Send check on the spawned connection task.
    let shared: Vec<&SecretRef> = selected
        .iter()
        .filter(|b| !b.identity.is_pod())
        .flat_map(|b| b.refs.iter().flat_map(|(_, r)| r.fetched_refs()))
        .filter(|r| !r.is_dynamic())
        .collect();
    state.cache.prefetch(shared).await;
}

/// Every secret of the selected bindings: as an environment variable or a
/// file, as its binding says, or missing with the reason. `logins` reads
/// the refs of bindings with `identity: pod`.
async fn fetch<'s>(
    state: &ServingState,
    caller: &Caller,
    occasion: Occasion<'_>,
    selected: Vec<&'s PreparedBinding>,
    logins: Option<&PodLogins<'_>>,
    reads: &mut DynamicReads,
) -> Result<Plan<'s>, Refusal> {
    let mut plan = Plan {
        selected: Vec::new(),
        env: Vec::new(),
        files: Vec::new(),
        rotation_keys: Vec::new(),
        missing: Vec::new(),
        warnings: Vec::new(),
        leases: Vec::new(),
    };
    prefetch(state, &selected).await;
    let mut binding_of = BTreeMap::new();
    for b in &selected {
        let mut got = 0;
        // Whether asking again may help: only when an upstream could not
        // be asked. A refusal (403, not found) is its word and stays.
        let mut transient = false;
        let mut keys = Vec::new();
        for (naming, sref) in &b.refs {
            // An entry's names: its value whole, or taken apart.
            let (ref_keys, fetched) = super::fetch_secret(state, logins, b, sref, reads).await;
            let fetched = fetched.and_then(|v| expand(naming, b.delivery, v));
            let expanded = match fetched {
                Ok(expanded) => expanded,
                Err(e) => {
                    let label = naming.label();
                    // Still announced: a secret that comes later is a
                    // rotation for an env delivery's onRotate.
                    keys.extend(ref_keys.into_iter().map(|key| RotationKey {
                        name: label.clone(),
                        key,
                        part: None,
                    }));
                    transient |= e.is_retryable();
                    occasion.fetch_failed(state, caller.pid, &b.name, &label, &e);
                    plan.missing.push(label.clone());
                    plan.warnings.push(format!("{label}: {e}"));
                    continue;
                }
            };
            for Expanded { name, value, part } in expanded {
                claim(&mut binding_of, &name, &b.name)?;
                got += usize::from(plan.take(b.delivery, &name, value));
                keys.extend(ref_keys.iter().map(|key| RotationKey {
                    name: name.clone(),
                    key: key.clone(),
                    part: part.clone(),
                }));
            }
        }
        plan.rotation_keys.push(keys);
        if got == 0 && !b.refs.is_empty() && !occasion.takes_what_it_can() {
            return Err(Refusal::Unresolved {
                binding: b.name.clone(),
                failures: plan.warnings.join("; "),
                retry: transient,
            });
        }
    }
    if plan.env.is_empty() && plan.files.is_empty() && occasion.takes_what_it_can() {
        return Err(Refusal::NothingFetched);
    }
    plan.selected = selected;
    Ok(plan)
}
