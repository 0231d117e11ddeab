//! Rendering a `template:` source over the values of its refs.
//!
//! Each ref's value is handed to the template as a map when it is a JSON
//! object (`db.username`), else as a string. The output is written into
//! a zeroizing buffer that never reallocates in place (it grows by copying
//! into a fresh zeroizing buffer, wiping the old one), then sealed into a
//! [`SecretValue`]; the JSON trees parsed on the way are wiped.
//!
//! What is not in secret memory: minijinja holds each string it is given
//! as its own `Value` (short strings inline, longer ones in an `Arc<str>`);
//! those copies, and intermediate strings a filter or `{% set %}` block
//! makes (`urlencode`, `upper`, string concatenation), live on the
//! ordinary heap for the duration of the render and are freed, not wiped:
//! minijinja offers no hook to wipe them.

use std::collections::BTreeMap;
use std::time::SystemTime;

use kernelseal_config::{SecretRef, TemplateRef, template_environment, template_reads_of};
use minijinja::Value;
use zeroize::Zeroizing;

use crate::error::Error;
use crate::json;
use crate::limit::MAX_VALUE_BYTES;
use crate::value::{Metadata, SecretValue, content_tag};

/// The provider name rendered values carry in their metadata.
pub const TEMPLATE_PROVIDER: &str = "template";

/// The values a template's refs were read with (by ref name) and the
/// render: what [`fetch_and_render`] gives.
pub struct Fetched {
    pub values: BTreeMap<String, SecretValue>,
    pub rendered: Result<SecretValue, Error>,
}

/// Reads each of `template`'s refs with `fetch`, in order, and renders
/// over them; the first ref that cannot be read ends it, named in the
/// error. The values read come back too: a caller may hold or revoke what
/// they lease.
pub async fn fetch_and_render<'t, F>(
    template: &'t TemplateRef,
    reference: &str,
    mut fetch: impl FnMut(&'t SecretRef) -> F,
) -> Fetched
where
    F: Future<Output = Result<SecretValue, Error>>,
{
    let mut values = BTreeMap::new();
    for (name, inner) in &template.refs {
        match fetch(inner).await {
            Ok(value) => {
                values.insert(name.clone(), value);
            }
            Err(e) => {
                let failed = Error::TemplateRefFailed {
                    reference: reference.to_string(),
                    name: name.clone(),
                    error: Box::new(e),
                };
                return Fetched {
                    values,
                    rendered: Err(failed),
                };
            }
        }
    }
    let rendered = render(template, reference, &values);
    Fetched { values, rendered }
}

/// Renders `template` over `values`, the fetched value of each of its refs
/// by ref name. `reference` names the template in errors (its `Display`).
pub fn render(
    template: &TemplateRef,
    reference: &str,
    values: &BTreeMap<String, SecretValue>,
) -> Result<SecretValue, Error> {
    let fail = |message: String| Error::Template {
        reference: reference.to_string(),
        message,
    };
    let env = template_environment();
    // The config was checked when read, with the error's detail; here only
    // its kind and line, like a render error's.
    let compiled = env
        .template_from_named_str("template", &template.text)
        .map_err(|e| fail(format!("does not compile: {}{}", e.kind(), line_of(&e))))?;
    let reads = template_reads_of(&env, &compiled);
    let mut context = Vec::with_capacity(values.len());
    let mut capacity = template.text.len();
    for (name, keys) in &reads {
        let value = values.get(name).ok_or_else(|| Error::TemplateRefMissing {
            reference: reference.to_string(),
            name: name.clone(),
        })?;
        capacity += value.len();
        context.push((name.as_str(), exposed(value, name, keys, reference)?));
    }
    let mut out = Output::with_capacity(capacity.min(MAX_VALUE_BYTES));
    let rendered = compiled.render_captured_to(Value::from_pairs(context), &mut out);
    if out.over_limit {
        return Err(Error::ValueTooLarge {
            reference: reference.to_string(),
            what: "the rendered template".into(),
            limit: MAX_VALUE_BYTES,
        });
    }
    // The error's detail can quote a value ("unable to calculate 1234 +
    // …"), so only its kind and line are kept.
    rendered.map_err(|e| fail(format!("rendering failed: {}{}", e.kind(), line_of(&e))))?;
    let mut meta = Metadata::new(reference, TEMPLATE_PROVIDER);
    meta.version = Some(content_tag(&out.buf));
    meta.fetched_at = SystemTime::now();
    meta.ttl = values.values().filter_map(|v| v.metadata().ttl).min();
    Ok(SecretValue::new(out.buf, meta))
}

/// ` (line N)` of an engine error, when it has one.
fn line_of(e: &minijinja::Error) -> String {
    e.line().map(|l| format!(" (line {l})")).unwrap_or_default()
}

/// One ref's value as the template sees it: a map for a JSON object (each
/// key the text reads must be there), else a string (then it has no keys).
fn exposed(
    value: &SecretValue,
    name: &str,
    keys: &std::collections::BTreeSet<String>,
    reference: &str,
) -> Result<Value, Error> {
    if let Ok(mut tree) = serde_json::from_slice::<serde_json::Value>(value.expose_bytes()) {
        let out = match &tree {
            serde_json::Value::Object(map) => match keys.iter().find(|k| !map.contains_key(*k)) {
                Some(key) => Err(Error::TemplateKeyMissing {
                    reference: reference.to_string(),
                    name: name.to_string(),
                    key: key.clone(),
                }),
                None => Ok(from_json(&tree)),
            },
            _ => plain(value, name, keys, reference),
        };
        json::wipe(&mut tree);
        return out;
    }
    plain(value, name, keys, reference)
}

/// A value that is not a JSON object: text, without keys.
fn plain(
    value: &SecretValue,
    name: &str,
    keys: &std::collections::BTreeSet<String>,
    reference: &str,
) -> Result<Value, Error> {
    if let Some(key) = keys.first() {
        return Err(Error::TemplateNotObject {
            reference: reference.to_string(),
            name: name.to_string(),
            key: key.clone(),
        });
    }
    value
        .expose_str()
        .map(Value::from)
        .ok_or_else(|| Error::Template {
            reference: reference.to_string(),
            message: format!("ref {name} is not UTF-8 text"),
        })
}

/// A JSON tree as minijinja values (copies: see the module's notes).
fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::from(i),
            (_, Some(u), _) => Value::from(u),
            (_, _, Some(f)) => Value::from(f),
            _ => Value::from(()),
        },
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => items.iter().map(from_json).collect(),
        serde_json::Value::Object(map) => {
            Value::from_pairs(map.iter().map(|(k, v)| (k.as_str(), from_json(v))))
        }
    }
}

/// Where a render writes: a zeroizing buffer that grows by copying into a
/// new zeroizing buffer (a `Vec`'s own growth would leave the old
/// allocation unwiped), and refuses to grow past [`MAX_VALUE_BYTES`].
struct Output {
    buf: Zeroizing<Vec<u8>>,
    over_limit: bool,
}

impl Output {
    fn with_capacity(capacity: usize) -> Self {
        Output {
            buf: Zeroizing::new(Vec::with_capacity(capacity.max(64))),
            over_limit: false,
        }
    }
}

impl std::io::Write for Output {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let needed = self.buf.len() + data.len();
        if needed > MAX_VALUE_BYTES {
            self.over_limit = true;
            return Err(std::io::Error::other("over the value size limit"));
        }
        if needed > self.buf.capacity() {
            let grown = needed.max(2 * self.buf.capacity()).min(MAX_VALUE_BYTES);
            let mut bigger = Zeroizing::new(Vec::with_capacity(grown));
            bigger.extend_from_slice(&self.buf);
            // The old buffer is wiped as it drops.
            self.buf = bigger;
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
