//! The plan: what the caller gets, found out without touching it.

use std::collections::BTreeMap;
use std::time::SystemTime;

use kernelseal_config::Delivery as Kind;
use kernelseal_protocol::EnvVar;
use kernelseal_providers::SecretValue;

use super::as_pod::PodLogins;
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
    /// Per selected binding, (secret name, key its rotations are announced
    /// under): the cache key, or for a ref read as the pod one naming the
    /// identity too.
    pub(super) rotation_keys: Vec<Vec<(String, String)>>,
    /// The names of the secrets the caller will not get, and why.
    pub(super) missing: Vec<String>,
    pub(super) warnings: Vec<String>,
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
    fetch(state, caller, occasion, selected, logins.as_ref()).await
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

/// No name comes from two bindings.
fn check_names(selected: &[&PreparedBinding]) -> Result<(), Refusal> {
    let mut binding_of: BTreeMap<&str, &str> = BTreeMap::new();
    for b in selected {
        for (name, _) in &b.refs {
            if let Some(first) = binding_of.insert(name, &b.name)
                && first != b.name
            {
                return Err(Refusal::SharedName {
                    name: name.clone(),
                    first: first.to_string(),
                    second: b.name.clone(),
                });
            }
        }
    }
    Ok(())
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
) -> Result<Plan<'s>, Refusal> {
    let mut plan = Plan {
        selected: Vec::new(),
        env: Vec::new(),
        files: Vec::new(),
        rotation_keys: Vec::new(),
        missing: Vec::new(),
        warnings: Vec::new(),
    };
    for b in &selected {
        let mut got = 0;
        // Whether asking again may help: only when an upstream could not
        // be asked. A refusal (403, not found) is its word and stays.
        let mut transient = false;
        let mut keys = Vec::new();
        for (name, sref) in &b.refs {
            let (ref_keys, fetched) = super::fetch_secret(state, logins, b, sref).await;
            keys.extend(ref_keys.into_iter().map(|k| (name.clone(), k)));
            match fetched {
                Ok(v) if b.delivery == Kind::File => {
                    plan.files.push((name.clone(), v));
                    got += 1;
                }
                Ok(v) => match v.expose_str().filter(|s| !s.contains('\0')) {
                    Some(s) => {
                        plan.env.push(EnvVar {
                            name: name.clone(),
                            value: s.to_string(),
                        });
                        got += 1;
                    }
                    None => {
                        plan.missing.push(name.clone());
                        plan.warnings.push(format!(
                            "{name}: value is not text without NUL bytes; cannot go in the environment"
                        ));
                    }
                },
                Err(e) => {
                    transient |= e.is_retryable();
                    occasion.fetch_failed(state, caller.pid, &b.name, name, &e);
                    plan.missing.push(name.clone());
                    plan.warnings.push(format!("{name}: {e}"));
                }
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
