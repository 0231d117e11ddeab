//! What a pod asks for, in its annotations.

use std::collections::BTreeMap;
use std::time::Duration;

use kernelseal_protocol::MAX_TOKENS;

/// The annotation that asks for injection (`"true"`).
pub const INJECT: &str = "kernelseal.io/inject";
/// Comma-separated names of the containers to wrap (default: every one).
pub const CONTAINERS: &str = "kernelseal.io/containers";
/// The wrapper's `--on-error`: `fail` (default) or `continue`.
pub const ON_ERROR: &str = "kernelseal.io/on-error";
/// The wrapper's `--timeout` (a duration: `15s`, `2m`).
pub const TIMEOUT: &str = "kernelseal.io/timeout";
/// Audiences of the projected service-account tokens the wrapper sends
/// for `identity: pod` (comma-separated; default `vault`; `none` for no
/// token).
pub const TOKEN_AUDIENCE: &str = "kernelseal.io/token-audience";
/// Set on a pod once injected: a pod carrying it is never patched again.
pub const STATUS: &str = "kernelseal.io/status";
pub const STATUS_INJECTED: &str = "injected";

/// The annotations this webhook reads; any other `kernelseal.io/` key is
/// refused as a likely typo.
const KNOWN: [&str; 6] = [
    INJECT,
    CONTAINERS,
    ON_ERROR,
    TIMEOUT,
    TOKEN_AUDIENCE,
    STATUS,
];

/// What injection a pod asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// `None`: every container of `spec.containers`.
    pub containers: Option<Vec<String>>,
    pub on_error: Option<String>,
    pub timeout: Option<Duration>,
    /// Token audiences, in order; empty for none.
    pub token_audiences: Vec<String>,
}

/// A bad annotation, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {annotation}: {message}")]
pub struct AnnotationError {
    pub annotation: String,
    pub message: String,
}

fn bad(annotation: &str, message: impl Into<String>) -> AnnotationError {
    AnnotationError {
        annotation: annotation.to_string(),
        message: message.into(),
    }
}

/// Whether the pod asks for injection: `Some(true)` for `"true"`,
/// `Some(false)` for `"false"` (an opt-out in a namespace that injects by
/// default), `None` when absent.
pub fn asks(annotations: &BTreeMap<String, String>) -> Result<Option<bool>, AnnotationError> {
    match annotations.get(INJECT).map(|v| v.trim()) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(bad(INJECT, format!("{other:?}: use \"true\" or \"false\""))),
    }
}

/// Whether the pod was injected already.
pub fn injected(annotations: &BTreeMap<String, String>) -> bool {
    annotations.get(STATUS).map(String::as_str) == Some(STATUS_INJECTED)
}

/// Reads the injection settings, refusing unknown `kernelseal.io/` keys and
/// bad values by name.
pub fn read(annotations: &BTreeMap<String, String>) -> Result<Injection, AnnotationError> {
    if let Some(k) = annotations
        .keys()
        .find(|k| k.starts_with("kernelseal.io/") && !KNOWN.contains(&k.as_str()))
    {
        return Err(bad(
            k,
            format!("unknown; the annotations are {}", KNOWN.join(", ")),
        ));
    }
    let containers = match annotations.get(CONTAINERS) {
        None => None,
        Some(v) => Some(list(CONTAINERS, v)?),
    };
    let on_error = match annotations.get(ON_ERROR).map(|v| v.trim()) {
        None => None,
        Some(v @ ("fail" | "continue")) => Some(v.to_string()),
        Some(other) => return Err(bad(ON_ERROR, format!("{other:?}: use fail or continue"))),
    };
    let timeout = match annotations.get(TIMEOUT) {
        None => None,
        Some(v) => Some(kernelseal_config::parse_duration(v.trim()).map_err(|_| {
            bad(
                TIMEOUT,
                format!("{v:?} is not a duration (e.g. 500ms, 15s, 2m)"),
            )
        })?),
    };
    let token_audiences = match annotations.get(TOKEN_AUDIENCE).map(|v| v.trim()) {
        None => vec!["vault".to_string()],
        Some("none") => Vec::new(),
        Some(v) => {
            let all = list(TOKEN_AUDIENCE, v)?;
            if all.len() > MAX_TOKENS {
                return Err(bad(
                    TOKEN_AUDIENCE,
                    format!(
                        "{} audiences; the wrapper sends at most {MAX_TOKENS}",
                        all.len()
                    ),
                ));
            }
            all
        }
    };
    Ok(Injection {
        containers,
        on_error,
        timeout,
        token_audiences,
    })
}

/// A comma-separated list of names, none empty, none twice.
fn list(annotation: &str, value: &str) -> Result<Vec<String>, AnnotationError> {
    let mut out: Vec<String> = Vec::new();
    for item in value.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(bad(annotation, format!("{value:?} has an empty item")));
        }
        if out.iter().any(|o| o == item) {
            return Err(bad(annotation, format!("{item:?} is listed twice")));
        }
        out.push(item.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_values() {
        let i = read(&map(&[(INJECT, "true")])).unwrap();
        assert_eq!(i.containers, None);
        assert_eq!(i.token_audiences, ["vault"]);
        let i = read(&map(&[
            (CONTAINERS, "web, worker"),
            (ON_ERROR, "continue"),
            (TIMEOUT, "30s"),
            (TOKEN_AUDIENCE, "vault,sts.amazonaws.com"),
        ]))
        .unwrap();
        assert_eq!(i.containers.unwrap(), ["web", "worker"]);
        assert_eq!(i.on_error.as_deref(), Some("continue"));
        assert_eq!(i.timeout, Some(Duration::from_secs(30)));
        assert_eq!(i.token_audiences, ["vault", "sts.amazonaws.com"]);
        assert!(
            read(&map(&[(TOKEN_AUDIENCE, "none")]))
                .unwrap()
                .token_audiences
                .is_empty()
        );
    }

    #[test]
    fn bad_values_name_the_annotation() {
        for (pairs, want) in [
            (
                vec![(INJECT, "yes")],
                "annotation kernelseal.io/inject: \"yes\"",
            ),
            (
                vec![(ON_ERROR, "ignore")],
                "annotation kernelseal.io/on-error",
            ),
            (
                vec![(TIMEOUT, "soon")],
                "annotation kernelseal.io/timeout: \"soon\"",
            ),
            (
                vec![(CONTAINERS, "a,,b")],
                "annotation kernelseal.io/containers",
            ),
            (vec![(CONTAINERS, "a,a")], "\"a\" is listed twice"),
            (
                vec![("kernelseal.io/contianers", "a")],
                "kernelseal.io/contianers: unknown",
            ),
            (vec![(TOKEN_AUDIENCE, "a,b,c,d")], "at most 3"),
        ] {
            let m = map(&pairs);
            let e = asks(&m).and_then(|_| read(&m)).unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
    }
}
