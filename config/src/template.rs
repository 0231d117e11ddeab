//! `template:` sources: a text rendered with minijinja over other refs
//! (`postgresql://{{ db.username }}:{{ db.password }}@db:5432/app`).
//!
//! The parser compiles the text once to refuse what can never render: a
//! syntax error, a variable that is none of the refs, a ref the text never
//! reads. The providers render it with the same [`environment`], so what
//! the parser accepts is what renders.

use std::collections::{BTreeMap, BTreeSet};

use minijinja::{Environment, UndefinedBehavior};

use crate::secret_ref::SecretRef;

/// A secret rendered from `text` over the values of `refs`, each of which
/// is fetched as if it were a secret of its own (never another template).
#[derive(Clone)]
pub struct TemplateRef {
    /// The template's text. Not printed: it is config, but it may hold a
    /// literal as well as a `value` can.
    pub text: String,
    /// The variables the text reads, by name.
    pub refs: BTreeMap<String, SecretRef>,
}

/// Instructions one render may run: far more than any DSN or config file
/// needs, and a bound on a loop over `range()` nested in another.
pub const TEMPLATE_FUEL: u64 = 100_000;

/// The one environment templates compile and render in: no loader (so
/// `include`, `import` and `extends` are not even parsed), nothing of the
/// process's environment or files, no HTML escaping, strict undefined
/// values (a missing key is an error, not an empty string), a
/// `percent_encode` filter for URL parts, the text's
/// trailing newline kept and the newline after a block tag dropped.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.add_filter("percent_encode", percent_encode);
    // A config file or `.pgpass` ends with its newline; a block tag on a
    // line of its own leaves no empty line behind (as in Ansible).
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .trim_blocks(true)
        .build();
    // Building the default delimiters cannot fail.
    env.set_syntax(syntax.unwrap_or_default());
    env
}

/// The `percent_encode` filter: every byte but RFC 3986's unreserved
/// characters (`A-Z a-z 0-9 - . _ ~`) as `%XX`. Jinja's `urlencode` keeps
/// `/` as is, which a password in a URL's user info must not.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Why a template's text cannot render. Messages name variables and
/// lines, never the text around them, and quote nothing: the config's
/// error path cuts quoted input out of messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateProblem {
    #[error("does not compile: {0}")]
    Syntax(String),
    #[error(
        "reads {name}, which is not one of the template's refs ({})",
        known_list(known)
    )]
    UnknownVariable { name: String, known: Vec<String> },
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "it has none".to_string()
    } else {
        known.join(", ")
    }
}

/// What the text reads: each variable, with the keys read from it by
/// plain attribute access (`db.username` → `db`: {`username`}).
pub fn reads(text: &str) -> Result<BTreeMap<String, BTreeSet<String>>, TemplateProblem> {
    let env = environment();
    let template = env
        .template_from_named_str("template", text)
        .map_err(|e| TemplateProblem::Syntax(describe(&e)))?;
    Ok(reads_of(&env, &template))
}

/// What a compiled template reads (see [`reads`]): for a caller that has
/// compiled it already and must not pay for it twice.
pub fn reads_of(
    env: &minijinja::Environment<'_>,
    template: &minijinja::Template<'_, '_>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in template.undeclared_variables(true) {
        let mut parts = path.split('.');
        let Some(var) = parts.next() else { continue };
        // Functions such as `range` and `namespace` are globals, not refs.
        if env.globals().any(|(g, _)| g == var) {
            continue;
        }
        let keys = out.entry(var.to_string()).or_default();
        keys.extend(parts.next().map(str::to_string));
    }
    out
}

/// Checks that `text` compiles and reads only refs named in `refs`;
/// returns the refs it never reads.
pub fn check<'a>(
    text: &str,
    refs: impl IntoIterator<Item = &'a str> + Clone,
) -> Result<Vec<&'a str>, TemplateProblem> {
    let read = reads(text)?;
    let known: BTreeSet<&str> = refs.clone().into_iter().collect();
    if let Some(name) = read.keys().find(|v| !known.contains(v.as_str())) {
        return Err(TemplateProblem::UnknownVariable {
            name: name.clone(),
            known: known.iter().map(|k| k.to_string()).collect(),
        });
    }
    Ok(refs
        .into_iter()
        .filter(|r| !read.contains_key(*r))
        .collect())
}

/// A minijinja error as kind, detail and line. Its details name token
/// kinds ("unexpected identifier"), not the text.
pub fn describe(e: &minijinja::Error) -> String {
    let mut out = e.kind().to_string();
    if let Some(d) = e.detail() {
        out.push_str(": ");
        out.push_str(d);
    }
    if let Some(line) = e.line() {
        out.push_str(&format!(" (line {line})"));
    }
    out
}

/// A ref name a template can read as a plain variable.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

impl std::fmt::Display for TemplateRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("template(")?;
        for (i, (name, r)) in self.refs.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}: {r}")?;
        }
        f.write_str(")")
    }
}

impl std::fmt::Debug for TemplateRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TemplateRef({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lists_refs_and_their_keys() {
        let r = reads("{{ db.username }}:{{ db.password }}@{{ host }}{% for i in range(2) %}{{ i }}{% endfor %}")
            .unwrap();
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(
            r["db"].iter().map(String::as_str).collect::<Vec<_>>(),
            ["password", "username"]
        );
        assert!(r["host"].is_empty());
    }

    #[test]
    fn include_import_and_extends_do_not_compile() {
        for text in [
            "{% include 'x' %}",
            "{% import 'x' as y %}",
            "{% extends 'x' %}",
            "{% from 'x' import y %}",
        ] {
            let e = reads(text).unwrap_err();
            assert!(matches!(e, TemplateProblem::Syntax(_)), "{text}: {e:?}");
        }
    }

    #[test]
    fn a_syntax_error_names_the_line_not_the_text() {
        let e = reads("line one\n{{ db.password hunter2 }}").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("line 2"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn unknown_and_unused_refs() {
        let e = check("{{ dbb.password }}", ["db"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "reads dbb, which is not one of the template's refs (db)"
        );
        assert_eq!(check("{{ db }}", ["db", "host"]).unwrap(), ["host"]);
    }

    #[test]
    fn ref_names_are_identifiers() {
        assert!(is_identifier("db_1"));
        assert!(!is_identifier("1db"));
        assert!(!is_identifier("db-creds"));
        assert!(!is_identifier(""));
    }
}
