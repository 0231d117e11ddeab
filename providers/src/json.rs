//! Selecting one key out of a JSON secret (file `jsonKey`, AWS `jsonKey`,
//! Vault KV data), and wiping the parsed tree afterwards.

use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

use crate::error::Error;

/// Parses `bytes` as a JSON object and returns the bytes of `key`: a string
/// as is, any other JSON value as its JSON text.
pub(crate) fn select_key(
    bytes: &[u8],
    key: &str,
    reference: &str,
    field: &str,
    what: &str,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let mut tree = parse(bytes, reference, field, what)?;
    let out = match &mut tree {
        Value::Object(map) => match map.get_mut(key) {
            Some(v) => Ok(take_value(v)),
            None => Err(Error::KeyNotFound {
                reference: reference.to_string(),
                field: field.to_string(),
                key: key.to_string(),
                what: what.to_string(),
            }),
        },
        _ => Err(Error::Format {
            reference: reference.to_string(),
            field: field.to_string(),
            message: format!("{what} is JSON but not an object, so it has no keys"),
        }),
    };
    wipe(&mut tree);
    out
}

/// Parses `bytes` as JSON; the error keeps serde_json's category and
/// position only, as its messages can quote content ("invalid type:
/// string \"…\""). The caller wipes the tree ([`wipe`]).
pub(crate) fn parse(
    bytes: &[u8],
    reference: &str,
    field: &str,
    what: &str,
) -> Result<Value, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Format {
        reference: reference.to_string(),
        field: field.to_string(),
        message: format!(
            "{what} is not valid JSON ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ),
    })
}

/// The JSON text of an object of strings, `{"key":"value",…}`, written
/// into one zeroizing buffer sized beforehand: a buffer that grew would
/// leave copies of what it held behind, unwiped.
pub(crate) fn object_of_strings(entries: &[(&str, &str)]) -> Zeroizing<Vec<u8>> {
    // An escaped character takes at most six bytes (`\u001f`).
    let bound = 2 + entries
        .iter()
        .map(|(k, v)| 6 * (k.len() + v.len()) + 6)
        .sum::<usize>();
    let mut out = Zeroizing::new(Vec::with_capacity(bound));
    out.push(b'{');
    for (i, (key, value)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, key);
        out.push(b':');
        let _ = serde_json::to_writer(&mut *out, value);
    }
    out.push(b'}');
    debug_assert!(out.len() <= bound);
    out
}

/// What a JSON value is, for messages that must not show it.
pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Moves a JSON value's content out as bytes.
pub(crate) fn take_value(v: &mut Value) -> Zeroizing<Vec<u8>> {
    match v {
        Value::String(s) => Zeroizing::new(std::mem::take(s).into_bytes()),
        other => to_bytes(other),
    }
}

/// A JSON value's text in a buffer sized before it is written: one that
/// grew would leave copies of what it held behind, unwiped.
pub(crate) fn to_bytes(v: &impl serde::Serialize) -> Zeroizing<Vec<u8>> {
    let mut count = Count(0);
    // Writing JSON trees to memory cannot fail: their keys are strings.
    let _ = serde_json::to_writer(&mut count, v);
    let mut out = Zeroizing::new(Vec::with_capacity(count.0));
    let _ = serde_json::to_writer(&mut *out, v);
    out
}

/// A writer that only counts what it is given.
struct Count(usize);

impl std::io::Write for Count {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Zeroizes every string in a parsed tree (keys are names, values may be secrets).
pub(crate) fn wipe(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(wipe),
        Value::Object(m) => m.values_mut().for_each(wipe),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select() {
        let v = select_key(br#"{"a":"x","n":{"b":1}}"#, "a", "r", "f", "w").unwrap();
        assert_eq!(&v[..], b"x");
        let v = select_key(br#"{"a":"x","n":{"b":1}}"#, "n", "r", "f", "w").unwrap();
        assert_eq!(&v[..], br#"{"b":1}"#);
        let e = select_key(br#"{"a":"topsecret"#, "a", "r", "f", "w").unwrap_err();
        assert!(!e.to_string().contains("topsecret"), "{e}");
        let e = select_key(br#"["topsecret"]"#, "a", "r", "f", "w").unwrap_err();
        assert!(!e.to_string().contains("topsecret"), "{e}");
        let e = select_key(br#"{"b":"topsecret"}"#, "a", "r", "f", "w").unwrap_err();
        assert!(matches!(e, Error::KeyNotFound { .. }));
        assert!(!e.to_string().contains("topsecret"), "{e}");
    }

    #[test]
    fn an_object_of_strings_is_json_that_reads_back() {
        let text = object_of_strings(&[("db/user", "app"), ("pw", "q\"u\\o\u{1}te\u{e9}")]);
        let back: serde_json::Map<String, Value> = serde_json::from_slice(&text).unwrap();
        assert_eq!(back["db/user"], "app");
        assert_eq!(back["pw"], "q\"u\\o\u{1}te\u{e9}");
        assert_eq!(&object_of_strings(&[])[..], b"{}");
        // The worst case for escaping stays within the buffer it got.
        let worst = "\u{1}".repeat(100);
        assert_eq!(
            object_of_strings(&[(&worst, &worst)]).len(),
            2 + 600 * 2 + 5
        );
    }
}
