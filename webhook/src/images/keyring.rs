//! Which of a pod's registry credentials an image is pulled with: the
//! kubelet's rules (`pkg/credentialprovider/keyring.go`,
//! `BasicDockerKeyring`), as documented under "Interpretation of
//! config.json" in <https://kubernetes.io/docs/concepts/containers/images/>:
//!
//! - a key is read as a URL without its scheme (`https://`, `http://`);
//!   a path of `/v1/` or `/v2/` (`https://index.docker.io/v1/`) is the
//!   host alone, a longer one (`/v2/team`) keeps the rest (`/team`);
//! - a key matches an image (`registry/repository`) when both have the
//!   same number of host labels and each label matches the key's glob
//!   (`*`, `?`, `[a-z]`, `\` as in Go's `filepath.Match`: `*.example.com`
//!   matches `a.example.com`, not `example.com` nor `a.b.example.com`),
//!   the ports are equal (no port only matches no port), and the key's path
//!   is a prefix of the image's (`reg.example/team` matches
//!   `reg.example/team/app`);
//! - every matching key's credentials are tried, longer keys first (the
//!   kubelet's reverse-sorted index), those of one key in the pod's order;
//! - only when no key matches, an image of Docker Hub (`docker.io/…`) is
//!   pulled with the credentials filed under `index.docker.io` (what
//!   `https://index.docker.io/v1/` becomes).
//!
//! What the kubelet also uses and the webhook cannot: the nodes' own
//! `config.json` and their credential provider plugins (ECR, ACR, GAR…).

use std::collections::HashMap;
use std::sync::Arc;

use super::docker_config::Credential;
use super::pull_secrets::PullSecret;

/// Where Docker Hub's credentials are filed.
const DEFAULT_REGISTRY_KEY: &str = "index.docker.io";

/// A credential to try, and the secret it comes from (named in errors).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub secret: String,
    pub credential: Arc<Credential>,
}

/// The credentials of `secrets` (in the pod's order) for `image`, a
/// reference's `registry/repository` (`docker.io/library/nginx`,
/// `127.0.0.1:5000/app`), in the order to try them.
pub fn candidates(secrets: &[Arc<PullSecret>], image: &str) -> Vec<Candidate> {
    let mut by_key: HashMap<String, Vec<Candidate>> = HashMap::new();
    for secret in secrets {
        for entry in &secret.entries {
            by_key
                .entry(normalized_key(&entry.key))
                .or_default()
                .push(Candidate {
                    secret: secret.name.clone(),
                    credential: entry.credential.clone(),
                });
        }
    }
    let mut index: Vec<&String> = by_key.keys().collect();
    index.sort_unstable_by(|a, b| b.cmp(a));
    let found: Vec<Candidate> = index
        .into_iter()
        .filter(|key| urls_match(key, image))
        .flat_map(|key| by_key[key].iter().cloned())
        .collect();
    if !found.is_empty() || !is_docker_hub(image) {
        return found;
    }
    by_key.remove(DEFAULT_REGISTRY_KEY).unwrap_or_default()
}

/// The key a config entry is filed under: no scheme, `/v1/` and `/v2/`
/// dropped, no trailing `/` alone.
fn normalized_key(key: &str) -> String {
    let (host, path) = split_url(key);
    let path = path
        .strip_prefix("/v2/")
        .or_else(|| path.strip_prefix("/v1/"))
        .map_or(path, |rest| &path[path.len() - rest.len() - 1..]);
    if path.is_empty() || path == "/" {
        host.to_string()
    } else {
        format!("{host}{path}")
    }
}

/// Host (with port) and path (`""` or starting with `/`) of a URL that
/// may lack its scheme.
fn split_url(url: &str) -> (&str, &str) {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, ""),
    }
}

/// Host and port (`""` for none) of `host[:port]`, as Go's
/// `net.SplitHostPort` with its failure read as "no port".
fn split_port(host: &str) -> (&str, &str) {
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.split_once("]:") {
            Some((h, port)) => (h, port),
            None => (host, ""),
        };
    }
    match host.split_once(':') {
        Some((h, port)) if !port.contains(':') => (h, port),
        _ => (host, ""),
    }
}

/// The kubelet's `URLsMatchStr(glob, target)`.
fn urls_match(glob: &str, target: &str) -> bool {
    let (glob_host, glob_path) = split_url(glob);
    let (target_host, target_path) = split_url(target);
    let (glob_host, glob_port) = split_port(glob_host);
    let (target_host, target_port) = split_port(target_host);
    if glob_port != target_port || !target_path.starts_with(glob_path) {
        return false;
    }
    let glob_labels: Vec<&str> = glob_host.split('.').collect();
    let target_labels: Vec<&str> = target_host.split('.').collect();
    glob_labels.len() == target_labels.len()
        && glob_labels
            .iter()
            .zip(&target_labels)
            .all(|(g, t)| glob_match(g.as_bytes(), t.as_bytes()))
}

/// Whether the kubelet would pull `image` from Docker Hub
/// (`isDefaultRegistryMatch`): no registry part, or `docker.io` or
/// `index.docker.io`, or a first part that cannot be a host.
fn is_docker_hub(image: &str) -> bool {
    let Some((first, _)) = image.split_once('/') else {
        return !image.is_empty();
    };
    if first.is_empty() {
        return false;
    }
    first == "docker.io"
        || first == DEFAULT_REGISTRY_KEY
        || !(first.contains('.') || first.contains(':'))
}

/// Go's `filepath.Match` for one host label (no separator in it): `*`,
/// `?`, `[…]` classes with ranges and `^`, `\` escapes. A malformed
/// pattern matches nothing, as the kubelet reads its error.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| glob_match(rest, &name[skip..])),
        Some((b'?', rest)) => !name.is_empty() && glob_match(rest, &name[1..]),
        Some((b'[', rest)) => {
            let Some((&c, name_rest)) = name.split_first() else {
                return false;
            };
            match class_match(rest, c) {
                Some((true, after)) => glob_match(after, name_rest),
                _ => false,
            }
        }
        Some((b'\\', rest)) => match (rest.split_first(), name.split_first()) {
            (Some((p, rest)), Some((c, name_rest))) => p == c && glob_match(rest, name_rest),
            _ => false,
        },
        Some((p, rest)) => name.first() == Some(p) && glob_match(rest, &name[1..]),
    }
}

/// Whether `c` is in the class starting at `pattern` (just after `[`), and
/// the pattern after its `]`; `None` for a malformed class.
fn class_match(pattern: &[u8], c: u8) -> Option<(bool, &[u8])> {
    let (negated, mut rest) = match pattern.split_first() {
        Some((b'^', rest)) => (true, rest),
        _ => (false, pattern),
    };
    let mut matched = false;
    let mut first = true;
    loop {
        match rest.split_first() {
            None => return None,
            Some((b']', after)) if !first => return Some((matched != negated, after)),
            _ => {}
        }
        first = false;
        let (lo, after) = class_char(rest)?;
        let (hi, after) = match after.split_first() {
            Some((b'-', range)) => class_char(range)?,
            _ => (lo, after),
        };
        matched |= lo <= c && c <= hi;
        rest = after;
    }
}

/// One character of a class, escaped or not.
fn class_char(pattern: &[u8]) -> Option<(u8, &[u8])> {
    match pattern.split_first()? {
        (b'\\', rest) => rest.split_first().map(|(c, r)| (*c, r)),
        (b'-' | b']', _) => None,
        (c, rest) => Some((*c, rest)),
    }
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::super::docker_config::Entry;
    use super::*;

    fn secret(name: &str, keys: &[&str]) -> Arc<PullSecret> {
        Arc::new(PullSecret {
            name: name.into(),
            entries: keys
                .iter()
                .map(|k| Entry {
                    key: k.to_string(),
                    credential: Arc::new(Credential::new(
                        Zeroizing::new(format!("{name}@{k}")),
                        Zeroizing::new("pw".into()),
                    )),
                })
                .collect(),
        })
    }

    fn tried(secrets: &[Arc<PullSecret>], image: &str) -> Vec<String> {
        candidates(secrets, image)
            .into_iter()
            .map(|c| c.credential.username().to_string())
            .collect()
    }

    #[test]
    fn keys_lose_their_scheme_and_v1_v2_paths() {
        for (key, want) in [
            ("registry.example:5000", "registry.example:5000"),
            ("https://index.docker.io/v1/", "index.docker.io"),
            ("http://reg.example/v2/", "reg.example"),
            ("https://reg.example/v2/team/app", "reg.example/team/app"),
            ("reg.example/", "reg.example"),
            ("reg.example/team", "reg.example/team"),
        ] {
            assert_eq!(normalized_key(key), want, "{key}");
        }
    }

    #[test]
    fn hosts_ports_and_paths_match_as_the_kubelet_documents() {
        let yes = [
            ("registry.example:5000", "registry.example:5000/app"),
            ("reg.example", "reg.example/team/app"),
            ("reg.example/team", "reg.example/team/app"),
            (
                "*.my-registry.io/images",
                "sub.my-registry.io/images/my0image",
            ),
            (
                "my-registry.io/images",
                "my-registry.io/images/another-image",
            ),
            ("prefix.*.io", "prefix.kubernetes.io/x"),
            ("*-good.kubernetes.io", "prefix-good.kubernetes.io/x"),
            ("reg?.example", "reg1.example/x"),
            ("reg[0-9].example", "reg7.example/x"),
            ("reg[^a-z].example", "reg7.example/x"),
            ("127.0.0.1:5000", "127.0.0.1:5000/app"),
        ];
        for (glob, image) in yes {
            assert!(urls_match(glob, image), "{glob} should match {image}");
        }
        let no = [
            // The port is part of the match, both ways.
            ("registry.example", "registry.example:5000/app"),
            ("registry.example:5000", "registry.example/app"),
            ("registry.example:5000", "registry.example:5001/app"),
            // One label per glob.
            ("*.kubernetes.io", "kubernetes.io/x"),
            (
                "*.my-registry.io/images",
                "a.sub.my-registry.io/images/my-image",
            ),
            ("*.*.kubernetes.io", "abc.kubernetes.io/x"),
            // The path is a prefix.
            ("reg.example/team", "reg.example/other/app"),
            ("other.example", "reg.example/app"),
            ("reg[a-z].example", "reg7.example/x"),
            // A malformed class matches nothing.
            ("reg[.example", "reg[.example/x"),
        ];
        for (glob, image) in no {
            assert!(!urls_match(glob, image), "{glob} should not match {image}");
        }
    }

    #[test]
    fn longer_keys_first_then_the_pods_order_and_docker_hub_last_resort() {
        let secrets = [
            secret("first", &["reg.example", "https://index.docker.io/v1/"]),
            secret("second", &["reg.example/team", "reg.example", "docker.io"]),
        ];
        assert_eq!(
            tried(&secrets, "reg.example/team/app"),
            vec![
                "second@reg.example/team",
                "first@reg.example",
                "second@reg.example"
            ]
        );
        assert_eq!(
            tried(&secrets, "reg.example/other"),
            vec!["first@reg.example", "second@reg.example"]
        );
        // `docker.io` matches the image's host: index.docker.io's are then
        // not used.
        assert_eq!(
            tried(&secrets, "docker.io/library/nginx"),
            vec!["second@docker.io"]
        );
        assert_eq!(
            tried(&secrets[..1], "docker.io/library/nginx"),
            vec!["first@https://index.docker.io/v1/"]
        );
        assert!(tried(&secrets, "quay.io/x/y").is_empty());
        assert!(tried(&secrets[..1], "127.0.0.1:5000/app").is_empty());
    }

    #[test]
    fn docker_hub_is_what_the_kubelet_reads_as_it() {
        for image in [
            "docker.io/library/nginx",
            "index.docker.io/x/y",
            "library/nginx",
            "nginx",
        ] {
            assert!(is_docker_hub(image), "{image}");
        }
        for image in ["quay.io/x", "localhost:5000/x", "127.0.0.1/x", "/x"] {
            assert!(!is_docker_hub(image), "{image}");
        }
    }
}
