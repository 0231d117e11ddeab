//! Image references as parsed, with the key their answers are cached
//! under, kept by their text: `oci-client` parses one with a large regular
//! expression (a few microseconds, most of a cached review's lookup), and
//! a cluster names few distinct images.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use oci_client::Reference;

use super::LookupError;
use super::cache::Key;

/// A reference, completed, and what its answer is kept under.
#[derive(Debug)]
pub(super) struct Parsed {
    pub reference: Reference,
    pub key: Key,
}

/// `registry/repository@digest`: what a digest's answer is kept under.
pub(super) fn pinned(reference: &Reference, digest: &str) -> String {
    format!(
        "{}/{}@{digest}",
        reference.registry(),
        reference.repository()
    )
}

/// References kept before the table starts afresh.
const CAPACITY: usize = 4096;

pub(super) struct References {
    parsed: Mutex<HashMap<String, Arc<Parsed>>>,
}

impl Default for References {
    /// Compiles the regular expression now: the first time takes tens of
    /// milliseconds, which the first pod's review should not wait for.
    fn default() -> Self {
        let _ = Reference::try_from("kernelseal.invalid/warm-up:1");
        References {
            parsed: Mutex::default(),
        }
    }
}

impl References {
    /// `image` parsed (completed as the kubelet completes it), or why it is
    /// no reference. Failures are not kept: they are rare and cheap to
    /// find again.
    pub fn parse(&self, image: &str) -> Result<Arc<Parsed>, LookupError> {
        if let Some(p) = self.lock().get(image) {
            return Ok(p.clone());
        }
        let reference = Reference::try_from(image).map_err(|e| LookupError::Reference {
            image: image.into(),
            why: e.to_string(),
        })?;
        let key = match reference.digest() {
            Some(d) => Key::Digest(pinned(&reference, d)),
            None => Key::Tag(reference.whole()),
        };
        let found = Arc::new(Parsed { reference, key });
        let mut parsed = self.lock();
        if parsed.len() >= CAPACITY {
            parsed.clear();
        }
        parsed.insert(image.to_string(), found.clone());
        Ok(found)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Parsed>>> {
        // Nothing panics while it is held; a poisoned map is still whole.
        self.parsed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_is_parsed_once_and_completed_as_the_kubelet_does() {
        let refs = References::default();
        let first = refs.parse("nginx").unwrap();
        assert_eq!(first.reference.whole(), "docker.io/library/nginx:latest");
        assert_eq!(first.key, Key::Tag("docker.io/library/nginx:latest".into()));
        assert_eq!(refs.lock().len(), 1);
        assert!(Arc::ptr_eq(&refs.parse("nginx").unwrap(), &first));
        assert_eq!(refs.lock().len(), 1);
        let digest = format!("sha256:{}", "a".repeat(64));
        let pinned = refs.parse(&format!("nginx:1@{digest}")).unwrap();
        assert_eq!(
            pinned.key,
            Key::Digest(format!("docker.io/library/nginx@{digest}"))
        );
    }

    #[test]
    fn a_bad_reference_is_refused_by_name_and_not_kept() {
        let refs = References::default();
        let e = refs.parse("app:two words").unwrap_err();
        assert!(e.to_string().contains("\"app:two words\""), "{e}");
        assert!(refs.lock().is_empty());
    }

    #[test]
    fn a_full_table_starts_afresh() {
        let refs = References::default();
        for i in 0..CAPACITY + 1 {
            refs.parse(&format!("registry.example/app-{i}:1")).unwrap();
        }
        assert_eq!(refs.lock().len(), 1);
    }
}
