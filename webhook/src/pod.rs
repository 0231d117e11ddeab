//! The pod as this webhook reads it: the fields a patch depends on, every
//! other one skipped unread. A pod from a Deployment carries env, probes,
//! resources and more, none of which the webhook needs; reading it all
//! into `k8s-openapi`'s `Pod` was most of a review's time. The API server
//! validates the whole pod after the mutating webhooks, so nothing is lost
//! by not checking the rest here; a field read here of the wrong type
//! still refuses the pod.
//!
//! The same holds for the metadata: kube's admission types want an
//! `ObjectMeta`, but only the fields in [`Metadata`] are read into it
//! (labels, owner references, managed fields… are skipped).

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::NamespaceResourceScope;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Pod {
    #[serde(default, deserialize_with = "Metadata::read")]
    pub metadata: ObjectMeta,
    pub spec: Option<PodSpec>,
}

/// The metadata a review reads: the annotations (what the pod asks for),
/// the namespace (where its pull secrets are), the name or
/// `generateName` (the log line).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    name: Option<String>,
    generate_name: Option<String>,
    namespace: Option<String>,
    annotations: Option<BTreeMap<String, String>>,
}

impl Metadata {
    fn read<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
        let m = Metadata::deserialize(d)?;
        Ok(ObjectMeta {
            name: m.name,
            generate_name: m.generate_name,
            namespace: m.namespace,
            annotations: m.annotations,
            ..ObjectMeta::default()
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    pub containers: Vec<Container>,
    pub init_containers: Option<Vec<Container>>,
    pub volumes: Option<Vec<Named>>,
    pub security_context: Option<PodSecurityContext>,
    pub image_pull_secrets: Option<Vec<Named>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    pub image: Option<String>,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    pub volume_mounts: Option<Vec<VolumeMount>>,
}

/// A volume, or a pull secret's reference: its name is all that is read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Named {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub mount_path: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityContext {
    pub supplemental_groups: Option<Vec<i64>>,
}

/// A review's object when it is no valid [`Pod`]: read no further than
/// being JSON, so that any pod gets an answer naming what is wrong with it.
/// The answer needs nothing of it (the request says whose it is).
#[derive(Debug, Clone, Default)]
pub struct Unreadable {
    metadata: ObjectMeta,
}

impl<'de> Deserialize<'de> for Unreadable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(Unreadable::default())
    }
}

/// What kube's admission types need of the object they carry.
macro_rules! pod_resource {
    ($t:ty) => {
        impl kube::Resource for $t {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;

            fn kind(_: &()) -> Cow<'_, str> {
                "Pod".into()
            }

            fn group(_: &()) -> Cow<'_, str> {
                "".into()
            }

            fn version(_: &()) -> Cow<'_, str> {
                "v1".into()
            }

            fn plural(_: &()) -> Cow<'_, str> {
                "pods".into()
            }

            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

pod_resource!(Pod);
pod_resource!(Unreadable);
