//! One `AdmissionReview`: whether the pod is one to wrap, and the answer.

use std::collections::BTreeMap;

use kube::core::TypeMeta;
use kube::core::admission::{
    AdmissionRequest, AdmissionResponse, META_API_VERSION_V1, META_KIND, Operation,
};

use crate::annotations::{self, Injection};
use crate::images::{self, ImageConfigs};
use crate::patch::{self, PatchError, Patcher, wrap};
use crate::pod::{self, Pod};

mod arriving;

use arriving::Envelope;

/// What makes a pod one to wrap, by the path the API server calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `/mutate`: the pod says `kernelseal.io/inject: "true"`.
    Annotation,
    /// `/mutate-namespace` (the namespace is labelled for injection): every
    /// pod, unless it says `kernelseal.io/inject: "false"`.
    Namespace,
}

/// What was decided, for the log line and the metrics (no secret in it:
/// names and reasons only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Wrapped these containers.
    Patched(Vec<String>),
    /// Left alone, and why.
    Skipped(&'static str),
    /// Refused with this message (the pod is not created).
    Refused(String),
}

/// A review that cannot be answered with an `AdmissionResponse`: the API
/// server gets an HTTP error, and the webhook's `failurePolicy` decides.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("the body is not an AdmissionReview: {0}")]
    Malformed(String),
    #[error(
        "apiVersion {api_version:?} kind {kind:?}: only admission.k8s.io/v1 AdmissionReview is served"
    )]
    WrongType { api_version: String, kind: String },
    #[error("the AdmissionReview has no request")]
    NoRequest,
    /// An image's ENTRYPOINT could not be read (registry down, refusing):
    /// not the pod's fault, so not a denial.
    #[error("{0}")]
    Lookup(PatchError),
}

/// Who the review is about, for the log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    pub namespace: String,
    /// The pod's name, or its owner's `generateName` prefix.
    pub name: String,
    pub dry_run: bool,
}

/// The reviewed answer with what was decided.
#[derive(Clone)]
pub struct Reviewed {
    pub response: AdmissionResponse,
    pub subject: Subject,
    pub decision: Decision,
}

impl Reviewed {
    /// The `AdmissionReview` as the API server reads it. `response.patch`
    /// is a `[]byte`, which Kubernetes' JSON carries base64-encoded; kube's
    /// type serializes it as an array of numbers (kube-rs #1781), so it is
    /// written here, in the one pass that writes the whole answer.
    pub fn into_json(self) -> Vec<u8> {
        let mut response = self.response;
        let patch = response.patch.take();
        let encoded = patch
            .as_ref()
            .map_or(0, |p| base64_simd::STANDARD.encoded_length(p.len()));
        let answer = Answer {
            api_version: META_API_VERSION_V1,
            kind: META_KIND,
            response: Answered {
                response: &response,
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
            },
        };
        let mut out = Vec::with_capacity(encoded + 512);
        // Plain structs, strings and maps with string keys: nothing here
        // can fail to serialize.
        let _ = serde_json::to_writer(&mut out, &answer);
        if let Some(patch) = patch {
            put_patch(&mut out, &patch);
        }
        out
    }
}

/// Adds `"patch": "<base64>"` as the last field of the answer's response,
/// the object whose brace closes just before the review's. Base64's
/// alphabet needs no JSON escaping, so the patch is encoded straight into
/// the answer: written through serde, its 2 KB were scanned for escapes
/// again, a visible share of a review.
fn put_patch(answer: &mut Vec<u8>, patch: &[u8]) {
    debug_assert!(answer.ends_with(b"}}"));
    answer.truncate(answer.len().saturating_sub(2));
    answer.extend_from_slice(b",\"patch\":\"");
    base64_simd::STANDARD.encode_append(patch, answer);
    answer.extend_from_slice(b"\"}}");
}

#[derive(serde::Serialize)]
struct Answer<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    response: Answered<'a>,
}

#[derive(serde::Serialize)]
struct Answered<'a> {
    /// Everything but the patch (taken out of it: [`put_patch`] writes it).
    #[serde(flatten)]
    response: &'a AdmissionResponse,
    /// kube sets it only with a `json_patch::Patch`; this webhook writes
    /// its patch itself.
    #[serde(rename = "patchType", skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
}

/// Answers one review: patched, left alone or refused. The images of
/// wrapped containers without `command` are looked up in `images` first.
pub async fn review(
    body: &[u8],
    trigger: Trigger,
    own_namespace: &str,
    patcher: &Patcher,
    images: &dyn ImageConfigs,
) -> Result<Reviewed, ReviewError> {
    let request = match decode(body)? {
        Decoded::Pod(r) => *r,
        Decoded::Unreadable(r, why) => return Ok(unreadable(&r, own_namespace, why)),
    };
    let subject = Subject {
        namespace: request.namespace.clone().unwrap_or_default(),
        name: request.name.clone(),
        dry_run: request.dry_run,
    };
    let response = response_to(&request);
    let decided = decide(&request, trigger, own_namespace, patcher, images).await;
    let (response, decision) = match decided {
        Ok(Outcome::Wrap(patch, containers)) => {
            let mut response = response;
            response.patch = Some(patch);
            (response, Decision::Patched(containers))
        }
        Ok(Outcome::Skip(why)) => (response, Decision::Skipped(why)),
        Err(Denial::Refused(why)) => (response.deny(&why), Decision::Refused(why)),
        Err(Denial::Lookup(e)) => return Err(ReviewError::Lookup(e)),
    };
    let mut subject = subject;
    if subject.name.is_empty() {
        subject.name = generate_name(&request);
    }
    Ok(Reviewed {
        response,
        subject,
        decision,
    })
}

/// The answer to `request`, allowed until decided otherwise. Its type is
/// the request's, which [`decode`] checked is `admission.k8s.io/v1`
/// `AdmissionReview` (and [`Reviewed::into_json`] writes as such).
fn response_to<T: kube::Resource>(request: &AdmissionRequest<T>) -> AdmissionResponse {
    AdmissionResponse::from(request)
}

/// A review's request: its object read straight into a `Pod` (one pass,
/// no generic JSON tree), or — when it is no valid Pod — only as far as
/// answering it needs.
enum Decoded {
    Pod(Box<AdmissionRequest<Pod>>),
    Unreadable(Box<AdmissionRequest<pod::Unreadable>>, String),
}

fn decode(body: &[u8]) -> Result<Decoded, ReviewError> {
    match serde_json::from_slice::<Envelope<Pod>>(body) {
        Ok(review) => {
            let (types, request) = review.into_parts();
            check_type(&types)?;
            let request = request.ok_or(ReviewError::NoRequest)?;
            Ok(Decoded::Pod(Box::new(request.into_request(types))))
        }
        Err(typed) => {
            let review: Envelope<pod::Unreadable> =
                serde_json::from_slice(body).map_err(|e| ReviewError::Malformed(describe(&e)))?;
            let (types, request) = review.into_parts();
            check_type(&types)?;
            let request = request.ok_or(ReviewError::NoRequest)?;
            let why = format!("the pod is not a valid Pod: {}", describe(&typed));
            Ok(Decoded::Unreadable(
                Box::new(request.into_request(types)),
                why,
            ))
        }
    }
}

fn check_type(types: &TypeMeta) -> Result<(), ReviewError> {
    if types.api_version != META_API_VERSION_V1 || types.kind != META_KIND {
        return Err(ReviewError::WrongType {
            api_version: types.api_version.clone(),
            kind: types.kind.clone(),
        });
    }
    Ok(())
}

/// The answer to a review whose object is no valid Pod: none of ours, or
/// refused.
fn unreadable(
    request: &AdmissionRequest<pod::Unreadable>,
    own_namespace: &str,
    why: String,
) -> Reviewed {
    let response = response_to(request);
    let (response, decision) = match not_ours(request, own_namespace) {
        Some(skip) => (response, Decision::Skipped(skip)),
        None => (response.deny(&why), Decision::Refused(why)),
    };
    Reviewed {
        response,
        subject: Subject {
            namespace: request.namespace.clone().unwrap_or_default(),
            name: request.name.clone(),
            dry_run: request.dry_run,
        },
        decision,
    }
}

/// serde's message without the input it may quote (a pod's values, a
/// pull secret's password).
pub(crate) fn describe(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

enum Denial {
    Refused(String),
    Lookup(PatchError),
}

enum Outcome {
    /// Leave the pod alone, for this reason.
    Skip(&'static str),
    /// The patch, written, and the containers it wraps.
    Wrap(Vec<u8>, Vec<String>),
}

async fn decide(
    request: &AdmissionRequest<Pod>,
    trigger: Trigger,
    own_namespace: &str,
    patcher: &Patcher,
    images: &dyn ImageConfigs,
) -> Result<Outcome, Denial> {
    let (pod, injection) = match wanted(request, trigger, own_namespace)? {
        Wanted::Skip(why) => return Ok(Outcome::Skip(why)),
        Wanted::Wrap(pod, injection) => (pod, injection),
    };
    let pull = images::PullContext::of(request);
    let found = images::look_up_all(images, &pull, patch::images_to_look_up(pod, &injection)).await;
    let patch = wrap(pod, &injection, patcher, &found).map_err(|e| match e {
        PatchError::NoEntrypoint { .. } => Denial::Lookup(e),
        other => Denial::Refused(other.to_string()),
    })?;
    let spec = pod.spec.as_ref();
    let containers = match &injection.containers {
        Some(names) => names.clone(),
        None => spec
            .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default(),
    };
    Ok(Outcome::Wrap(patch.to_bytes(), containers))
}

enum Wanted<'r> {
    Skip(&'static str),
    Wrap(&'r Pod, Injection),
}

/// Whether the pod is one to wrap, and how it asks to be.
fn wanted<'r>(
    request: &'r AdmissionRequest<Pod>,
    trigger: Trigger,
    own_namespace: &str,
) -> Result<Wanted<'r>, Denial> {
    if let Some(why) = not_ours(request, own_namespace) {
        return Ok(Wanted::Skip(why));
    }
    let pod = request
        .object
        .as_ref()
        .ok_or_else(|| Denial::Refused("the review carries no pod".into()))?;
    let none = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&none);
    if annotations::injected(annotations) {
        return Ok(Wanted::Skip("already injected"));
    }
    let asked = annotations::asks(annotations).map_err(|e| Denial::Refused(e.to_string()))?;
    match (trigger, asked) {
        (Trigger::Annotation, Some(true)) | (Trigger::Namespace, None | Some(true)) => {}
        (_, Some(false)) => return Ok(Wanted::Skip("opted out")),
        (Trigger::Annotation, None) => return Ok(Wanted::Skip("not annotated")),
    }
    let injection = annotations::read(annotations).map_err(|e| Denial::Refused(e.to_string()))?;
    Ok(Wanted::Wrap(pod, injection))
}

/// Why a request is none of this webhook's business, if it is not.
fn not_ours<T: kube::Resource>(
    request: &AdmissionRequest<T>,
    own_namespace: &str,
) -> Option<&'static str> {
    if request.kind.kind != "Pod" || !request.kind.group.is_empty() {
        return Some("not a pod");
    }
    if request.operation != Operation::Create {
        return Some("not a creation");
    }
    if request.namespace.as_deref() == Some(own_namespace) {
        return Some("in the webhook's own namespace");
    }
    None
}

fn generate_name(request: &AdmissionRequest<Pod>) -> String {
    request
        .object
        .as_ref()
        .and_then(|o| o.metadata.generate_name.clone())
        .map(|g| format!("{g}*"))
        .unwrap_or_default()
}
