//! Expansion: one `secretRefs` entry whose value is a JSON object delivered
//! as several names — every top-level key (`keys: all`, after an optional
//! `prefix`) or selected values (`jmesPath`, each under its own `name`).
//!
//! What is here is the configuration's side: which names an entry asks
//! for, the path expressions, and how a key becomes a name. The keys of a
//! `keys: all` entry are known only once the value is fetched, so mapping
//! them ([`delivered_name`]) happens then, in the providers crate; the
//! rules live here so that validation and delivery cannot drift apart.

use crate::schema::Delivery;

/// The name or names one `secretRefs` entry is delivered under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Naming {
    /// `name:`: the whole value under one name.
    One(String),
    /// `keys: all`: each top-level key of the JSON object under its mapped
    /// name, after `prefix` (empty when not set).
    AllKeys { prefix: String },
    /// `jmesPath:`: each selected value under the name its entry gives.
    Paths(Vec<NamedPath>),
}

/// One `jmesPath:` entry: where the value sits and the name it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPath {
    pub path: JsonPath,
    pub name: String,
}

impl Naming {
    /// The names known before anything is fetched: `name`, or each
    /// `jmesPath` entry's; none for `keys: all`.
    pub fn fixed_names(&self) -> Vec<&str> {
        match self {
            Naming::One(name) => vec![name.as_str()],
            Naming::AllKeys { .. } => Vec::new(),
            Naming::Paths(paths) => paths.iter().map(|p| p.name.as_str()).collect(),
        }
    }

    /// What messages call the entry: its name, `PREFIX*` for `keys: all`
    /// (`*` alone without a prefix), or its names joined by `,`.
    pub fn label(&self) -> String {
        match self {
            Naming::One(name) => name.clone(),
            Naming::AllKeys { prefix } => format!("{prefix}*"),
            Naming::Paths(paths) => paths
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// Whether the value must be a JSON object taken apart.
    pub fn expands(&self) -> bool {
        !matches!(self, Naming::One(_))
    }
}

/// A path into a JSON value: the subset of JMESPath that selects one value
/// — fields (`db.user`, `"db-host".port`) and array indexes (`hosts[0]`,
/// `hosts[-1]` for the last). Projections, filters, functions and pipes
/// would select several values or compute new ones; they are refused when
/// the config is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    steps: Vec<Step>,
}

/// One step of a [`JsonPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A field of an object.
    Field(String),
    /// An element of an array; negative counts from the end.
    Index(i64),
}

impl JsonPath {
    /// Parses the JMESPath subset. The error says what is wrong and where
    /// (a character position), for a message naming the field.
    pub fn parse(text: &str) -> Result<Self, String> {
        let steps = parse_steps(text)?;
        Ok(JsonPath {
            text: text.to_string(),
            steps,
        })
    }

    /// The path of one top-level field (what `keys: all` takes apart).
    pub fn field(key: &str) -> Self {
        JsonPath {
            text: format!("{key:?}"),
            steps: vec![Step::Field(key.to_string())],
        }
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }
}

impl std::fmt::Display for JsonPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

const UNSUPPORTED: &str = "only fields (a.b, \"a-b\".c) and indexes ([0], [-1]) are supported; \
                           projections, filters, functions and pipes are not";

fn parse_steps(text: &str) -> Result<Vec<Step>, String> {
    let bytes = text.as_bytes();
    let mut steps = Vec::new();
    let mut at = 0;
    // A field is expected at the start and after each '.'; an index may
    // follow anything.
    let mut want_field = true;
    if text.is_empty() {
        return Err("the path is empty".into());
    }
    while at < bytes.len() {
        match bytes[at] {
            b'[' if !want_field || at == 0 => {
                let end = text[at..]
                    .find(']')
                    .map(|e| at + e)
                    .ok_or_else(|| format!("'[' at character {} is not closed", at + 1))?;
                let inner = &text[at + 1..end];
                let index = inner
                    .parse::<i64>()
                    .ok()
                    .filter(|_| !inner.starts_with('+'))
                    .ok_or_else(|| format!("at character {}: {UNSUPPORTED}", at + 1))?;
                steps.push(Step::Index(index));
                at = end + 1;
                want_field = false;
            }
            b'.' if !want_field => {
                at += 1;
                want_field = true;
                if at == bytes.len() {
                    return Err("the path ends with '.'".into());
                }
            }
            b'"' if want_field => {
                let end = closing_quote(bytes, at)
                    .ok_or_else(|| format!("'\"' at character {} is not closed", at + 1))?;
                // JMESPath's quoted identifiers are JSON strings.
                let name: String = serde_json::from_str(&text[at..=end]).map_err(|_| {
                    format!(
                        "the quoted name at character {} is not a JSON string",
                        at + 1
                    )
                })?;
                steps.push(Step::Field(name));
                at = end + 1;
                want_field = false;
            }
            c if want_field && (c == b'_' || c.is_ascii_alphabetic()) => {
                let len = text[at..]
                    .find(|ch: char| !(ch == '_' || ch.is_ascii_alphanumeric()))
                    .unwrap_or(text.len() - at);
                steps.push(Step::Field(text[at..at + len].to_string()));
                at += len;
                want_field = false;
            }
            _ => return Err(format!("at character {}: {UNSUPPORTED}", at + 1)),
        }
    }
    Ok(steps)
}

/// The index of the quote closing the one at `open`, skipping escapes.
fn closing_quote(bytes: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Why a key cannot be delivered under a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the key is empty, so it names nothing")]
    Empty,
    #[error("a file cannot be named {0:?}")]
    DotName(&'static str),
    #[error("a file name cannot hold a NUL byte")]
    Nul,
    #[error("the file name would be {len} bytes, over the {FILE_NAME_MAX}-byte limit")]
    TooLong { len: usize },
}

/// Longest file name Linux file systems take (NAME_MAX).
pub const FILE_NAME_MAX: usize = 255;

/// The name a key of an expanded JSON object is delivered under, after
/// `prefix`:
///
/// - env: every character outside `[A-Za-z0-9_]` becomes `_` (one per
///   character, so `é` is one `_`), case is kept, and a name that would
///   start with a digit gets a leading `_`;
/// - file: `/` becomes `_` (a delivered file sits directly in the secrets
///   directory; an SSM path's levels become `_`), everything else is kept;
///   an empty name, `.`, `..`, a NUL byte or more than 255 bytes is refused.
///
/// Two keys that map to the same name are the caller's to refuse: which
/// one would win is arbitrary.
pub fn delivered_name(prefix: &str, key: &str, delivery: Delivery) -> Result<String, NameError> {
    if key.is_empty() {
        return Err(NameError::Empty);
    }
    match delivery {
        Delivery::Env => {
            let mapped: String = key
                .chars()
                .map(|ch| {
                    if ch == '_' || ch.is_ascii_alphanumeric() {
                        ch
                    } else {
                        '_'
                    }
                })
                .collect();
            let name = format!("{prefix}{mapped}");
            Ok(if name.starts_with(|c: char| c.is_ascii_digit()) {
                format!("_{name}")
            } else {
                name
            })
        }
        Delivery::File => {
            if key.contains('\0') {
                return Err(NameError::Nul);
            }
            let name = format!("{prefix}{}", key.replace('/', "_"));
            match name.as_str() {
                "." => Err(NameError::DotName(".")),
                ".." => Err(NameError::DotName("..")),
                _ if name.len() > FILE_NAME_MAX => Err(NameError::TooLong { len: name.len() }),
                _ => Ok(name),
            }
        }
    }
}

/// Whether `name` can be delivered as written: an environment variable
/// name (`[A-Za-z_][A-Za-z0-9_]*`) or a file name (not empty, `.` or `..`,
/// no `/` or NUL).
pub fn is_delivery_name(name: &str, delivery: Delivery) -> bool {
    match delivery {
        Delivery::Env => {
            let mut chars = name.chars();
            matches!(chars.next(), Some(ch) if ch == '_' || ch.is_ascii_alphabetic())
                && chars.all(|ch| ch == '_' || ch.is_ascii_alphanumeric())
        }
        Delivery::File => {
            !name.is_empty()
                && name != "."
                && name != ".."
                && name.len() <= FILE_NAME_MAX
                && !name.contains('/')
                && !name.contains('\0')
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_map_what_a_variable_cannot_hold() {
        let env = |p: &str, k: &str| delivered_name(p, k, Delivery::Env).unwrap();
        assert_eq!(env("", "username"), "username");
        assert_eq!(env("", "db.host"), "db_host");
        assert_eq!(env("", "api-key"), "api_key");
        assert_eq!(env("", "a/b c"), "a_b_c");
        assert_eq!(env("", "pässword"), "p_ssword");
        assert_eq!(env("", "2fa"), "_2fa");
        assert_eq!(env("APP_", "2fa"), "APP_2fa");
        assert_eq!(env("APP_", "Token"), "APP_Token", "case is kept");
        assert_eq!(delivered_name("", "", Delivery::Env), Err(NameError::Empty));
    }

    #[test]
    fn file_names_keep_the_key_but_never_leave_the_directory() {
        let file = |p: &str, k: &str| delivered_name(p, k, Delivery::File);
        assert_eq!(file("", "tls.crt").unwrap(), "tls.crt");
        assert_eq!(file("", "db/password").unwrap(), "db_password");
        assert_eq!(file("", "../etc/passwd").unwrap(), ".._etc_passwd");
        assert_eq!(file("app-", "Key").unwrap(), "app-Key");
        assert_eq!(file("", ".."), Err(NameError::DotName("..")));
        assert_eq!(file("", "."), Err(NameError::DotName(".")));
        assert_eq!(file("", "a\0b"), Err(NameError::Nul));
        assert!(matches!(
            file("", &"k".repeat(256)),
            Err(NameError::TooLong { len: 256 })
        ));
    }

    #[test]
    fn the_jmespath_subset_parses_fields_quotes_and_indexes() {
        let steps = |t: &str| JsonPath::parse(t).unwrap().steps().to_vec();
        let f = |s: &str| Step::Field(s.to_string());
        assert_eq!(steps("username"), [f("username")]);
        assert_eq!(steps("db.user"), [f("db"), f("user")]);
        assert_eq!(
            steps(r#""db-host".port"#),
            [f("db-host"), f("port")],
            "quoted names hold what identifiers cannot"
        );
        assert_eq!(steps(r#""a\"b""#), [f("a\"b")]);
        assert_eq!(
            steps("hosts[0].name"),
            [f("hosts"), Step::Index(0), f("name")]
        );
        assert_eq!(steps("[-1]"), [Step::Index(-1)]);
        assert_eq!(steps("m[1][2]"), [f("m"), Step::Index(1), Step::Index(2)]);
        for bad in [
            "",
            "a.",
            ".a",
            "a..b",
            "a[*]",
            "a[?x==`1`]",
            "length(a)",
            "a | b",
            "{a: b}",
            "a[",
            "\"a",
            "a b",
            "a.[0]",
            "a[+1]",
            "*",
        ] {
            assert!(JsonPath::parse(bad).is_err(), "{bad:?} parsed");
        }
        let e = JsonPath::parse("items[*].name").unwrap_err();
        assert!(
            e.contains("character 6") && e.contains("projections"),
            "{e}"
        );
    }

    #[test]
    fn names_as_written_are_checked_per_delivery() {
        assert!(is_delivery_name("DB_USER", Delivery::Env));
        assert!(!is_delivery_name("db.user", Delivery::Env));
        assert!(!is_delivery_name("1X", Delivery::Env));
        assert!(is_delivery_name("db.user", Delivery::File));
        assert!(!is_delivery_name("a/b", Delivery::File));
        assert!(!is_delivery_name("..", Delivery::File));
    }

    #[test]
    fn labels_name_the_entry() {
        assert_eq!(Naming::One("A".into()).label(), "A");
        assert_eq!(
            Naming::AllKeys {
                prefix: "APP_".into()
            }
            .label(),
            "APP_*"
        );
        let paths = Naming::Paths(vec![
            NamedPath {
                path: JsonPath::parse("a").unwrap(),
                name: "A".into(),
            },
            NamedPath {
                path: JsonPath::parse("b").unwrap(),
                name: "B".into(),
            },
        ]);
        assert_eq!(paths.label(), "A,B");
        assert_eq!(paths.fixed_names(), ["A", "B"]);
        assert!(paths.expands());
    }
}
