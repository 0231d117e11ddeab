//! KernelSeal's kernel side: BPF-LSM programs written in C
//! (`src/bpf/kernelseal.bpf.c`, built by `build.rs` with clang) and the
//! typed Rust API that loads them, sets the policy, marks processes through
//! pidfds and streams access events.

pub mod abi;
mod error;
mod events;
mod filter;
mod gate;
mod guarded;
pub mod kernel;
pub mod lock;
mod marks;
mod pins;
mod policy;
mod process;
mod sys;
mod tamper;
mod trust;

pub use error::BpfError;
pub use events::{AccessEvent, AccessKind, Decision, Event, EventStream, ExecEvent};
pub use filter::ExecFilter;
pub use gate::{EXEC_TRACEPOINT, Gate, GateOptions, Origin, ProgramRef, Stats};
pub use guarded::{GuardedFiles, kernel_dev};
pub use marks::{MarkState, Marks};
pub use pins::PinLayout;
pub use policy::{KernelPolicy, pinned_policy_locked};
pub use process::{ProcessFacts, Tracer, tracer_of};
pub use sys::{pidfd_alive, pidfd_open};
pub use tamper::{CheckFailure, Finding, MarkRegistry, TamperReport, Tampered};
pub use trust::{AdmittedBuild, CommandTrust, HANDOVER, command_beside};

/// The compiled BPF object.
pub static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kernelseal.bpf.o"));
