//! Which binding and which secret of it the parser is reading, so that an
//! error raised while a `source:` deserializes names its whole field path
//! (`secrets[0].secretRefs[1].source.fileRef.ttl`). serde hands a nested
//! `Deserialize` nothing about where it sits, and serde-saphyr's errors
//! carry a location but no path; so the two sequences above a source
//! record the index of the element being read, for the time it is read.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};

#[derive(Clone, Copy, Default)]
struct Position {
    binding: Option<usize>,
    secret: Option<usize>,
}

thread_local! {
    static POSITION: Cell<Position> = Cell::new(Position::default());
}

/// The field path of the source being read: `secrets[i].secretRefs[j].source`,
/// or just `source` when it is read on its own.
pub(crate) fn current() -> String {
    let at = POSITION.with(Cell::get);
    match (at.binding, at.secret) {
        (Some(i), Some(j)) => format!("secrets[{i}].secretRefs[{j}].source"),
        _ => "source".to_string(),
    }
}

/// The field path of the `secretRefs` entry being read:
/// `secrets[i].secretRefs[j]`, or `secretRef` when it is read on its own.
pub(crate) fn current_entry() -> String {
    let at = POSITION.with(Cell::get);
    match (at.binding, at.secret) {
        (Some(i), Some(j)) => format!("secrets[{i}].secretRefs[{j}]"),
        _ => "secretRef".to_string(),
    }
}

/// `secrets:`, recording each binding's index while it is read.
pub(crate) fn bindings<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Vec<T>, D::Error> {
    indexed(deserializer, |at, i| at.binding = i)
}

/// `secretRefs:`, recording each secret's index while it is read.
pub(crate) fn secret_refs<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Vec<T>, D::Error> {
    indexed(deserializer, |at, j| at.secret = j)
}

fn indexed<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
    set: fn(&mut Position, Option<usize>),
) -> Result<Vec<T>, D::Error> {
    deserializer.deserialize_seq(Indexed {
        set,
        element: PhantomData,
    })
}

struct Indexed<T> {
    set: fn(&mut Position, Option<usize>),
    element: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Indexed<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        loop {
            let _at = Entered::new(self.set, out.len());
            match seq.next_element()? {
                Some(element) => out.push(element),
                None => return Ok(out),
            }
        }
    }
}

/// Records an index until dropped, then puts the previous position back
/// (also when the element fails to parse).
struct Entered {
    previous: Position,
}

impl Entered {
    fn new(set: fn(&mut Position, Option<usize>), index: usize) -> Self {
        let previous = POSITION.with(Cell::get);
        let mut now = previous;
        set(&mut now, Some(index));
        POSITION.with(|p| p.set(now));
        Entered { previous }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        POSITION.with(|p| p.set(self.previous));
    }
}
