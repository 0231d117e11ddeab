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
