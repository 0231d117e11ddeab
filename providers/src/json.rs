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
    let mut tree: Value = serde_json::from_slice(bytes).map_err(|e| Error::Format {
        reference: reference.to_string(),
        field: field.to_string(),
        // serde_json's messages can quote content ("invalid type: string
        // \"…\""); keep only the category and position.
        message: format!(
            "{what} is not valid JSON ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ),
    })?;
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

/// Moves a JSON value's content out as bytes.
pub(crate) fn take_value(v: &mut Value) -> Zeroizing<Vec<u8>> {
    match v {
        Value::String(s) => Zeroizing::new(std::mem::take(s).into_bytes()),
        other => {
            let text = Zeroizing::new(other.to_string());
            Zeroizing::new(text.as_bytes().to_vec())
        }
    }
}

/// A JSON value's text in a buffer sized before it is written, so that no
/// reallocation leaves a copy behind.
pub(crate) fn to_bytes(v: &impl serde::Serialize) -> Zeroizing<Vec<u8>> {
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
    let mut count = Count(0);
    // Writing JSON trees to memory cannot fail: their keys are strings.
    let _ = serde_json::to_writer(&mut count, v);
    let mut out = Zeroizing::new(Vec::with_capacity(count.0));
    let _ = serde_json::to_writer(&mut *out, v);
    out
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
}
