//! Linux enforcement for warden: turns a [`warden_policy::Policy`] into a [`plan::LaunchPlan`]
//! and runs a command under it (namespaces, mounts, Landlock, seccomp, capabilities, rlimits).
//!
//! What this crate trusts: the policy it is given (already validated by `warden-policy`) and
//! the kernel. What it guarantees: a layer the plan asks for is either in force before the
//! command's first instruction, or the command does not run and the error names the layer.
//!
//! The public API is safe to call from anywhere: [`plan::compile`] is pure, [`launch::run`]
//! checks that the process is single-threaded before it clones the sandbox's PID 1 (a
//! multi-threaded program starts sessions through `warden-session`'s spawn path, which re-execs
//! the binary), and [`process`] has the few safe helpers a spawning parent needs. The system-call
//! layer (`sys`) and PID 1's code (`init`) are private.
#![warn(missing_docs)]
// Every unsafe block lives in `sys`, the one module allowed to have them.
#![deny(unsafe_code)]

mod cgroup;
pub mod doctor;
mod init;
pub mod landlock;
pub mod launch;
pub mod plan;
pub mod process;
mod protect;
mod protocol;
mod relay;
mod repos;
pub mod seccomp;
#[allow(unsafe_code)]
mod sys;

pub use protect::{is_placeholder_dir, release_in_a_child};
pub use protocol::{CommandStatus, ListenerKind};
pub use sys::Errno;

/// The Landlock ABI of the running kernel (`None`: Landlock is disabled or absent).
pub fn landlock_abi() -> Option<u32> {
    sys::landlock_abi()
}

/// The real uid and gid of this process (mapped to the same ids inside the sandbox).
pub fn current_ids() -> (u32, u32) {
    (sys::getuid(), sys::getgid())
}
