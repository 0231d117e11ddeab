//! The field paths the parser accepts, for the configuration reference and
//! its test (`tests/config_reference.rs` in the `kernelseal` crate).
//!
//! The names come from the serde schema itself, not from a hand-kept list:
//! a probe deserializer asks each section's `Deserialize` impl which field
//! names it accepts (the list serde's derive uses to refuse unknown ones).
//! Only the nesting (which section sits under which path) is written here;
//! a new field of an existing section appears without any change.

use serde::de::{self, DeserializeOwned, Visitor};

use crate::entry::{EntrySpec, JmesPathSpec};
use crate::identity::IdentitySpec;
use crate::policy::Policy;
use crate::schema::{Binding, Config, Monitoring, Selector};
use crate::source::{
    AwsRefSpec, FileRefSpec, SecretKeyRefSpec, SourceSpec, SsmRefSpec, TemplateSpec, VaultRefSpec,
};

/// Every field path of the config file the parser accepts, in the form the
/// reference uses: `policy.blockEnviron`, `secrets[].selector.uid`,
/// `providers.<name>.type`. A provider's own settings (`address`, `auth`…)
/// belong to its type and are listed by the providers crate.
pub fn known_fields() -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |prefix: &str, names: &[&str]| {
        out.extend(names.iter().map(|n| format!("{prefix}{n}")));
    };
    let source = "secrets[].secretRefs[].source.";
    add("", names_of::<Config>());
    add("policy.", names_of::<Policy>());
    // `type` plus the type's settings, kept as written (flattened).
    add("providers.<name>.", &["type"]);
    add("secrets[].", names_of::<Binding>());
    add("secrets[].selector.", names_of::<Selector>());
    // `onRotate` is `none`, `restart` or `{ signal: NAME }`: one variant
    // carries a value, and so is a field.
    add("secrets[].onRotate.", &["signal"]);
    // `identity` is `agent`, `pod` or a mapping of these.
    add("secrets[].identity.", names_of::<IdentitySpec>());
    add("secrets[].secretRefs[].", names_of::<EntrySpec>());
    add(
        "secrets[].secretRefs[].jmesPath[].",
        names_of::<JmesPathSpec>(),
    );
    add(source, names_of::<SourceSpec>());
    add(&format!("{source}fileRef."), names_of::<FileRefSpec>());
    add(
        &format!("{source}secretKeyRef."),
        names_of::<SecretKeyRefSpec>(),
    );
    add(&format!("{source}vaultRef."), names_of::<VaultRefSpec>());
    add(&format!("{source}awsRef."), names_of::<AwsRefSpec>());
    add(&format!("{source}ssmRef."), names_of::<SsmRefSpec>());
    // `refs.<name>` is a source like `source` itself: its fields are those.
    add(&format!("{source}template."), names_of::<TemplateSpec>());
    add("monitoring.", names_of::<Monitoring>());
    out
}

/// The field names serde's derive accepts for the struct `T`.
fn names_of<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut seen = None;
    // The probe always fails once it has seen the names: nothing is built.
    let _ = T::deserialize(Probe { seen: &mut seen });
    seen.unwrap_or_else(|| panic!("{} is not a struct", std::any::type_name::<T>()))
}

/// A deserializer that records the names a struct asks for, and stops.
struct Probe<'a> {
    seen: &'a mut Option<&'static [&'static str]>,
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("probe: not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.seen = Some(fields);
        Err(de::Error::custom("probe: done"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_read_from_serde() {
        assert_eq!(names_of::<Policy>().len(), 11);
        let all = known_fields();
        for f in [
            "version",
            "podIdentity",
            "policy.blockEnviron",
            "secrets[].selector.cgroupPath",
            "secrets[].secretRefs[].source.fileRef.jsonKey",
            "secrets[].onRotate.signal",
            "monitoring.logFormat",
        ] {
            assert!(all.iter().any(|k| k == f), "{f} missing from {all:?}");
        }
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len(), "duplicates in {all:?}");
    }
}
