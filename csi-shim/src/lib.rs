//! KernelSeal's provider for the Secrets Store CSI Driver: the driver's
//! `v1alpha1.CSIDriverProvider` gRPC service on a unix socket, serving
//! SecretProviderClass objects from KernelSeal's providers.
//!
//! Errors reach the driver as non-OK gRPC statuses whose message names the
//! parameter or object (see `docs/csi.md`); `error.code` is never set.

mod authority;
mod conn;
pub mod error;
mod identity;
pub mod limits;
mod local;
pub mod metrics;
pub mod mount;
mod objects;
pub mod params;
pub mod server;
pub mod validate;
pub mod version;

/// The generated protocol types.
pub mod proto {
    #![allow(clippy::all)]
    tonic::include_proto!("v1alpha1");
}

pub use conn::ServeOptions;
pub use error::{Error, Outcome};
pub use metrics::Metrics;
pub use mount::{LocalPolicy, MAX_RESPONSE_BYTES, Mounter};
pub use server::{Service, SocketGuard, bind_socket, serve, serve_with};
pub use version::VersionKey;
