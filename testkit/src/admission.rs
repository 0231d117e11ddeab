//! What the API server sends a mutating webhook when a Deployment's
//! ReplicaSet creates a pod: the pod as it is before admission, and the
//! `AdmissionReview` around it. Shared by the webhook's tests and the VM
//! test that runs the webhook's patched command.

use serde_json::{Value, json};

/// The pod template's hash, which names the ReplicaSet and prefixes the
/// pods' generated names (`web-<hash>-`).
pub const TEMPLATE_HASH: &str = "6d4cf56db6";

/// A pod of the Deployment `web` in `namespace`, with these annotations
/// and containers, as the ReplicaSet has the API server create it: a
/// generated name, the service account's token volume, the defaults the
/// API server fills in.
pub fn deployment_pod(namespace: &str, annotations: Value, containers: Vec<Value>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": format!("web-{TEMPLATE_HASH}-"),
            "namespace": namespace,
            "creationTimestamp": null,
            "labels": { "app": "web", "pod-template-hash": TEMPLATE_HASH },
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("web-{TEMPLATE_HASH}"),
                "uid": "0b5f3c1e-2d4a-4f6b-8c7d-9e0f1a2b3c4d",
                "controller": true, "blockOwnerDeletion": true
            }]
        },
        "spec": {
            "volumes": [{
                "name": "kube-api-access-7xk2p",
                "projected": {
                    "sources": [
                        { "serviceAccountToken": { "expirationSeconds": 3607, "path": "token" } },
                        { "configMap": { "name": "kube-root-ca.crt", "items": [{ "key": "ca.crt", "path": "ca.crt" }] } },
                        { "downwardAPI": { "items": [{ "path": "namespace", "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.namespace" } }] } }
                    ],
                    "defaultMode": 420
                }
            }],
            "containers": containers,
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "web",
            "serviceAccount": "web",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                { "key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300 }
            ],
            "priority": 0,
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority"
        },
        "status": {}
    })
}

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

/// A container as the API server defaults it: `command` only when given.
pub fn container(name: &str, image: &str, command: Option<&[&str]>) -> Value {
    let mut c = json!({
        "name": name,
        "image": image,
        "resources": {},
        "volumeMounts": [{
            "name": "kube-api-access-7xk2p",
            "readOnly": true,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"
        }],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent"
    });
    if let Some(cmd) = command {
        c["command"] = json!(cmd);
    }
    c
}

/// The `AdmissionReview` for creating `pod`, sent on behalf of the
/// ReplicaSet controller.
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
    .expect("a JSON value serializes")
}
