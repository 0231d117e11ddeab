use std::collections::{BTreeMap, BTreeSet};

use crate::error::ConfigError;
use crate::expand::{Naming, is_delivery_name};
use crate::schema::{Binding, Config, Delivery, OnRotate};
use crate::secret_ref::SecretRef;

/// Something legal but probably not what the author meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub field: String,
    pub line: Option<u64>,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}: {}", self.field, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

const PROVIDER_TYPES: [&str; 3] = ["vault", "aws", "kubernetes"];
const LOG_LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];
const SIGNALS: [&str; 9] = [
    "SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGCONT",
    "SIGKILL",
];

struct Checker<'a> {
    origin: &'a str,
    warnings: Vec<Warning>,
}

impl Checker<'_> {
    fn invalid(&self, line: Option<u64>, field: String, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_string(),
            line,
            field,
            message: message.into(),
        }
    }

    fn warn(&mut self, line: Option<u64>, field: String, message: impl Into<String>) {
        self.warnings.push(Warning {
            field,
            line,
            message: message.into(),
        });
    }
}

fn line_of(loc: &serde_saphyr::Location) -> Option<u64> {
    Some(loc.line()).filter(|l| *l > 0)
}

pub(crate) fn validate(config: &Config, origin: &str) -> Result<Vec<Warning>, ConfigError> {
    let mut c = Checker {
        origin,
        warnings: Vec::new(),
    };
    if config.version != "v1" {
        return Err(c.invalid(
            None,
            "version".into(),
            format!(
                "unsupported version {:?}; the only version is \"v1\"",
                config.version
            ),
        ));
    }
    let level = config.monitoring.log_level.to_ascii_lowercase();
    if !LOG_LEVELS.contains(&level.as_str()) {
        return Err(c.invalid(
            None,
            "monitoring.logLevel".into(),
            format!(
                "unknown level {:?}; use one of {}",
                config.monitoring.log_level,
                LOG_LEVELS.join(", ")
            ),
        ));
    }
    if config.policy.lock && config.policy.mode != crate::Mode::Enforce {
        return Err(c.invalid(
            None,
            "policy.lock".into(),
            format!(
                "lock needs mode: enforce (mode is {}): a locked node keeps its policy until \
                 reboot, and only an enforcing one is worth keeping",
                config.policy.mode
            ),
        ));
    }
    for (name, spec) in &config.providers {
        let line = line_of(&spec.defined);
        if !PROVIDER_TYPES.contains(&spec.value.kind.as_str()) {
            return Err(c.invalid(
                line,
                format!("providers.{name}.type"),
                format!(
                    "unknown provider type {:?}; use one of {}",
                    spec.value.kind,
                    PROVIDER_TYPES.join(", ")
                ),
            ));
        }
    }
    let mut binding_names = BTreeSet::new();
    let mut first_env_owner: BTreeMap<&str, &str> = BTreeMap::new();
    for (i, spanned) in config.secrets.iter().enumerate() {
        let binding = &spanned.value;
        let line = line_of(&spanned.defined);
        let field = format!("secrets[{i}]");
        check_binding(&mut c, config, binding, &field, line)?;
        if !binding_names.insert(binding.name.as_str()) {
            return Err(c.invalid(
                line,
                format!("{field}.name"),
                format!("duplicate binding name {:?}", binding.name),
            ));
        }
        if binding.selector.binary.is_some()
            && binding.selector.path.is_none()
            && binding.selector.namespace.is_none()
            && binding.selector.labels.is_empty()
            && binding.selector.service_account.is_none()
            && binding.selector.uid.is_none()
            && binding.selector.cgroup_path.is_none()
        {
            c.warn(
                line,
                format!("{field}.selector"),
                "selects by binary name alone: any process that can run a file with that name \
                 matches; narrow it with path, uid, cgroupPath or a pod selector",
            );
        }
        for r in &binding.secret_refs {
            for (_, name) in named_fields(&r.value.naming) {
                if let Some(other) = first_env_owner.insert(name, &binding.name)
                    && other != binding.name
                {
                    c.warn(
                        line_of(&r.defined),
                        format!("{field}.secretRefs"),
                        format!(
                            "{name:?} is also delivered by binding {other:?}; a process \
                             matching both is refused"
                        ),
                    );
                }
            }
        }
    }
    Ok(c.warnings)
}

fn check_binding(
    c: &mut Checker<'_>,
    config: &Config,
    binding: &Binding,
    field: &str,
    line: Option<u64>,
) -> Result<(), ConfigError> {
    if binding.name.trim().is_empty() {
        return Err(c.invalid(line, format!("{field}.name"), "must not be empty"));
    }
    let sel = &binding.selector;
    if *sel == crate::Selector::default() {
        return Err(c.invalid(
            line,
            format!("{field}.selector"),
            "empty selector would match every process; set at least one of binary, path, \
             namespace, labels, serviceAccount, container, uid, cgroupPath",
        ));
    }
    if let Some(b) = &sel.binary
        && (b.is_empty() || b.contains('/'))
    {
        return Err(c.invalid(
            line,
            format!("{field}.selector.binary"),
            format!("{b:?} is not a file name; binary is the basename (use path for a full path)"),
        ));
    }
    if let Some(p) = &sel.path
        && !p.starts_with('/')
    {
        return Err(c.invalid(
            line,
            format!("{field}.selector.path"),
            format!("{p:?} is not an absolute path"),
        ));
    }
    if let Some(OnRotate::Signal(s)) = &binding.on_rotate
        && !SIGNALS.contains(&s.as_str())
    {
        return Err(c.invalid(
            line,
            format!("{field}.onRotate.signal"),
            format!("unknown signal {s:?}; use one of {}", SIGNALS.join(", ")),
        ));
    }
    check_identity(c, config, binding, field, line)?;
    if binding.secret_refs.is_empty() {
        c.warn(
            line,
            format!("{field}.secretRefs"),
            "binding delivers no secrets",
        );
    }
    let mut names = BTreeSet::new();
    for (j, spanned) in binding.secret_refs.iter().enumerate() {
        let r = &spanned.value;
        let rline = line_of(&spanned.defined);
        let rfield = format!("{field}.secretRefs[{j}]");
        check_prefix(c, &r.naming, binding.delivery, &rfield, rline)?;
        for (sub, name) in named_fields(&r.naming) {
            let nfield = format!("{rfield}.{sub}");
            check_delivery_name(c, name, binding.delivery, &nfield, rline)?;
            if !names.insert(name) {
                return Err(c.invalid(
                    rline,
                    nfield,
                    format!(
                        "duplicate secret name {name:?} in binding {:?}",
                        binding.name
                    ),
                ));
            }
        }
        let sline = line_of(&r.source.defined).or(rline);
        let dynamic = r.source.value.fetched_refs().any(SecretRef::is_dynamic);
        if dynamic && binding.identity.is_pod() {
            return Err(c.invalid(
                sline,
                format!("{rfield}.source.vaultRef.engine"),
                "a dynamic secret's lease is renewed and revoked by the agent, with its own token, \
                 after the read; identity: pod reads with the pod's token, which the agent does \
                 not keep: use identity: agent for dynamic secrets",
            ));
        }
        check_source(
            c,
            config,
            &r.source.value,
            &format!("{rfield}.source"),
            sline,
        )?;
    }
    Ok(())
}

/// `identity: pod` needs a pod to check the token against, a wrapper to
/// bring the token, and sources that can be read with it.
fn check_identity(
    c: &mut Checker<'_>,
    config: &Config,
    binding: &Binding,
    field: &str,
    line: Option<u64>,
) -> Result<(), ConfigError> {
    let id = &binding.identity;
    let ifield = format!("{field}.identity");
    if !id.is_pod() {
        if id.vault_role.is_some() || id.aws_role_arn.is_some() {
            return Err(c.invalid(
                line,
                ifield,
                "vaultRole and awsRoleArn name the pod's login: they need mode: pod",
            ));
        }
        return Ok(());
    }
    if config.pod_identity == crate::PodIdentityMode::Disabled {
        return Err(c.invalid(
            line,
            ifield,
            "identity: pod needs pod identity (podIdentity is disabled): the pod's token is \
             only accepted for the pod the kernel says is calling",
        ));
    }
    if let Some(role) = &id.vault_role
        && (role.trim().is_empty() || role.contains('/'))
    {
        return Err(c.invalid(
            line,
            format!("{ifield}.vaultRole"),
            format!("{role:?} is not a Vault role name"),
        ));
    }
    if let Some(arn) = &id.aws_role_arn
        && !(arn.starts_with("arn:") && arn.contains(":role/"))
    {
        return Err(c.invalid(
            line,
            format!("{ifield}.awsRoleArn"),
            format!("{arn:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"),
        ));
    }
    let sel = &binding.selector;
    if binding.delivery == Delivery::File && (sel.binary.is_some() || sel.path.is_some()) {
        return Err(c.invalid(
            line,
            ifield,
            "identity: pod with delivery: file and a binary or path selector: such a binding is \
             also delivered to processes the kernel marks at exec, which bring no token, and a \
             token file inside the process's own filesystem is a path the process controls; \
             select by pod (namespace, serviceAccount, labels, container) and let the wrapper \
             deliver the files, or use identity: agent",
        ));
    }
    let mut remote = false;
    let leaves = binding.secret_refs.iter().enumerate().flat_map(|(j, r)| {
        let at = format!("{field}.secretRefs[{j}].source");
        let rline = line_of(&r.defined).or(line);
        match &r.value.source.value {
            SecretRef::Template(t) => t
                .refs
                .iter()
                .map(|(name, inner)| (format!("{at}.template.refs.{name}"), rline, inner))
                .collect(),
            other => vec![(at, rline, other)],
        }
    });
    for (at, rline, source) in leaves {
        match source {
            SecretRef::Kubernetes(_) => {
                return Err(c.invalid(
                    rline,
                    format!("{at}.secretKeyRef"),
                    "identity: pod cannot read Kubernetes Secrets: the agent reads them with its \
                     own RBAC, not as the pod; keep this secret in a binding with identity: agent",
                ));
            }
            SecretRef::Vault(_) | SecretRef::Aws(_) | SecretRef::Ssm(_) | SecretRef::SsmPath(_) => {
                let want = if let SecretRef::Vault(_) = source {
                    "vault"
                } else {
                    "aws"
                };
                if !config.providers.values().any(|p| p.value.kind == want) {
                    return Err(c.invalid(
                        rline,
                        at,
                        format!(
                            "identity: pod logs in to {want} as the pod through a configured \
                             provider (providers: {{ NAME: {{ type: {want}, … }} }}); none is \
                             configured"
                        ),
                    ));
                }
                remote = true;
            }
            _ => {}
        }
    }
    if !remote {
        c.warn(
            line,
            ifield,
            "identity: pod has no effect here: the binding has no vaultRef, awsRef or ssmRef",
        );
    }
    Ok(())
}

/// The names an entry gives as written, each with its field below the
/// entry: `name`, or each `jmesPath[k].name`.
fn named_fields(naming: &Naming) -> Vec<(String, &str)> {
    match naming {
        Naming::One(name) => vec![("name".to_string(), name.as_str())],
        Naming::AllKeys { .. } => Vec::new(),
        Naming::Paths(paths) => paths
            .iter()
            .enumerate()
            .map(|(k, p)| (format!("jmesPath[{k}].name"), p.name.as_str()))
            .collect(),
    }
}

/// `field` is the name's own field path.
fn check_delivery_name(
    c: &Checker<'_>,
    name: &str,
    delivery: Delivery,
    field: &str,
    line: Option<u64>,
) -> Result<(), ConfigError> {
    if is_delivery_name(name, delivery) {
        return Ok(());
    }
    let what = match delivery {
        Delivery::Env => "an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
        Delivery::File => "a file name (no '/', not '.' or '..')",
    };
    Err(c.invalid(line, field.to_string(), format!("{name:?} is not {what}")))
}

/// A `keys: all` prefix starts every name: for env it must be a valid
/// start of a variable name (the mapped keys after it always are), for
/// files it must not lead out of the directory.
fn check_prefix(
    c: &Checker<'_>,
    naming: &Naming,
    delivery: Delivery,
    field: &str,
    line: Option<u64>,
) -> Result<(), ConfigError> {
    let Naming::AllKeys { prefix } = naming else {
        return Ok(());
    };
    let ok = match delivery {
        Delivery::Env => prefix.is_empty() || is_delivery_name(prefix, Delivery::Env),
        Delivery::File => !prefix.contains('/') && !prefix.contains('\0'),
    };
    if ok {
        return Ok(());
    }
    let what = match delivery {
        Delivery::Env => "the start of an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
        Delivery::File => "the start of a file name (no '/' or NUL)",
    };
    Err(c.invalid(
        line,
        format!("{field}.prefix"),
        format!("{prefix:?} is not {what}"),
    ))
}

/// Longest parameter name AWS lets one create.
const SSM_NAME_MAX: usize = 1011;
/// Deepest hierarchy AWS allows (`/a/b/…`, fifteen levels).
const SSM_LEVELS_MAX: usize = 15;

/// AWS's rules for a parameter name: letters, digits and `_.-`, in a
/// hierarchy of at most fifteen levels that starts with `/`, or a plain
/// name without any `/`. Checked here so that a typo is named with its
/// field, not reported later as a parameter AWS cannot find.
pub fn check_ssm_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > SSM_NAME_MAX {
        return Err(format!("it is longer than {SSM_NAME_MAX} characters"));
    }
    if let Some(bad) = name
        .chars()
        .find(|ch| !(ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-' | '/')))
    {
        return Err(format!(
            "{bad:?} is not allowed (letters, digits, '_', '.', '-' and '/' are)"
        ));
    }
    if !name.contains('/') {
        return Ok(());
    }
    let Some(below_root) = name.strip_prefix('/') else {
        return Err("a name with '/' is a hierarchy and must start with '/'".into());
    };
    if below_root.split('/').any(str::is_empty) {
        return Err("a hierarchy has no empty levels and does not end with '/'".into());
    }
    if below_root.split('/').count() > SSM_LEVELS_MAX {
        return Err(format!("a hierarchy has at most {SSM_LEVELS_MAX} levels"));
    }
    Ok(())
}

fn check_source(
    c: &Checker<'_>,
    config: &Config,
    source: &SecretRef,
    field: &str,
    line: Option<u64>,
) -> Result<(), ConfigError> {
    let (provider, want, sub) = match source {
        SecretRef::Value(_) => return Ok(()),
        SecretRef::Template(t) => {
            for (name, inner) in &t.refs {
                check_source(
                    c,
                    config,
                    inner,
                    &format!("{field}.template.refs.{name}"),
                    line,
                )?;
            }
            return Ok(());
        }
        SecretRef::Env { var: name } => {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(c.invalid(
                    line,
                    format!("{field}.envRef"),
                    format!("{name:?} is not an environment variable name"),
                ));
            }
            return Ok(());
        }
        SecretRef::File { path, .. } => {
            if !path.is_absolute() {
                return Err(c.invalid(
                    line,
                    format!("{field}.fileRef"),
                    format!("{:?} is not an absolute path", path.to_string_lossy()),
                ));
            }
            return Ok(());
        }
        SecretRef::Kubernetes(k) => {
            if k.name.is_empty() || k.key.is_empty() {
                return Err(c.invalid(
                    line,
                    format!("{field}.secretKeyRef"),
                    "name and key must not be empty",
                ));
            }
            return Ok(());
        }
        SecretRef::Vault(v) => (v.provider.as_deref(), "vault", "vaultRef"),
        SecretRef::Aws(a) => (a.provider.as_deref(), "aws", "awsRef"),
        SecretRef::Ssm(p) => {
            if let Err(why) = check_ssm_name(&p.name) {
                return Err(c.invalid(
                    line,
                    format!("{field}.ssmRef.name"),
                    format!("{:?} is not an SSM parameter name: {why}", p.name),
                ));
            }
            (p.provider.as_deref(), "aws", "ssmRef")
        }
        SecretRef::SsmPath(p) => {
            let levels = p.path.trim_end_matches('/');
            let checked = if !p.path.starts_with('/') {
                Err("a path starts with '/'".to_string())
            } else if levels.is_empty() {
                Ok(())
            } else {
                check_ssm_name(levels)
            };
            if let Err(why) = checked {
                return Err(c.invalid(
                    line,
                    format!("{field}.ssmRef.path"),
                    format!("{:?} is not an SSM parameter path: {why}", p.path),
                ));
            }
            (p.provider.as_deref(), "aws", "ssmRef")
        }
    };
    if let Some(name) = provider {
        match config.providers.get(name) {
            None => {
                return Err(c.invalid(
                    line,
                    format!("{field}.{sub}.provider"),
                    format!("no provider named {name:?} in providers"),
                ));
            }
            Some(p) if p.value.kind != want => {
                return Err(c.invalid(
                    line,
                    format!("{field}.{sub}.provider"),
                    format!(
                        "provider {name:?} is of type {:?}, not {want:?}",
                        p.value.kind
                    ),
                ));
            }
            Some(_) => {}
        }
    } else {
        let count = config
            .providers
            .values()
            .filter(|p| p.value.kind == want)
            .count();
        if count > 1 {
            return Err(c.invalid(
                line,
                format!("{field}.{sub}.provider"),
                format!("{count} providers of type {want:?} are configured; name one"),
            ));
        }
    }
    Ok(())
}
