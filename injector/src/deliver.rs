//! One delivery, whatever started it: a wrapper's request on the agent
//! socket, or the kernel marking a process at exec.
//!
//! [`plan`] finds out what the caller gets without touching it: pod
//! identity, the bindings that select it, the check that no name comes
//! from two of them, the fetch. [`release`] then protects the caller,
//! verifies the mark, writes its files, tracks it for rotations and counts
//! the delivery. Either step can end in a [`Refusal`]: why the caller gets
//! nothing, and whether asking again may help.

mod as_pod;
mod dynamic;
mod plan;
mod refusal;
mod release;

use std::collections::BTreeMap;

use kernelseal_config::Delivery as Kind;
use kernelseal_providers::{SecretRef, SecretValue};
use tracing::{info, warn};

use crate::identity::Caller;
use crate::select::PreparedBinding;
use crate::state::ServingState;

pub(crate) use plan::{Plan, plan};
pub(crate) use refusal::Refusal;
pub(crate) use release::{Delivered, release};

/// Tells a file-delivery app where its files are.
pub const SECRETS_DIR_VAR: &str = "KERNELSEAL_SECRETS_DIR";

/// Plans and, when nothing refuses, releases.
pub(crate) async fn deliver(
    state: &ServingState,
    caller: &Caller,
    occasion: Occasion<'_>,
) -> Result<Delivered, Refusal> {
    let mut plan = plan(state, caller, occasion).await?;
    let leases = std::mem::take(&mut plan.leases);
    // The bindings outlive the plan (they are the state's): kept only when
    // there are leases to hand over, which is rare.
    let holders = if leases.is_empty() {
        Vec::new()
    } else {
        plan.selected.clone()
    };
    match release(state, caller, occasion, plan) {
        Ok(delivered) => {
            state.hold_leases(caller, leases, &holders);
            Ok(delivered)
        }
        Err(refusal) => {
            state.revoke_unused(leases);
            Err(refusal)
        }
    }
}

/// What started a delivery; the steps are the same, these are the
/// differences.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Occasion<'a> {
    /// A wrapper asks on the agent socket, for the program it is about to
    /// exec, with the pod's service-account tokens it found; it is
    /// answered either way.
    Request {
        binary: &'a str,
        tokens: &'a [crate::pod_token::PodToken],
    },
    /// The kernel marked a process at exec by its file name. Nobody asked:
    /// what happens is only logged.
    Exec { filename: &'a str },
}

impl Occasion<'_> {
    /// The program the caller runs, for `binary` and `path` selectors.
    fn program(&self) -> &str {
        match self {
            Occasion::Request { binary, .. } => binary,
            Occasion::Exec { filename } => filename,
        }
    }

    /// The tokens the caller sent: none at exec.
    fn tokens(&self) -> &[crate::pod_token::PodToken] {
        match self {
            Occasion::Request { tokens, .. } => tokens,
            Occasion::Exec { .. } => &[],
        }
    }

    /// After exec an environment can no longer be set, so only files are
    /// delivered, and only for bindings that name a program: the kernel
    /// matched the exec by file name alone, which authorizes nothing, and a
    /// process that did not ask gets nothing from bindings that would
    /// answer any caller.
    fn offers(&self, b: &PreparedBinding) -> bool {
        match self {
            Occasion::Request { .. } => true,
            // A binding that reads as the pod needs the pod's token, which
            // nobody brings at exec (config validation refuses such file
            // bindings with a program selector; this holds whatever the
            // config says).
            Occasion::Exec { .. } => {
                b.delivery == Kind::File
                    && (b.selector.binary.is_some() || b.selector.path.is_some())
                    && !b.identity.is_pod()
            }
        }
    }

    /// A wrapped app without a binding's secrets is a misconfiguration: the
    /// wrapper is refused, so it fails rather than starting the app empty.
    /// A process marked at exec runs anyway: it gets the files that could
    /// be fetched.
    fn takes_what_it_can(&self) -> bool {
        matches!(self, Occasion::Exec { .. })
    }

    fn fetch_failed(
        &self,
        state: &ServingState,
        pid: u32,
        binding: &str,
        name: &str,
        e: &kernelseal_providers::Error,
    ) {
        match self {
            Occasion::Request { .. } => warn!(
                binding = %binding, secret = %name,
                "[INJECT] {name} of binding {binding} failed: {e}"
            ),
            Occasion::Exec { .. } => {
                warn!(
                    pid,
                    "[FILE] {name} of binding {binding} for PID {pid} failed: {e}"
                );
                state.metrics.secrets_denied.inc();
            }
        }
    }

    /// Says the caller is protected now. A process marked at exec was
    /// announced from the kernel's exec event already.
    fn protected(&self, pid: u32) {
        if let Occasion::Request { .. } = self {
            info!(pid, "[PROTECT] PID {pid} marked as protected");
        }
    }

    fn injected(&self, caller: &Caller, bindings: &[String], names: &[&str]) {
        let pid = caller.pid;
        match self {
            Occasion::Request { .. } => info!(
                pid, uid = caller.uid, bindings = ?bindings, cgroup = caller.cgroup_if_read(),
                "[INJECT] Secrets injected into PID {pid}: [{}]", names.join(", ")
            ),
            Occasion::Exec { .. } => info!(
                pid,
                "[INJECT] Secrets injected into PID {pid}: [{}]",
                names.join(", ")
            ),
        }
    }
}

/// One secret of binding `b`: the keys its rotations are announced under
/// (the cache key, or for a ref read as the pod one naming the identity
/// too) and its value. A template's refs are each keyed and fetched as a
/// secret of the binding (cache, pod login, metrics), then rendered: a
/// change of any of them is a change of the template. A dynamic secret,
/// the caller's own, comes from `reads`: one read of its path for all the
/// keys taken from it, never from the cache.
async fn fetch_secret(
    state: &ServingState,
    logins: Option<&as_pod::PodLogins<'_>>,
    b: &PreparedBinding,
    sref: &SecretRef,
    reads: &mut dynamic::DynamicReads,
) -> (
    Vec<String>,
    Result<SecretValue, kernelseal_providers::Error>,
) {
    let login = |r: &SecretRef| {
        logins
            .filter(|_| b.identity.is_pod())
            .and_then(|l| l.login(&state.pod_reads, b, r))
    };
    // One login per ref, for both its rotation key and its read.
    let key =
        |r: &SecretRef, login: &Option<kernelseal_providers::identity::PodLogin<'_>>| match login {
            Some(l) => state.pod_reads.rotation_key(r, l),
            None => r.cache_key(),
        };
    let SecretRef::Template(t) = sref else {
        let login = login(sref);
        return (
            key(sref, &login).into_iter().collect(),
            reads.fetch(state, &b.name, sref, login).await,
        );
    };
    let inner_refs: Vec<_> = t.refs.iter().map(|(n, r)| (n, r, login(r))).collect();
    let keys = inner_refs
        .iter()
        .filter_map(|(_, r, l)| key(r, l))
        .collect();
    let mut values = BTreeMap::new();
    for (name, inner, login) in inner_refs {
        match reads.fetch(state, &b.name, inner, login).await {
            Ok(v) => values.insert(name.clone(), v),
            Err(e) => {
                let failed = kernelseal_providers::Error::TemplateRefFailed {
                    reference: sref.to_string(),
                    name: name.clone(),
                    error: Box::new(e),
                };
                return (keys, Err(failed));
            }
        };
    }
    let rendered = kernelseal_providers::render_template(t, &sref.to_string(), &values);
    (keys, rendered)
}

/// Gets one secret — as the pod when `login` says so — timed for the
/// provider metrics whatever started the delivery (an exec-time delivery
/// also counts each secret it could not get as a denial, see
/// [`Occasion::fetch_failed`]).
async fn fetch(
    state: &ServingState,
    sref: &SecretRef,
    login: Option<kernelseal_providers::identity::PodLogin<'_>>,
) -> Result<SecretValue, kernelseal_providers::Error> {
    let started = std::time::Instant::now();
    let fetched = match login {
        Some(l) => state.pod_reads.get(sref, &l).await,
        None => state.cache.get(sref).await,
    };
    let provider = sref.provider_name().unwrap_or(sref.kind());
    state
        .metrics
        .observe_fetch(provider, started.elapsed(), fetched.is_ok());
    fetched
}

#[cfg(test)]
mod template_tests;
#[cfg(test)]
mod tests;
