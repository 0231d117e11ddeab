//! `AdmissionReview`s as the API server sends them for a pod's creation,
//! and what their answers make of the pod.

use kernelseal_webhook::review::Reviewed;
use serde_json::{Value, json};

/// What a review is sent as.
pub struct Sent<'a> {
    pub namespace: &'a str,
    pub uid: &'a str,
    pub dry_run: bool,
}

impl Default for Sent<'_> {
    fn default() -> Self {
        Sent {
            namespace: "shop",
            uid: "705ab4f5-6393-11e8-b7cc-42010a800002",
            dry_run: false,
        }
    }
}

/// The `AdmissionReview` for creating `pod`, as a ReplicaSet has the API
/// server create it.
pub fn admission_review(pod: &Value, sent: &Sent) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": sent.uid,
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "requestKind": { "group": "", "version": "v1", "kind": "Pod" },
            "requestResource": { "group": "", "version": "v1", "resource": "pods" },
            "name": "",
            "namespace": sent.namespace,
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "f1d9b8e2-0000-4000-8000-000000000001",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]
            },
            "object": pod,
            "oldObject": null,
            "dryRun": sent.dry_run,
            "options": { "kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1" }
        }
    }))
    .unwrap()
}

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
