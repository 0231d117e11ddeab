//! The pod's service-account tokens the wrapper sends with its request,
//! for bindings that read as the pod. Read at each start, so a token the
//! kubelet rotated is the one sent. The default directory is optional (a
//! pod without pod-identity bindings has none); a path given with
//! `--token-file` must be there.

use std::io::Read;
use std::path::{Path, PathBuf};

use kernelseal_protocol::{DEFAULT_TOKEN_DIR, MAX_TOKEN_BYTES, MAX_TOKENS, ServiceAccountToken};
use zeroize::Zeroizing;

/// Where tokens come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// [`DEFAULT_TOKEN_DIR`], when it exists.
    Default,
    /// `--token-file` paths: each a token file, or a directory whose files
    /// (not the `..data` links of a projected volume) are tokens.
    Given(Vec<PathBuf>),
}

/// Reads the tokens; the error names the path and what is wrong, never
/// the content.
pub fn read_tokens(source: &TokenSource) -> Result<Vec<ServiceAccountToken>, String> {
    let paths = match source {
        TokenSource::Default => {
            let dir = Path::new(DEFAULT_TOKEN_DIR);
            if !dir.is_dir() {
                return Ok(Vec::new());
            }
            vec![dir.to_path_buf()]
        }
        TokenSource::Given(p) => p.clone(),
    };
    let mut files = Vec::new();
    for p in &paths {
        files.extend(token_files(p)?);
    }
    if files.len() > MAX_TOKENS {
        return Err(format!(
            "{} token files ({}); the agent takes at most {MAX_TOKENS}, one per audience",
            files.len(),
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    files.iter().map(|f| read_token(f)).collect()
}

/// `p` itself, or the token files in directory `p`, by name.
fn token_files(p: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(p).map_err(|e| format!("token file {}: {e}", p.display()))?;
    if !meta.is_dir() {
        return Ok(vec![p.to_path_buf()]);
    }
    let entries =
        std::fs::read_dir(p).map_err(|e| format!("token directory {}: {e}", p.display()))?;
    let mut files = Vec::new();
    for e in entries {
        let e = e.map_err(|e| format!("token directory {}: {e}", p.display()))?;
        let name = e.file_name();
        // A projected volume's `..data` and `..2025_…` entries hold the
        // same files again.
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let path = e.path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read_token(path: &Path) -> Result<ServiceAccountToken, String> {
    let what = |e: &dyn std::fmt::Display| format!("token file {}: {e}", path.display());
    let f = std::fs::File::open(path).map_err(|e| what(&e))?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(2048));
    f.take(MAX_TOKEN_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| what(&e))?;
    if bytes.len() > MAX_TOKEN_BYTES {
        return Err(what(&format!(
            "over {MAX_TOKEN_BYTES} bytes; not a service-account token"
        )));
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| what(&"not text; not a service-account token"))?
        .trim();
    if text.is_empty() {
        return Err(what(&"empty"));
    }
    Ok(ServiceAccountToken::new(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ks-tokens-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_projected_volume_gives_each_token_once() {
        let d = dir("projected");
        let data = d.join("..2026_12_06_10_00_00.1");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("vault"), "aaa.bbb.ccc\n").unwrap();
        std::fs::write(data.join("sts"), "ddd.eee.fff").unwrap();
        std::os::unix::fs::symlink(&data, d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/vault", d.join("vault")).unwrap();
        std::os::unix::fs::symlink("..data/sts", d.join("sts")).unwrap();
        let got = read_tokens(&TokenSource::Given(vec![d.clone()])).unwrap();
        let got: Vec<&str> = got.iter().map(|t| t.expose()).collect();
        assert_eq!(got, ["ddd.eee.fff", "aaa.bbb.ccc"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_files_are_named_without_their_content() {
        let d = dir("bad");
        let big = d.join("big");
        std::fs::write(&big, "x".repeat(MAX_TOKEN_BYTES + 1)).unwrap();
        let e = read_tokens(&TokenSource::Given(vec![big.clone()])).unwrap_err();
        assert!(
            e.contains(&big.display().to_string()) && e.contains("over 16384 bytes"),
            "{e}"
        );
        let empty = d.join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let e = read_tokens(&TokenSource::Given(vec![empty])).unwrap_err();
        assert!(e.ends_with("empty"), "{e}");
        let binary = d.join("binary");
        std::fs::write(&binary, [0xff, 0xfe, b's', b'e', b'c']).unwrap();
        let e = read_tokens(&TokenSource::Given(vec![binary])).unwrap_err();
        assert!(e.contains("not text") && !e.contains("sec"), "{e}");
        let missing = d.join("missing");
        let e = read_tokens(&TokenSource::Given(vec![missing.clone()])).unwrap_err();
        assert!(e.contains(&missing.display().to_string()), "{e}");
        for i in 0..=MAX_TOKENS {
            std::fs::write(d.join(format!("many/t{i}")), "a.b.c").unwrap_or_else(|_| {
                std::fs::create_dir_all(d.join("many")).unwrap();
                std::fs::write(d.join(format!("many/t{i}")), "a.b.c").unwrap();
            });
        }
        let e = read_tokens(&TokenSource::Given(vec![d.join("many")])).unwrap_err();
        assert!(e.contains("at most 3"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
