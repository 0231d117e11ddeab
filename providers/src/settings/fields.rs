//! Reading one provider's settings: a JSON object walked key by key, with
//! the full field path in every error and unknown keys refused.

use std::collections::BTreeMap;
use std::time::Duration;

use kernelseal_config::parse_duration;
use serde_json::Value;

use crate::error::Error;

/// A JSON object being read, with its field path, refusing unknown keys.
pub(super) struct Obj<'a> {
    provider: &'a str,
    path: String,
    pub(super) map: BTreeMap<&'a str, &'a Value>,
}

impl<'a> Obj<'a> {
    pub(super) fn root(provider: &'a str, settings: &'a BTreeMap<String, Value>) -> Self {
        Obj {
            provider,
            path: String::new(),
            map: settings.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        }
    }

    pub(super) fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// An error about this object as a whole (not one of its keys).
    pub(super) fn err_here(&self, message: impl Into<String>) -> Error {
        Error::Settings {
            provider: self.provider.to_string(),
            field: self.path.clone(),
            message: message.into(),
        }
    }

    pub(super) fn err(&self, key: &str, message: impl Into<String>) -> Error {
        Error::Settings {
            provider: self.provider.to_string(),
            field: self.field(key),
            message: message.into(),
        }
    }

    pub(super) fn string(&mut self, key: &str) -> Result<Option<String>, Error> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(self.err(key, "must not be empty"))
            }
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(self.err(key, "must be a string")),
        }
    }

    pub(super) fn required(&mut self, key: &str) -> Result<String, Error> {
        self.string(key)?.ok_or_else(|| self.err(key, "missing"))
    }

    pub(super) fn boolean(&mut self, key: &str) -> Result<Option<bool>, Error> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.err(key, "must be true or false")),
        }
    }

    pub(super) fn duration(&mut self, key: &str) -> Result<Option<Duration>, Error> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(|s| Some(Duration::from_secs(s)))
                .ok_or_else(|| self.err(key, "must be a whole number of seconds or like 30s")),
            // The reason without the text: a YAML alias can put a secret
            // literal here.
            Some(Value::String(s)) => parse_duration(s)
                .map(Some)
                .map_err(|e| self.err(key, e.reason())),
            Some(_) => Err(self.err(key, "must be a duration like 30s, 5m")),
        }
    }

    pub(super) fn object(&mut self, key: &str) -> Result<Option<Obj<'a>>, Error> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Obj {
                provider: self.provider,
                path: self.field(key),
                map: m.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            })),
            Some(_) => Err(self.err(key, "must be a mapping")),
        }
    }

    /// Refuses any key not in `keys`, before anything is read.
    pub(super) fn only(&self, keys: &[&str]) -> Result<(), Error> {
        match self.map.keys().find(|k| !keys.contains(k)) {
            None => Ok(()),
            Some(k) => Err(self.err(k, "unknown setting")),
        }
    }

    /// Refuses keys nobody read.
    pub(super) fn finish(self) -> Result<(), Error> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(self.err(k, "unknown setting")),
        }
    }
}

pub(super) fn url(o: &Obj<'_>, key: &str, text: String) -> Result<String, Error> {
    if !(text.starts_with("http://") || text.starts_with("https://")) {
        return Err(o.err(key, format!("{text:?} is not an http:// or https:// URL")));
    }
    Ok(text.trim_end_matches('/').to_string())
}

pub(super) fn segment(o: &Obj<'_>, key: &str, text: String) -> Result<String, Error> {
    let t = text.trim_matches('/').to_string();
    if t.is_empty() || t.split('/').any(|s| s == ".." || s == "." || s.is_empty()) {
        return Err(o.err(key, format!("{text:?} is not a mount path")));
    }
    Ok(t)
}
