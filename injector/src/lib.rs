//! KernelSeal's delivery side: who is calling (identity), which bindings
//! apply (select), and the agent socket that protects, then releases
//! (server).

mod admission;
pub mod cgroup;
mod error;
mod exec_delivery;
pub mod files;
pub mod identity;
pub mod metrics;
mod pod_identity;
pub mod pods;
mod protect;
pub mod ratelimit;
pub mod rotate;
pub mod select;
pub mod server;
mod socket_log;

pub use admission::ConnLimits;
pub use error::InjectError;
pub use exec_delivery::deliver_on_exec;
pub use files::{DeliveredFiles, FileStore, Inode, InodeGuard, SharedGuard};
pub use identity::Caller;
pub use metrics::{AccessLabels, Metrics, SocketLabels, TamperLabels, serve_http};
pub use pods::{PodIndex, PodInfo};
pub use rotate::{LiveSet, watch};
pub use select::{PreparedBinding, prepare};
pub use server::{Delivery, REQUEST_TIMEOUT, ServeOptions, Shared, bind, serve, unbind};
