//! The KernelSeal configuration file: schema, parsing and validation.
//!
//! The schema is the original KernelSeal's (`version`, `policy`, `secrets`,
//! `monitoring`) extended with named `providers` and richer selectors. Parsing
//! is strict (unknown fields are refused) so that a typo cannot silently
//! weaken protection; every error names the file, the line where the parser
//! knows it, and the field path.

mod error;
mod fields;
mod policy;
mod schema;
mod validate;

pub use error::ConfigError;
pub use fields::known_fields;
pub use policy::{Mode, Policy};
pub use schema::{
    AwsRef, Binding, Config, Delivery, FileRef, LogFormat, Monitoring, OnRotate, PodIdentityMode,
    ProviderSpec, SecretKeyRef, SecretRefSpec, Selector, SourceSpec, VaultEngine, VaultRef,
};
pub use validate::{Source, Warning};

use std::path::Path;

/// Largest config file accepted; a config is a few KiB, anything near this is a mistake.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// A parsed and validated configuration plus the warnings validation produced.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Warning>,
}

/// Reads, parses and validates a config file.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigError> {
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        return Err(ConfigError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit: MAX_CONFIG_BYTES,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_str(&text, &path.display().to_string())
}

/// Parses and validates config text; `origin` names it in errors.
pub fn parse_str(text: &str, origin: &str) -> Result<Loaded, ConfigError> {
    let config: Config =
        serde_saphyr::from_str(text).map_err(|e| ConfigError::from_yaml(origin, &e))?;
    let warnings = validate::validate(&config, origin)?;
    Ok(Loaded { config, warnings })
}
