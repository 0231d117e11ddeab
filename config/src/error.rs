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
/// `…`", "invalid type: string \"…\"", "integer `1234`", "value `…` is
/// not a finite number". YAML lets a literal secret `value` be anchored
/// and aliased into any field (`delivery: *pw`), so everything from the
/// first quote to the last one before serde's own ", expected …" clause is
/// cut, whatever the message; what was expected (the allowed variants, the
/// type) and the location stay. Field names are the schema's or the
/// author's keys, not values: "unknown field `x`" keeps its name.
fn without_input(message: &str) -> String {
    if message.starts_with("unknown field") || message.starts_with("missing field") {
        return message.to_string();
    }
    let is_quote = |c: char| c == '`' || c == '"';
    // serde's "expected" clause comes last and quotes nothing of the input;
    // a split whose tail holds a quote would be inside the input.
    let (head, tail) = match message.rfind(", expected") {
        Some(at) if !message[at..].contains(is_quote) => message.split_at(at),
        _ => (message, ""),
    };
    let (Some(first), Some(last)) = (head.find(is_quote), head.rfind(is_quote)) else {
        return message.to_string();
    };
    let before = head[..first].trim_end();
    let after = if last > first {
        head[last + 1..].trim_start()
    } else {
        ""
    };
    let joined = match (before.is_empty(), after.is_empty()) {
        (_, true) => before.to_string(),
        (true, false) => after.to_string(),
        (false, false) => format!("{before} {after}"),
    };
    format!("{joined}{tail}")
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
        assert_eq!(
            without_input("invalid type: integer `1234`, expected a string"),
            "invalid type: integer, expected a string"
        );
        assert_eq!(
            without_input("value `9e999` is not a finite number"),
            "value is not a finite number"
        );
        // ", expected" inside the input is not serde's clause.
        assert_eq!(
            without_input("unknown variant `a, expected b`"),
            "unknown variant"
        );
    }
}
