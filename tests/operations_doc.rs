//! Keeps docs/operations.md true to the code.
//!
//! - Metrics: the tables (`| metric | type | labels | meaning |`) must list
//!   exactly the metrics the agent's and the CSI provider's registries
//!   export, with their types and label names, read from a real render of
//!   each registry (every labelled family given one value first, since
//!   prometheus-client renders a family only once it has a series). Every
//!   `kernelseal_*` name anywhere in the page (alert rules included) must
//!   be a real series.
//! - Log lines: each documented line's fixed text (between `<placeholders>`)
//!   must be in the source, and every `[TAG]` the agent logs must have a
//!   documented line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

const DOC: &str = "docs/operations.md";

fn doc() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(DOC)).unwrap()
}

/// Table rows (cells, backticks kept) of the tables whose first header
/// cell is `first`.
fn table_rows(text: &str, first: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if !line.starts_with('|') {
            inside = false;
            continue;
        }
        let cells: Vec<String> = line
            .trim()
            .trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().to_string())
            .collect();
        if cells[0] == first {
            inside = true;
            continue;
        }
        if inside && !cells[0].starts_with("---") {
            out.push(cells);
        }
    }
    out
}

fn unquote(cell: &str) -> &str {
    cell.trim_matches('`')
}

/// Exported metrics: name as scraped (counters with `_total`) → (type, labels).
fn exported() -> BTreeMap<String, (String, BTreeSet<String>)> {
    let agent = kernelseal_injector::Metrics::default();
    let labels = kernelseal_injector::AccessLabels {
        kind: "environ".into(),
        mode: "enforce".into(),
    };
    agent.access_blocked.get_or_create(&labels).inc();
    agent.access_audit.get_or_create(&labels).inc();
    agent.observe_fetch("vault-prod", Duration::from_millis(2), false);
    let csi = kernelseal_csi::Metrics::default();
    csi.mounts
        .get_or_create(&kernelseal_csi::metrics::OutcomeLabel {
            outcome: "ok".into(),
        })
        .inc();
    let webhook = kernelseal_webhook::metrics::Metrics::default();
    webhook.observe("patched", Duration::from_millis(1));
    webhook.lookup_counts().answered(true);
    let text = format!("{}\n{}\n{}", agent.render(), csi.encode(), webhook.render());

    let mut types: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap();
            types.insert(family.to_string(), kind.to_string());
        }
    }
    let mut out = BTreeMap::new();
    for (family, kind) in &types {
        let series = if kind == "counter" {
            format!("{family}_total")
        } else {
            family.clone()
        };
        // Label names of the family's samples (histograms' `le` aside).
        let mut names = BTreeSet::new();
        for line in text.lines().filter(|l| {
            !l.starts_with('#')
                && l.strip_prefix(family.as_str())
                    .is_some_and(|r| r.starts_with(['{', ' ', '_']))
        }) {
            if let Some(inner) = line.split_once('{').and_then(|(_, r)| r.split_once('}')) {
                for pair in inner.0.split(',') {
                    let name = pair.split('=').next().unwrap().to_string();
                    if name != "le" {
                        names.insert(name);
                    }
                }
            }
        }
        out.insert(series, (kind.clone(), names));
    }
    out
}

#[test]
fn metric_tables_match_the_registries() {
    let exported = exported();
    assert!(exported.len() >= 12, "{exported:#?}");
    let mut documented = BTreeMap::new();
    for row in table_rows(&doc(), "metric") {
        let labels: BTreeSet<String> = match row[2].as_str() {
            "—" => BTreeSet::new(),
            l => l
                .split(',')
                .map(|x| unquote(x.trim()).to_string())
                .collect(),
        };
        let name = unquote(&row[0]).to_string();
        assert!(
            documented
                .insert(name.clone(), (row[1].clone(), labels))
                .is_none(),
            "{name} listed twice"
        );
    }
    assert_eq!(
        documented, exported,
        "{DOC}'s metric tables (left) differ from what the agent, the CSI provider and the webhook export \
         (right)"
    );
}

#[test]
fn every_metric_name_in_the_page_is_a_real_series() {
    let exported = exported();
    let mut series = BTreeSet::new();
    for (name, (kind, _)) in &exported {
        series.insert(name.clone());
        if kind == "histogram" {
            for s in ["_bucket", "_sum", "_count"] {
                series.insert(format!("{name}{s}"));
            }
        }
    }
    let text = doc();
    let mut seen = 0;
    for (i, _) in text.match_indices("kernelseal_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // `kernelseal_*` in prose, and crate names.
        if name == "kernelseal_" || !text[i..].starts_with(&name) {
            continue;
        }
        assert!(
            series.contains(&name),
            "{DOC}: {name} is not a series the agent, the CSI provider or the webhook exports"
        );
        seen += 1;
    }
    assert!(seen > 20, "only {seen} metric names found in {DOC}");
}

/// The source of the agent's log lines, with Rust string continuations
/// (`\` + newline + indentation) joined.
fn source() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = String::new();
    for dir in ["src", "injector/src", "providers/src", "webhook/src"] {
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    text.push_str(&std::fs::read_to_string(&p).unwrap());
                    text.push('\n');
                }
            }
        }
    }
    let mut joined = String::new();
    let mut lines = text.split('\n').peekable();
    while let Some(l) = lines.next() {
        if let Some(head) = l.strip_suffix('\\') {
            joined.push_str(head);
            if let Some(next) = lines.peek_mut() {
                *next = next.trim_start();
            }
        } else {
            joined.push_str(l);
            joined.push('\n');
        }
    }
    joined
}

/// `[TAG]`s at the start of string literals, except `kernelseal check`'s
/// own report lines (documented in troubleshooting.md).
fn tags_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("\"[") {
        let rest = &text[i + 2..];
        let Some(end) = rest.find(']') else { continue };
        let tag = &rest[..end];
        if !tag.is_empty()
            && tag.chars().all(|c| c.is_ascii_uppercase() || c == ' ')
            && !matches!(tag, "FAIL" | "INFO" | " OK ")
        {
            out.insert(format!("[{tag}]"));
        }
    }
    out
}

#[test]
fn documented_log_lines_are_the_codes() {
    let src = source();
    let rows = table_rows(&doc(), "line");
    assert!(rows.len() > 60, "{} log lines documented", rows.len());
    let mut documented_tags = BTreeSet::new();
    for row in &rows {
        let line = unquote(&row[0]);
        let tag = &line[..=line.find(']').expect("a line starts with [TAG]")];
        documented_tags.insert(tag.to_string());
        // Fixed text between placeholders; `…` stands for a list.
        for fragment in line
            .split(['<', '>', '…'])
            .enumerate()
            .filter(|(i, _)| i % 2 == 0 || !line.contains('<'))
            .map(|(_, f)| f)
        {
            let fragment = fragment.trim_matches(|c: char| c == ' ' || c == ',');
            if fragment.len() < 4 {
                continue;
            }
            assert!(
                src.contains(fragment),
                "{DOC}: the log line `{line}`: {fragment:?} is not in the code"
            );
        }
    }
    let logged = tags_in(&src);
    let undocumented: Vec<&String> = logged.difference(&documented_tags).collect();
    let unknown: Vec<&String> = documented_tags.difference(&logged).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "log tags logged but not documented: {undocumented:?}; documented but not logged: \
         {unknown:?}"
    );
}
