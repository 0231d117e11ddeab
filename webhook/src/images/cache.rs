//! Answers of image lookups, kept: a digest's for good, a tag's for a
//! while, each map bounded. A lookup under way is joined, not repeated;
//! a failure is handed to those who joined, then forgotten. Each answer
//! belongs to a [`Scope`]: the credential it was read with, or none.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use super::LookupError;
use crate::patch::Entrypoint;

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Found {
    pub entrypoint: Entrypoint,
    /// The digest-pinned reference the answer belongs to
    /// (`registry/repository@sha256:…`): a tag's answer is also that
    /// digest's.
    pub pinned: String,
}

pub(super) type Answer = Result<Found, LookupError>;

/// Who may be given an answer: every pod (read anonymously), or only a pod
/// presenting the credential it was read with (identified by an HMAC, see
/// `registry::CredentialIds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Scope {
    Anonymous,
    Credential([u8; 32]),
}

/// What a reference's answer is kept under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Key {
    /// `registry/repository@digest`: kept until evicted.
    Digest(String),
    /// `registry/repository:tag`: kept for the tag TTL.
    Tag(String),
}

struct Slot {
    answer: Arc<OnceCell<Answer>>,
    created: Instant,
    used: Instant,
}

type Name = (Scope, String);

#[derive(Default)]
struct Maps {
    digests: HashMap<Name, Slot>,
    tags: HashMap<Name, Slot>,
}

pub(super) struct Cache {
    maps: Mutex<Maps>,
    tag_ttl: Duration,
    capacity: usize,
}

impl Cache {
    /// Keeps tags' answers `tag_ttl` from the start of their lookup, and at
    /// most `capacity` digests and `capacity` tags (at least one each).
    pub fn new(tag_ttl: Duration, capacity: usize) -> Cache {
        Cache {
            maps: Mutex::default(),
            tag_ttl,
            capacity: capacity.max(1),
        }
    }

    /// The answer for `key` in `scope`: the one kept, the one under way,
    /// or what `fetch` finds (only polled when neither exists).
    pub async fn answer(
        &self,
        scope: Scope,
        key: &Key,
        fetch: impl Future<Output = Answer>,
    ) -> Answer {
        let cell = self.slot(scope, key);
        // A kept answer taught its digest when it was found.
        let kept = cell.initialized();
        let answer = cell.get_or_init(|| fetch).await.clone();
        match &answer {
            Err(_) => self.forget(scope, key, &cell),
            Ok(found) => {
                if !kept && matches!(key, Key::Tag(_)) {
                    self.remember_digest(scope, found);
                }
            }
        }
        answer
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        // Nothing panics while it is held; a poisoned map is still whole.
        self.maps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The kept or running lookup of `key`, or a new empty one.
    fn slot(&self, scope: Scope, key: &Key) -> Arc<OnceCell<Answer>> {
        let now = Instant::now();
        let mut maps = self.lock();
        let (map, name, ttl) = match key {
            Key::Digest(d) => (&mut maps.digests, (scope, d.clone()), None),
            Key::Tag(t) => (&mut maps.tags, (scope, t.clone()), Some(self.tag_ttl)),
        };
        if let Some(slot) = map.get_mut(&name)
            && !stale(slot, ttl, now)
        {
            slot.used = now;
            return slot.answer.clone();
        }
        make_room(map, self.capacity, ttl, now);
        let answer = Arc::new(OnceCell::new());
        map.insert(
            name,
            Slot {
                answer: answer.clone(),
                created: now,
                used: now,
            },
        );
        answer
    }

    /// Drops a failed lookup, unless another has replaced it already.
    fn forget(&self, scope: Scope, key: &Key, cell: &Arc<OnceCell<Answer>>) {
        let mut maps = self.lock();
        let (map, name) = match key {
            Key::Digest(d) => (&mut maps.digests, (scope, d.clone())),
            Key::Tag(t) => (&mut maps.tags, (scope, t.clone())),
        };
        if map.get(&name).is_some_and(|s| Arc::ptr_eq(&s.answer, cell)) {
            map.remove(&name);
        }
    }

    fn remember_digest(&self, scope: Scope, found: &Found) {
        let now = Instant::now();
        let mut maps = self.lock();
        let name = (scope, found.pinned.clone());
        if maps.digests.contains_key(&name) {
            return;
        }
        make_room(&mut maps.digests, self.capacity, None, now);
        maps.digests.insert(
            name,
            Slot {
                answer: Arc::new(OnceCell::new_with(Some(Ok(found.clone())))),
                created: now,
                used: now,
            },
        );
    }
}

/// A finished tag lookup older than the TTL. One under way is never stale:
/// joining it is what makes concurrent lookups one request.
fn stale(slot: &Slot, ttl: Option<Duration>, now: Instant) -> bool {
    ttl.is_some_and(|ttl| slot.answer.initialized() && now.duration_since(slot.created) >= ttl)
}

/// Below `capacity`: stale entries go first, then the least recently used.
fn make_room(map: &mut HashMap<Name, Slot>, capacity: usize, ttl: Option<Duration>, now: Instant) {
    if map.len() < capacity {
        return;
    }
    map.retain(|_, s| !stale(s, ttl, now));
    while map.len() >= capacity {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, s)| s.used)
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        map.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn found(cmd: &str, pinned: &str) -> Found {
        Found {
            entrypoint: Entrypoint {
                entrypoint: vec![],
                cmd: vec![cmd.into()],
            },
            pinned: pinned.into(),
        }
    }

    /// A fetch that counts itself and takes a little while.
    async fn fetch(count: &AtomicUsize, answer: Answer) -> Answer {
        count.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        answer
    }

    fn tag(t: &str) -> Key {
        Key::Tag(format!("r.example/app:{t}"))
    }

    #[tokio::test]
    async fn concurrent_lookups_make_one_fetch_and_a_tag_teaches_its_digest() {
        let cache = Cache::new(Duration::from_secs(300), 8);
        let count = AtomicUsize::new(0);
        let want = found("/run", "r.example/app@sha256:aa");
        let key = tag("1");
        let answers = futures_util::future::join_all(
            (0..5).map(|_| cache.answer(Scope::Anonymous, &key, fetch(&count, Ok(want.clone())))),
        )
        .await;
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert!(answers.iter().all(|a| a.as_ref() == Ok(&want)));
        let by_digest = cache
            .answer(
                Scope::Anonymous,
                &Key::Digest("r.example/app@sha256:aa".into()),
                fetch(&count, Ok(found("/other", "x"))),
            )
            .await;
        assert_eq!(by_digest, Ok(want));
        assert_eq!(count.load(Ordering::SeqCst), 1, "the digest was known");
    }

    #[tokio::test]
    async fn tags_expire_failures_are_not_kept_and_the_maps_are_bounded() {
        let cache = Cache::new(Duration::from_millis(50), 2);
        let count = AtomicUsize::new(0);
        let ok = || Ok(found("/run", "r.example/app@sha256:aa"));
        cache
            .answer(Scope::Anonymous, &tag("1"), fetch(&count, ok()))
            .await
            .unwrap();
        cache
            .answer(Scope::Anonymous, &tag("1"), fetch(&count, ok()))
            .await
            .unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 1, "kept");
        tokio::time::sleep(Duration::from_millis(60)).await;
        cache
            .answer(Scope::Anonymous, &tag("1"), fetch(&count, ok()))
            .await
            .unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 2, "expired, fetched again");

        let failure = LookupError::Disabled;
        let e = cache
            .answer(
                Scope::Anonymous,
                &tag("bad"),
                fetch(&count, Err(failure.clone())),
            )
            .await;
        assert_eq!(e, Err(failure));
        cache
            .answer(Scope::Anonymous, &tag("bad"), fetch(&count, ok()))
            .await
            .unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 4, "the failure was not kept");

        cache
            .answer(Scope::Anonymous, &tag("2"), fetch(&count, ok()))
            .await
            .unwrap();
        cache
            .answer(Scope::Anonymous, &tag("3"), fetch(&count, ok()))
            .await
            .unwrap();
        assert!(cache.lock().tags.len() <= 2);
        assert!(cache.lock().digests.len() <= 2);
    }

    #[tokio::test]
    async fn an_answer_read_with_a_credential_is_only_its_own_and_teaches_only_its_digest() {
        let cache = Cache::new(Duration::from_secs(300), 8);
        let count = AtomicUsize::new(0);
        let private = found("/private", "r.example/app@sha256:pp");
        let alice = Scope::Credential([1; 32]);
        let got = cache
            .answer(alice, &tag("1"), fetch(&count, Ok(private.clone())))
            .await;
        assert_eq!(got, Ok(private.clone()));
        let denied = LookupError::Disabled;
        for other in [Scope::Anonymous, Scope::Credential([2; 32])] {
            for key in [tag("1"), Key::Digest("r.example/app@sha256:pp".into())] {
                let e = cache
                    .answer(other, &key, fetch(&count, Err(denied.clone())))
                    .await;
                assert_eq!(e, Err(denied.clone()), "{other:?} {key:?}");
            }
        }
        assert_eq!(count.load(Ordering::SeqCst), 5, "each other scope asked");
        let again = cache
            .answer(
                alice,
                &Key::Digest("r.example/app@sha256:pp".into()),
                fetch(&count, Err(denied.clone())),
            )
            .await;
        assert_eq!(again, Ok(private));
        assert_eq!(count.load(Ordering::SeqCst), 5, "kept for its credential");
    }
}
