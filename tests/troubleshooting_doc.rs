//! Keeps docs/troubleshooting.md true to the code.
//!
//! - Every message in its tables (`| message | meaning | fix |`) is one the
//!   code can print: its fixed text (between `<placeholders>`) is made of
//!   the workspace's string literals, glued only where a literal has a
//!   format placeholder (`"[FAIL] {what}: {}"` + `"privileges"` + …).
//!   Texts that come from libraries (serde, the OS) are listed below.
//! - Every failure `kernelseal check` can report has a `[FAIL] <what>:` row.

use std::collections::BTreeSet;
use std::path::Path;

const DOC: &str = "docs/troubleshooting.md";

/// Message texts printed by libraries, not by KernelSeal's code.
const LIBRARY_TEXT: &[&str] = &[
    "unknown field ",
    ", expected one of ",
    "No such file or directory (os error 2)",
    "Permission denied (os error 13)",
    "Connection refused (os error 111)",
    "Operation not permitted (os error 1)",
];

/// A piece of a string literal between format placeholders (or its
/// edges): where formatting may glue another text to it.
struct Piece {
    text: String,
}

fn rust_files(root: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "target" && n != "bpf") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(std::fs::read_to_string(&p).unwrap());
        }
    }
}

/// String literals of a Rust file, continuations (`\` + newline +
/// indentation) joined and simple escapes resolved.
fn literals(src: &str) -> Vec<String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\'' if chars.get(i + 1) == Some(&'"') && chars.get(i + 2) == Some(&'\'') => i += 3,
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                        match chars.get(i) {
                            Some('\n') => {
                                while chars.get(i + 1).is_some_and(|c| c.is_whitespace()) {
                                    i += 1;
                                }
                            }
                            Some('n') => s.push('\n'),
                            Some(c) => s.push(*c),
                            None => {}
                        }
                    } else {
                        s.push(chars[i]);
                    }
                    i += 1;
                }
                out.push(s);
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// Splits a literal at its `{…}` placeholders (`{{`/`}}` are braces).
fn pieces_of(lit: &str, out: &mut Vec<Piece>) {
    let mut cur = String::new();
    let mut chars = lit.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                cur.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                cur.push('}');
            }
            '{' => {
                for d in chars.by_ref() {
                    if d == '}' {
                        break;
                    }
                }
                out.push(Piece {
                    text: std::mem::take(&mut cur),
                });
            }
            _ => cur.push(c),
        }
    }
    out.push(Piece { text: cur });
}

fn all_pieces() -> Vec<Piece> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        "src",
        "config/src",
        "providers/src",
        "protocol/src",
        "exec/src",
        "injector/src",
        "bpf/src",
        "csi-shim/src",
        "webhook/src",
    ] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut out = Vec::new();
    for f in &files {
        for lit in literals(f) {
            pieces_of(&lit, &mut out);
        }
    }
    for t in LIBRARY_TEXT {
        out.push(Piece {
            text: t.to_string(),
        });
    }
    out.retain(|p| !p.text.is_empty());
    out
}

/// Whether `frag` is the suffix of one piece, then whole pieces, then the
/// prefix of one piece (or lies inside a single piece).
fn covered(frag: &str, pieces: &[Piece]) -> bool {
    if pieces.iter().any(|p| p.text.contains(frag)) {
        return true;
    }
    let n = frag.len();
    // reach[i]: frag[..i] is covered and ends at a piece boundary.
    let mut reach = vec![false; n + 1];
    for p in pieces {
        for i in 1..=n.min(p.text.len()) {
            if frag.is_char_boundary(i) && p.text.ends_with(&frag[..i]) {
                reach[i] = true;
            }
        }
    }
    for i in 1..n {
        if !reach[i] || !frag.is_char_boundary(i) {
            continue;
        }
        let rest = &frag[i..];
        for p in pieces {
            if p.text.starts_with(rest) {
                return true;
            }
            if rest.starts_with(p.text.as_str()) {
                reach[i + p.text.len()] = true;
            }
        }
    }
    reach[n]
}

fn doc_messages() -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(DOC)).unwrap();
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if !line.starts_with('|') {
            inside = false;
            continue;
        }
        let first = line.trim_matches('|').split(" | ").next().unwrap().trim();
        if first == "message" {
            inside = true;
            continue;
        }
        if inside && !first.starts_with("---") {
            let msg = first
                .strip_prefix('`')
                .and_then(|m| m.strip_suffix('`'))
                .unwrap_or_else(|| panic!("{DOC}: a message is one `code span`: {line}"));
            out.push(msg.to_string());
        }
    }
    out
}

#[test]
fn every_documented_message_is_one_the_code_prints() {
    let pieces = all_pieces();
    let messages = doc_messages();
    assert!(messages.len() > 50, "{} messages", messages.len());
    for msg in &messages {
        for frag in msg.split(['<', '>', '…']).step_by(2) {
            let frag = frag.trim_matches(|c: char| c == ' ' || c == ',');
            if frag.len() < 4 {
                continue;
            }
            assert!(
                covered(frag, &pieces),
                "{DOC}: `{msg}`: {frag:?} is not text the code prints"
            );
        }
    }
    // The matcher itself must not accept anything.
    assert!(!covered(
        "protection requested but the kernel is haunted",
        &pieces
    ));
}

#[test]
fn every_check_failure_has_a_row() {
    let check = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/check.rs"))
        .unwrap();
    // `r.fail("what", …)` and `probe(&mut r, lsm, "what", …)`.
    let mut whats = BTreeSet::new();
    for (marker, skip) in [("r.fail(", 0), ("probe(", 2)] {
        for (i, _) in check.match_indices(marker) {
            let args = &check[i + marker.len()..];
            let lits = literals(args);
            let Some(what) = args
                .split(',')
                .nth(skip)
                .filter(|a| a.trim_start().starts_with('"'))
                .and(lits.first())
            else {
                continue;
            };
            whats.insert(what.clone());
        }
    }
    // privileges, BTF, LSM list, the LSM load and the exec tracepoint: the
    // parser found every one (the file_post_open check went with the hook).
    assert!(whats.len() >= 5, "{whats:?}");
    let messages = doc_messages();
    for what in &whats {
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with(&format!("[FAIL] {what}: "))),
            "{DOC}: no row for the check failure `[FAIL] {what}: …`"
        );
    }
}
