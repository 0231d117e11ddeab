//! The `AdmissionReview` as it arrives, read as far as this webhook needs
//! it, in one pass. kube's own type flattens its `TypeMeta`, which makes
//! serde buffer the whole review before reading it, and its request reads
//! `userInfo` and `options` (a JSON tree) that no decision here uses;
//! decoding was the largest part of a review.

use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::{AdmissionRequest, Operation};
use kube::core::{GroupVersionKind, GroupVersionResource, TypeMeta};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(bound = "T: serde::de::DeserializeOwned")]
pub(super) struct Envelope<T: kube::Resource> {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    request: Option<Arriving<T>>,
}

impl<T: kube::Resource> Envelope<T> {
    /// The review's type and its request.
    pub fn into_parts(self) -> (TypeMeta, Option<Arriving<T>>) {
        let types = TypeMeta {
            api_version: self.api_version,
            kind: self.kind,
        };
        (types, self.request)
    }
}

/// The request's fields this webhook reads; the others are skipped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound = "T: serde::de::DeserializeOwned")]
pub(super) struct Arriving<T: kube::Resource> {
    uid: String,
    kind: GroupVersionKind,
    resource: GroupVersionResource,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    object: Option<T>,
    #[serde(default)]
    dry_run: bool,
}

impl<T: kube::Resource> Arriving<T> {
    /// As kube's request, the fields not read left empty.
    pub fn into_request(self, types: TypeMeta) -> AdmissionRequest<T> {
        AdmissionRequest {
            types,
            uid: self.uid,
            kind: self.kind,
            resource: self.resource,
            sub_resource: self.sub_resource,
            request_kind: None,
            request_resource: None,
            request_sub_resource: None,
            name: self.name,
            namespace: self.namespace,
            operation: self.operation,
            user_info: UserInfo::default(),
            object: self.object,
            old_object: None,
            dry_run: self.dry_run,
            options: None,
        }
    }
}
