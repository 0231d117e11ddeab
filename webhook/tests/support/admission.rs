//! `AdmissionReview`s as the API server sends them for a pod's creation
//! (testkit's, shared with the VM test), and what their answers make of
//! the pod.

pub use kernelseal_testkit::admission::{Sent, admission_review};
use kernelseal_webhook::review::Reviewed;
use serde_json::{Value, json};

/// A pod annotated for injection with these containers (and `spec`'s
/// other fields from `more_spec`, an object).
pub fn annotated_pod(containers: &Value, more_spec: Value) -> Value {
    let mut spec = json!({ "serviceAccountName": "web", "containers": containers });
    if let (Some(spec), Value::Object(more)) = (spec.as_object_mut(), more_spec) {
        spec.extend(more);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": "web-6d4cf56db6-",
            "annotations": { "kernelseal.io/inject": "true" }
        },
        "spec": spec
    })
}

/// The containers once the answer's patch is applied to a pod holding
/// them; the answer must allow the pod.
pub fn patched_containers(containers: &Value, r: &Reviewed) -> Value {
    let resp = &r.response;
    assert!(resp.allowed, "{:?}", resp.result);
    let patch: json_patch::Patch = serde_json::from_slice(resp.patch.as_ref().unwrap()).unwrap();
    let mut pod =
        json!({ "metadata": { "annotations": {} }, "spec": { "containers": containers } });
    json_patch::patch(&mut pod, &patch).unwrap();
    pod["spec"]["containers"].clone()
}
