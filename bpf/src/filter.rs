//! The exec filter: which exec'd files the kernel marks at exec time.

use std::collections::BTreeMap;

use aya::maps::{HashMap, Map, MapData};

use crate::abi::{BINARY_LEN, PATH_LEN, RawBinaryKey, RawBinding, RawPathKey};
use crate::error::BpfError;

/// Binding ids by binary basename and by exact path. Ids start at 1 (0 means
/// "no binding" in the kernel).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecFilter {
    pub binaries: BTreeMap<String, u32>,
    pub paths: BTreeMap<String, u32>,
}

impl ExecFilter {
    /// Adds a binding's selectors; refuses names the kernel keys cannot hold.
    pub fn add(
        &mut self,
        binding_id: u32,
        binary: Option<&str>,
        path: Option<&str>,
    ) -> Result<(), BpfError> {
        if let Some(b) = binary {
            if b.is_empty() || b.len() >= BINARY_LEN || b.contains('/') || b.contains('\0') {
                return Err(BpfError::FilterEntry {
                    what: "binary",
                    value: b.to_string(),
                    reason: format!("must be a file name of 1 to {} bytes", BINARY_LEN - 1),
                });
            }
            self.binaries.insert(b.to_string(), binding_id);
        }
        if let Some(p) = path {
            if !p.starts_with('/') || p.len() >= PATH_LEN || p.contains('\0') {
                return Err(BpfError::FilterEntry {
                    what: "path",
                    value: p.to_string(),
                    reason: format!("must be an absolute path of at most {} bytes", PATH_LEN - 1),
                });
            }
            self.paths.insert(p.to_string(), binding_id);
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.binaries.is_empty() && self.paths.is_empty()
    }
}

fn binary_key(name: &str) -> RawBinaryKey {
    let mut key = RawBinaryKey {
        name: [0; BINARY_LEN],
    };
    key.name[..name.len()].copy_from_slice(name.as_bytes());
    key
}

fn path_key(path: &str) -> RawPathKey {
    let mut key = RawPathKey {
        path: [0; PATH_LEN],
    };
    key.path[..path.len()].copy_from_slice(path.as_bytes());
    key
}

type BinaryMap<'a> = HashMap<&'a mut MapData, RawBinaryKey, RawBinding>;
type PathMap<'a> = HashMap<&'a mut MapData, RawPathKey, RawBinding>;

fn map_err(op: &'static str, map: &'static str) -> impl Fn(aya::maps::MapError) -> BpfError {
    move |e| BpfError::Map {
        op,
        map,
        source: std::io::Error::other(crate::gate::error_chain(&e)),
    }
}

/// Makes the kernel maps hold exactly `new`. New entries are written before
/// stale ones are removed, so a binding in both the old and the new filter
/// is never missing. The old entries are read from the kernel: an adopted
/// gate does not know what the previous agent wrote.
pub(crate) fn apply(binaries: &mut Map, paths: &mut Map, new: &ExecFilter) -> Result<(), BpfError> {
    let mut bin: BinaryMap<'_> =
        HashMap::try_from(binaries).map_err(map_err("open", "ks_exec_binaries"))?;
    let stale: Vec<RawBinaryKey> = bin
        .keys()
        .filter_map(Result::ok)
        .filter(|k| canonical_text(&k.name).is_none_or(|t| !new.binaries.contains_key(&t)))
        .collect();
    for (name, id) in &new.binaries {
        bin.insert(binary_key(name), RawBinding { binding_id: *id }, 0)
            .map_err(map_err("update", "ks_exec_binaries"))?;
    }
    for k in stale {
        bin.remove(&k)
            .map_err(map_err("delete", "ks_exec_binaries"))?;
    }
    let mut path: PathMap<'_> =
        HashMap::try_from(paths).map_err(map_err("open", "ks_exec_paths"))?;
    let stale: Vec<RawPathKey> = path
        .keys()
        .filter_map(Result::ok)
        .filter(|k| canonical_text(&k.path).is_none_or(|t| !new.paths.contains_key(&t)))
        .collect();
    for (p, id) in &new.paths {
        path.insert(path_key(p), RawBinding { binding_id: *id }, 0)
            .map_err(map_err("update", "ks_exec_paths"))?;
    }
    for k in stale {
        path.remove(&k)
            .map_err(map_err("delete", "ks_exec_paths"))?;
    }
    Ok(())
}

/// The name a key holds, if it is one the agent could have written: UTF-8
/// up to the first NUL and zeros after it. Anything else matches no exec
/// (the kernel looks up zero-padded names) and is always stale.
fn canonical_text(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    if bytes[end..].iter().any(|b| *b != 0) {
        return None;
    }
    std::str::from_utf8(&bytes[..end]).ok().map(str::to_string)
}

/// What the exec filter maps hold now, and how many of their keys are not
/// names the agent could have written.
pub(crate) fn read(binaries: &Map, paths: &Map) -> Result<(ExecFilter, usize), BpfError> {
    let bin: HashMap<&MapData, RawBinaryKey, RawBinding> =
        HashMap::try_from(binaries).map_err(map_err("open", "ks_exec_binaries"))?;
    let path: HashMap<&MapData, RawPathKey, RawBinding> =
        HashMap::try_from(paths).map_err(map_err("open", "ks_exec_paths"))?;
    let mut found = ExecFilter::default();
    let mut malformed = 0;
    for entry in bin.iter() {
        let (k, v) = entry.map_err(map_err("lookup", "ks_exec_binaries"))?;
        match canonical_text(&k.name) {
            Some(name) => {
                found.binaries.insert(name, v.binding_id);
            }
            None => malformed += 1,
        }
    }
    for entry in path.iter() {
        let (k, v) = entry.map_err(map_err("lookup", "ks_exec_paths"))?;
        match canonical_text(&k.path) {
            Some(p) => {
                found.paths.insert(p, v.binding_id);
            }
            None => malformed += 1,
        }
    }
    Ok((found, malformed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_the_kernel_key_cannot_hold() {
        let mut f = ExecFilter::default();
        f.add(1, Some("sleep"), Some("/usr/bin/sleep")).unwrap();
        assert_eq!(f.binaries["sleep"], 1);
        assert_eq!(f.paths["/usr/bin/sleep"], 1);
        assert!(f.add(2, Some(&"x".repeat(64)), None).is_err());
        assert!(f.add(2, Some("a/b"), None).is_err());
        assert!(f.add(2, None, Some("relative")).is_err());
        let e = f
            .add(2, None, Some(&format!("/{}", "p".repeat(300))))
            .unwrap_err();
        assert!(e.to_string().contains("path"), "{e}");
    }

    #[test]
    fn keys_are_zero_padded() {
        let k = binary_key("sleep");
        assert_eq!(&k.name[..5], b"sleep");
        assert!(k.name[5..].iter().all(|b| *b == 0));
        assert_eq!(canonical_text(&k.name).as_deref(), Some("sleep"));
    }

    #[test]
    fn keys_the_agent_cannot_have_written_have_no_name() {
        let mut k = binary_key("sleep");
        k.name[7] = b'x';
        assert_eq!(canonical_text(&k.name), None, "bytes after the NUL");
        let mut k = binary_key("sleep");
        k.name[0] = 0xff;
        assert_eq!(canonical_text(&k.name), None, "not UTF-8");
        let full = [b'a'; BINARY_LEN];
        assert_eq!(canonical_text(&full).map(|t| t.len()), Some(BINARY_LEN));
    }
}
