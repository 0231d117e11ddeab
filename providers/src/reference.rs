//! The secret refs providers fetch are the config's own types: the parser
//! produces them (exactly one kind, durations parsed), and the providers
//! take them as they are.

pub use kernelseal_config::{
    AwsRef, KubernetesRef, KvEngine, SecretRef, SsmPathRef, SsmRef, TemplateRef, VaultRef,
};
