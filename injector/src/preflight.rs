//! Every check a config must pass before the agent loads anything beyond
//! what parsing checks (each ref's source, ttl and versions), run in one
//! call so the operator sees every problem at once: each provider's
//! settings, each binding's exec-filter entry. Nothing
//! is contacted, read or loaded. `kernelseal config validate`, the agent's
//! start and its reloads all use [`check_config`].

use kernelseal_bpf::{BpfError, ExecFilter};
use kernelseal_config::Config;
use kernelseal_providers::ProviderSettings;

/// One thing wrong with a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigProblem {
    #[error(transparent)]
    Provider(#[from] kernelseal_providers::Error),
    #[error("binding {binding:?}: {source}")]
    ExecFilter {
        binding: String,
        #[source]
        source: BpfError,
    },
}

/// Everything wrong with a config, in file order (providers, then
/// bindings); at least one.
#[derive(Debug)]
pub struct ConfigProblems(pub Vec<ConfigProblem>);

impl std::fmt::Display for ConfigProblems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigProblems {}

pub fn check_config(config: &Config) -> Result<(), ConfigProblems> {
    let mut problems = Vec::new();
    for (name, spec) in &config.providers {
        if let Err(e) = ProviderSettings::parse(name, &spec.value) {
            problems.push(e.into());
        }
    }
    // A scratch filter: only whether each entry would be accepted matters.
    let mut filter = ExecFilter::default();
    for (i, binding) in config.secrets.iter().enumerate() {
        let id = i as u32 + 1;
        let b = &binding.value;
        if let Err(source) =
            filter.add(id, b.selector.binary.as_deref(), b.selector.path.as_deref())
        {
            problems.push(ConfigProblem::ExecFilter {
                binding: b.name.clone(),
                source,
            });
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigProblems(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        let config = kernelseal_config::parse_str(yaml, "t.yaml").unwrap().config;
        match check_config(&config) {
            Ok(()) => Vec::new(),
            Err(ConfigProblems(p)) => p.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let long_binary = "b".repeat(kernelseal_bpf::abi::BINARY_LEN);
        let long_path = format!("/{}", "p".repeat(kernelseal_bpf::abi::PATH_LEN));
        let found = problems(&format!(
            "providers:\n  vault:\n    type: vault\n    address: vault:8200\nsecrets:\n  - name: bad-path\n    selector: {{ path: {long_path} }}\n    secretRefs:\n      - name: A\n        source: {{ value: a }}\n  - name: bad-binary\n    selector: {{ binary: {long_binary} }}\n    secretRefs:\n      - name: B\n        source: {{ value: b }}\n",
        ));
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found[0].contains("address"), "{}", found[0]);
        assert!(found[1].contains("bad-path"), "{}", found[1]);
        assert!(found[2].contains("bad-binary"), "{}", found[2]);
    }

    #[test]
    fn a_good_config_passes() {
        assert!(
            problems("secrets:\n  - name: ok\n    selector: { binary: app }\n    secretRefs:\n      - name: A\n        source: { value: a }\n")
                .is_empty()
        );
    }
}
