//! Every code block in the README and `docs/` is what it claims to be.
//!
//! - A `yaml` block is valid YAML and, by what it holds, passes the checker
//!   that owns it: a KernelSeal config (or a `secretRefs` list, or a
//!   `providers:` section) passes `kernelseal config validate`; a
//!   SecretProviderClass (or its `spec:` or its `objects:` parameter)
//!   passes `kernelseal csi validate`; another Kubernetes object names its
//!   `apiVersion`, `kind` and `metadata.name`; Prometheus rules name each
//!   alert and its expression. A block that fits none fails the test.
//! - A `bash` block's command lines parse: `kernelseal …` (also after
//!   `sudo`, a path, `kubectl exec … --`, or as `kernelseal-exec`) is run
//!   with `--help` after its arguments, which clap and the wrapper parse
//!   before they print help; `config validate` / `csi validate` of a file in
//!   this repository run for real; `cargo xtask X` names a task; a
//!   repository path exists; `helm --set K=V` sets a key of the chart.
//! - An `ini` block's `ExecStart=` is a command line as above.
//! - Every block names its language, so none escapes these checks (`text`
//!   is for output and layouts).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

struct Block {
    /// `file:line` of the opening fence.
    at: String,
    lang: String,
    text: String,
}

fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("deploy/README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

fn blocks_of(path: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(path).expect("doc readable");
    let name = path
        .strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string();
    let mut out = Vec::new();
    let mut open: Option<(usize, String, usize, Vec<&str>)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match (&mut open, trimmed.strip_prefix("```")) {
            (None, Some(lang)) => open = Some((i + 1, lang.trim().to_string(), indent, vec![])),
            (Some(_), Some("")) => {
                let (at, lang, indent, lines) = open.take().expect("open block");
                let body: Vec<&str> = lines
                    .iter()
                    .map(|l| {
                        l.get(indent.min(l.len() - l.trim_start().len())..)
                            .unwrap_or("")
                    })
                    .collect();
                out.push(Block {
                    at: format!("{name}:{at}"),
                    lang,
                    text: body.join("\n") + "\n",
                });
            }
            (Some((_, _, _, lines)), _) => lines.push(line),
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "{name}: a code block is never closed");
    out
}

fn all_blocks() -> Vec<Block> {
    doc_files().iter().flat_map(|p| blocks_of(p)).collect()
}

/// A file of its own: tests run in parallel threads.
fn scratch(name: &str, text: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("kernelseal-doc-snippets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{n}-{name}"));
    std::fs::write(&path, text).unwrap();
    path
}

fn kernelseal(args: &[String]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kernelseal-core"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("running kernelseal");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn indented(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// A dedented block: its least-indented non-empty line starts at column 0.
fn dedented(text: &str) -> String {
    let cut = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| format!("{}\n", l.get(cut..).unwrap_or("")))
        .collect()
}

// ---- YAML ----------------------------------------------------------------

const CONFIG_KEYS: &[&str] = &[
    "version",
    "policy",
    "providers",
    "podIdentity",
    "secrets",
    "monitoring",
];

/// Providers that `secretRefs` snippets name; each ref picks its own.
const SNIPPET_PROVIDERS: &str = "\
providers:
  vault-prod: { type: vault, address: https://vault.example:8200 }
  aws: { type: aws, region: eu-west-1 }
";

fn config_validates(at: &str, text: &str) {
    let path = scratch("config.yaml", text);
    let (code, out) = kernelseal(&[
        "config".into(),
        "validate".into(),
        path.display().to_string(),
    ]);
    assert_eq!(
        code, 0,
        "{at}: `kernelseal config validate` refuses the snippet:\n{out}\n---\n{text}"
    );
}

fn class_validates(at: &str, text: &str) {
    let path = scratch("class.yaml", text);
    let (code, out) = kernelseal(&["csi".into(), "validate".into(), path.display().to_string()]);
    assert_eq!(
        code, 0,
        "{at}: `kernelseal csi validate` refuses the snippet:\n{out}\n---\n{text}"
    );
    assert!(
        out.contains("OK"),
        "{at}: csi validate printed no verdict: {out}"
    );
}

/// Which checker owns a YAML snippet, and its verdict.
fn check_yaml(block: &Block) {
    let at = &block.at;
    let text = dedented(&block.text);
    let doc: Value = serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("{at}: not valid YAML: {e}\n---\n{text}"));
    match &doc {
        Value::Object(map) if map.contains_key("apiVersion") && map.contains_key("kind") => {
            if map["kind"] == "SecretProviderClass" {
                return class_validates(at, &text);
            }
            assert!(
                doc.pointer("/metadata/name").is_some_and(Value::is_string),
                "{at}: a Kubernetes object without metadata.name"
            );
        }
        Value::Object(map) if map.len() == 1 && map.contains_key("spec") => {
            assert_eq!(
                doc.pointer("/spec/provider").and_then(Value::as_str),
                Some("kernelseal"),
                "{at}: a bare `spec:` snippet must be a SecretProviderClass's"
            );
            let class = format!(
                "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
                 metadata: {{ name: doc-snippet, namespace: doc }}\n{text}"
            );
            class_validates(at, &class);
        }
        Value::Object(map) if map.len() == 1 && map.contains_key("objects") => {
            // The `objects` parameter alone: the class's other parameters
            // are in the sections above it; a bare parameters map.
            class_validates(at, &text);
        }
        Value::Object(map) if map.contains_key("groups") => {
            let groups = map["groups"].as_array().expect("groups is a list");
            assert!(!groups.is_empty(), "{at}: no rule groups");
            for rule in groups
                .iter()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            {
                assert!(
                    rule["alert"].is_string(),
                    "{at}: a rule without `alert`: {rule}"
                );
                assert!(
                    rule["expr"].is_string(),
                    "{at}: a rule without `expr`: {rule}"
                );
            }
        }
        Value::Object(map) if map.keys().all(|k| CONFIG_KEYS.contains(&k.as_str())) => {
            let mut config = text.clone();
            if !map.contains_key("version") {
                config = format!("version: v1\n{config}");
            }
            config_validates(at, &config);
        }
        Value::Array(items)
            if items
                .iter()
                .all(|i| names_a_delivery(i) && i["source"].is_object()) =>
        {
            let config = format!(
                "version: v1\n{SNIPPET_PROVIDERS}secrets:\n  - name: doc-snippet\n    \
                 selector: {{ binary: app }}\n    secretRefs:\n{}",
                indented(&text, 6)
            );
            config_validates(at, &config);
        }
        _ => panic!(
            "{at}: a YAML block this test cannot check (a config, secretRefs list, \
             SecretProviderClass, Kubernetes object or Prometheus rules); add its kind here"
        ),
    }
}

// ---- command lines -------------------------------------------------------

/// Shell-like words: quotes removed, `$VAR` / `${VAR}` / `$(…)` as `1`.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (q, '$') if q != Some('\'') => {
                in_word = true;
                word.push('1');
                match chars.peek() {
                    Some('(') | Some('{') => {
                        let close = if chars.next() == Some('(') { ')' } else { '}' };
                        for d in chars.by_ref() {
                            if d == close {
                                break;
                            }
                        }
                    }
                    _ => {
                        while chars
                            .peek()
                            .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '_')
                        {
                            chars.next();
                        }
                    }
                }
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

/// Command lines of a shell block: continuations joined, comments cut,
/// split at `&&`, `||`, `;` and `|`.
fn command_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for raw in text.lines() {
        let line = match raw.find(" #") {
            Some(i) if !raw[..i].contains('\'') && !raw[..i].contains('"') => &raw[..i],
            _ => raw,
        };
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            if !current.is_empty() {
                lines.push(std::mem::take(&mut current));
            }
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
        .iter()
        .flat_map(|l| {
            l.split("&&")
                .flat_map(|p| p.split("||"))
                .flat_map(|p| p.split(';'))
                .flat_map(|p| p.split('|'))
                .map(|p| p.trim().trim_end_matches('&').trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|l| !l.is_empty())
        .collect()
}

/// The words of a command after `sudo [-u USER]` and `NAME=value` prefixes.
fn program_and_args(mut w: &[String]) -> &[String] {
    loop {
        match w.first().map(String::as_str) {
            Some("sudo") => {
                w = &w[1..];
                if w.first().is_some_and(|a| a == "-u") {
                    w = w.get(2..).unwrap_or(&[]);
                }
            }
            Some(a) if a.contains('=') && !a.starts_with('-') && !a.contains('/') => w = &w[1..],
            _ => return w,
        }
    }
}

fn basename(w: &str) -> &str {
    w.rsplit('/').next().unwrap_or(w)
}

fn xtask_commands() -> Vec<String> {
    let src = std::fs::read_to_string(root().join("xtask/src/main.rs")).expect("xtask source");
    let body = src
        .split("enum Cmd {")
        .nth(1)
        .and_then(|s| s.split("\n}\n").next())
        .expect("xtask's enum Cmd");
    body.lines()
        .filter_map(|l| l.strip_prefix("    "))
        .filter(|l| l.starts_with(|c: char| c.is_ascii_uppercase()))
        .map(|l| {
            let name: String = l
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            let mut kebab = String::new();
            for (i, c) in name.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    kebab.push('-');
                }
                kebab.push(c.to_ascii_lowercase());
            }
            kebab
        })
        .collect()
}

/// `kernelseal ARGS` parses: clap (and the wrapper) parse every argument
/// before a `--help` that follows them.
fn check_kernelseal(at: &str, args: &[String]) {
    let mut probe: Vec<String> = args.to_vec();
    if args.first().is_some_and(|a| a == "exec") {
        let cmd = args.iter().position(|a| a == "--").unwrap_or_else(|| {
            panic!(
                "{at}: `kernelseal exec {}` without `--` before the command",
                args[1..].join(" ")
            )
        });
        probe.insert(cmd, "--help".into());
    } else {
        probe.push("--help".into());
    }
    let (code, out) = kernelseal(&probe);
    assert_eq!(
        code,
        0,
        "{at}: `kernelseal {}` does not parse:\n{out}",
        args.join(" ")
    );

    // A validate of a file shipped here runs for real.
    let validates = matches!(
        args.iter().map(String::as_str).collect::<Vec<_>>()[..],
        ["config", "validate", _] | ["csi", "validate", _]
    );
    if validates && root().join(&args[2]).is_file() {
        let (code, out) = kernelseal(args);
        assert_eq!(
            code,
            0,
            "{at}: `kernelseal {}` fails:\n{out}",
            args.join(" ")
        );
    }
}

fn helm_values() -> Value {
    let text = std::fs::read_to_string(root().join("deploy/helm/kernelseal/values.yaml"))
        .expect("chart values");
    serde_saphyr::from_str(&text).expect("chart values parse")
}

fn check_command(at: &str, line: &str, xtasks: &[String], values: &Value) {
    let all = words(line);
    let w = program_and_args(&all);
    let Some(program) = w.first() else { return };
    // Paths into this repository exist.
    for arg in w.iter().chain(all.iter()) {
        let arg = arg.split_once('=').map_or(arg.as_str(), |(_, v)| v);
        let repo_dirs = ["deploy/", "docs/", "examples/", "scripts/", "xtask/"];
        // `deploy/web` is a kubectl resource, not a path: paths here end in
        // `/` or have an extension, or are scripts and the chart.
        let looks_like_path = arg.ends_with('/')
            || basename(arg).contains('.')
            || arg.starts_with("scripts/")
            || arg.starts_with("deploy/helm/");
        if looks_like_path && repo_dirs.iter().any(|d| arg.starts_with(d)) {
            assert!(
                root().join(arg).exists(),
                "{at}: `{line}` names {arg}, which does not exist"
            );
        }
    }
    match basename(program) {
        "kernelseal" => check_kernelseal(at, &w[1..]),
        "kernelseal-exec" => {
            let mut args = vec!["exec".to_string()];
            args.extend_from_slice(&w[1..]);
            check_kernelseal(at, &args);
        }
        "cargo" if w.get(1).is_some_and(|a| a == "xtask") => {
            let task = w
                .get(2)
                .unwrap_or_else(|| panic!("{at}: `cargo xtask` without a task"));
            assert!(
                xtasks.contains(task),
                "{at}: `cargo xtask {task}` is not a task: {xtasks:?}"
            );
        }
        "kubectl" => {
            if let Some(dd) = w.iter().position(|a| a == "--")
                && w.get(dd + 1).is_some_and(|p| basename(p) == "kernelseal")
            {
                check_kernelseal(at, &w[dd + 2..]);
            }
        }
        "helm" if w.iter().any(|a| a == "deploy/helm/kernelseal") => {
            for pair in w.windows(2).filter(|p| p[0] == "--set").map(|p| &p[1]) {
                let key = pair.split('=').next().unwrap_or_default();
                let pointer = format!("/{}", key.replace('.', "/"));
                assert!(
                    values.pointer(&pointer).is_some(),
                    "{at}: `helm --set {key}`: the chart has no value {key}"
                );
            }
        }
        p if p.starts_with("scripts/") => {}
        _ => {}
    }
}

#[test]
fn every_code_block_names_its_language() {
    let blocks = all_blocks();
    assert!(
        blocks.len() >= 40,
        "too few code blocks found: {}",
        blocks.len()
    );
    for b in &blocks {
        assert!(
            ["yaml", "bash", "ini", "text"].contains(&b.lang.as_str()),
            "{}: a code block of language `{}`; use yaml, bash, ini or text so it is checked",
            b.at,
            b.lang
        );
    }
}

#[test]
fn every_yaml_block_passes_its_checker() {
    let yaml: Vec<Block> = all_blocks()
        .into_iter()
        .filter(|b| b.lang == "yaml")
        .collect();
    assert!(yaml.len() >= 15, "too few YAML blocks: {}", yaml.len());
    for b in &yaml {
        check_yaml(b);
    }
}

#[test]
fn every_shown_command_line_parses() {
    let xtasks = xtask_commands();
    assert!(xtasks.contains(&"vm-test".to_string()), "{xtasks:?}");
    let values = helm_values();
    let mut kernelseal_lines = 0;
    for b in all_blocks() {
        let lines = match b.lang.as_str() {
            "bash" => command_lines(&b.text),
            "ini" => b
                .text
                .lines()
                .filter_map(|l| l.strip_prefix("ExecStart="))
                .map(str::to_string)
                .collect(),
            _ => continue,
        };
        for line in lines {
            if line.contains("kernelseal") {
                kernelseal_lines += 1;
            }
            check_command(&b.at, &line, &xtasks, &values);
        }
    }
    assert!(
        kernelseal_lines >= 20,
        "too few kernelseal command lines: {kernelseal_lines}"
    );
}

// ---- the checks can fail -------------------------------------------------

#[test]
fn a_misspelt_option_or_field_fails() {
    let values = helm_values();
    let xtasks = xtask_commands();
    let bad_lines = [
        "sudo kernelseal agent --confg examples/config.yaml",
        "kernelseal-exec --verbos -- app",
        "kernelseal exec --on-error maybe -- app",
        "kubectl -n ks exec ds/a -- kernelseal chek",
        "cargo xtask vm-tests",
        "kubectl apply -f deploy/manifests/no-such.yaml",
        "helm install ks deploy/helm/kernelseal --set agent.nope=1",
        "kernelseal csi validate deploy/examples/csi/app.yaml",
    ];
    for line in bad_lines {
        let failed = std::panic::catch_unwind(|| check_command("probe", line, &xtasks, &values));
        assert!(failed.is_err(), "`{line}` was accepted");
    }
    let bad_yaml = [
        "policy:\n  mode: enforcing\n",
        "- name: X\n  source: { vaultRef: { path: app } , envRef: Y }\n",
        "spec:\n  provider: kernelseal\n  parameters:\n    objects: |\n      - objectName: a\n",
        "apiVersion: v1\nkind: ConfigMap\n",
        "groups:\n  - name: g\n    rules:\n      - alert: A\n",
        "what: ever\n",
    ];
    for text in bad_yaml {
        let block = Block {
            at: "probe".into(),
            lang: "yaml".into(),
            text: text.into(),
        };
        let failed = std::panic::catch_unwind(|| check_yaml(&block));
        assert!(failed.is_err(), "accepted:\n{text}");
    }
}

/// A `secretRefs` item names what it delivers: `name`, or an expansion
/// (`keys: all`, `jmesPath`).
fn names_a_delivery(item: &Value) -> bool {
    item["name"].is_string() || item["keys"].is_string() || item["jmesPath"].is_array()
}
