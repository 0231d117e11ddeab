//! Keeps docs/configuration.md true to the parser.
//!
//! The reference documents fields in tables whose first column is `field`,
//! one backticked path per row (`policy.blockEnviron`,
//! `secrets[].selector.uid`, `providers.<name>.address`; a provider
//! setting belongs to the type named in its section's heading,
//! "`type: vault`"). From the code side, the accepted fields come from
//! `kernelseal_config::known_fields()` (read from the serde schema) and
//! `kernelseal_providers::known_settings()` (the lists each provider's
//! parser enforces). This test checks:
//! - both directions: every documented field is accepted, every accepted
//!   field is documented;
//! - each row's example passes `kernelseal config validate` in a minimal
//!   config, and the same config with a misspelt sibling is refused,
//!   naming it (so neither the tables nor the lists can drift from the
//!   parser);
//! - the defaults given for `version`, `policy.*`, `monitoring.*` and
//!   `podIdentity` are the parser's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const DOC: &str = "docs/configuration.md";

#[derive(Debug, Clone)]
struct Row {
    line: usize,
    /// The provider type of the section, for `providers.<name>.*` settings.
    kind: Option<String>,
    path: String,
    default: String,
    example: Option<String>,
}

impl Row {
    fn key(&self) -> (Option<String>, String) {
        (self.kind.clone(), self.path.clone())
    }
}

/// Splits a table line on `|`, keeping `\|` inside cells.
fn cells(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.trim().trim_start_matches('|').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cur.push('|');
                chars.next();
            }
            '|' => out.push(std::mem::take(&mut cur).trim().to_string()),
            _ => cur.push(c),
        }
    }
    out
}

fn backticked(cell: &str) -> Option<&str> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    (!inner.contains('`')).then_some(inner)
}

fn rows_of(text: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut kind: Option<String> = None;
    let mut in_table = false;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.starts_with('#') {
            kind = line
                .split("`type: ")
                .nth(1)
                .and_then(|r| r.split('`').next())
                .map(str::to_string);
            in_table = false;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        let c = cells(line);
        if c.first().map(String::as_str) == Some("field") {
            assert_eq!(
                &c[..5],
                ["field", "type", "default", "example", "notes"],
                "{DOC}:{n}: reference tables have these columns"
            );
            in_table = true;
            continue;
        }
        if !in_table || c[0].starts_with("---") {
            continue;
        }
        assert!(c.len() >= 5, "{DOC}:{n}: a row has 5 cells: {line}");
        let path = backticked(&c[0])
            .unwrap_or_else(|| panic!("{DOC}:{n}: first cell must be one `field.path`"))
            .to_string();
        let example = match c[3].as_str() {
            "—" => None,
            e => Some(
                backticked(e)
                    .unwrap_or_else(|| panic!("{DOC}:{n}: example must be `value` or —"))
                    .to_string(),
            ),
        };
        let provider_setting =
            path.starts_with("providers.<name>.") && path != "providers.<name>.type";
        assert!(
            !provider_setting || kind.is_some(),
            "{DOC}:{n}: {path} is a provider setting outside a \"`type: …`\" section"
        );
        rows.push(Row {
            line: n,
            kind: if provider_setting { kind.clone() } else { None },
            path,
            default: c[2].clone(),
            example,
        });
    }
    rows
}

fn doc_rows() -> Vec<Row> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(DOC))
        .expect("the reference exists");
    rows_of(&text)
}

fn code_fields() -> BTreeSet<(Option<String>, String)> {
    let mut out: BTreeSet<_> = kernelseal_config::known_fields()
        .into_iter()
        .map(|p| (None, p))
        .collect();
    for (kind, path) in kernelseal_providers::known_settings() {
        out.insert((Some(kind.to_string()), format!("providers.<name>.{path}")));
    }
    out
}

#[test]
fn every_documented_field_is_parsed_and_every_parsed_field_is_documented() {
    let rows = doc_rows();
    let code = code_fields();
    // Neither side may be empty or thin: both lists are the whole schema.
    assert!(code.len() > 80, "code side: {code:?}");
    let mut doc = BTreeSet::new();
    for r in &rows {
        assert!(
            doc.insert(r.key()),
            "{DOC}:{}: {} documented twice",
            r.line,
            r.path
        );
    }
    let fmt = |k: &(Option<String>, String)| match &k.0 {
        Some(t) => format!("{} (type: {t})", k.1),
        None => k.1.clone(),
    };
    let undocumented: Vec<String> = code.difference(&doc).map(fmt).collect();
    let unknown: Vec<String> = doc.difference(&code).map(fmt).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "{DOC} and the parser disagree.\n  accepted but not documented: {undocumented:#?}\n  \
         documented but not accepted: {unknown:#?}"
    );
    // A row without an example must be a section whose fields follow.
    for r in rows.iter().filter(|r| r.example.is_none()) {
        let (dot, item) = (format!("{}.", r.path), format!("{}[].", r.path));
        assert!(
            rows.iter().any(
                |o| o.kind == r.kind && (o.path.starts_with(&dot) || o.path.starts_with(&item))
            ),
            "{DOC}:{}: {} has no example and no documented fields below it",
            r.line,
            r.path
        );
    }
}

/// A YAML document built by path, rendered in block style; leaf values
/// are YAML text written as is (the reference's examples).
#[derive(Debug, Clone)]
enum Node {
    Raw(String),
    Map(Vec<(String, Node)>),
    List(Vec<Node>),
}

impl Node {
    fn map(entries: &[(&str, Node)]) -> Node {
        Node::Map(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    fn raw(s: &str) -> Node {
        Node::Raw(s.to_string())
    }

    /// The node at `segs` (`secrets[]` = the list's first item), created as
    /// mappings on the way; a scalar in the way is replaced.
    fn at(&mut self, segs: &[String]) -> &mut Node {
        let Some((first, rest)) = segs.split_first() else {
            return self;
        };
        if !matches!(self, Node::Map(_)) {
            *self = Node::Map(Vec::new());
        }
        let Node::Map(entries) = self else {
            unreachable!()
        };
        let (key, list) = match first.strip_suffix("[]") {
            Some(k) => (k, true),
            None => (first.as_str(), false),
        };
        let i = match entries.iter().position(|(k, _)| k == key) {
            Some(i) => i,
            None => {
                let fresh = if list {
                    Node::List(vec![Node::Map(Vec::new())])
                } else {
                    Node::Map(Vec::new())
                };
                entries.push((key.to_string(), fresh));
                entries.len() - 1
            }
        };
        let child = &mut entries[i].1;
        if list {
            let Node::List(items) = child else {
                panic!("{key} is not a list here")
            };
            items[0].at(rest)
        } else {
            child.at(rest)
        }
    }

    fn render(&self, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match self {
            Node::Map(entries) => {
                for (k, v) in entries {
                    match v {
                        Node::Raw(s) => out.push_str(&format!("{pad}{k}: {s}\n")),
                        Node::Map(e) if e.is_empty() => out.push_str(&format!("{pad}{k}: {{}}\n")),
                        Node::List(l) if l.is_empty() => out.push_str(&format!("{pad}{k}: []\n")),
                        _ => {
                            out.push_str(&format!("{pad}{k}:\n"));
                            v.render(indent + 2, out);
                        }
                    }
                }
            }
            Node::List(items) => {
                for item in items {
                    let mut s = String::new();
                    item.render(indent + 2, &mut s);
                    out.push_str(&pad);
                    out.push_str("- ");
                    out.push_str(&s[indent + 2..]);
                }
            }
            Node::Raw(s) => out.push_str(s),
        }
    }

    fn yaml(&self) -> String {
        let mut out = String::new();
        self.render(0, &mut out);
        out
    }
}

fn segments(path: &str) -> Vec<String> {
    path.split('.')
        .map(|s| if s == "<name>" { "p" } else { s }.to_string())
        .collect()
}

/// A valid config with room for `row`'s field: required neighbours filled
/// in, exclusive alternatives left out.
fn base(row: &Row) -> Node {
    let path = row.path.as_str();
    if let Some(setting) = path.strip_prefix("providers.<name>.") {
        let kind = row.kind.as_deref().unwrap_or("vault");
        let mut p = vec![("type", Node::raw(kind))];
        if kind == "vault" {
            p.push(("address", Node::raw("https://vault.example:8200")));
            let auth = if setting == "auth.token.file" {
                Node::map(&[("token", Node::map(&[]))])
            } else if setting.starts_with("auth.token") {
                Node::map(&[("token", Node::map(&[("env", Node::raw("VAULT_TOKEN"))]))])
            } else if setting == "auth.approle.secretIdEnv" {
                Node::map(&[("approle", Node::map(&[("roleId", Node::raw("r"))]))])
            } else if setting.starts_with("auth.approle") {
                Node::map(&[(
                    "approle",
                    Node::map(&[
                        ("roleId", Node::raw("r")),
                        ("secretIdFile", Node::raw("/run/secrets/secret-id")),
                    ]),
                )])
            } else {
                Node::map(&[("kubernetes", Node::map(&[("role", Node::raw("app"))]))])
            };
            if setting.starts_with("auth") {
                p.push(("auth", auth));
            }
        }
        return Node::map(&[
            ("version", Node::raw("v1")),
            ("providers", Node::map(&[("p", Node::map(&p))])),
        ]);
    }
    if path.starts_with("secrets") {
        let source_prefix = "secrets[].secretRefs[].source.";
        // An SSM path is delivered with keys: all, and keys: all, prefix
        // and jmesPath take the place of the entry's name.
        let ssm_path = ["path", "recursive"]
            .iter()
            .any(|f| path == format!("{source_prefix}ssmRef.{f}"));
        let naming = match path.strip_prefix("secrets[].secretRefs[].") {
            Some("keys" | "prefix") => ("keys", Node::raw("all")),
            Some(p) if p.starts_with("jmesPath") => (
                "jmesPath",
                Node::List(vec![Node::map(&[
                    ("path", Node::raw("db.user")),
                    ("name", Node::raw("DB_USER")),
                ])]),
            ),
            _ if ssm_path => ("keys", Node::raw("all")),
            _ => ("name", Node::raw("A")),
        };
        let source = match path.strip_prefix(source_prefix) {
            Some(rest) => {
                let kind = rest.split('.').next().unwrap();
                let minimal = match kind {
                    "value" => Node::raw("x"),
                    "envRef" => Node::raw("SOURCE_TOKEN"),
                    "fileRef" => Node::map(&[("path", Node::raw("/etc/app/x"))]),
                    "secretKeyRef" => {
                        Node::map(&[("name", Node::raw("n")), ("key", Node::raw("k"))])
                    }
                    "vaultRef" => Node::map(&[("path", Node::raw("app")), ("key", Node::raw("k"))]),
                    "awsRef" => Node::map(&[("secretId", Node::raw("prod/app"))]),
                    "ssmRef" if ssm_path => Node::map(&[("path", Node::raw("/app/"))]),
                    "ssmRef" => Node::map(&[("name", Node::raw("/app/x"))]),
                    // The reference's examples of `text` and `refs` read `pw`.
                    "template" => Node::map(&[
                        ("text", Node::raw("\"{{ pw }}\"")),
                        ("refs", Node::raw("{ pw: { value: x } }")),
                    ]),
                    other => panic!("no minimal source for {other}"),
                };
                Node::map(&[(kind, minimal)])
            }
            None => Node::map(&[("value", Node::raw("x"))]),
        };
        let binding = Node::map(&[
            ("name", Node::raw("b")),
            ("selector", Node::map(&[("uid", Node::raw("1000"))])),
            (
                "secretRefs",
                Node::List(vec![Node::map(&[naming, ("source", source)])]),
            ),
        ]);
        return Node::map(&[
            ("version", Node::raw("v1")),
            (
                "providers",
                Node::map(&[
                    (
                        "vault-prod",
                        Node::map(&[
                            ("type", Node::raw("vault")),
                            ("address", Node::raw("https://vault.example:8200")),
                        ]),
                    ),
                    ("aws", Node::map(&[("type", Node::raw("aws"))])),
                ]),
            ),
            ("secrets", Node::List(vec![binding])),
        ]);
    }
    Node::map(&[("version", Node::raw("v1"))])
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kernelseal-reference-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn validate(doc: &Node, name: &str) -> (i32, String) {
    let path = scratch_dir().join(name);
    std::fs::write(&path, doc.yaml()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kernelseal-core"))
        .args(["config", "validate"])
        .arg(&path)
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn every_example_validates_and_a_misspelt_sibling_is_refused() {
    let rows = doc_rows();
    assert!(rows.len() > 80, "{} rows", rows.len());
    let mut checked = 0;
    for (i, r) in rows.iter().enumerate() {
        let segs = segments(&r.path);
        let mut ok = base(r);
        if let Some(example) = &r.example {
            *ok.at(&segs) = Node::raw(example);
            let (code, out) = validate(&ok, &format!("ok-{i}.yaml"));
            assert_eq!(
                code,
                0,
                "{DOC}:{}: the example of {} does not validate:\n{}\n{out}",
                r.line,
                r.path,
                ok.yaml()
            );
            checked += 1;
        }
        let (last, parent) = segs.split_last().unwrap();
        let typo = format!("{}Typo", last.trim_end_matches("[]"));
        let mut bad = ok.clone();
        match bad.at(parent) {
            Node::Map(entries) => entries.push((typo.clone(), Node::raw("x"))),
            other => panic!("{}: parent is not a mapping: {other:?}", r.path),
        }
        let name = format!("bad-{i}.yaml");
        let (code, out) = validate(&bad, &name);
        // Named, or (serde's enum errors do not name keys) located at its line.
        let yaml = bad.yaml();
        let line = yaml
            .lines()
            .position(|l| l.trim_start().starts_with(&format!("{typo}:")))
            .map(|l| l + 1)
            .unwrap();
        assert!(
            code == 2 && (out.contains(&typo) || out.contains(&format!("{name}:{line}:"))),
            "{DOC}:{}: a misspelt sibling of {} ({typo}) should be refused by name or line:\n{}\nexit \
             {code}: {out}",
            r.line,
            r.path,
            bad.yaml()
        );
    }
    assert!(checked > 60, "only {checked} examples checked");
}

#[test]
fn documented_defaults_are_the_parsers() {
    let defaults = kernelseal_config::parse_str("", "empty.yaml")
        .unwrap()
        .config;
    let mut checked = BTreeMap::new();
    for r in doc_rows() {
        let top = r.path.split('.').next().unwrap();
        if !matches!(top, "version" | "policy" | "monitoring" | "podIdentity")
            || r.example.is_none()
        {
            continue;
        }
        let value = backticked(&r.default)
            .unwrap_or_else(|| panic!("{DOC}:{}: default of {} must be `value`", r.line, r.path));
        let mut doc = Node::Map(Vec::new());
        *doc.at(&segments(&r.path)) = Node::raw(value);
        let c = kernelseal_config::parse_str(&doc.yaml(), "default.yaml")
            .unwrap_or_else(|e| panic!("{DOC}:{}: {e}", r.line))
            .config;
        let same = c.version == defaults.version
            && c.policy == defaults.policy
            && c.monitoring == defaults.monitoring
            && c.pod_identity == defaults.pod_identity;
        assert!(
            same,
            "{DOC}:{}: {} is documented as defaulting to {value}, which is not the parser's default",
            r.line, r.path
        );
        checked.insert(r.path, value.to_string());
    }
    // version, podIdentity, 11 policy switches, 4 monitoring settings.
    assert_eq!(checked.len(), 17, "{checked:#?}");
}
