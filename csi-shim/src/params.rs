//! SecretProviderClass `parameters` → a validated [`Parameters`], and the
//! driver's `attributes` → [`MountAttributes`] (parameters + pod).
//!
//! Parsing and validation are one pass that stops at the first problem and
//! names the parameter and the object. `kernelseal csi validate` runs the
//! same code on a manifest, so a class that validates is one Mount accepts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::error::Error;
use crate::objects::parse_object;
pub use crate::objects::{Encoding, Object, ObjectSource};

/// Keys the driver adds to `attributes` besides the class's parameters.
const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
const SA_NAME: &str = "csi.storage.k8s.io/serviceAccount.name";
const SA_TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";

/// Parameters this provider understands, besides `objects`.
const SETTINGS: &[&str] = &[
    "vaultAddress",
    "roleName",
    "vaultKubernetesMountPath",
    "audience",
    "vaultNamespace",
    "region",
    "failoverRegion",
    "roleArn",
];

/// Objects one class (one Mount) may list. Each is an upstream read on a
/// first Mount and a file in the volume; a class of thousands was a fan-out
/// of thousands of requests and a reply near the driver's size limit.
pub const MAX_OBJECTS: usize = 256;

/// Default audience of the Vault login token (Vault's own default).
pub const DEFAULT_VAULT_AUDIENCE: &str = "vault";
/// The audience AWS's web identity federation expects.
pub const AWS_AUDIENCE: &str = "sts.amazonaws.com";

/// A validated SecretProviderClass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameters {
    pub objects: Vec<Object>,
    pub vault: Option<VaultParams>,
    pub aws: AwsParams,
}

/// Vault settings of the class (needed when an object has `vaultPath`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VaultParams {
    pub address: String,
    pub role: String,
    pub mount_path: String,
    pub audience: String,
    pub namespace: Option<String>,
}

/// AWS settings of the class.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AwsParams {
    pub region: Option<String>,
    pub failover_region: Option<String>,
    pub role_arn: Option<String>,
}

/// The driver's `attributes`: parameters plus who is mounting.
pub struct MountAttributes {
    parsed: Parsed,
    pub pod: Pod,
}

impl MountAttributes {
    pub fn params(&self) -> &Parameters {
        &self.parsed.0
    }

    /// Unknown parameters, one message each.
    pub fn warnings(&self) -> &[String] {
        &self.parsed.1
    }
}

/// The pod the volume is for. Tokens are credentials: never printed.
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub service_account: String,
    /// audience → token, from `serviceAccount.tokens`.
    pub tokens: BTreeMap<String, secrecy::SecretBox<str>>,
}

impl std::fmt::Debug for Pod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pod")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("uid", &self.uid)
            .field("service_account", &self.service_account)
            .field("token_audiences", &self.tokens.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn param(parameter: &str, message: impl Into<String>) -> Error {
    Error::Parameter {
        parameter: parameter.to_string(),
        message: message.into(),
    }
}

/// Parsed classes by their parameters: the driver re-mounts every pod on
/// each rotation poll with the same class, and parsing the `objects` YAML
/// is most of a cached Mount's cost.
///
/// Bounded by bytes, not only by entries: a class can be megabytes (up to
/// the driver's 4 MiB message), and 256 of them held as text were 1 GiB.
/// A class is keyed by the SHA-256 of its parameters, so its text is not
/// kept at all, and the parsed classes are counted by an estimate of their
/// size. When an entry would not fit, the memo is cleared (a bound, not an
/// LRU); a class larger than the whole budget is parsed every time.
pub struct ParamMemo {
    table: Mutex<MemoTable>,
    budget: usize,
}

#[derive(Default)]
struct MemoTable {
    entries: HashMap<[u8; 32], (Parsed, usize)>,
    bytes: usize,
}

/// A class's parameters and the warnings its parsing produced.
type Parsed = Arc<(Parameters, Vec<String>)>;

/// Entries kept before the memo is cleared.
const MEMO_ENTRIES: usize = 256;

/// Bytes (parsed classes, estimated) kept before the memo is cleared.
pub const MEMO_BYTES: usize = 16 * 1024 * 1024;

impl Default for ParamMemo {
    fn default() -> Self {
        ParamMemo::with_budget(MEMO_BYTES)
    }
}

impl ParamMemo {
    pub fn with_budget(budget: usize) -> Self {
        ParamMemo {
            table: Mutex::new(MemoTable::default()),
            budget,
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, MemoTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes held now (the estimate the budget is checked against).
    pub fn held_bytes(&self) -> usize {
        self.table().bytes
    }

    fn get_or_parse(&self, strings: &BTreeMap<String, String>) -> Result<Parsed, Error> {
        let key = memo_key(strings);
        if let Some((hit, _)) = self.table().entries.get(&key) {
            return Ok(hit.clone());
        }
        let parsed = Arc::new(parse_parameters(strings)?);
        let size = std::mem::size_of::<([u8; 32], Parsed, usize)>() + parsed_size(&parsed);
        if size > self.budget {
            return Ok(parsed);
        }
        let mut t = self.table();
        if t.entries.len() >= MEMO_ENTRIES || t.bytes + size > self.budget {
            t.entries.clear();
            t.bytes = 0;
        }
        if let Some((_, old)) = t.entries.insert(key, (parsed.clone(), size)) {
            // Parsed twice at once: the first copy is replaced, not added.
            t.bytes -= old;
        }
        t.bytes += size;
        Ok(parsed)
    }
}

/// The class's identity: its parameters without the pod's attributes,
/// each key and value length-prefixed so no two maps hash the same text.
fn memo_key(strings: &BTreeMap<String, String>) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for (k, v) in strings {
        if !k.starts_with("csi.storage.k8s.io/") {
            for part in [k, v] {
                ctx.update(&(part.len() as u64).to_le_bytes());
                ctx.update(part.as_bytes());
            }
        }
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

/// An upper estimate of a parsed class's heap: every string in an object
/// (name, source fields) is also in its canonical text, so twice the
/// canonical text covers them.
fn parsed_size(parsed: &(Parameters, Vec<String>)) -> usize {
    let objects: usize = parsed
        .0
        .objects
        .iter()
        .map(|o| std::mem::size_of::<Object>() + 2 * o.canonical.len())
        .sum();
    let warnings: usize = parsed.1.iter().map(|w| w.len() + 24).sum();
    std::mem::size_of::<(Parameters, Vec<String>)>() + objects + warnings + 1024
}

/// Parses `attributes` as the driver sends it.
pub fn parse_attributes(attributes: &str, memo: &ParamMemo) -> Result<MountAttributes, Error> {
    let map: BTreeMap<String, Value> =
        serde_json::from_str(attributes).map_err(|e| Error::Request {
            field: "attributes".into(),
            // Only the category and position: serde's text can quote input.
            message: format!(
                "not a JSON map ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        })?;
    let mut strings = BTreeMap::new();
    for (k, v) in map {
        match v {
            Value::String(s) => {
                strings.insert(k, s);
            }
            // The driver sends only strings; other values cannot be ours.
            _ => return Err(param(&k, "must be a string")),
        }
    }
    // The token map is a credential: out of the map, parsed, wiped.
    let pod_tokens = match strings.remove(SA_TOKENS).map(zeroize::Zeroizing::new) {
        Some(text) if !text.is_empty() => parse_tokens(&text)?,
        _ => BTreeMap::new(),
    };
    let get = |k: &str| strings.get(k).cloned().unwrap_or_default();
    let pod = Pod {
        name: get(POD_NAME),
        namespace: get(POD_NAMESPACE),
        uid: get(POD_UID),
        service_account: get(SA_NAME),
        tokens: pod_tokens,
    };
    let parsed = memo.get_or_parse(&strings)?;
    Ok(MountAttributes { parsed, pod })
}

fn parse_tokens(text: &str) -> Result<BTreeMap<String, secrecy::SecretBox<str>>, Error> {
    #[derive(serde::Deserialize)]
    struct Entry {
        token: secrecy::SecretBox<str>,
    }
    let map: BTreeMap<String, Entry> = serde_json::from_str(text).map_err(|e| {
        param(
            SA_TOKENS,
            format!(
                "not a JSON map of audience to {{token, expirationTimestamp}} ({:?} error)",
                e.classify()
            ),
        )
    })?;
    Ok(map.into_iter().map(|(k, v)| (k, v.token)).collect())
}

/// Parses the class's parameters (a string map); returns warnings for keys
/// it does not know. Keys the driver adds are ignored silently.
pub fn parse_parameters(
    map: &BTreeMap<String, String>,
) -> Result<(Parameters, Vec<String>), Error> {
    let mut warnings = Vec::new();
    for k in map.keys() {
        let driver_key = k.starts_with("csi.storage.k8s.io/") || k == "secretProviderClass";
        if !driver_key && k != "objects" && !SETTINGS.contains(&k.as_str()) {
            warnings.push(format!("parameter {k}: unknown, ignored"));
        }
    }
    let setting = |k: &str| -> Option<String> {
        map.get(k)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let objects_text = map
        .get("objects")
        .ok_or_else(|| param("objects", "missing"))?;
    let entries: Vec<Value> = serde_saphyr::from_str(objects_text).map_err(|e| {
        // Only the position: the YAML error text can quote the document.
        let loc = e
            .location()
            .map(|l| format!(" at line {} column {}", l.line(), l.column()))
            .unwrap_or_default();
        param("objects", format!("not a YAML list of objects{loc}"))
    })?;
    if entries.is_empty() {
        return Err(param("objects", "the list is empty"));
    }
    if entries.len() > MAX_OBJECTS {
        return Err(param(
            "objects",
            format!(
                "{} objects, over the limit of {MAX_OBJECTS} per SecretProviderClass; split them over several classes",
                entries.len()
            ),
        ));
    }
    // The scalars as written: parsed into `Value`, YAML 1.1 reads
    // `objectName: y` as `true` and `0640` as a number. When every entry is
    // a flat map this typed parse keeps the text; otherwise the `Value`
    // pass below reports the entry and key that are not scalars.
    let texts: Option<Vec<BTreeMap<String, String>>> = serde_saphyr::from_str(objects_text).ok();
    let mut objects = Vec::with_capacity(entries.len());
    let mut names = BTreeSet::new();
    for (i, entry) in entries.iter().enumerate() {
        let o = parse_object(i, entry, texts.as_ref().and_then(|t| t.get(i)))?;
        if !names.insert(o.name.clone()) {
            return Err(Error::Object {
                object: o.name.clone(),
                field: "objectName".into(),
                message: "duplicate: every object needs its own file name".into(),
            });
        }
        objects.push(o);
    }
    crate::objects::check_layout(&objects)?;
    crate::objects::check_template_refs(&objects)?;
    let needs_vault = objects
        .iter()
        .any(|o| matches!(o.source, ObjectSource::Vault { .. }));
    let vault = if needs_vault {
        let address = setting("vaultAddress")
            .ok_or_else(|| param("vaultAddress", "missing (objects with vaultPath need it)"))?;
        if !(address.starts_with("http://") || address.starts_with("https://")) {
            return Err(param(
                "vaultAddress",
                format!("{address:?} is not an http:// or https:// URL"),
            ));
        }
        let role = setting("roleName")
            .ok_or_else(|| param("roleName", "missing (the Vault kubernetes auth role)"))?;
        let mount_path = setting("vaultKubernetesMountPath")
            .unwrap_or_else(|| "kubernetes".into())
            .trim_matches('/')
            .to_string();
        if mount_path.is_empty() || mount_path.split('/').any(|s| s.is_empty() || s == "..") {
            return Err(param("vaultKubernetesMountPath", "not a mount path"));
        }
        Some(VaultParams {
            address: address.trim_end_matches('/').to_string(),
            role,
            mount_path,
            audience: setting("audience").unwrap_or_else(|| DEFAULT_VAULT_AUDIENCE.into()),
            namespace: setting("vaultNamespace"),
        })
    } else {
        None
    };
    let aws = AwsParams {
        region: setting("region"),
        failover_region: setting("failoverRegion"),
        role_arn: setting("roleArn"),
    };
    if let Some(arn) = &aws.role_arn
        && !arn.starts_with("arn:")
    {
        return Err(param("roleArn", format!("{arn:?} is not an IAM role ARN")));
    }
    Ok((
        Parameters {
            objects,
            vault,
            aws,
        },
        warnings,
    ))
}

/// The request's `permission`: a JSON decimal number such as `"420"`.
pub fn parse_permission(text: &str) -> Result<u32, Error> {
    let bad = || Error::Request {
        field: "permission".into(),
        message: format!("{text:?} is not a decimal file mode such as \"420\""),
    };
    let n: u32 = serde_json::from_str::<u64>(text.trim())
        .map_err(|_| bad())?
        .try_into()
        .map_err(|_| bad())?;
    if n > 0o777 {
        return Err(bad());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(objects: &str) -> Result<Parameters, Error> {
        let mut m = BTreeMap::new();
        m.insert("objects".to_string(), objects.to_string());
        m.insert("vaultAddress".to_string(), "http://v:8200".to_string());
        m.insert("roleName".to_string(), "app".to_string());
        parse_parameters(&m).map(|(p, _)| p)
    }

    #[test]
    fn parses_each_source() {
        let p = params(
            r#"
- objectName: a
  env: A_TOKEN
- objectName: dir/b
  file: /etc/b
  filePermission: "0640"
- objectName: c
  vaultPath: secret/app
  vaultKey: k
  vaultVersion: "3"
- objectName: d
  awsSecretId: prod/app
  jsonKey: token
- objectName: e
  k8sSecret: db
  k8sKey: password
  encoding: base64
"#,
        )
        .unwrap();
        assert_eq!(p.objects.len(), 5);
        assert_eq!(p.objects[1].mode, Some(0o640));
        assert_eq!(p.objects[4].encoding, Encoding::Base64);
        assert_eq!(p.vault.unwrap().audience, "vault");
    }

    #[test]
    fn errors_name_object_and_field() {
        let e = params("- objectName: ../x\n  env: A\n").unwrap_err();
        assert!(
            e.to_string().starts_with("object objects[0]: objectName:"),
            "{e}"
        );
        let e = params("- objectName: /abs\n  env: A\n").unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
        let e = params("- objectName: a\n  env: A\n- objectName: a\n  env: B\n").unwrap_err();
        assert!(e.to_string().contains("duplicate"), "{e}");
        let e = params("- objectName: a\n  gcpSecret: x\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "object a: gcpSecret: unknown key; sources are vaultPath, awsSecretId, ssmParameter, k8sSecret, file, env, template"
        );
        let e = params("- objectName: a\n  ssmParameter: /app/db pass\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("object a: ssmParameter: \"/app/db pass\": "),
            "{e}"
        );
        let e = params("- objectName: a\n  ssmParameter: /app/db\n  withDecryption: yes\n")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "object a: withDecryption: \"yes\" is not true or false"
        );
        let e = params("- objectName: a\n  ssmParameter: /app/db\n  jsonKey: k\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "object a: jsonKey: does not apply to a ssmParameter object"
        );
        let e = params("- objectName: a\n  env: A\n  filePermission: rw\n").unwrap_err();
        assert!(
            e.to_string().starts_with("object a: filePermission:"),
            "{e}"
        );
        let e = params("objectName: a").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("parameter objects: not a YAML list"),
            "{e}"
        );
        let e = params("- objectName: a\n  env: A\n  vaultKey: k\n").unwrap_err();
        assert!(e.to_string().contains("does not apply"), "{e}");
    }

    #[test]
    fn yaml_scalars_keep_their_text() {
        let p = params(
            "- objectName: y\n  env: A\n  filePermission: 0640\n- objectName: no\n  env: B\n",
        )
        .unwrap();
        assert_eq!(p.objects[0].name, "y");
        assert_eq!(p.objects[0].mode, Some(0o640));
        assert_eq!(p.objects[1].name, "no");
        let e = params("- objectName: a\n  env: {x: 1}\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("object objects[0]: env: must be a string"),
            "{e}"
        );
    }

    #[test]
    fn objects_are_capped() {
        let list = |n: usize| -> String {
            (0..n)
                .map(|i| format!("- objectName: o{i}\n  env: A\n"))
                .collect()
        };
        assert_eq!(
            params(&list(MAX_OBJECTS)).unwrap().objects.len(),
            MAX_OBJECTS
        );
        let e = params(&list(MAX_OBJECTS + 1)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "parameter objects: 257 objects, over the limit of 256 per SecretProviderClass; split them over several classes"
        );
        assert_eq!(e.to_status().code(), tonic::Code::InvalidArgument);
    }

    /// 300 distinct classes of 3 MiB each (a padding parameter makes them
    /// big; the driver passes every parameter): their text is not kept,
    /// and a repeat is still served from the memo.
    #[test]
    fn the_memo_does_not_hold_class_text() {
        let memo = ParamMemo::default();
        let pad = "p".repeat(3 * 1024 * 1024);
        let class = |i: usize| {
            let mut m = BTreeMap::new();
            m.insert(
                "objects".to_string(),
                format!("- objectName: o{i}\n  env: A\n"),
            );
            m.insert("padding".to_string(), pad.clone());
            m
        };
        for i in 0..300 {
            memo.get_or_parse(&class(i)).unwrap();
            assert!(
                memo.held_bytes() < 1024 * 1024,
                "class {i}: {} bytes held",
                memo.held_bytes()
            );
        }
        let last = class(299);
        assert!(Arc::ptr_eq(
            &memo.get_or_parse(&last).unwrap(),
            &memo.get_or_parse(&last).unwrap()
        ));
    }

    /// Classes whose parsed objects are large: the memo stays within its
    /// budget however many there are.
    #[test]
    fn the_memo_is_bounded_by_bytes() {
        let budget = 256 * 1024;
        let memo = ParamMemo::with_budget(budget);
        let long = "x".repeat(200);
        for i in 0..40 {
            let objects: String = (0..100)
                .map(|j| format!("- objectName: o{j}\n  env: A_{i}_{long}\n"))
                .collect();
            let mut m = BTreeMap::new();
            m.insert("objects".to_string(), objects);
            memo.get_or_parse(&m).unwrap();
            assert!(memo.held_bytes() > 0, "class {i} was not kept");
            assert!(
                memo.held_bytes() <= budget,
                "class {i}: {} bytes held",
                memo.held_bytes()
            );
        }
    }

    #[test]
    fn a_class_over_the_budget_is_parsed_not_kept() {
        let memo = ParamMemo::with_budget(4 * 1024);
        let objects: String = (0..50)
            .map(|j| format!("- objectName: o{j}\n  env: A\n"))
            .collect();
        let mut m = BTreeMap::new();
        m.insert("objects".to_string(), objects);
        assert_eq!(memo.get_or_parse(&m).unwrap().0.objects.len(), 50);
        assert_eq!(memo.held_bytes(), 0);
    }

    #[test]
    fn keys_do_not_run_together() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_ne!(
            memo_key(&map(&[("a", "bc"), ("d", "")])),
            memo_key(&map(&[("a", "b"), ("cd", "")]))
        );
        assert_eq!(
            memo_key(&map(&[("a", "b"), ("csi.storage.k8s.io/pod.name", "x")])),
            memo_key(&map(&[("a", "b"), ("csi.storage.k8s.io/pod.name", "y")]))
        );
    }

    #[test]
    fn permission() {
        assert_eq!(parse_permission("420").unwrap(), 0o644);
        assert!(parse_permission("rw-r--r--").is_err());
        assert!(parse_permission("99999").is_err());
    }
}
