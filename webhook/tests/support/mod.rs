//! Helpers shared by the integration tests and the benchmark (each uses
//! part of them).

pub mod admission;
pub mod registry;
