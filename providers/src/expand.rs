//! Expansion of a fetched value: a `secretRefs` entry with `keys: all` or
//! `jmesPath` takes the JSON object its ref delivered apart into one value
//! per name. Any ref whose value is a JSON object can be expanded (an AWS
//! secret without `jsonKey`, a JSON file, an SSM path's parameters); the
//! naming rules are the config's ([`kernelseal_config::delivered_name`]).
//!
//! The parsed tree is wiped before returning, whatever the outcome; errors
//! name the ref, the field and keys or paths, never a value.

use std::collections::BTreeMap;

use kernelseal_config::{Delivery, JsonPath, NamedPath, Naming, Step, delivered_name};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::error::Error;
use crate::json::{kind_of, parse, take_value, to_bytes, wipe};
use crate::value::SecretValue;

/// One name an entry is delivered under, with its value.
#[derive(Debug, Clone)]
pub struct Expanded {
    pub name: String,
    pub value: SecretValue,
    /// Where the value sits in the ref's JSON object, so that a rotation
    /// of the ref can take the new value out again; `None` for an entry
    /// delivered whole.
    pub part: Option<JsonPath>,
}

/// The names and values `naming` makes of `value`, for `delivery`. A
/// `name:` entry is the value itself; `keys: all` and `jmesPath` need a
/// JSON object, and two keys that map to one name are refused.
pub fn expand(
    naming: &Naming,
    delivery: Delivery,
    value: SecretValue,
) -> Result<Vec<Expanded>, Error> {
    let field = match naming {
        Naming::One(name) => {
            return Ok(vec![Expanded {
                name: name.clone(),
                value,
                part: None,
            }]);
        }
        Naming::AllKeys { .. } => "keys",
        Naming::Paths(_) => "jmesPath",
    };
    let reference = value.metadata().source.clone();
    let mut tree = parse(value.expose_bytes(), &reference, field, "the value")?;
    let out = match naming {
        Naming::AllKeys { prefix } => all_keys(&mut tree, prefix, delivery, &value, &reference),
        Naming::Paths(paths) => selected(&mut tree, paths, &value, &reference),
        Naming::One(_) => unreachable!("returned above"),
    };
    wipe(&mut tree);
    out
}

/// The bytes at `part` of the JSON object `whole` (a rotated value), as
/// [`expand`] would deliver them.
pub fn select_part(
    whole: &[u8],
    part: &JsonPath,
    reference: &str,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let mut tree = parse(whole, reference, "jmesPath", "the value")?;
    let out = match find(&mut tree, part) {
        Some(v) => Ok(take_value(v)),
        None => Err(not_found(reference, "jmesPath", part)),
    };
    wipe(&mut tree);
    out
}

fn all_keys(
    tree: &mut Value,
    prefix: &str,
    delivery: Delivery,
    whole: &SecretValue,
    reference: &str,
) -> Result<Vec<Expanded>, Error> {
    let format = |message: String| Error::Format {
        reference: reference.to_string(),
        field: "keys".to_string(),
        message,
    };
    let Value::Object(map) = tree else {
        return Err(format(format!(
            "keys: all needs a JSON object; the value is {}",
            kind_of(tree)
        )));
    };
    if map.is_empty() {
        return Err(format(
            "keys: all found no key: the value is an empty JSON object".into(),
        ));
    }
    // Every name first, so that a collision refuses the entry before any
    // value is copied.
    let mut key_of: BTreeMap<String, &str> = BTreeMap::new();
    let mut names = Vec::with_capacity(map.len());
    for key in map.keys() {
        let name = delivered_name(prefix, key, delivery)
            .map_err(|why| format(format!("key {key:?} cannot be delivered: {why}")))?;
        if let Some(first) = key_of.insert(name.clone(), key) {
            return Err(format(format!(
                "keys {first:?} and {key:?} both map to the name {name:?}; which one to \
                 deliver would be arbitrary (select them with jmesPath and a name each)"
            )));
        }
        names.push(name);
    }
    Ok(map
        .iter_mut()
        .zip(names)
        .map(|((key, v), name)| Expanded {
            name,
            value: SecretValue::new(take_value(v), whole.metadata().clone()),
            part: Some(JsonPath::field(key)),
        })
        .collect())
}

fn selected(
    tree: &mut Value,
    paths: &[NamedPath],
    whole: &SecretValue,
    reference: &str,
) -> Result<Vec<Expanded>, Error> {
    let mut out = Vec::with_capacity(paths.len());
    for (k, p) in paths.iter().enumerate() {
        let field = format!("jmesPath[{k}].path");
        // Two paths may select the same value: copy it, leave the tree whole.
        let v = find(tree, &p.path).ok_or_else(|| not_found(reference, &field, &p.path))?;
        let bytes = match v {
            Value::String(s) => Zeroizing::new(s.as_bytes().to_vec()),
            // Written out as JSON text; the tree stays as it is.
            other => to_bytes(&*other),
        };
        out.push(Expanded {
            name: p.name.clone(),
            value: SecretValue::new(bytes, whole.metadata().clone()),
            part: Some(p.path.clone()),
        });
    }
    Ok(out)
}

fn find<'v>(tree: &'v mut Value, path: &JsonPath) -> Option<&'v mut Value> {
    path.steps().iter().try_fold(tree, |at, step| match step {
        Step::Field(name) => at.as_object_mut()?.get_mut(name),
        Step::Index(i) => {
            let items = at.as_array_mut()?;
            let len = i64::try_from(items.len()).ok()?;
            let at = if *i < 0 { len + i } else { *i };
            items.get_mut(usize::try_from(at).ok()?)
        }
    })
}

fn not_found(reference: &str, field: &str, path: &JsonPath) -> Error {
    Error::KeyNotFound {
        reference: reference.to_string(),
        field: field.to_string(),
        key: path.to_string(),
        what: "the value's JSON".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Metadata;

    const SECRET: &str = "s3cr3t-never-shown";

    fn value(json: &str) -> SecretValue {
        SecretValue::new(
            Zeroizing::new(json.as_bytes().to_vec()),
            Metadata::new("fileRef /run/app.json", "file"),
        )
    }

    fn all(prefix: &str) -> Naming {
        Naming::AllKeys {
            prefix: prefix.into(),
        }
    }

    fn pairs(out: &[Expanded]) -> Vec<(String, String)> {
        out.iter()
            .map(|e| (e.name.clone(), e.value.expose_str().unwrap().to_string()))
            .collect()
    }

    #[test]
    fn every_key_becomes_a_mapped_name() {
        let json = format!(
            r#"{{"username":"app","db.port":5432,"tls":{{"on":true}},"2fa":null,"api-key":"{SECRET}"}}"#
        );
        let out = expand(&all("APP_"), Delivery::Env, value(&json)).unwrap();
        assert_eq!(
            pairs(&out),
            // In the keys' order.
            [
                ("APP_2fa".to_string(), "null".to_string()),
                ("APP_api_key".into(), SECRET.into()),
                ("APP_db_port".into(), "5432".into()),
                ("APP_tls".into(), r#"{"on":true}"#.into()),
                ("APP_username".into(), "app".into()),
            ]
        );
        assert_eq!(out[2].part, Some(JsonPath::field("db.port")));
        assert_eq!(out[0].value.metadata().source, "fileRef /run/app.json");
        let files = expand(&all(""), Delivery::File, value(&json)).unwrap();
        let names: Vec<&str> = files.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["2fa", "api-key", "db.port", "tls", "username"]);
        assert!(!format!("{out:?}").contains(SECRET));
    }

    #[test]
    fn keys_that_map_to_one_name_are_refused_naming_both() {
        let json = format!(r#"{{"db.user":"{SECRET}","db_user":"{SECRET}"}}"#);
        let e = expand(&all(""), Delivery::Env, value(&json)).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(r#"keys "db.user" and "db_user" both map to the name "db_user""#),
            "{text}"
        );
        assert!(text.starts_with("fileRef /run/app.json: keys:"), "{text}");
        assert!(!text.contains(SECRET), "{text}");
        // As files the two names differ.
        assert_eq!(
            expand(&all(""), Delivery::File, value(&json))
                .unwrap()
                .len(),
            2
        );
        let e = expand(&all(""), Delivery::File, value(r#"{"..":"x"}"#)).unwrap_err();
        assert!(e.to_string().contains(r#"key "..""#), "{e}");
    }

    #[test]
    fn a_value_that_is_not_an_object_is_named_not_shown() {
        for (json, says) in [
            (format!(r#"["{SECRET}"]"#), "an array"),
            (format!(r#""{SECRET}""#), "a string"),
            ("{}".to_string(), "empty JSON object"),
            (format!("{SECRET} not json"), "not valid JSON"),
        ] {
            let e = expand(&all(""), Delivery::Env, value(&json)).unwrap_err();
            let text = e.to_string();
            assert!(text.contains(says), "{json}: {text}");
            assert!(text.contains("fileRef /run/app.json"), "{text}");
            assert!(!text.contains(SECRET), "{text}");
        }
    }

    #[test]
    fn jmes_paths_select_nested_values() {
        let json = format!(
            r#"{{"db":{{"user":"app","password":"{SECRET}","ports":[5432,6432]}},"db-host":"pg"}}"#
        );
        let path = |p: &str, name: &str| NamedPath {
            path: JsonPath::parse(p).unwrap(),
            name: name.into(),
        };
        let naming = Naming::Paths(vec![
            path("db.user", "DB_USER"),
            path("db.password", "DB_PASSWORD"),
            path("db.password", "PGPASSWORD"),
            path("db.ports[-1]", "DB_PORT"),
            path(r#""db-host""#, "DB_HOST"),
            path("db", "DB_JSON"),
        ]);
        let out = expand(&naming, Delivery::Env, value(&json)).unwrap();
        assert_eq!(
            pairs(&out),
            [
                ("DB_USER".to_string(), "app".to_string()),
                ("DB_PASSWORD".into(), SECRET.into()),
                ("PGPASSWORD".into(), SECRET.into()),
                ("DB_PORT".into(), "6432".into()),
                ("DB_HOST".into(), "pg".into()),
                (
                    "DB_JSON".into(),
                    format!(r#"{{"password":"{SECRET}","ports":[5432,6432],"user":"app"}}"#)
                ),
            ]
        );
        let missing = Naming::Paths(vec![path("db.user", "A"), path("db.ports[2]", "B")]);
        let e = expand(&missing, Delivery::Env, value(&json)).unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"jmesPath[1].path: key "db.ports[2]" not found"#),
            "{e}"
        );
        assert!(!e.to_string().contains(SECRET));
    }

    #[test]
    fn a_rotated_value_gives_each_part_again() {
        let whole = format!(r#"{{"db":{{"password":"{SECRET}"}},"n":[1,2]}}"#);
        let part = JsonPath::parse("db.password").unwrap();
        assert_eq!(
            &select_part(whole.as_bytes(), &part, "r").unwrap()[..],
            SECRET.as_bytes()
        );
        let part = JsonPath::parse("n").unwrap();
        assert_eq!(
            &select_part(whole.as_bytes(), &part, "r").unwrap()[..],
            b"[1,2]"
        );
        let gone = JsonPath::field("old");
        let e = select_part(whole.as_bytes(), &gone, "r").unwrap_err();
        assert!(!e.to_string().contains(SECRET), "{e}");
    }

    #[test]
    fn a_name_entry_is_the_value_itself() {
        let out = expand(&Naming::One("A".into()), Delivery::Env, value("not json")).unwrap();
        assert_eq!(pairs(&out), [("A".to_string(), "not json".to_string())]);
        assert_eq!(out[0].part, None);
    }
}
