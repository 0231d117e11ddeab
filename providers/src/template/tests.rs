use std::collections::BTreeMap;

use zeroize::Zeroizing;

use super::*;
use crate::reference::SecretRef;

fn value(text: &str) -> SecretValue {
    SecretValue::new(
        Zeroizing::new(text.as_bytes().to_vec()),
        Metadata::new("test", "test"),
    )
}

/// A template over `refs` (names only: the values come separately), as
/// the parser would build it but without its checks.
fn template(text: &str, refs: &[&str]) -> TemplateRef {
    TemplateRef {
        text: text.into(),
        refs: refs
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    SecretRef::Env {
                        var: n.to_uppercase(),
                    },
                )
            })
            .collect(),
    }
}

fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, SecretValue> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), value(v)))
        .collect()
}

fn rendered(text: &str, pairs: &[(&str, &str)]) -> Result<String, Error> {
    let names: Vec<&str> = pairs.iter().map(|(n, _)| *n).collect();
    render(&template(text, &names), "template(test)", &values(pairs))
        .map(|v| v.expose_str().unwrap().to_string())
}

const DB: &str = r#"{"username":"app","password":"p@ss/w0rd","port":5432,"opts":{"ssl":true}}"#;

#[test]
fn a_json_object_is_a_map_and_anything_else_a_string() {
    let out = rendered(
        "postgresql://{{ db.username }}:{{ db.password | percent_encode }}@{{ host }}:{{ db.port }}/app?ssl={{ db.opts.ssl }}&p={{ db.password | urlencode }}",
        &[("db", DB), ("host", "db.internal")],
    )
    .unwrap();
    // Jinja's rules: `urlencode` keeps `/`, booleans print as True/False.
    assert_eq!(
        out,
        "postgresql://app:p%40ss%2Fw0rd@db.internal:5432/app?ssl=True&p=p%40ss/w0rd"
    );
    // JSON that is not an object stays the text it is.
    assert_eq!(rendered("[{{ n }}]", &[("n", "42")]).unwrap(), "[42]");
    assert_eq!(rendered("{{ s }}", &[("s", "\"q\"")]).unwrap(), "\"q\"");
}

#[test]
fn the_metadata_names_the_template_and_changes_with_the_content() {
    let t = template("{{ a }}", &["a"]);
    let one = render(&t, "template(a: envRef A)", &values(&[("a", "x")])).unwrap();
    let two = render(&t, "template(a: envRef A)", &values(&[("a", "y")])).unwrap();
    assert_eq!(one.metadata().source, "template(a: envRef A)");
    assert_eq!(one.metadata().provider, TEMPLATE_PROVIDER);
    assert_ne!(one.version(), two.version());
}

#[test]
fn a_missing_key_names_the_ref_and_key_and_no_value() {
    let e = rendered("{{ db.user }}:{{ db.password }}", &[("db", DB)]).unwrap_err();
    assert_eq!(
        e,
        Error::TemplateKeyMissing {
            reference: "template(test)".into(),
            name: "db".into(),
            key: "user".into(),
        }
    );
    let shown = format!("{e} {e:?}");
    assert!(shown.contains("ref db has no key \"user\""), "{shown}");
    assert!(!shown.contains("p@ss") && !shown.contains("app"), "{shown}");
}

#[test]
fn keys_of_a_plain_string_are_refused_without_the_string() {
    let e = rendered("{{ pw.value }}", &[("pw", "hunter2")]).unwrap_err();
    assert!(matches!(e, Error::TemplateNotObject { .. }), "{e:?}");
    let shown = format!("{e} {e:?}");
    assert!(shown.contains("ref pw is not a JSON object"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn a_failed_render_keeps_the_kind_and_line_only() {
    // minijinja's detail for this names neither value, but others do
    // ("unable to calculate 1234 + …"): none is kept.
    let e = rendered("ok\n{{ db.port + db.password }}", &[("db", DB)]).unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.starts_with("template(test): rendering failed: invalid operation (line 2)"),
        "{shown}"
    );
    assert!(
        !shown.contains("p@ss") && !shown.contains("5432"),
        "{shown}"
    );
}

#[test]
fn include_and_import_do_not_compile_and_nothing_reads_the_environment() {
    for text in [
        "{% include '/etc/passwd' %}",
        "{% import 'x' as y %}{{ y }}",
        "{% extends 'base' %}",
    ] {
        let e = rendered(text, &[]).unwrap_err();
        assert!(e.to_string().contains("does not compile"), "{text}: {e}");
    }
    // There is no function or variable that reaches the process: an
    // unknown name is a variable without a value, never a lookup.
    for text in [
        "{{ HOME }}",
        "{{ env.HOME }}",
        "{{ lookup('env', 'HOME') }}",
    ] {
        let e = rendered(text, &[]).unwrap_err();
        assert!(
            matches!(e, Error::TemplateRefMissing { .. }),
            "{text}: {e:?}"
        );
    }
}

#[test]
fn output_and_work_are_bounded() {
    let big = "x".repeat(64 * 1024);
    let e = rendered(
        "{% for i in range(20) %}{{ big }}{% endfor %}",
        &[("big", &big)],
    )
    .unwrap_err();
    assert!(matches!(e, Error::ValueTooLarge { .. }), "{e:?}");
    let e = rendered(
        "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().contains("fuel"), "{e}");
}

#[test]
fn the_trailing_newline_stays_and_block_lines_leave_none() {
    let out = rendered(
        "{% for k in ['a', 'b'] %}\n{{ k }}:{{ db.username }}\n{% endfor %}\nuser={{ db.username }}\n",
        &[("db", DB)],
    )
    .unwrap();
    assert_eq!(out, "a:app\nb:app\nuser=app\n");
}

#[test]
fn the_output_buffer_grows_by_copy_and_is_bounded() {
    use std::io::Write;
    let mut out = Output::with_capacity(1);
    out.write_all(&[7u8; 100]).unwrap();
    assert_eq!(out.buf.len(), 100);
    assert!(out.buf.capacity() >= 100);
    let e = out.write_all(&vec![0u8; MAX_VALUE_BYTES]).unwrap_err();
    assert!(out.over_limit, "{e}");
    assert_eq!(out.buf.len(), 100, "nothing of a refused write is kept");
}
