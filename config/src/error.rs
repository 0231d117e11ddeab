use crate::input::InputError;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read: missing, not a regular file (a FIFO, a
    /// device, a directory) or over [`crate::MAX_CONFIG_BYTES`]. The
    /// message names the config file.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The YAML did not parse or did not fit the schema.
    #[error("{origin}{}: {message}", location_suffix(*line, *column))]
    Syntax {
        origin: String,
        line: Option<u64>,
        column: Option<u64>,
        message: String,
    },
    /// The YAML fits the schema but a value is not acceptable.
    #[error("{origin}{}: {field}: {message}", location_suffix(*line, None))]
    Invalid {
        origin: String,
        line: Option<u64>,
        field: String,
        message: String,
    },
}

fn location_suffix(line: Option<u64>, column: Option<u64>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

impl ConfigError {
    pub(crate) fn from_yaml(origin: &str, err: &serde_saphyr::Error) -> Self {
        let loc = err.location().filter(|l| l.line() > 0);
        // serde-saphyr's Display repeats the location and quotes a snippet of
        // the input; the snippet could contain a literal secret `value`, so
        // only the first line (the message itself) is kept.
        let full = err.to_string();
        let message = full.lines().next().unwrap_or("invalid YAML").trim();
        let message = strip_location_prefix(message.strip_prefix("error: ").unwrap_or(message));
        let message = without_input(&message);
        ConfigError::Syntax {
            origin: origin.to_string(),
            line: loc.map(|l| l.line()),
            column: loc.map(|l| l.column()),
            message,
        }
    }

    /// The dotted field path this error is about, when it is known.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// Drops serde-saphyr's own "line N column M: " prefix; the location is
/// already given once, in `file:line:column` form.
fn strip_location_prefix(message: &str) -> String {
    let rest = message.strip_prefix("line ").and_then(|r| {
        let (_, r) = r.split_once(" column ")?;
        let (_, r) = r.split_once(": ")?;
        Some(r)
    });
    rest.unwrap_or(message).to_string()
}

/// serde's messages quote the scalar they were given: "unknown variant
/// `…`", "invalid type: string \"…\"". YAML lets a literal secret
/// `value` be anchored and aliased into any field (`delivery: *pw`), so the
/// quoted text is cut; what was expected (the allowed variants, the type)
/// and the location stay.
fn without_input(message: &str) -> String {
    // `unknown variant `<input>`, expected …` (the input is not escaped,
    // so the end is the last "`, ").
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        return match rest.rfind("`, ") {
            Some(end) => format!("unknown variant, {}", &rest[end + 3..]),
            None => "unknown variant".into(),
        };
    }
    // `string "<input>"` as serde's `Unexpected::Str` prints it (Debug
    // escaping, so the end is the first unescaped quote).
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("string \"") {
        out.push_str(&rest[..at + "string".len()]);
        let quoted = &rest[at + "string \"".len()..];
        let mut end = None;
        let mut escaped = false;
        for (i, c) in quoted.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        match end {
            Some(i) => rest = &quoted[i + 1..],
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::without_input;

    #[test]
    fn quoted_input_is_cut() {
        assert_eq!(
            without_input("unknown variant `s3cr`et`, expected one of env, file"),
            "unknown variant, expected one of env, file"
        );
        assert_eq!(
            without_input(r#"invalid type: string "pw\"x", expected u32"#),
            "invalid type: string, expected u32"
        );
        assert_eq!(
            without_input("unknown field `x`, expected one of a"),
            "unknown field `x`, expected one of a"
        );
    }
}
