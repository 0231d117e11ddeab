//! The dynamic secrets of one delivery (`engine: dynamic`): each path is
//! read once, whatever number of keys the caller's bindings take from it,
//! so a username and its password come from the same answer; and never
//! from the cache, so no two processes share a credential. The leases read
//! are handed to the lease table with the process, or revoked when the
//! delivery does not happen.

use kernelseal_providers::identity::PodLogin;
use kernelseal_providers::{Error, HeldLease, SecretRef, SecretValue, VaultRef};

use crate::state::ServingState;

#[derive(Default)]
pub(crate) struct DynamicReads {
    /// By the path's ref (the ref without its key), as text.
    answers: Vec<(String, Result<SecretValue, Error>)>,
    /// (binding, lease) for each answer that came with a lease.
    pub(crate) leases: Vec<(String, HeldLease)>,
}

impl DynamicReads {
    /// `sref`'s value for `binding`: a dynamic secret from its path's one
    /// answer, any other through the cache or the pod's login.
    pub(crate) async fn fetch(
        &mut self,
        state: &ServingState,
        binding: &str,
        sref: &SecretRef,
        login: Option<PodLogin<'_>>,
    ) -> Result<SecretValue, Error> {
        match sref {
            SecretRef::Vault(v) if sref.is_dynamic() => {
                self.get(state, binding, sref, v, login).await
            }
            _ => super::fetch(state, sref, login).await,
        }
    }

    /// The dynamic `v` (`sref`) read for `binding`: from its path's one
    /// answer.
    async fn get(
        &mut self,
        state: &ServingState,
        binding: &str,
        sref: &SecretRef,
        v: &VaultRef,
        login: Option<PodLogin<'_>>,
    ) -> Result<SecretValue, Error> {
        let path = SecretRef::Vault(VaultRef {
            key: None,
            ..v.clone()
        });
        let text = path.to_string();
        let answer = match self.answers.iter().position(|(t, _)| *t == text) {
            Some(i) => &self.answers[i].1,
            None => {
                let read = super::fetch(state, &path, login).await;
                if let Ok(value) = &read {
                    self.leases
                        .extend(HeldLease::of(value).map(|l| (binding.to_string(), l)));
                }
                self.answers.push((text, read));
                &self.answers[self.answers.len() - 1].1
            }
        };
        match (answer, &v.key) {
            (Ok(whole), Some(key)) => whole.select_key(key, sref),
            (Ok(whole), None) => Ok(whole.clone()),
            (Err(e), _) => Err(e.clone()),
        }
    }
}
