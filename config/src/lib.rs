//! The KernelSeal configuration file: schema, parsing and validation.
//!
//! The schema is the original KernelSeal's (`version`, `policy`, `secrets`,
//! `monitoring`) extended with named `providers` and richer selectors. Parsing
//! is strict (unknown fields are refused) so that a typo cannot silently
//! weaken protection; every error names the file, the line where the parser
//! knows it, and the field path.

mod duration;
mod entry;
mod error;
mod expand;
mod fields;
mod identity;
pub mod input;
mod policy;
mod schema;
mod secret_ref;
mod source;
mod source_path;
mod template;
mod validate;

pub use duration::{DurationError, parse_duration};
pub use error::ConfigError;
pub use expand::{
    FILE_NAME_MAX, JsonPath, NameError, NamedPath, Naming, Step, delivered_name, is_delivery_name,
};
pub use fields::known_fields;
pub use identity::{Identity, IdentityMode};
pub use policy::{Mode, Policy};
pub use schema::{
    Binding, Config, Delivery, LogFormat, Monitoring, OnRotate, PodIdentityMode, ProviderSpec,
    SecretRefSpec, Selector,
};
pub use secret_ref::{AwsRef, KubernetesRef, KvEngine, SecretRef, SsmPathRef, SsmRef, VaultRef};
pub use template::{
    TEMPLATE_FUEL, TemplateProblem, TemplateRef, check as check_template,
    describe as describe_template_error, environment as template_environment,
    is_identifier as is_template_identifier, reads as template_reads,
    reads_of as template_reads_of,
};
pub use validate::{Warning, check_ssm_name};

use std::path::Path;

/// Largest config file accepted; a config is a few KiB, anything near this is a mistake.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// A parsed and validated configuration plus the warnings validation produced.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Warning>,
}

/// Reads, parses and validates a config file. Only a regular file is
/// read, and at most [`MAX_CONFIG_BYTES`] of it.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigError> {
    let bytes = input::read(path, "config", MAX_CONFIG_BYTES)?;
    let name = path.display().to_string();
    parse_str(&input::into_text(bytes, &name, "config")?, &name)
}

/// Like [`load_file`], but `-` reads standard input (bounded the same):
/// for commands that check a config, where a pipe is meant.
pub fn load_arg(path: &Path) -> Result<Loaded, ConfigError> {
    let (bytes, name) = input::read_arg(path, "config", MAX_CONFIG_BYTES)?;
    parse_str(&input::into_text(bytes, &name, "config")?, &name)
}

/// Parses and validates config text; `origin` names it in errors.
pub fn parse_str(text: &str, origin: &str) -> Result<Loaded, ConfigError> {
    let config: Config =
        serde_saphyr::from_str(text).map_err(|e| ConfigError::from_yaml(origin, &e))?;
    let warnings = validate::validate(&config, origin)?;
    Ok(Loaded { config, warnings })
}
