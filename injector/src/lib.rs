//! KernelSeal's delivery side: who is calling (identity), which bindings
//! apply (select), one delivery that plans, then protects and releases
//! (deliver), and its two callers: the agent socket (server) and the
//! exec-time file delivery (exec_delivery).

mod admission;
pub mod cgroup;
mod deliver;
mod error;
mod exec_delivery;
pub mod files;
pub mod identity;
pub mod leases;
pub mod metrics;
mod pod_identity;
pub mod pod_token;
pub mod pods;
mod preflight;
mod protect;
pub mod ratelimit;
pub mod rotate;
pub mod select;
pub mod server;
mod service_accounts;
mod socket_log;
mod state;

pub use admission::ConnLimits;
pub use deliver::SECRETS_DIR_VAR;
pub use error::{FilesProblem, InjectError, SocketProblem};
pub use exec_delivery::deliver_on_exec;
pub use files::{DeliveredFiles, FileStore, Inode, InodeGuard, SharedGuard};
pub use identity::Caller;
pub use leases::{Holder, LeaseTable, LeaseTiming, Reattached, RecordDir};
pub use metrics::{AccessLabels, Metrics, SocketLabels, TamperLabels, serve_http};
pub use pods::{PodIndex, PodInfo};
pub use preflight::{ConfigProblem, ConfigProblems, check_config};
pub use protect::ProtectError;
pub use rotate::{LiveSet, watch};
pub use select::{PreparedBinding, prepare};
pub use server::{REQUEST_TIMEOUT, ServeOptions, bind, serve, unbind};
pub use service_accounts::ROLE_ARN_ANNOTATION;
pub use state::{ServingState, Shared};
