//! The registry credentials a pull secret holds, read as the kubelet reads
//! them (`pkg/credentialprovider`: `MakeDockerKeyring`, `DockerConfigEntry`):
//!
//! - `kubernetes.io/dockerconfigjson`: `.dockerconfigjson` is
//!   `{"auths": {KEY: ENTRY, …}}`;
//! - `kubernetes.io/dockercfg`: `.dockercfg` is `{KEY: ENTRY, …}`;
//!
//! an ENTRY being `{"auth": base64("user:password")}` or
//! `{"username": …, "password": …}` (`auth`, when present, wins; padded
//! or unpadded base64). Any other type, or the type without its key, holds
//! nothing for the kubelet: [`Unusable`] says which, and the secret is
//! skipped. `identitytoken` and `registrytoken` are not read (the kubelet's
//! `DockerConfigEntry` has no such fields either).
//!
//! Every user name and password is held in memory wiped on drop, and is
//! never shown: neither [`Credential`]'s `Debug` nor any error carries one.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine;
use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

pub const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
pub const DOCKERCFG_TYPE: &str = "kubernetes.io/dockercfg";
pub const DOCKERCFG_KEY: &str = ".dockercfg";

/// A registry user name and password, wiped from memory when dropped.
pub struct Credential {
    username: Zeroizing<String>,
    password: Zeroizing<String>,
}

impl Credential {
    pub fn new(username: Zeroizing<String>, password: Zeroizing<String>) -> Credential {
        Credential { username, password }
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn password(&self) -> &str {
        &self.password
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Some registries take a token as the user name: neither is shown.
        f.write_str("Credential(<redacted>)")
    }
}

/// One credential of a secret and the key it is filed under, as written
/// (`registry.example:5000`, `https://index.docker.io/v1/`, a glob, a
/// path).
#[derive(Debug)]
pub struct Entry {
    pub key: String,
    pub credential: Arc<Credential>,
}

/// Why a secret holds no credential for the kubelet (it is skipped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("its type is {0:?}, not {DOCKER_CONFIG_JSON_TYPE} or {DOCKERCFG_TYPE}")]
    OtherType(String),
    #[error("it is of type {secret_type} but has no (or an empty) {key}")]
    NoData {
        secret_type: &'static str,
        key: &'static str,
    },
}

/// A docker config that cannot be read: the pull fails, as the kubelet's
/// does. Says where, never what (the text holds passwords).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("its {key} is not a Docker config: {why}")]
pub struct Malformed {
    pub key: &'static str,
    pub why: String,
}

/// The credentials of a secret of `secret_type` with `data` (its values
/// decoded), in no particular order (the kubelet reads a map too).
pub fn parse(
    secret_type: Option<&str>,
    data: &BTreeMap<String, Zeroizing<Vec<u8>>>,
) -> Result<Result<Vec<Entry>, Unusable>, Malformed> {
    let (format, secret_type, key) = match secret_type.unwrap_or("") {
        DOCKER_CONFIG_JSON_TYPE => (
            Format::ConfigJson,
            DOCKER_CONFIG_JSON_TYPE,
            DOCKER_CONFIG_JSON_KEY,
        ),
        DOCKERCFG_TYPE => (Format::Dockercfg, DOCKERCFG_TYPE, DOCKERCFG_KEY),
        other => return Ok(Err(Unusable::OtherType(other.to_string()))),
    };
    let Some(bytes) = data.get(key).filter(|b| !b.is_empty()) else {
        return Ok(Err(Unusable::NoData { secret_type, key }));
    };
    entries(format, bytes)
        .map(Ok)
        .map_err(|why| Malformed { key, why })
}

#[derive(Clone, Copy)]
enum Format {
    /// `{"auths": {…}}`
    ConfigJson,
    /// `{…}`
    Dockercfg,
}

#[derive(Deserialize)]
struct ConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, RawEntry>,
}

/// An entry as written; wiped when dropped (serde reads into plain
/// `String`s).
#[derive(Deserialize, Default)]
struct RawEntry {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    auth: Option<String>,
}

impl Drop for RawEntry {
    fn drop(&mut self) {
        self.username.zeroize();
        self.password.zeroize();
        self.auth.zeroize();
    }
}

fn entries(format: Format, bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let raw = match format {
        Format::ConfigJson => serde_json::from_slice::<ConfigJson>(bytes).map(|c| c.auths),
        Format::Dockercfg => serde_json::from_slice::<BTreeMap<String, RawEntry>>(bytes),
    }
    .map_err(|e| crate::review::describe(&e))?;
    let mut out = Vec::with_capacity(raw.len());
    for (key, mut entry) in raw {
        let credential = credential_of(&mut entry).map_err(|why| format!("{key:?}: {why}"))?;
        if let Some(credential) = credential {
            out.push(Entry {
                key,
                credential: Arc::new(credential),
            });
        }
    }
    Ok(out)
}

/// The entry's credential; `None` for one with neither `auth` nor a user
/// name or password (it would authenticate as nobody).
fn credential_of(entry: &mut RawEntry) -> Result<Option<Credential>, String> {
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        return decode_auth(auth).map(Some);
    }
    let username = Zeroizing::new(entry.username.take().unwrap_or_default());
    let password = Zeroizing::new(entry.password.take().unwrap_or_default());
    if username.is_empty() && password.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credential::new(username, password)))
}

/// `auth`: base64 of `user:password`, padded or not (the kubelet picks
/// the decoder by the trailing `=`).
fn decode_auth(auth: &str) -> Result<Credential, String> {
    let engine = if auth.trim().ends_with('=') {
        &base64::engine::general_purpose::STANDARD
    } else {
        &base64::engine::general_purpose::STANDARD_NO_PAD
    };
    // The decoder's message names the offending byte: not repeated.
    let decoded = Zeroizing::new(
        engine
            .decode(auth.trim())
            .map_err(|_| "its auth is not base64".to_string())?,
    );
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or("its auth is not base64 of user:password (no colon)")?;
    let text = |bytes: &[u8]| {
        std::str::from_utf8(bytes)
            .map(|s| Zeroizing::new(s.to_string()))
            .map_err(|_| "its auth is not UTF-8 text".to_string())
    };
    Ok(Credential::new(
        text(&decoded[..colon])?,
        text(&decoded[colon + 1..])?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(key: &str, value: &str) -> BTreeMap<String, Zeroizing<Vec<u8>>> {
        BTreeMap::from([(key.to_string(), Zeroizing::new(value.as_bytes().to_vec()))])
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn pairs(entries: &[Entry]) -> Vec<(String, String, String)> {
        entries
            .iter()
            .map(|e| {
                (
                    e.key.clone(),
                    e.credential.username().to_string(),
                    e.credential.password().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn dockerconfigjson_reads_auth_or_username_and_password_and_auth_wins() {
        let json = format!(
            r#"{{"auths": {{
                "registry.example:5000": {{"auth": "{}"}},
                "https://index.docker.io/v1/": {{"username": "bob", "password": "pw:with:colons", "email": "b@x"}},
                "both.example": {{"username": "ignored", "password": "ignored", "auth": "{}"}},
                "unpadded.example": {{"auth": "{}"}},
                "empty.example": {{}}
            }}}}"#,
            b64("alice:s3cret"),
            b64("carol:winner"),
            b64("dave:abcd").trim_end_matches('='),
        );
        let got = parse(
            Some(DOCKER_CONFIG_JSON_TYPE),
            &data(DOCKER_CONFIG_JSON_KEY, &json),
        )
        .unwrap()
        .unwrap();
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            pairs(&got),
            vec![
                s("both.example", "carol", "winner"),
                s("https://index.docker.io/v1/", "bob", "pw:with:colons"),
                s("registry.example:5000", "alice", "s3cret"),
                s("unpadded.example", "dave", "abcd"),
            ]
        );
    }

    #[test]
    fn dockercfg_is_the_map_without_auths() {
        let cfg = format!(r#"{{"quay.io": {{"auth": "{}"}}}}"#, b64("q:pw"));
        let got = parse(Some(DOCKERCFG_TYPE), &data(DOCKERCFG_KEY, &cfg))
            .unwrap()
            .unwrap();
        assert_eq!(
            pairs(&got),
            vec![("quay.io".into(), "q".into(), "pw".into())]
        );
        // The other type's key is not read.
        assert_eq!(
            parse(Some(DOCKERCFG_TYPE), &data(DOCKER_CONFIG_JSON_KEY, &cfg))
                .unwrap()
                .err(),
            Some(Unusable::NoData {
                secret_type: DOCKERCFG_TYPE,
                key: DOCKERCFG_KEY
            })
        );
    }

    #[test]
    fn other_types_are_unusable_and_bad_content_is_refused_without_quoting_it() {
        assert_eq!(
            parse(Some("Opaque"), &data(DOCKER_CONFIG_JSON_KEY, "{}"))
                .unwrap()
                .err(),
            Some(Unusable::OtherType("Opaque".into()))
        );
        assert!(matches!(
            parse(None, &data(DOCKER_CONFIG_JSON_KEY, "{}")).unwrap(),
            Err(Unusable::OtherType(_))
        ));
        assert!(matches!(
            parse(
                Some(DOCKER_CONFIG_JSON_TYPE),
                &data(DOCKER_CONFIG_JSON_KEY, "")
            )
            .unwrap(),
            Err(Unusable::NoData { .. })
        ));
        for (bad, want) in [
            (r#"{"auths": "hunter2-secret"}"#.to_string(), "Data error"),
            (
                r#"{"auths": {"r": {"auth": "!!hunter2-secret"}}}"#.into(),
                "not base64",
            ),
            (
                format!(
                    r#"{{"auths": {{"r": {{"auth": "{}"}}}}}}"#,
                    b64("hunter2-secret")
                ),
                "no colon",
            ),
        ] {
            let e = parse(
                Some(DOCKER_CONFIG_JSON_TYPE),
                &data(DOCKER_CONFIG_JSON_KEY, &bad),
            )
            .err()
            .unwrap_or_else(|| panic!("{bad} was read"));
            let text = format!("{e} {e:?}");
            assert!(text.contains(want), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
    }

    #[test]
    fn a_credential_never_shows_itself() {
        let c = Credential::new(
            Zeroizing::new("user-x".into()),
            Zeroizing::new("hunter2".into()),
        );
        let e = Entry {
            key: "r".into(),
            credential: Arc::new(c),
        };
        let shown = format!("{e:?} {:#?}", e.credential);
        assert!(
            !shown.contains("hunter2") && !shown.contains("user-x"),
            "{shown}"
        );
    }
}
