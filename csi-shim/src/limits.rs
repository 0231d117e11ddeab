//! Bounds on the upstream work Mounts cause: at most [`PER_MOUNT`] objects
//! of one Mount fetched at once, and per upstream the shared bound of
//! [`kernelseal_providers::identity::Upstreams`].
//!
//! Without them one Mount of 2,000 Vault objects made 2,001 simultaneous
//! requests, each on its own connection, and the idle connections stayed
//! pooled until the provider ran out of file descriptors.

pub use kernelseal_providers::identity::{Limited, PER_UPSTREAM, Upstreams};

/// Objects of one Mount fetched at once; the results keep their order.
pub const PER_MOUNT: usize = 16;
