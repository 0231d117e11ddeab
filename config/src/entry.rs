//! Reading a `secretRefs` entry into a [`SecretRefSpec`]: the entry as
//! written (`name`, `keys`, `prefix`, `jmesPath`, `source`) is turned into
//! the one [`Naming`] it asks for. Combinations that could mean two things
//! are refused here, with the entry's field path; which names are valid for
//! the binding's delivery is checked later, in validation, which knows it.

use serde::Deserialize;
use serde::de::{self};
use serde_saphyr::Spanned;

use crate::expand::{JsonPath, NamedPath, Naming};
use crate::schema::SecretRefSpec;
use crate::secret_ref::SecretRef;
use crate::source_path;

/// An entry as written.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct EntrySpec {
    /// The name the whole value is delivered under.
    name: Option<String>,
    /// `all`: every top-level key of the value's JSON object, each under
    /// its own name.
    keys: Option<Keys>,
    /// With `keys: all`: put before every mapped key.
    prefix: Option<String>,
    /// Selected values of the value's JSON object, each under its name.
    jmes_path: Option<Vec<JmesPathSpec>>,
    source: Spanned<SecretRef>,
}

/// `keys:` takes one word; a list of keys is what `jmesPath` is for.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Keys {
    All,
}

/// One `jmesPath:` entry, in ASCP's shape.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct JmesPathSpec {
    path: String,
    name: String,
}

/// Why an entry does not make a [`SecretRefSpec`]; `field` is below the
/// entry (`jmesPath[1].path`), `None` for the entry itself.
struct EntryError {
    field: Option<String>,
    message: String,
}

fn refuse(field: impl Into<Option<String>>, message: impl Into<String>) -> EntryError {
    EntryError {
        field: field.into(),
        message: message.into(),
    }
}

impl<'de> Deserialize<'de> for SecretRefSpec {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        EntrySpec::deserialize(deserializer)?
            .into_spec()
            .map_err(|e| {
                let at = source_path::current_entry();
                match e.field {
                    Some(field) => de::Error::custom(format!("{at}.{field}: {}", e.message)),
                    None => de::Error::custom(format!("{at}: {}", e.message)),
                }
            })
    }
}

impl EntrySpec {
    fn into_spec(self) -> Result<SecretRefSpec, EntryError> {
        let naming = self.naming()?;
        if let SecretRef::SsmPath(_) = &self.source.value
            && !matches!(naming, Naming::AllKeys { .. })
        {
            return Err(refuse(
                "source.ssmRef.path".to_string(),
                "a path reads every parameter below it: deliver them with keys: all (and an \
                 optional prefix), or read one parameter with name",
            ));
        }
        Ok(SecretRefSpec {
            naming,
            source: self.source,
        })
    }

    fn naming(&self) -> Result<Naming, EntryError> {
        match (&self.name, &self.keys, &self.jmes_path) {
            (Some(_), Some(_), _) => Err(refuse(
                "name".to_string(),
                "name and keys: all: with keys: all the names are the object's keys; a common \
                 start for them goes in prefix",
            )),
            (Some(_), None, Some(_)) => Err(refuse(
                "name".to_string(),
                "name and jmesPath: each jmesPath entry names its own value",
            )),
            (None, Some(_), Some(_)) => Err(refuse(
                "jmesPath".to_string(),
                "keys: all and jmesPath: set one (every key, or the selected values)",
            )),
            (None, None, None) => Err(refuse(
                None,
                "set name (the whole value under one name), keys: all (every key of a JSON \
                 object) or jmesPath (selected values of a JSON object)",
            )),
            _ if self.prefix.is_some() && self.keys.is_none() => Err(refuse(
                "prefix".to_string(),
                "prefix goes with keys: all (a name or a jmesPath entry's name is used as written)",
            )),
            (Some(name), None, None) => Ok(Naming::One(name.clone())),
            (None, Some(Keys::All), None) => Ok(Naming::AllKeys {
                prefix: self.prefix.clone().unwrap_or_default(),
            }),
            (None, None, Some(paths)) => paths_naming(paths),
        }
    }
}

fn paths_naming(paths: &[JmesPathSpec]) -> Result<Naming, EntryError> {
    if paths.is_empty() {
        return Err(refuse(
            "jmesPath".to_string(),
            "lists no path; give at least one { path, name }",
        ));
    }
    paths
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let path = JsonPath::parse(&p.path).map_err(|why| {
                refuse(
                    format!("jmesPath[{k}].path"),
                    format!("{:?} is not a supported path: {why}", p.path),
                )
            })?;
            Ok(NamedPath {
                path,
                name: p.name.clone(),
            })
        })
        .collect::<Result<_, _>>()
        .map(Naming::Paths)
}
